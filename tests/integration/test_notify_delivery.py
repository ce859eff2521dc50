"""Job notifications through the real stack (`serve` over the session's Triton, SQLite)
to a real HTTP receiver on loopback: a job that runs to the end on the embedded Triton
is announced to its webhook and to its own callback, each verified with the published
verifier; and the standalone dispatcher (`python -m frontend notifier`), SIGKILLed ten
times between job state changes and their deliveries, loses no event (a duplicate only
ever repeats an event id)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from procs.process import with_parent_death_signal
from tests.notify_support import Receiver, verifier

from . import jobs_http as jobs
from .conftest import ROOT, TEST_SECRET
from .stack import Stack, create_key, sqlite_url

pytestmark = pytest.mark.integration
KILLS = 10


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "INFERGATE_JOBS__STORAGE_DIR": str(tmp / "jobs"),
        "INFERGATE_NOTIFY__ALLOW_LOOPBACK": "true",
        "INFERGATE_NOTIFY__POLL_S": "0.1",
        "INFERGATE_LOG__LEVEL": "INFO",
        "INFERGATE_NOTIFY__RETRY_BASE_S": "0.2",
        "INFERGATE_NOTIFY__RETRY_MAX_S": "0.5",
        # A killed dispatcher's claimed deliveries come back when their leases end.
        "INFERGATE_NOTIFY__LEASE_S": "1",
        "INFERGATE_NOTIFY__TIMEOUT_S": "0.8",
        "INFERGATE_NOTIFY__CONNECT_TIMEOUT_S": "0.5",
        **extra,
    }


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


def _webhook(url: str, key: str, target: str, events: list[str]) -> dict[str, Any]:
    r = httpx.post(
        f"{url}/v1/webhooks", json={"url": target, "events": events}, headers=jobs.headers(key)
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_a_finished_job_is_announced_to_its_webhook_and_callback(
    triton: Any, repository: Path, tmp_path: Path, receiver: Receiver
) -> None:
    verify = verifier()
    stack = Stack(
        triton, repository, tmp_path, database_url=sqlite_url(tmp_path), env=_env(tmp_path)
    )
    try:
        key = create_key(stack.url)["key"]
        hook = _webhook(stack.url, key, receiver.url("/hook"), ["job.succeeded"])
        texts = jobs.texts(40, seed=5)
        body = {"model": "intent", "inputs": texts, "notify": {"callback_url": receiver.url("/cb")}}
        job = jobs.submit(stack.url, key, body)
        callback_secret = job["notify"]["callback_secret"]
        done = jobs.wait_finished(stack.url, key, job["id"], timeout_s=120)
        assert done["state"] == "succeeded"
        got = {r.path: r for r in receiver.wait_for(2)}
        assert set(got) == {"/hook", "/cb"}
        assert verify(hook["secret"], got["/hook"].headers, got["/hook"].body)
        assert verify(callback_secret, got["/cb"].headers, got["/cb"].body)
        assert not verify(hook["secret"], got["/cb"].headers, got["/cb"].body)
        event = orjson.loads(got["/hook"].body)
        assert event["type"] == "job.succeeded"
        assert event["data"]["job"]["rows_done"] == len(texts)
        # The two deliveries are of one event.
        assert got["/hook"].headers["Webhook-Id"] == got["/cb"].headers["Webhook-Id"]
        notes = jobs.wait_until(
            stack.url,
            key,
            job["id"],
            lambda j: {n["state"] for n in j["notifications"]} == {"delivered"},
            "both deliveries recorded",
            timeout_s=30,
        )["notifications"]
        assert sorted(n["channel"] for n in notes) == ["callback", "webhook"]
    finally:
        stack.stop()


def _started(log: Path) -> int:
    return log.read_text().count("notifier started") if log.exists() else 0


def _notifier(database_url: str, tmp: Path) -> subprocess.Popen[bytes]:
    """`python -m frontend notifier`, returned once it has logged its start."""
    log = tmp / "notifier.log"
    before = _started(log)
    env = {
        **os.environ,
        **_env(tmp),
        "INFERGATE_ENVIRONMENT": "test",
        "INFERGATE_SECRET_KEY": TEST_SECRET,
        "INFERGATE_DATABASE__URL": database_url,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            with_parent_death_signal([sys.executable, "-m", "frontend", "notifier"]),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    deadline = time.monotonic() + 60
    while _started(log) == before:
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "the notifier did not start"
        time.sleep(0.05)
    return proc


def test_sigkilled_dispatchers_lose_no_event(
    triton: Any, repository: Path, tmp_path: Path, receiver: Receiver
) -> None:
    """Round by round, with the notifier running (it reads the outbox every 0.1 s): a job
    is cancelled (its event commits with the state), and the notifier is SIGKILLed a
    random 0-300 ms later — before its delivery, in the middle of it (the receiver
    answers after 100 ms) or after it — then started again. Every event
    arrives, each under one id; repeats are the same id again."""
    receiver.delay_s = 0.1
    database = sqlite_url(tmp_path)
    env = _env(tmp_path, INFERGATE_NOTIFY__DISPATCHER="off", INFERGATE_JOBS__EXECUTOR="off")
    stack = Stack(triton, repository, tmp_path, database_url=database, env=env)
    notifier = _notifier(database, tmp_path)
    rng = random.Random(17)
    try:
        key = create_key(stack.url)["key"]
        _webhook(stack.url, key, receiver.url(), ["job.cancelled"])
        cancelled = []
        before_delivery = 0
        for _ in range(KILLS):
            job = jobs.submit(stack.url, key, {"model": "intent", "inputs": ["a", "b"]})
            r = httpx.delete(f"{stack.url}/v1/jobs/{job['id']}", headers=jobs.headers(key))
            assert r.status_code in (200, 202) and r.json()["state"] == "cancelled", r.text
            cancelled.append(job["id"])
            time.sleep(rng.uniform(0.0, 0.3))  # the kill lands anywhere in the delivery
            arrived = {orjson.loads(x.body)["data"]["job"]["id"] for x in receiver.received}
            before_delivery += job["id"] not in arrived
            notifier.send_signal(signal.SIGKILL)
            notifier.wait(10)
            notifier = _notifier(database, tmp_path)
        deadline = time.monotonic() + 60
        while True:
            got = list(receiver.received)
            jobs_seen = {orjson.loads(x.body)["data"]["job"]["id"] for x in got}
            if jobs_seen >= set(cancelled):
                break
            assert time.monotonic() < deadline, f"{len(jobs_seen)} of {KILLS} events arrived"
            time.sleep(0.05)
        by_id: dict[str, set[str]] = {}
        for x in got:
            by_id.setdefault(x.headers["Webhook-Id"], set()).add(
                orjson.loads(x.body)["data"]["job"]["id"]
            )
        # One id per event, one event per id: a repeat is the same event again.
        assert len(by_id) == KILLS and all(len(v) == 1 for v in by_id.values())
        print(
            f"kill test: {KILLS} kills, {len(got)} deliveries received for {KILLS} events "
            f"({len(got) - KILLS} repeats), {before_delivery} killed before the receiver "
            "had the event"
        )
    finally:
        notifier.send_signal(signal.SIGTERM)
        try:
            notifier.wait(20)
        except subprocess.TimeoutExpired:
            notifier.kill()
        stack.stop()
