"""The outbox in SQL and its dispatcher's rules: an event commits with the job's state
change or not at all; a delivery is claimed by one dispatcher while its lease holds and
comes back when it ends; the retry schedule's full jitter stays under its ceilings and
ends with the window; a backed-up outbox degrades readiness, never fails it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from frontend.db import jobs as jobs_db
from frontend.db import notifications as outbox
from frontend.db.database import Database
from frontend.db.jobs import JobRow
from frontend.db.startup import open_database
from frontend.db.tables import WebhookRecord
from frontend.notify.dispatcher import next_attempt_at
from frontend.notify_settings import NotifySettings
from frontend.observability.metrics import Metrics
from frontend.settings import DatabaseSettings, Settings

from .job_app import job_app


def job_row(job_id: str, owner: str) -> JobRow:
    return JobRow(
        id=job_id,
        owner=owner,
        account=owner,
        subject=owner,
        tier="free",
        model="intent",
        version="1",
        task="text-classification",
        created_at=1.0,
        updated_at=1.0,
    )


def _settings(tmp_path: Path) -> Settings:
    url = f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
    return Settings(environment="test", database=DatabaseSettings(url=url))


async def _with_db(tmp_path: Path, scenario) -> None:
    db = await open_database(_settings(tmp_path), Metrics())
    try:
        await scenario(db)
    finally:
        await db.close()


async def _hook(db: Database, owner: str, events: list[str]) -> str:
    hook_id = outbox.new_id("wh")

    async def add(s) -> None:
        s.add(
            WebhookRecord(
                id=hook_id,
                owner=owner,
                url="https://hooks.example.com/x",
                events=events,
                enabled=True,
                secret="sealed",
                consecutive_failures=0,
                created_at=1.0,
                updated_at=1.0,
            )
        )

    await db.run("test", add)
    return hook_id


def test_the_event_commits_with_the_state_change_or_not_at_all(tmp_path):
    async def scenario(db: Database) -> None:
        await _hook(db, "key:a", ["job.cancelled"])
        job = job_row("job_one", owner="key:a")
        await db.run("test", lambda s: jobs_db.insert_job(s, job, []))

        async def cancel_then_fail(s) -> None:
            assert await jobs_db.transition(s, job.id, "cancelled", 10.0)
            raise RuntimeError("the transaction fails after the state change")

        with pytest.raises(RuntimeError):
            await db.run("test", cancel_then_fail)
        assert await db.run("test", lambda s: outbox.claim_due(s, 99.0, 10, "w", 5.0)) == []

        await db.run("test", lambda s: jobs_db.transition(s, job.id, "cancelled", 10.0))
        (due,) = await db.run("test", lambda s: outbox.claim_due(s, 99.0, 10, "w", 5.0))
        assert due.type == "job.cancelled" and due.payload["data"]["job"]["id"] == job.id
        assert due.event_at == 10.0 and due.channel == "webhook" and due.live

    asyncio.run(_with_db(tmp_path, scenario))


def test_a_claimed_delivery_is_nobody_elses_until_its_lease_ends(tmp_path):
    async def scenario(db: Database) -> None:
        await _hook(db, "key:a", ["job.cancelled"])
        job = job_row("job_two", owner="key:a")
        await db.run("test", lambda s: jobs_db.insert_job(s, job, []))
        await db.run("test", lambda s: jobs_db.transition(s, job.id, "cancelled", 10.0))
        first = await db.run("test", lambda s: outbox.claim_due(s, 11.0, 10, "one", 5.0))
        second = await db.run("test", lambda s: outbox.claim_due(s, 12.0, 10, "two", 5.0))
        assert len(first) == 1 and second == []
        # The first dispatcher died: after the lease, another takes it (same event id).
        again = await db.run("test", lambda s: outbox.claim_due(s, 16.5, 10, "two", 5.0))
        assert [d.event_id for d in again] == [first[0].event_id]

    asyncio.run(_with_db(tmp_path, scenario))


def test_no_listener_writes_no_event(tmp_path):
    async def scenario(db: Database) -> None:
        await _hook(db, "key:a", ["job.failed"])  # another event type
        job = job_row("job_three", owner="key:a")
        await db.run("test", lambda s: jobs_db.insert_job(s, job, []))
        await db.run("test", lambda s: jobs_db.transition(s, job.id, "cancelled", 10.0))
        count, oldest = await db.run("test", lambda s: outbox.backlog(s, 99.0))
        assert (count, oldest) == (0, None)

    asyncio.run(_with_db(tmp_path, scenario))


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_retries_stay_under_their_ceilings_and_end_with_the_window(draw):
    settings = NotifySettings(retry_base_s=30, retry_max_s=3600, retry_window_s=86400)
    ceilings = [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    for attempts, ceiling in enumerate(ceilings, start=1):
        at = next_attempt_at(attempts, 0.0, 1000.0, settings, lambda: draw)
        assert at is not None and 1000.0 <= at <= 1000.0 + ceiling
        assert at == pytest.approx(1000.0 + draw * ceiling)
    # Near the window's end, the last attempt comes at the end; past it, none.
    assert next_attempt_at(30, 0.0, 86399.0, settings, lambda: 0.999) == 86400.0
    assert next_attempt_at(30, 0.0, 86400.0, settings, lambda: 0.0) is None
    assert next_attempt_at(30, 0.0, 90000.0, settings, lambda: 0.0) is None


def test_a_backed_up_outbox_degrades_readiness(tmp_path):
    notify = {"backlog_degraded": 1, "dispatcher": "off"}
    with job_app(tmp_path, executor="off", notify=notify) as app:
        ready = app.client.get("/health/ready").json()
        assert ready["components"]["outbox"]["status"] == "up"
        r = app.client.post("/v1/webhooks", json={"url": "https://93.184.216.34/hook"})
        assert r.status_code == 201, r.text
        for _ in range(2):  # two due deliveries (the dispatcher is off): over the limit
            job = app.submit({"model": "intent", "inputs": ["a"]}).json()
            app.client.delete(f"/v1/jobs/{job['id']}")
        app.services.readiness._answer = None  # the cached "ready" answer
        shown = app.client.get("/health/ready")
        assert shown.status_code == 200 and shown.json()["status"] == "degraded"
        outbox_component = shown.json()["components"]["outbox"]
        assert outbox_component == {**outbox_component, "status": "down", "required": False}
        assert outbox_component["detail"] == "OutboxBacklogged"


def test_a_dispatcher_leaves_alone_a_delivery_another_has_taken_since(tmp_path):
    async def scenario(db: Database) -> None:
        await _hook(db, "key:a", ["job.cancelled"])
        job = job_row("job_four", owner="key:a")
        await db.run("test", lambda s: jobs_db.insert_job(s, job, []))
        await db.run("test", lambda s: jobs_db.transition(s, job.id, "cancelled", 10.0))
        (late,) = await db.run("test", lambda s: outbox.claim_due(s, 11.0, 10, "one", 5.0))
        # "one" overran its lease; "two" took the delivery and is sending it.
        (taken,) = await db.run("test", lambda s: outbox.claim_due(s, 17.0, 10, "two", 5.0))
        failed = outbox.Attempt(18.0, 500, 3.0, "HTTP 500", False, None)
        recorded = await db.run(
            "test", lambda s: outbox.record_attempt(s, late, failed, disable_after=1, owner="one")
        )
        assert recorded.state == "pending" and not recorded.disabled_webhook
        ok = outbox.Attempt(18.5, 200, 2.0, None, True, None)
        done = await db.run(
            "test", lambda s: outbox.record_attempt(s, taken, ok, disable_after=1, owner="two")
        )
        assert done.state == "delivered"

    asyncio.run(_with_db(tmp_path, scenario))


class _Broken:
    async def post(self, url, body, headers):
        raise RuntimeError("a bug in sending")


def test_a_delivery_whose_sending_raises_is_recorded_and_backs_off(tmp_path):
    from frontend.notify.dispatcher import Notifier
    from frontend.notify.mailer import Mailer
    from frontend.notify.secret_box import SecretBox

    async def scenario(db: Database) -> None:
        settings = NotifySettings(retry_base_s=30)
        box = SecretBox(b"k" * 32)
        hook_id = await _hook(db, "key:a", ["job.cancelled"])

        async def sealed(s) -> None:
            row = await s.get(WebhookRecord, hook_id)
            row.secret = box.seal("whsec_x", context=hook_id)

        await db.run("test", sealed)
        job = job_row("job_five", owner="key:a")
        await db.run("test", lambda s: jobs_db.insert_job(s, job, []))
        await db.run("test", lambda s: jobs_db.transition(s, job.id, "cancelled", 10.0))
        clock = iter([20.0, 20.0, 20.0, 20.0])
        notifier = Notifier(
            db,
            settings,
            client=_Broken(),  # type: ignore[arg-type]
            mailer=Mailer(settings.mail),
            box=box,
            metrics=Metrics(),
            owner="w",
            clock=lambda: next(clock, 20.0),
            rng=lambda: 0.5,
        )
        (due,) = await notifier.claim(10)
        await notifier._guarded(due)
        found = await db.run("test", lambda s: outbox.webhook_deliveries(s, hook_id, None, 10))
        (delivery,) = found
        assert delivery["state"] == "pending" and delivery["attempts"] == 1
        assert delivery["log"][0]["error"] == "internal error (RuntimeError)"
        assert delivery["next_attempt_at"] == pytest.approx(20.0 + 0.5 * 30)

    asyncio.run(_with_db(tmp_path, scenario))
