"""The outbox dispatcher: claims due deliveries from SQL (a lease each), sends them —
a signed POST to a webhook or a job's callback URL, or an e-mail — logs every attempt,
and schedules the next one with exponential backoff and full jitter until the retry
window closes.

It runs in every frontend process by default (notify.dispatcher) and as
`python -m frontend notifier`; any number may run at once: a delivery's lease is taken by
one conditional UPDATE, and a dispatcher that dies holding leases only delays those
deliveries to the leases' end. Delivery is therefore at least once: the same event may
arrive twice, always under the same Webhook-Id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from ..db import notifications as outbox
from ..db.database import Database
from ..errors import DatabaseUnavailable
from ..notify_settings import NotifySettings
from ..observability.metrics import Metrics
from .http_client import WebhookClient
from .mailer import Mailer, MailError, MailMessage, job_email
from .messages import disabled_email
from .secret_box import SealedValueError, SecretBox
from .signing import delivery_headers

log = logging.getLogger("infergate.notify")
T = TypeVar("T")
GAUGE_EVERY_S = 5.0
SWEEP_EVERY_S = 300.0  # the outbox's retention: ended deliveries dropped this often
SWEEP_ROWS, SWEEP_BATCHES = 1000, 50  # per transaction, per sweep


class OutboxBacklogged(Exception):
    """Readiness: the outbox holds more due deliveries, or older ones, than its limits."""


def next_attempt_at(
    attempts: int, since: float, now: float, settings: NotifySettings, rng: Callable[[], float]
) -> float | None:
    """After `attempts` failed attempts: a time drawn uniformly below min(retry_max_s,
    retry_base_s × 2^(attempts−1)) from now (full jitter: retries of many receivers that
    failed together spread out), no later than the retry window's end (`since`, the
    delivery's creation, + retry_window_s); None once the window has closed."""
    deadline = since + settings.retry_window_s
    if now >= deadline:
        return None
    ceiling = min(settings.retry_max_s, settings.retry_base_s * 2 ** (attempts - 1))
    return min(now + rng() * ceiling, deadline)


