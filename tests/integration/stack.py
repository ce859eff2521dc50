"""The whole frontend as it is deployed, for the durability, race and outage tests:
`python -m frontend serve` in a subprocess over the session's Triton, with its own
database (a SQLite file or a PostgreSQL database, never the checkout's `.infergate/`)
and, when given, a private Redis. Helpers to read what the database holds directly,
behind the app's back, and to load the stack at a steady rate."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from procs.ports import free_port
from procs.process import with_parent_death_signal
from procs.wait import wait_http

from .conftest import ADMIN, ADMIN_KEY, ROOT, TEST_SECRET, RedisServer

PASSWORD = "a long enough passphrase"


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'infergate.db'}"


class Stack:
    """`serve --workers N` on a free port, in its own process group (`kill` SIGKILLs the
    parent and every worker at once, as a machine losing power would), ready when it
    returns. Its stderr (every worker's log) goes to `log`."""

    def __init__(
        self,
        triton: Any,
        repository: Path,
        tmp: Path,
        *,
        database_url: str,
        redis_url: str | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        """`args`: more of serve's options (e.g. `--job-workers 2`)."""
        self.database_url = database_url
        self.port = free_port()
        tmp.mkdir(parents=True, exist_ok=True)
        self.log = tmp / f"serve-{self.port}.log"
        variables = {
            **os.environ,
            "INFERGATE_ENVIRONMENT": "test",
            "INFERGATE_SECRET_KEY": TEST_SECRET,
            "INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "INFERGATE_DATABASE__URL": database_url,
            **(env or {}),
        }
        if redis_url is not None:
            variables["INFERGATE_REDIS__URL"] = redis_url
        if workers > 1:
            metrics = tmp / f"metrics-{self.port}"
            metrics.mkdir()
            variables["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        cmd = [sys.executable, "-m", "frontend", "serve", "--port", str(self.port)]
        cmd += ["--workers", str(workers), "--triton-url", triton.grpc_url]
        cmd += ["--repository", str(repository), *args]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                # Its own session (for killpg), and SIGTERM should this test process die.
                with_parent_death_signal(cmd),
                cwd=ROOT,
                env=variables,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        try:
            wait_http(self.url + "/health/ready", timeout_s=180, proc=self.proc)
        except BaseException:
            self.kill()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 60) -> int | None:
        """SIGTERM to `serve` (a container's stop): each worker writes what it counted."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL to the parent and every worker at once: nothing runs after it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        # Workers that were mid-exit are reaped by init; wait until none is left.
        _wait_group_gone(self.proc.pid)


def _alive_in_group(pgid: int) -> list[int]:
    """The processes of group `pgid` that have not ended (a zombie has: only its exit
    status is left, for whoever reaps it)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def _wait_group_gone(pgid: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while _alive_in_group(pgid):
        assert time.monotonic() < deadline, f"process group {pgid} outlived SIGKILL"
        time.sleep(0.05)


def private_redis(tmp: Path) -> RedisServer:
    """A Redis of this test's own (FLUSHALL and kills touch no other test's)."""
    workdir = tmp / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    return RedisServer(workdir).start()


# --- requests --------------------------------------------------------------------------


def fresh(url: str, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request on a new connection: connections land on either worker."""
    return httpx.request(method, url + path, timeout=kw.pop("timeout", 30), **kw)


def from_both_workers(
    call: Callable[[], httpx.Response], need: int = 2, cap: int = 200
) -> list[httpx.Response]:
    """Repeat `call` until each of the two workers has answered `need` times (workers say
    who they are in X-Infergate-Worker in the test environment)."""
    seen: collections.Counter[str] = collections.Counter()
    answers: list[httpx.Response] = []
    while len(seen) < 2 or min(seen.values()) < need:
        assert len(answers) < cap, f"only {dict(seen)} answered in {cap} requests"
        answer = call()
        seen[answer.headers["X-Infergate-Worker"]] += 1
        answers.append(answer)
    return answers


def create_key(url: str, **body: Any) -> dict:
    """A key of the unthrottled tier unless `tier` says otherwise (the tests here count
    requests, not limits; the limit tests give their own)."""
    body = {"name": "t", "tier": "unlimited", **body}
    r = fresh(url, "POST", "/v1/admin/keys", headers=ADMIN, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def create_user(url: str, username: str, **body: Any) -> dict:
    r = fresh(
        url,
        "POST",
        "/v1/admin/users",
        headers=ADMIN,
        json={"username": username, "password": PASSWORD, "tier": "unlimited", **body},
    )
    assert r.status_code == 201, r.text
    return r.json()


def login(url: str, username: str) -> dict:
    r = fresh(url, "POST", "/v1/auth/token", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()


PREDICT = "/v1/models/intent/predict"


def predict(url: str, key: str, text: str = "please book a table for two") -> httpx.Response:
    return fresh(url, "POST", PREDICT, headers={"X-API-Key": key}, json={"inputs": text})


# --- the database, read directly -------------------------------------------------------


def query(database_url: str, sql: str, **params: Any) -> list[tuple]:
    """Rows of `sql` on the database itself (a new engine, no pool kept)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    async def run() -> list[tuple]:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(text(sql), params)
                return [tuple(row) for row in result.fetchall()]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def ledger_requests(database_url: str, subject: str) -> int:
    rows = query(
        database_url,
        "SELECT COALESCE(SUM(requests), 0) FROM usage_ledger WHERE subject = :subject",
        subject=subject,
    )
    return int(rows[0][0])


def dump(database_url: str) -> str:
    """Every row of every table, as text: what someone with a copy of the database sees."""
    tables = ("users", "api_keys", "routing", "routing_history", "audit_log", "usage_ledger")
    lines = []
    for table in tables:
        for row in query(database_url, f"SELECT * FROM {table}"):
            lines.append(f"{table}: " + json.dumps([str(v) for v in row]))
    return "\n".join(lines)


# --- steady load -----------------------------------------------------------------------


@dataclass
class Sent:
    kind: str
    started: float  # monotonic, just before the request was sent
    took: float
    status: int  # 0: no answer (connection refused or reset)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Paced:
    """Calls `make(kind)` for each kind in `schedule`, one every `1 / rate` seconds in
    turn, each in a thread of a pool (a slow answer does not slow the pace), until
    `stop()`. Every call's outcome is kept in `sent`."""

    def __init__(
        self,
        rate: float,
        schedule: list[str],
        make: Callable[[str], httpx.Response],
        threads: int = 16,
    ) -> None:
        import concurrent.futures as cf

        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = cf.ThreadPoolExecutor(threads)
        self._make = make
        self._interval = 1.0 / rate
        self._schedule = schedule
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _one(self, kind: str) -> None:
        started = time.monotonic()
        try:
            r = self._make(kind)
            outcome = Sent(kind, started, time.monotonic() - started, r.status_code,
                           {k.lower(): v for k, v in r.headers.items()}, r.content)  # fmt: skip
        except httpx.HTTPError:
            outcome = Sent(kind, started, time.monotonic() - started, 0)
        with self._lock:
            self.sent.append(outcome)

    def _run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            self._pool.submit(self._one, self._schedule[n % len(self._schedule)])
            n += 1
            # Paced from the start, not from the last call: no drift under load.
            self._stop.wait(max(0.0, start + n * self._interval - time.monotonic()))

    def stop(self) -> list[Sent]:
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown(wait=True)
        with self._lock:
            return sorted(self.sent, key=lambda s: s.started)
