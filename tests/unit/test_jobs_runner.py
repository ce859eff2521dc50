"""JobRunner (frontend/jobs/runner.py) driven directly: a SQLite FILE migrated to head (each
Database.run its own connection, so concurrent attempts really race), LocalStorage in a
temp directory, the fake adapter of job_fakes.py and a fake wall clock (leases, backoff).

What must hold: every row exactly once and in order, whatever the duplicates, races and
crashes around the chunk commit; retries back off and then fail the job at the cap; a
cancelled job starts no new chunk and keeps what it finished."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from frontend.db import jobs, migrate
from frontend.db.database import Database
from frontend.db.jobs import JobFileRow, JobRow, Work
from frontend.db.tables import UsageRow
from frontend.errors import ModelNotFound
from frontend.jobs.context import JobContext
from frontend.jobs.outputs import chunk_key, header_key
from frontend.jobs.runner import JobRunner
from frontend.observability.metrics import Metrics
from frontend.settings import DatabaseSettings, Settings
from frontend.storage import LocalStorage
from tests.unit.job_fakes import REFUSED, FakeAdapter, prediction

DB = DatabaseSettings(deadline_s=20.0, statement_timeout_s=10.0)
NOW = 1_800_000_000.0
TASK = "text-classification"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Env:
    db: Database
    storage: LocalStorage
    adapter: FakeAdapter
    clock: Clock
    runner: JobRunner
    settings: Settings

    async def q(self, query: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        return await self.db.run(query.__name__, lambda s: query(s, *args, **kwargs))

    async def job(self, job_id: str) -> JobRow:
        return await self.q(jobs.job, job_id)

    async def chunk(self, job_id: str, idx: int) -> dict[str, Any]:
        async def read(s: Any) -> dict[str, Any]:
            c = jobs.CHUNKS.c
            found = await s.execute(select(jobs.CHUNKS).where(c.job_id == job_id, c.idx == idx))
            return dict(found.one()._mapping)

        return await self.db.run("chunk", read)

    async def drain(self, work: list[Work]) -> None:
        """Runs the work and its follow-ups to the end, one at a time."""
        queue = list(work)
        while queue:
            item = queue.pop(0)
            assert item.kind == "chunk" and item.idx is not None
            queue += await self.runner.run_chunk(item.job_id, item.idx)

    async def results(self, job_id: str, kind: str = "jsonl") -> list[dict[str, Any]]:
        """The job's results as a download reads them: the SQL tokens, in chunk order."""
        lines: list[dict[str, Any]] = []
        for done in await self.q(jobs.done_chunks, job_id):
            path = self.storage.root / chunk_key(job_id, done.idx, done.output_token, kind)
            lines += [orjson.loads(line) for line in path.read_bytes().splitlines()]
        return lines

    def files_of(self, job_id: str, idx: int) -> list[str]:
        folder = self.storage.root / "jobs" / job_id
        return sorted(
            str(p.relative_to(folder)) for p in folder.rglob(f"{idx:06d}-*") if p.is_file()
        )


def scenario(tmp_path: Path, body: Callable[[Env], Awaitable[None]], **job_settings: Any) -> None:
    async def run() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", DB, Metrics())
        await migrate.upgrade(db.engine)
        storage = LocalStorage(tmp_path / "store", fsync=False)
        settings = Settings(jobs={"chunk_rows": 4, "lease_s": 30.0, **job_settings})
        adapter, clock = FakeAdapter(), Clock()
        ctx = JobContext.for_settings(
            settings, db, storage, Metrics(), {TASK: adapter}, "test:1", clock
        )
        try:
            await body(Env(db, storage, adapter, clock, JobRunner(ctx), settings))
        finally:
            await db.close()

    asyncio.run(run())


def text_of(n: int) -> str:
    return f"row number {n}" + " and more" * (n % 3)