class Notifier:
    def __init__(
        self,
        database: Database,
        settings: NotifySettings,
        *,
        client: WebhookClient,
        mailer: Mailer,
        box: SecretBox,
        metrics: Metrics,
        owner: str,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.database = database
        self.settings = settings
        self.client = client
        self.mailer = mailer
        self.box = box
        self.metrics = metrics
        self.owner = f"{owner}:{secrets.token_hex(4)}"
        self.clock = clock
        self.rng = rng
        self._wake = asyncio.Event()
        self._gauged_at = 0.0
        self._swept_at = 0.0

    async def _db(self, operation: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """A database call a cancel does not cut in the middle: a transaction cut by a
        cancel leaves the driver closing its connection in the background, after the
        shutdown may have closed the database (the event loop then never ends; see
        jobs/reconcile.py). A cancel waits for the call (its deadline bounds it)."""
        task = asyncio.ensure_future(self.database.run(operation, work))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await task
            raise

    def wake(self) -> None:
        """A new event committed in this process: read the outbox now."""
        self._wake.set()

    async def run(self) -> None:
        """Claims due deliveries while it has free slots (notify.concurrency), each sent
        by a task of its own: a receiver that hangs holds one slot, never the others.
        Between reads it waits for a wake (a commit in this process, a slot freed while
        all were busy) or the poll's deadline, `poll_s` after the previous read began.
        Cancelled: the deliveries in flight are cancelled too (a cut one is sent again
        when its lease ends)."""
        inflight: set[asyncio.Task[None]] = set()
        s = self.settings
        try:
            while True:
                began = time.monotonic()
                want = min(s.batch, s.concurrency - len(inflight))
                due: list[outbox.Due] = []
                try:
                    if want > 0:
                        due = await self.claim(want)
                    await self._gauges()
                except DatabaseUnavailable:
                    pass  # the next read tries again
                except Exception:  # a bug or a refused query must not end the loop
                    log.exception("notification outbox read failed")
                for item in due:
                    task = asyncio.create_task(self._guarded(item))
                    inflight.add(task)
                    task.add_done_callback(lambda done: self._finished(inflight, done))
                if due and len(due) == want and len(inflight) < s.concurrency:
                    continue  # more may be due at once
                timeout = max(0.0, s.poll_s - (time.monotonic() - began))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self._wake.clear()
        finally:
            for task in inflight:
                task.cancel()
            if inflight:
                await asyncio.wait(inflight)

    def _finished(self, inflight: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        was_full = len(inflight) >= self.settings.concurrency
        inflight.discard(task)
        if was_full:
            self._wake.set()  # a slot is free: read the outbox again now

    async def claim(self, limit: int) -> list[outbox.Due]:
        """Up to `limit` due deliveries, leased to this dispatcher."""
        now = self.clock()
        lease = self.settings.lease_s
        return await self._db(
            "notify.claim", lambda db: outbox.claim_due(db, now, limit, self.owner, lease)
        )

    async def _guarded(self, due: outbox.Due) -> None:
        try:
            await self.deliver(due)
        except DatabaseUnavailable:
            pass  # not recorded: the lease ends and it is sent again
        except Exception as exc:  # one bad delivery must not stop the others
            log.exception("notification delivery failed", extra={"delivery": due.id})
            # Recorded as a failed attempt, so that it backs off and ends with the window
            # instead of coming back at every lease's end.
            failed = _Outcome(None, 0.0, f"internal error ({type(exc).__name__})")
            with contextlib.suppress(Exception):
                await self._record(due, failed, self.clock())

    async def deliver(self, due: outbox.Due) -> outbox.Recorded:
        started = self.clock()
        if not due.live:
            result = _Outcome(None, 0.0, "the webhook is disabled", final=True)
        elif due.channel == "email":
            result = await self._email(due)
        else:
            result = await self._post(due)
        return await self._record(due, result, started)

    async def _record(self, due: outbox.Due, result: _Outcome, started: float) -> outbox.Recorded:
        """The attempt logged, the delivery moved (and, when this failure disables its
        webhook, the owner's e-mail queued in the same transaction)."""
        now = self.clock()
        next_at = None
        if not result.ok and not result.final:
            next_at = next_attempt_at(due.attempts + 1, due.since, now, self.settings, self.rng)
        attempt = outbox.Attempt(
            at=started,
            status=result.status,
            latency_ms=result.latency_ms,
            error=result.error,
            delivered=result.ok,
            next_attempt_at=next_at,
        )
        s = self.settings
        disabled = {
            "reason": f"{s.disable_after} events in a row could not be delivered",
            "last_event": due.event_id,
        }
        recorded = await self._db(
            "notify.record",
            lambda db: outbox.record_attempt(
                db, due, attempt, disable_after=s.disable_after, owner=self.owner, notice=disabled
            ),
        )
        self._count(due, result, recorded, now)
        return recorded

    async def _post(self, due: outbox.Due) -> _Outcome:
        if not due.target:
            return _Outcome(None, 0.0, "no URL", final=True)
        context = due.webhook_id if due.channel == "webhook" else _job_id(due)
        try:
            keys = [self.box.open(sealed, context=context or "") for sealed in due.secrets]
        except SealedValueError:
            return _Outcome(None, 0.0, "the signing secret cannot be read", final=True)
        if not keys:
            return _Outcome(None, 0.0, "no signing secret", final=True)
        body = orjson.dumps(due.payload)
        headers = delivery_headers(due.event_id, int(self.clock()), body, keys)
        sent = await self.client.post(due.target, body, headers)
        return _Outcome(
            sent.status, sent.latency_ms, sent.error, ok=sent.delivered, refused=sent.refused
        )

    async def _email(self, due: outbox.Due) -> _Outcome:
        if not self.mailer.enabled:
            return _Outcome(None, 0.0, "e-mail is not configured", final=True)
        address = await self._db(
            "notify.address", lambda db: outbox.verified_address(db, due.account)
        )
        if address is None:
            return _Outcome(None, 0.0, "the account has no verified e-mail address", final=True)
        message = self._message(due, address)
        started = time.perf_counter()
        try:
            await self.mailer.send(message)
        except MailError as exc:
            latency = (time.perf_counter() - started) * 1000
            return _Outcome(None, latency, str(exc), final=not exc.transient)
        return _Outcome(250, (time.perf_counter() - started) * 1000, None, ok=True)

    def _message(self, due: outbox.Due, address: str) -> MailMessage:
        data = due.payload.get("data", {})
        if due.type == outbox.WEBHOOK_DISABLED:
            return disabled_email(data, to=address)
        job = data.get("job", {})
        base = self.settings.public_url
        results = f"{base.rstrip('/')}{job['links']['results']}" if base and job else None
        return job_email(job, to=address, results_url=results)

    def _count(
        self, due: outbox.Due, result: _Outcome, recorded: outbox.Recorded, now: float
    ) -> None:
        m = self.metrics
        if result.ok:
            m.notify_attempts.labels(due.channel, "ok").inc()
        elif result.refused:
            m.notify_attempts.labels(due.channel, "refused").inc()
        elif recorded.state == "pending":
            m.notify_attempts.labels(due.channel, "retry").inc()
        else:
            m.notify_attempts.labels(due.channel, "last").inc()
        if recorded.state == "delivered":
            m.notify_deliveries.labels(due.channel, "delivered").inc()
            m.notify_latency.labels(due.channel).observe(max(0.0, now - due.event_at))
        elif recorded.state == "failed":
            outcome = "failed" if due.live else "skipped"
            m.notify_deliveries.labels(due.channel, outcome).inc()

    async def _gauges(self) -> None:
        now = self.clock()
        if now - self._gauged_at < GAUGE_EVERY_S:
            return
        self._gauged_at = now
        count, oldest = await self._db("notify.backlog", lambda db: outbox.backlog(db, now))
        self.metrics.notify_backlog.set(count)
        self.metrics.notify_oldest.set(0.0 if oldest is None else max(0.0, now - oldest))
        if now - self._swept_at >= SWEEP_EVERY_S:
            self._swept_at = now
            before = now - self.settings.retention_s
            for _ in range(SWEEP_BATCHES):  # bounded: the next sweep goes on
                dropped = await self._db(
                    "notify.sweep", lambda db: outbox.drop_finished(db, before, SWEEP_ROWS)
                )
                if dropped < SWEEP_ROWS:
                    break

    async def check_backlog(self) -> None:
        """For readiness: raises OutboxBacklogged past the settings' limits."""
        now = self.clock()
        count, oldest = await self._db("notify.backlog", lambda db: outbox.backlog(db, now))
        age = 0.0 if oldest is None else now - oldest
        if count > self.settings.backlog_degraded or age > self.settings.oldest_degraded_s:
            raise OutboxBacklogged(f"{count} due, the oldest for {age:.0f} s")


@dataclass(slots=True)
class _Outcome:
    """One attempt's result as the dispatcher records it."""

    status: int | None
    latency_ms: float
    error: str | None
    ok: bool = False
    final: bool = False  # no retry: the attempt cannot succeed later
    refused: bool = False  # the SSRF policy refused the URL (no connection made)


def _job_id(due: outbox.Due) -> str:
    job = due.payload.get("data", {}).get("job") or {}
    return str(job.get("id", ""))
