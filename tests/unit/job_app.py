"""The real app for the batch-jobs API tests: the fake Triton of test_frontend_errors.py
(under the real TritonClient, a batch client of its own with the batch priority), a
SQLite FILE database (so concurrent transactions really race) and job storage in a temp
directory; the executor chosen by the test ("local" runs the jobs in the app's loop,
"off" only keeps them).

Waits poll with a deadline, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from frontend.app import create_app
from frontend.container import ServiceOverrides, Services, services_of
from frontend.jobs.dispatch import Dispatcher
from frontend.settings import (
    AuthSettings,
    DatabaseSettings,
    LimitSettings,
    Settings,
    Tier,
    TritonSettings,
)
from frontend.triton.client import TritonClient

from .cards import WITH_KINDS, Served, write_cards
from .test_frontend_errors import ADMIN_KEY, FakeTriton

TERMINAL = ("succeeded", "failed", "cancelled")
# Tiers of the test's users: one without job limits, and a small one.
TIERS = {
    "unlimited": Tier(rate=[]),
    "free": Tier(rate=[]),
    "roomy": Tier(rate=[], job_rows_per_day=None, max_concurrent_jobs=None),
    "small": Tier(rate=[], job_rows_per_day=10, max_concurrent_jobs=1),
}


class RecordingTriton(FakeTriton):
    """The fake Triton, and the priority each request carried."""

    def __init__(self) -> None:
        super().__init__()
        self.priorities: list[int] = []

    async def infer(self, model, inputs, model_version="", outputs=(), **kwargs):
        self.priorities.append(int(kwargs.get("priority", 0)))
        return await super().infer(model, inputs, model_version, outputs, **kwargs)


@dataclass
class JobApp:
    client: TestClient
    fake: RecordingTriton
    settings: Settings
    root: Path

    @property
    def services(self) -> Services:
        found = services_of(self.client.app)  # type: ignore[arg-type]
        assert found is not None
        return found

    def key(self, name: str, tier: str = "roomy", **body: Any) -> str:
        """A new user-role API key (its own owner and account)."""
        r = self.client.post("/v1/admin/keys", json={"name": name, "tier": tier, **body})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    def as_key(self, key: str) -> dict[str, str]:
        return {"X-API-Key": key}

    def submit(self, body: dict[str, Any], *, key: str = ADMIN_KEY, **headers: str) -> Any:
        return self.client.post("/v1/jobs", json=body, headers={"X-API-Key": key, **headers})

    def job(self, job_id: str, key: str = ADMIN_KEY) -> dict[str, Any]:
        r = self.client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found

    def wait(
        self,
        job_id: str,
        done: Callable[[dict[str, Any]], bool] = lambda j: j["state"] in TERMINAL,
        *,
        key: str = ADMIN_KEY,
        timeout_s: float = 30.0,
    ) -> dict[str, Any]:
        """Polls the job (every 20 ms) until `done(job)`, failing after the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id, key)
            if done(job):
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['state']}: {job}"
            time.sleep(0.02)


def job_settings(
    tmp_path: Path,
    *,
    executor: str = "local",
    served: tuple[Served, ...] = WITH_KINDS,
    notify: dict[str, Any] | None = None,
    **jobs: Any,
) -> Settings:
    return Settings(
        environment="test",
        triton=TritonSettings(model_repository=write_cards(tmp_path / "repo", served)),
        database=DatabaseSettings(
            url=f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}",
            deadline_s=20.0,
            statement_timeout_s=10.0,
        ),
        auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY, tiers=TIERS),
        limits=LimitSettings(max_batch_items=8, max_input_chars=100),
        jobs={
            "executor": executor,
            "storage_dir": tmp_path / "store",
            "fsync": False,
            "chunk_rows": 4,
            "triton_batch_rows": 3,
            "reconcile_s": 0.2,
            "min_free_bytes": 0,
            **jobs,
        },
        # Webhook receivers of the tests listen on loopback; retries in tenths of seconds.
        notify={
            "allow_loopback": True,
            "poll_s": 0.05,
            "retry_base_s": 0.1,
            "retry_max_s": 0.4,
            "lease_s": 10.0,
            "timeout_s": 5.0,
            **(notify or {}),
        },
    )


@contextmanager
def job_app(
    tmp_path: Path,
    *,
    executor: str = "local",
    dispatcher: Callable[[Settings], Dispatcher] | None = None,
    served: tuple[Served, ...] = WITH_KINDS,
    notify: dict[str, Any] | None = None,
    resolver: Any = None,
    **jobs: Any,
) -> Iterator[JobApp]:
    """`dispatcher`: made from the settings in place of the executor's (e.g. a Celery
    dispatcher over a fake broker); `served`: the models of the repository."""
    settings = job_settings(tmp_path, executor=executor, served=served, notify=notify, **jobs)
    fake = RecordingTriton()
    overrides = ServiceOverrides(
        triton=TritonClient(settings.triton, fake),
        batch_triton=TritonClient(settings.triton, fake, priority=settings.jobs.triton_priority),
        dispatcher=dispatcher(settings) if dispatcher is not None else None,
        resolver=resolver,
    )
    app = create_app(settings, overrides)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": ADMIN_KEY}) as c:
        yield JobApp(c, fake, settings, tmp_path)