def jsonl(rows: list[Any]) -> bytes:
    return b"".join((row if isinstance(row, bytes) else orjson.dumps(row)) + b"\n" for row in rows)


async def submit(env: Env, data: bytes, *, n: int = 1, task: str = TASK, **fields: Any) -> str:
    """A queued job of one JSONL file (as the submission leaves it)."""
    job_id = f"job_{n:026d}"
    key = f"jobs/{job_id}/inputs/0.jsonl"
    writer = env.storage.writer(key)
    writer.write(data)
    writer.commit()
    job = JobRow(
        id=job_id,
        owner="user:a",
        account="user:a",
        subject="key:1",
        tier="free",
        model="intent",
        version="2",
        task=task,
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )
    file = JobFileRow(0, "rows.jsonl", "jsonl", len(data), hashlib.sha256(data).hexdigest(), key)
    await env.q(jobs.insert_job, job, [file])
    return job_id


def plain(count: int) -> bytes:
    return jsonl([{"text": text_of(n), "id": n} for n in range(1, count + 1)])


def test_every_row_once_in_order_with_row_errors_apart(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        rows: list[Any] = [{"text": text_of(n), "id": n} for n in range(1, 24)]
        rows[4] = b"{not json"  # row 5
        rows[9] = {"text": "   ", "id": 10}  # row 10: blank text
        rows[17] = {"id": 18}  # row 18: no text
        job_id = await submit(env, jsonl(rows))
        work = await env.runner.plan(job_id)
        assert [w.idx for w in work] == [0, 1, 2, 3]  # the window
        job = await env.job(job_id)
        assert (job.state, job.rows_total, job.chunks_total) == ("running", 23, 6)
        await env.drain(work)

        job = await env.job(job_id)
        assert (job.state, job.rows_done, job.rows_failed, job.chunks_done) == (
            "succeeded",
            20,
            3,
            6,
        )
        bad = {5, 10, 18}
        results = await env.results(job_id)
        assert [r["row"] for r in results] == [n for n in range(1, 24) if n not in bad]
        assert results[0] == {"row": 1, "columns": {"id": 1}, "prediction": prediction(text_of(1))}
        errors = await env.results(job_id, "errors")
        assert [(e["row"], e["code"]) for e in errors] == [
            (5, "invalid_json"),
            (10, "invalid_text"),
            (18, "missing_text"),
        ]
        # JSONL inputs carry nothing into CSV unless `columns` names them.
        header = (env.storage.root / header_key(job_id)).read_bytes()
        assert header == b"row,label,chars,top\r\n"
        # SQL holds each winning file's exact size (downloads serve ranges from them).
        for done in await env.q(jobs.done_chunks, job_id):
            sizes = [
                (env.storage.root / chunk_key(job_id, done.idx, done.output_token, kind))
                .stat()
                .st_size
                for kind in ("jsonl", "csv", "errors")
            ]
            assert sizes == [done.results_bytes, done.csv_bytes, done.errors_bytes]
        # The ledger counts each row with a prediction once.
        usage = await env.db.run("usage", lambda s: s.execute(select(UsageRow.items)))
        assert sum(usage.scalars()) == 20

    scenario(tmp_path, body)


def test_carried_columns_reach_the_csv(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        data = jsonl([{"text": "a, b", "id": 1, "tags": ["x"]}, {"text": "c", "id": 2}])
        job_id = await submit(env, data, columns=["id", "tags"])
        await env.drain(await env.runner.plan(job_id))
        header = (env.storage.root / header_key(job_id)).read_bytes()
        assert header == b"row,id,tags,label,chars,top\r\n"
        done = (await env.q(jobs.done_chunks, job_id))[0]
        path = env.storage.root / chunk_key(job_id, 0, done.output_token, "csv")
        assert path.read_bytes() == (
            b'1,1,"[""x""]",short,4,"[""a, b""]"\r\n2,2,,short,1,"[""c""]"\r\n'
        )
        assert done.csv_bytes == path.stat().st_size

    scenario(tmp_path, body)


def test_a_done_chunk_runs_no_more(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(10))
        await env.drain(await env.runner.plan(job_id))
        calls, token = len(env.adapter.calls), (await env.chunk(job_id, 0))["output_token"]
        assert await env.runner.run_chunk(job_id, 0) == []
        assert len(env.adapter.calls) == calls
        assert (await env.chunk(job_id, 0))["output_token"] == token
        assert [r["row"] for r in await env.results(job_id)] == list(range(1, 11))

    scenario(tmp_path, body)


def test_twin_deliveries_claim_once(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(8))
        await env.runner.plan(job_id)
        twins = await asyncio.gather(*(env.runner.run_chunk(job_id, 0) for _ in range(2)))
        assert env.adapter.calls == [[1, 2, 3, 4]]
        assert sorted(len(t) for t in twins) == [0, 0]  # chunk 1 was queued by planning
        assert len(env.files_of(job_id, 0)) == 3

    scenario(tmp_path, body)


def test_the_attempt_that_loses_the_commit_deletes_its_files(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(8))
        await env.runner.plan(job_id)
        env.adapter.hold()
        first = asyncio.ensure_future(env.runner.run_chunk(job_id, 0))
        await env.adapter.entered.wait()
        env.clock.now += 31  # its lease ran out: a second attempt takes the chunk
        assert await env.runner.run_chunk(job_id, 0) == []  # chunk 1 was dispatched already
        winner = (await env.chunk(job_id, 0))["output_token"]
        env.adapter.release()
        assert await first == []
        assert env.files_of(job_id, 0) == sorted(
            [
                f"errors/000000-{winner}.jsonl",
                f"results/000000-{winner}.csv",
                f"results/000000-{winner}.jsonl",
            ]
        )
        chunk = await env.chunk(job_id, 0)
        assert (chunk["state"], chunk["attempts"], chunk["output_token"]) == ("done", 2, winner)
        assert (await env.job(job_id)).rows_done == 4  # counted once

    scenario(tmp_path, body)


class Crash(BaseException):
    """A process killed at this point: nothing after it runs, nothing is cleaned up."""


def test_a_crash_between_the_files_and_the_commit_loses_and_doubles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(10))
        work = await env.runner.plan(job_id)
        complete = jobs.complete_chunk

        async def crash_once(*args: Any, **kwargs: Any) -> Any:
            monkeypatch.setattr(jobs, "complete_chunk", complete)
            raise Crash

        monkeypatch.setattr(jobs, "complete_chunk", crash_once)
        with pytest.raises(Crash):
            await env.runner.run_chunk(job_id, 0)
        assert len(env.files_of(job_id, 0)) == 3  # published, referenced by nobody
        chunk = await env.chunk(job_id, 0)
        assert (chunk["state"], chunk["output_token"]) == ("running", None)

        assert await env.runner.run_chunk(job_id, 0) == []  # its lease still holds
        env.clock.now += 31
        await env.drain(work)
        job = await env.job(job_id)
        assert (job.state, job.rows_done, job.chunks_done) == ("succeeded", 10, 3)
        assert [r["row"] for r in await env.results(job_id)] == list(range(1, 11))
        assert len(env.files_of(job_id, 0)) == 6  # the stray three are never read

    scenario(tmp_path, body)


def test_a_retryable_failure_backs_off_then_succeeds(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(4))
        await env.runner.plan(job_id)
        env.adapter.fail(1)
        assert await env.runner.run_chunk(job_id, 0) == []
        chunk = await env.chunk(job_id, 0)
        assert (chunk["state"], chunk["attempts"], chunk["lease_owner"]) == ("queued", 1, None)
        assert NOW + 2 * 0.8 <= chunk["not_before"] <= NOW + 2 * 1.2  # 2 ** attempts, ±20 %
        assert env.files_of(job_id, 0) == []
        waiting = (await env.job(job_id)).waiting
        assert waiting == {"reason": "retrying", "until": chunk["not_before"]}

        assert await env.runner.run_chunk(job_id, 0) == []  # deferred: not claimed yet
        assert len(env.adapter.calls) == 1
        env.clock.now += 3
        assert await env.runner.run_chunk(job_id, 0) == []
        job = await env.job(job_id)
        assert (job.state, job.rows_done, job.waiting) == ("succeeded", 4, None)

    scenario(tmp_path, body)


def test_attempts_over_the_cap_fail_the_job(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(8))
        await env.runner.plan(job_id)
        env.adapter.fail(100)
        assert await env.runner.run_chunk(job_id, 0) == []
        env.clock.now += 10
        assert await env.runner.run_chunk(job_id, 0) == []
        job = await env.job(job_id)
        assert job.state == "failed"
        assert job.error is not None and job.error["code"] == "chunk_failed"
        assert (
            "failed 2 times; the last: overloaded: the fake model is busy" in job.error["message"]
        )
        assert [(await env.chunk(job_id, i))["state"] for i in (0, 1)] == ["skipped", "skipped"]
        assert await env.runner.run_chunk(job_id, 1) == []
        assert len(env.adapter.calls) == 2

    scenario(tmp_path, body, max_chunk_attempts=2)


def test_attempts_that_died_count_toward_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(4))
        await env.runner.plan(job_id)

        async def crash(*args: Any, **kwargs: Any) -> Any:
            raise Crash

        monkeypatch.setattr(jobs, "complete_chunk", crash)
        with pytest.raises(Crash):
            await env.runner.run_chunk(job_id, 0)
        env.clock.now += 31
        assert await env.runner.run_chunk(job_id, 0) == []
        job = await env.job(job_id)
        assert job.state == "failed" and job.error is not None
        assert job.error == {
            "code": "chunk_failed",
            "message": "chunk 0 did not finish in 1 attempts",
        }
        assert len(env.adapter.calls) == 1

    scenario(tmp_path, body, max_chunk_attempts=1)


