"""The notification outbox in SQL: events written in the transaction of the job state
change that causes them, one delivery row per destination, claimed with a lease by a
dispatcher, every attempt logged.

A crash anywhere loses nothing: the event and its deliveries commit with the state
change or not at all; a dispatcher killed after claiming leaves the delivery pending
under a lease that expires (it is then sent again, under the same event id: receivers
de-duplicate on Webhook-Id)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, delete, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from .database import WAKE_FLAG
from .ids import new_id
from .job_types import JOBS, rowcount
from .tables import (
    NotificationAttemptRecord,
    NotificationDeliveryRecord,
    NotificationEventRecord,
    UserRow,
    WebhookRecord,
)

EVENTS = cast(Table, NotificationEventRecord.__table__)
DELIVERIES = cast(Table, NotificationDeliveryRecord.__table__)
ATTEMPTS = cast(Table, NotificationAttemptRecord.__table__)
WEBHOOKS = cast(Table, WebhookRecord.__table__)
USERS = cast(Table, UserRow.__table__)
JOB_EVENT_TYPES = ("job.succeeded", "job.failed", "job.cancelled", "job.progress")
# Sent by e-mail to a webhook's owner when it is disabled; never to a webhook.
WEBHOOK_DISABLED = "webhook.disabled"
# `Database.run` wakes this process's dispatcher after a commit that set this flag.
WAKE = WAKE_FLAG
e, d, a, w = EVENTS.c, DELIVERIES.c, ATTEMPTS.c, WEBHOOKS.c


def job_summary(job: Any) -> dict[str, Any]:
    """What an event says of its job (the status route's facts, without its files)."""
    base = f"/v1/jobs/{job.id}"
    return {
        "id": job.id,
        "state": job.state,
        "model": job.model,
        "version": job.version,
        "task": job.task,
        "rows_total": job.rows_total,
        "rows_done": job.rows_done,
        "rows_failed": job.rows_failed,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "error": job.error,
        "metadata": job.meta,
        "links": {"self": base, "results": f"{base}/results", "errors": f"{base}/errors"},
    }


async def enqueue_event(
    session: AsyncSession,
    *,
    type: str,
    owner: str,
    account: str,
    data: dict[str, Any],
    now: float,
    job_id: str | None = None,
    callback: tuple[str, str | None] | None = None,
    email: bool = False,
) -> str | None:
    """The event and a pending delivery for each destination: the owner's enabled
    webhooks subscribed to `type`, the one-off callback (URL, sealed secret), an e-mail
    to the account's verified address. None (nothing written) when no one listens."""
    destinations: list[dict[str, Any]] = []
    if type != WEBHOOK_DISABLED:
        hooks = await session.execute(
            select(w.id, w.events).where(w.owner == owner, w.enabled == true())
        )
        destinations += [
            {"channel": "webhook", "webhook_id": hook_id}
            for hook_id, events in hooks.all()
            if type in (events or ())
        ]
    if callback is not None:
        destinations.append({"channel": "callback", "target": callback[0], "secret": callback[1]})
    if email:
        destinations.append({"channel": "email"})
    if not destinations:
        return None
    event_id = new_id("evt")
    payload = {"id": event_id, "type": type, "created_at": now, "data": data}
    await session.execute(
        EVENTS.insert().values(
            id=event_id, type=type, job_id=job_id, owner=owner, created_at=now, payload=payload
        )
    )
    await session.execute(
        DELIVERIES.insert(),
        [
            {
                "id": new_id("dlv"),
                "event_id": event_id,
                "channel": dest["channel"],
                "webhook_id": dest.get("webhook_id"),
                "target": dest.get("target"),
                "secret": dest.get("secret"),
                "account": account,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for dest in destinations
        ],
    )
    session.info[WAKE] = True
    return event_id


async def enqueue_job_event(session: AsyncSession, job_id: str, type: str, now: float) -> None:
    """The job's event, read in the transaction that just changed it."""
    job = (await session.execute(select(JOBS).where(JOBS.c.id == job_id))).first()
    if job is None:
        return
    # The job's own callback and e-mail are told of its end only; job.progress goes to
    # the webhooks that subscribe to it.
    notify = (job.notify or {}) if type != "job.progress" else {}
    url = notify.get("callback_url")
    email = bool(notify.get("email"))
    await enqueue_event(
        session,
        type=type,
        owner=job.owner,
        account=job.account,
        data={"job": job_summary(job)},
        now=now,
        job_id=job_id,
        callback=(url, notify.get("callback_secret")) if url else None,
        email=email,
    )


async def progress_due(
    session: AsyncSession, job_id: str, owner: str, now: float, interval_s: float
) -> bool:
    """Whether a running job's job.progress event may be written now: only when one of
    its owner's webhooks subscribes (the one query a chunk commit pays otherwise), and at
    most one per `interval_s` per job (the newest one's time is the bound)."""
    hooks = await session.execute(select(w.events).where(w.owner == owner, w.enabled == true()))
    if not any("job.progress" in (events or ()) for (events,) in hooks.all()):
        return False
    newest = (
        await session.execute(
            select(func.max(e.created_at)).where(e.job_id == job_id, e.type == "job.progress")
        )
    ).scalar()
    return newest is None or now - newest >= interval_s


@dataclass(frozen=True, slots=True)
class Due:
    """A claimed delivery with what sending it needs."""

    id: str
    event_id: str
    type: str
    payload: dict[str, Any]
    event_at: float
    since: float  # the delivery's creation: its retry window starts here
    channel: str
    webhook_id: str | None
    target: str | None  # the URL (webhook: its current one; callback: the job's)
    secrets: tuple[str, ...]  # sealed, newest first
    account: str
    attempts: int
    live: bool  # a webhook delivery whose webhook is gone or disabled is not sent


async def claim_due(
    session: AsyncSession, now: float, limit: int, owner: str, lease_s: float
) -> list[Due]:
    """Up to `limit` due deliveries, each leased to `owner` by a conditional UPDATE (two
    dispatchers never both claim one while its lease holds)."""
    free = or_(d.lease_until.is_(None), d.lease_until < now)
    found = await session.execute(
        select(d.id)
        .where(d.state == "pending", d.next_attempt_at <= now, free)
        .order_by(d.next_attempt_at)
        .limit(limit)
    )
    claimed: list[str] = []
    for (delivery_id,) in found.all():
        # The whole condition again: another dispatcher may have claimed or rescheduled
        # it since the SELECT.
        took = await session.execute(
            update(DELIVERIES)
            .where(d.id == delivery_id, d.state == "pending", d.next_attempt_at <= now, free)
            .values(lease_owner=owner, lease_until=now + lease_s)
        )
        if rowcount(took) == 1:
            claimed.append(delivery_id)
    if not claimed:
        return []
    rows = await session.execute(
        select(
            DELIVERIES,
            e.type,
            e.payload,
            e.created_at.label("event_at"),
            w.url,
            w.enabled,
            w.secret.label("webhook_secret"),
            w.previous_secret,
            w.previous_valid_until,
        )
        .join(EVENTS, e.id == d.event_id)
        .outerjoin(WEBHOOKS, w.id == d.webhook_id)
        .where(d.id.in_(claimed))
    )
    return [_due(row, now) for row in rows.all()]


def _due(row: Any, now: float) -> Due:
    if row.channel == "webhook":
        sealed = [row.webhook_secret] if row.webhook_secret else []
        if row.previous_secret and (row.previous_valid_until or 0) > now:
            sealed.append(row.previous_secret)
        target, live = row.url, bool(row.enabled)
    else:
        sealed = [row.secret] if row.secret else []
        target, live = row.target, True
    return Due(
        id=row.id,
        event_id=row.event_id,
        type=row.type,
        payload=row.payload,
        event_at=row.event_at,
        since=row.created_at,
        channel=row.channel,
        webhook_id=row.webhook_id,
        target=target,
        secrets=tuple(sealed),
        account=row.account,
        attempts=row.attempts,
        live=live,
    )


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float
    status: int | None
    latency_ms: float
    error: str | None
    delivered: bool
    next_attempt_at: float | None  # None when it was the last one (or delivered)


@dataclass(frozen=True, slots=True)
class Recorded:
    state: str  # the delivery's: "delivered" | "pending" | "failed"
    disabled_webhook: bool  # this failure disabled its webhook


async def record_attempt(
    session: AsyncSession,
    due: Due,
    attempt: Attempt,
    *,
    disable_after: int,
    owner: str,
    notice: dict[str, Any] | None = None,
) -> Recorded:
    """The attempt logged and the delivery moved: delivered; pending again at
    `next_attempt_at`; or failed for good, which counts against its webhook (disabled
    after `disable_after` failed events in a row; a delivered one resets the count; a
    disabling failure queues the `webhook.disabled` e-mail with `notice`, here, in this
    transaction). Only while the lease is `owner`'s or free: a dispatcher whose lease
    ran out and was taken by another logs its attempt and leaves the delivery alone."""
    number = due.attempts + 1
    error = attempt.error[:512] if attempt.error else None
    await session.execute(
        ATTEMPTS.insert().values(
            delivery_id=due.id,
            attempt=number,
            at=attempt.at,
            status=attempt.status,
            latency_ms=attempt.latency_ms,
            error=error,
            next_attempt_at=attempt.next_attempt_at,
        )
    )
    values: dict[str, Any] = {
        "attempts": number,
        "last_status": attempt.status,
        "last_error": error,
        "last_latency_ms": attempt.latency_ms,
        "lease_owner": None,
        "lease_until": None,
    }
    if attempt.delivered:
        state = "delivered"
        values |= {"state": state, "delivered_at": attempt.at, "finished_at": attempt.at}
    elif attempt.next_attempt_at is not None:
        state = "pending"
        values |= {"next_attempt_at": attempt.next_attempt_at}
    else:
        state = "failed"
        values |= {"state": state, "finished_at": attempt.at}
    # Only a pending delivery moves (a twin delivered meanwhile stays delivered), and only
    # while no other dispatcher holds it.
    ours = or_(d.lease_owner == owner, d.lease_owner.is_(None), d.lease_until < attempt.at)
    moved = await session.execute(
        update(DELIVERIES).where(d.id == due.id, d.state == "pending", ours).values(values)
    )
    disabled = False
    if rowcount(moved) == 1 and due.webhook_id is not None and state != "pending":
        disabled = await _count_on_webhook(
            session, due.webhook_id, state, attempt.at, disable_after
        )
        if disabled:
            await _queue_disabled_notice(session, due, attempt.at, notice or {})
    return Recorded(state if rowcount(moved) == 1 else "pending", disabled)


async def _queue_disabled_notice(
    session: AsyncSession, due: Due, now: float, notice: dict[str, Any]
) -> None:
    """The owner's e-mail that their webhook was disabled (when they have an address)."""
    found = await session.execute(select(w.owner, w.url).where(w.id == due.webhook_id))
    row = found.first()
    if row is None:
        return
    data = {"webhook": {"id": due.webhook_id, "url": row.url}, **notice}
    await enqueue_event(
        session,
        type=WEBHOOK_DISABLED,
        owner=row.owner,
        account=row.owner,
        data=data,
        now=now,
        email=True,
    )


async def _count_on_webhook(
    session: AsyncSession, webhook_id: str, state: str, at: float, disable_after: int
) -> bool:
    if state == "delivered":
        await session.execute(
            update(WEBHOOKS)
            .where(w.id == webhook_id)
            .values(consecutive_failures=0, last_delivered_at=at)
        )
        return False
    await session.execute(
        update(WEBHOOKS)
        .where(w.id == webhook_id)
        .values(consecutive_failures=w.consecutive_failures + 1, last_failed_at=at)
    )
    reason = f"disabled after {disable_after} events in a row could not be delivered"
    disabled = await session.execute(
        update(WEBHOOKS)
        .where(
            w.id == webhook_id,
            w.enabled == true(),
            w.consecutive_failures >= disable_after,
        )
        .values(enabled=False, disabled_reason=reason, updated_at=at)
    )
    return rowcount(disabled) == 1


async def release(session: AsyncSession, delivery_id: str, owner: str) -> None:
    """A claimed delivery handed back unsent (shutdown): due again at once."""
    await session.execute(
        update(DELIVERIES)
        .where(d.id == delivery_id, d.lease_owner == owner, d.state == "pending")
        .values(lease_owner=None, lease_until=None)
    )


async def mails_jobs_by_default(session: AsyncSession, account: str) -> bool:
    """Whether the account asked for its jobs' end by e-mail by default."""
    if not account.startswith("user:"):
        return False
    found = await session.execute(
        select(USERS.c.email_jobs).where(USERS.c.id == account.removeprefix("user:"))
    )
    return bool(found.scalar())


async def verified_address(session: AsyncSession, account: str) -> str | None:
    """The account's verified e-mail address (users only: "user:<id>")."""
    if not account.startswith("user:"):
        return None
    found = await session.execute(
        select(USERS.c.email).where(
            USERS.c.id == account.removeprefix("user:"),
            USERS.c.email_verified_at.is_not(None),
            USERS.c.disabled.is_(False),
        )
    )
    return found.scalar()


async def backlog(session: AsyncSession, now: float) -> tuple[int, float | None]:
    """Due deliveries, and the time the oldest of them became due (readiness, gauges)."""
    found = await session.execute(
        select(func.count(), func.min(d.next_attempt_at)).where(
            d.state == "pending", d.next_attempt_at <= now
        )
    )
    count, oldest = found.one()
    return int(count), oldest


async def job_notifications(session: AsyncSession, job_id: str) -> list[dict[str, Any]]:
    """Each delivery of the job's events, oldest first (the job's status shows them)."""
    found = await session.execute(
        select(e.type, d.channel, d.webhook_id, d.state, d.attempts, d.last_error, d.created_at)
        .join(EVENTS, e.id == d.event_id)
        .where(e.job_id == job_id)
        .order_by(d.created_at, d.id)
        .limit(100)
    )
    return [
        {
            "event": row.type,
            "channel": row.channel,
            "webhook_id": row.webhook_id,
            "state": row.state,
            "attempts": row.attempts,
            "last_error": row.last_error,
        }
        for row in found.all()
    ]


async def webhook_deliveries(
    session: AsyncSession, webhook_id: str, after: tuple[float, str] | None, limit: int
) -> list[dict[str, Any]]:
    """A webhook's deliveries, newest first (keyset paging), each with its attempts."""
    query = (
        select(DELIVERIES, e.type)
        .join(EVENTS, e.id == d.event_id)
        .where(d.webhook_id == webhook_id)
        .order_by(d.created_at.desc(), d.id.desc())
        .limit(limit)
    )
    if after is not None:
        at, last = after
        query = query.where(or_(d.created_at < at, and_(d.created_at == at, d.id < last)))
    rows = (await session.execute(query)).all()
    attempts = await _attempts(session, [row.id for row in rows])
    return [
        {
            "id": row.id,
            "event_id": row.event_id,
            "event": row.type,
            "state": row.state,
            "attempts": row.attempts,
            "created_at": row.created_at,
            "delivered_at": row.delivered_at,
            "next_attempt_at": row.next_attempt_at if row.state == "pending" else None,
            "last_status": row.last_status,
            "last_error": row.last_error,
            "last_latency_ms": row.last_latency_ms,
            "log": attempts.get(row.id, []),
        }
        for row in rows
    ]


async def _attempts(session: AsyncSession, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    if not ids:
        return {}
    found = await session.execute(
        select(ATTEMPTS).where(a.delivery_id.in_(ids)).order_by(a.delivery_id, a.at, a.id)
    )
    log: dict[str, list[dict[str, Any]]] = {}
    for row in found.all():
        log.setdefault(row.delivery_id, []).append(
            {
                "attempt": row.attempt,
                "at": row.at,
                "status": row.status,
                "latency_ms": row.latency_ms,
                "error": row.error,
                "next_attempt_at": row.next_attempt_at,
            }
        )
    return log


async def redeliver(
    session: AsyncSession, webhook_id: str, delivery_id: str, now: float
) -> str | None:
    """A new pending delivery of the same event to the same webhook (the same Webhook-Id);
    None when the webhook has no such delivery."""
    found = await session.execute(
        select(d.event_id, d.account).where(d.id == delivery_id, d.webhook_id == webhook_id)
    )
    row = found.first()
    if row is None:
        return None
    new = new_id("dlv")
    await session.execute(
        DELIVERIES.insert().values(
            id=new,
            event_id=row.event_id,
            channel="webhook",
            webhook_id=webhook_id,
            account=row.account,
            state="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    session.info[WAKE] = True
    return new


async def drop_finished(session: AsyncSession, before: float, limit: int) -> int:
    """Deliveries that ended before `before` (with their attempts), then events left
    with no delivery: the outbox's retention."""
    ids = list(
        (
            await session.execute(
                select(d.id).where(d.finished_at < before).order_by(d.finished_at).limit(limit)
            )
        ).scalars()
    )
    if ids:
        await session.execute(delete(ATTEMPTS).where(a.delivery_id.in_(ids)))
        await session.execute(delete(DELIVERIES).where(d.id.in_(ids)))
    orphan = ~select(d.id).where(d.event_id == e.id).exists()
    await session.execute(delete(EVENTS).where(e.created_at < before, orphan))
    return len(ids)
