"""Batch jobs on Celery: a private Redis broker, two real worker processes
(`python -m frontend worker`), the frontend as deployed (`serve`) and the session's real
Triton, all sharing one SQLite database file and one storage directory.

- a 20 000-row JSONL upload runs to the end and equals the synchronous predict API, row
  by row;
- SIGKILLing a worker 20 times during one job (the whole worker, or only its pool child)
  loses and doubles no row, counted from the downloaded results;
- FLUSHALL of the broker mid-job loses nothing: the reconciler sends the work again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import jobs_http as jobs
from . import jobs_support
from .jobs_support import CeleryWorker, worker_env
from .stack import Stack, create_key, private_redis, sqlite_url

pytestmark = pytest.mark.integration


class Cluster:
    """A frontend and two Celery workers on one database, broker and storage."""

    def __init__(
        self,
        triton: Any,
        repository: Path,
        tmp: Path,
        settings: dict[str, str],
        serve_workers: int = 0,
    ):
        """`serve_workers`: the workers started by `serve --job-workers N` instead of two
        of the test's own (which a test can kill)."""
        self.tmp = tmp
        self.redis = private_redis(tmp)
        self.database = sqlite_url(tmp)
        env = worker_env(
            database_url=self.database,
            broker_url=f"redis://127.0.0.1:{self.redis.port}/1",
            storage_dir=tmp / "jobs",
            triton_url=triton.grpc_url,
            repository=repository,
            extra=settings,
        )
        self.workers: list[CeleryWorker] = []
        args = ("--job-workers", str(serve_workers)) if serve_workers else ()
        self.stack = Stack(triton, repository, tmp, database_url=self.database, env=env, args=args)
        try:
            # After the stack: `serve` has migrated the database the workers open.
            for name in ("w1", "w2") if not serve_workers else ():
                self.workers.append(CeleryWorker(env, tmp / f"{name}.log", name).start())
            self.key = create_key(self.stack.url)["key"]
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return self.stack.url

    def upload(self, rows: list[str]) -> dict[str, Any]:
        r = httpx.post(
            self.url + "/v1/jobs",
            headers=jobs.headers(self.key),
            data={"model": "intent"},
            files={"file": ("rows.jsonl", jobs.jsonl(rows), "application/x-ndjson")},
            timeout=120,
        )
        assert r.status_code == 201, r.text
        job: dict[str, Any] = r.json()
        return job

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.stack.stop()
        self.redis.kill()


@pytest.fixture
def cluster_of(triton: Any, repository: Path, tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(serve_workers: int = 0, **settings: str) -> Cluster:
        env = {f"INFERGATE_JOBS__{k.upper()}": v for k, v in settings.items()}
        made.append(Cluster(triton, repository, tmp_path, env, serve_workers))
        return made[-1]

    yield make
    for cluster in made:
        cluster.close()


def _finished_cleanly(cluster: Cluster, job_id: str, total: int) -> list[dict[str, Any]]:
    done = jobs.wait_finished(cluster.url, cluster.key, job_id, timeout_s=900)
    assert done["state"] == "succeeded", done
    progress = done["progress"]
    assert (progress["rows_total"], progress["rows_done"], progress["rows_failed"]) == (
        total,
        total,
        0,
    )
    rows = jobs.results(cluster.url, cluster.key, job_id)
    jobs.assert_each_row_once(rows, total)
    assert jobs.errors(cluster.url, cluster.key, job_id) == []
    return rows


def test_20000_rows_equal_the_predict_api(cluster_of: Any) -> None:
    cluster = cluster_of()
    texts = jobs.texts(20_000, seed=23)
    job = cluster.upload(texts)
    assert job["files"][0]["bytes"] == len(jobs.jsonl(texts))
    rows = _finished_cleanly(cluster, job["id"], len(texts))
    jobs.assert_equal_to_sync(rows, jobs.sync_predictions(cluster.url, cluster.key, texts))
    # Both workers took chunk tasks (Celery logs each task a worker receives).
    took = [w.name for w in cluster.workers if jobs_support.TASK_LOG in w.log.read_text()]
    assert took == ["w1", "w2"], took


def test_twenty_sigkills_lose_and_duplicate_no_row(cluster_of: Any) -> None:
    cluster = cluster_of(
        chunk_rows="64",
        lease_s="2",
        reconcile_s="0.5",
        redispatch_s="5",
        chunk_timeout_s="20",
        visibility_timeout_s="90",
        max_chunk_attempts="100",
    )
    texts = jobs.texts(25_600, seed=29)  # 400 chunks
    job = cluster.upload(texts)
    kills = 0
    seen = 0
    for i in range(20):
        # Each kill lands after more work was committed: the job moves between kills.
        state = jobs.wait_until(
            cluster.url,
            cluster.key,
            job["id"],
            lambda j, last=seen: j["state"] in jobs.TERMINAL or j["progress"]["chunks_done"] > last,
            f"progress before kill {i + 1}",
            timeout_s=180,
        )
        assert state["state"] == "running", f"the job ended after {kills} kills: {state}"
        seen = state["progress"]["chunks_done"]
        worker = cluster.workers[i % 2]
        if i % 4 < 2:
            worker.kill()  # the main process and its pool child: a host gone
            worker.start()
        else:
            worker.wait_child()
            worker.kill_child()  # only the pool child: Celery rejects its message
        kills += 1
    assert kills == 20
    rows = _finished_cleanly(cluster, job["id"], len(texts))
    assert len(rows) == len(texts)
    print(f"\n20 SIGKILLs during a {len(texts)}-row job: 0 rows lost, 0 doubled")


def test_flushall_mid_job_loses_nothing(cluster_of: Any) -> None:
    """Also `serve --job-workers 2`: the workers `serve` starts beside itself."""
    cluster = cluster_of(serve_workers=2, chunk_rows="64", redispatch_s="2", reconcile_s="0.5")
    texts = jobs.texts(6_400, seed=31)
    job = cluster.upload(texts)
    jobs.wait_until(
        cluster.url,
        cluster.key,
        job["id"],
        lambda j: j["progress"]["chunks_done"] >= 2,
        "the first chunks done",
        timeout_s=180,
    )
    client = cluster.redis.client()
    assert client.flushall()
    assert client.dbsize() == 0  # queued tasks and unacked copies gone
    _finished_cleanly(cluster, job["id"], len(texts))