def test_a_fatal_error_fails_the_job(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(8))
        await env.runner.plan(job_id)
        env.adapter.fail(1, ModelNotFound)
        assert await env.runner.run_chunk(job_id, 0) == []
        job = await env.job(job_id)
        assert job.state == "failed"
        assert job.error == {"code": "model_not_found", "message": "the fake model is busy"}

    scenario(tmp_path, body)


def test_cancel_mid_job_starts_nothing_new_and_keeps_what_is_done(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(24))  # 6 chunks, 4 queued at once
        await env.runner.plan(job_id)
        assert await env.runner.run_chunk(job_id, 0) == [Work("chunk", job_id, 4)]
        env.adapter.hold()
        running = asyncio.ensure_future(env.runner.run_chunk(job_id, 1))
        await env.adapter.entered.wait()
        assert await env.q(jobs.transition, job_id, "cancelling", env.clock.now)

        assert await env.runner.run_chunk(job_id, 2) == []  # skipped, never sent
        assert (await env.chunk(job_id, 2))["state"] == "skipped"
        assert (await env.job(job_id)).state == "cancelling"  # chunk 1 still runs
        env.adapter.release()
        assert await running == []  # it commits, and dispatches nothing
        job = await env.job(job_id)
        assert (job.state, job.rows_done, job.chunks_done) == ("cancelled", 8, 2)
        assert [r["row"] for r in await env.results(job_id)] == list(range(1, 9))
        for idx in (3, 4, 5):
            assert await env.runner.run_chunk(job_id, idx) == []
            assert (await env.chunk(job_id, idx))["state"] == "skipped"
        assert env.adapter.calls == [[1, 2, 3, 4], [5, 6, 7, 8]]

    scenario(tmp_path, body)


