"""Operational promises that need the real stack (docs/claims.md names the rows): the
admin cache summary and the experiment summary add up every worker's counts through a
real Redis (`serve --workers 2`, the fixture class of test_access_redis), and the session
Triton's three ports listen on loopback only."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from procs.wait import wait_for

from .conftest import ADMIN, RedisServer
from .test_access_redis import Workers, fresh, from_both_workers

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/intent/predict"


@pytest.fixture(scope="module")
def two_workers(triton, repository, tmp_path_factory) -> Iterator[Workers]:
    redis = RedisServer(tmp_path_factory.mktemp("redis-ops")).start()
    workers = Workers(triton, repository, redis, tmp_path_factory.mktemp("workers-ops"))
    try:
        yield workers
    finally:
        workers.stop()
        redis.kill()


def _intent_cache(url: str) -> dict:
    r = fresh(url, "GET", "/v1/admin/cache", headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["models"]["intent"]


def test_the_admin_cache_summary_sums_both_workers(two_workers):
    url = two_workers.url
    before = _intent_cache(url)
    serial = itertools.count()
    texts: list[str] = []

    def miss() -> httpx.Response:
        texts.append(f"please book a table for {next(serial)} people at the ops claims bar")
        r = fresh(url, "POST", PREDICT, json={"inputs": texts[-1]}, headers=ADMIN)
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", r.text
        return r

    misses = len(from_both_workers(miss))  # each worker missed at least 3 times
    # The same texts again, on new connections: hits in whichever worker, from Redis.
    for text in texts:
        r = fresh(url, "POST", PREDICT, json={"inputs": text}, headers=ADMIN)
        assert r.headers["X-Cache"] == "HIT"

    def grew() -> tuple[int, int]:
        now = _intent_cache(url)
        return now["misses"] - before["misses"], now["hits"] - before["hits"]

    # Each worker writes its counts to Redis once a second; then any worker's summary
    # holds both workers' counts.
    wait_for(lambda: grew() == (misses, misses), f"{misses} misses and hits counted", 10)
    print(f"summary after {misses} misses and {misses} hits over two workers: {grew()}")


def test_the_experiment_summary_sums_both_workers(two_workers):
    url = two_workers.url
    # Both variants on version 1 (the default is 2): an answer from version 1 is an
    # answer the experiment routed, whichever worker gave it.
    experiment = {
        "name": "ops-claims-sum",
        "variants": {"a": {"version": "1", "weight": 1}, "b": {"version": "1", "weight": 1}},
    }
    r = fresh(
        url, "PUT", "/v1/admin/routing/intent", json={"experiment": experiment}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    routed: collections.Counter[str] = collections.Counter()
    serial = itertools.count()
    sent = 0
    while len(routed) < 2 or min(routed.values()) < 3:
        assert sent < 300, f"experiment answers per worker: {dict(routed)}"
        headers = {**ADMIN, "X-User-Id": f"subject-{next(serial)}", "Cache-Control": "no-cache"}
        answer = fresh(url, "POST", PREDICT, json={"inputs": "what is my balance"}, headers=headers)
        assert answer.status_code == 200, answer.text
        sent += 1
        if answer.headers["X-Model-Version"] == "1":
            routed[answer.headers["X-Infergate-Worker"]] += 1
    expected = sum(routed.values())

    def counted() -> int:
        r = fresh(url, "GET", "/v1/admin/experiments/ops-claims-sum", headers=ADMIN)
        return sum(v["requests"] for v in r.json()["variants"].values())

    wait_for(lambda: counted() == expected, f"{expected} experiment requests counted", 10)
    print(f"{expected} experiment answers from two workers {dict(routed)}; summary {counted()}")
    fresh(url, "DELETE", "/v1/admin/routing/intent", headers=ADMIN)


def _listeners() -> dict[int, set[str]]:
    """Local addresses (hex, as the kernel shows them) of every listening TCP socket."""
    out: dict[int, set[str]] = collections.defaultdict(set)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A":  # LISTEN
                out[int(port, 16)].add(address)
    return out


IPV4_LOOPBACK = "0100007F"  # 127.0.0.1, little-endian hex
IPV6_LOOPBACK = "00000000000000000000000001000000"  # ::1
MAPPED_LOOPBACK = "0000000000000000FFFF00000100007F"  # ::ffff:127.0.0.1 (gRPC binds so)
LOOPBACK = {IPV4_LOOPBACK, IPV6_LOOPBACK, MAPPED_LOOPBACK}


def test_triton_listens_on_loopback_only(triton):
    listening = _listeners()
    for name, port in (
        ("gRPC", triton.ports.grpc),
        ("HTTP", triton.ports.http),
        ("metrics", triton.ports.metrics),
    ):
        addresses = listening.get(port, set())
        assert addresses, f"nothing listens on Triton's {name} port {port}"
        assert addresses <= LOOPBACK, (name, port, addresses)