def test_the_last_running_chunk_of_a_cancelling_job_ends_it(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(8))
        await env.runner.plan(job_id)
        await env.q(jobs.transition, job_id, "cancelling", env.clock.now)
        assert await env.runner.run_chunk(job_id, 1) == []
        job = await env.job(job_id)
        assert (job.state, job.rows_done) == ("cancelled", 0)
        assert env.adapter.calls == []

    scenario(tmp_path, body)


def test_a_refused_row_is_a_row_error_and_its_neighbours_are_predicted(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        texts = ["fine one", f"please {REFUSED} me", "fine two", "fine three"]
        job_id = await submit(env, jsonl(texts))  # bare JSON strings are texts too
        await env.drain(await env.runner.plan(job_id))
        results = await env.results(job_id)
        assert [(r["row"], r["prediction"]) for r in results] == [
            (1, prediction("fine one")),
            (3, prediction("fine two")),
            (4, prediction("fine three")),
        ]
        assert await env.results(job_id, "errors") == [
            {"row": 2, "code": "model_refused", "reason": "the model refused this text"}
        ]
        # Sub-batches of 3: the refused one is sent again without the refused text.
        # Sub-batches of 3 (sent concurrently, so in either order): the refused one is
        # sent again without the refused text.
        assert sorted(env.adapter.sent) == [
            ["fine one", "fine two"],
            ["fine one", f"please {REFUSED} me", "fine two"],
            ["fine three"],
        ]
        job = await env.job(job_id)
        assert (job.rows_done, job.rows_failed) == (3, 1)

    scenario(tmp_path, body)


def test_a_cancelled_attempt_gives_its_chunk_back(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(4))
        await env.runner.plan(job_id)
        env.adapter.hold()
        attempt = asyncio.ensure_future(env.runner.run_chunk(job_id, 0))
        await env.adapter.entered.wait()
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
        chunk = await env.chunk(job_id, 0)
        assert (chunk["state"], chunk["lease_owner"], chunk["not_before"]) == ("queued", None, None)
        env.adapter.release()
        assert await env.runner.run_chunk(job_id, 0) == []  # at once, by the next start
        assert (await env.job(job_id)).state == "succeeded"

    scenario(tmp_path, body)


def test_planning_adds_chunks_in_batches_and_only_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, jsonl([f"t{n}" for n in range(2_100)]))
        batches: list[int] = []
        add = jobs.add_chunks

        async def counted(s: Any, job_id: str, plans: Any) -> None:
            batches.append(len(plans))
            await add(s, job_id, plans)

        monkeypatch.setattr(jobs, "add_chunks", counted)
        work = await env.runner.plan(job_id)
        assert batches == [1_000, 1_000, 100]
        assert [w.idx for w in work] == [0, 1, 2, 3]
        assert await env.runner.plan(job_id) == []  # a duplicate planning message
        job = await env.job(job_id)
        assert (job.rows_total, job.chunks_total, job.seq) == (2_100, 2_100, 1)

    scenario(tmp_path, body, chunk_rows=1)


def test_a_job_of_no_rows_succeeds_at_planning(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, b"\n\n")
        assert await env.runner.plan(job_id) == []
        job = await env.job(job_id)
        assert (job.state, job.rows_total, job.chunks_total) == ("succeeded", 0, 0)

    scenario(tmp_path, body)


def test_a_task_without_an_adapter_fails_at_planning(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(2), task="text-generation")
        assert await env.runner.plan(job_id) == []
        job = await env.job(job_id)
        assert job.state == "failed"
        assert job.error == {
            "code": "task_not_supported",
            "message": "text-generation jobs are not supported yet (model 'intent')",
        }

    scenario(tmp_path, body)


def test_files_are_private(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job_id = await submit(env, plain(2))
        await env.drain(await env.runner.plan(job_id))
        for name in env.files_of(job_id, 0):
            mode = os.stat(env.storage.root / "jobs" / job_id / name).st_mode
            assert mode & 0o077 == 0

    scenario(tmp_path, body)
