"""Daily token budgets for the text-generation routes: reserve an estimate before the
work starts, settle the real count when it ends — including when the client disconnects
mid-stream (the settle runs in `finally`, shielded from the cancellation).

    async with quota.hold(principal, estimate=prompt_tokens + max_tokens) as held:
        async for token in stream:
            held.used += 1          # what to charge if the stream is cut here
    # settled: today's counter moved by (held.used - estimate)

An API key with its own `tokens_per_minute` (KeyLimits) also reserves the estimate in
the key's current minute (a window aligned on the store's clock) and settles it with
the day; a settle after that minute has ended changes nothing (the next minute owes
nothing to this one). The day is reserved first, then the minute; a minute that refuses
gives the day's reservation back at once. The two are not one atomic step: meanwhile,
another request of the account may see the day fuller than it will be (never emptier),
so the pair can refuse early, never admit too much. If Redis fails between the two, the
day keeps the estimate (as with a failed settle: charged at most what was reserved).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..auth.principal import Principal
from ..errors import QuotaExceeded, StateUnavailable
from ..observability.metrics import Metrics
from ..settings import Tier
from ..state.memory import MemoryStore
from ..state.store import StateStore

log = logging.getLogger("infergate.quota")
MINUTE = 60


@dataclass(slots=True)
class Reservation:
    subject: str
    day_key: str
    reserved: int
    used: int = 0
    local: bool = False
    settled: bool = False
    # The key's minute window, when the key has tokens_per_minute (its store: local or not).
    minute_key: str | None = None
    minute_local: bool = False


@dataclass(frozen=True, slots=True)
class QuotaState:
    used: int
    limit: int | None
    remaining: int | None
    reset_s: int


class TokenQuota:
    def __init__(
        self, tiers: dict[str, Tier], store: StateStore, fail_open: bool, metrics: Metrics
    ) -> None:
        self._tiers = tiers
        self._store = store
        self._local = MemoryStore()
        self._fail_open = fail_open
        self._metrics = metrics

    def limit(self, principal: Principal) -> int | None:
        tier = self._tiers.get(principal.tier)
        return tier.tokens_per_day if tier else 0

    async def reserve(self, principal: Principal, estimate: int) -> Reservation:
        """The day's reservation for the account, and the key's minute when it has one."""
        reservation = await self._reserve_day(principal, estimate)
        per_minute = _tokens_per_minute(principal)
        if per_minute is None:
            return reservation
        try:
            reservation.minute_key, reservation.minute_local = await self._reserve_minute(
                principal, estimate, per_minute
            )
        except BaseException:
            reservation.used = 0  # nothing was generated: the day gets its estimate back
            await asyncio.shield(self.settle(reservation))
            raise
        return reservation

    async def _reserve_minute(
        self, principal: Principal, estimate: int, limit: int
    ) -> tuple[str, bool]:
        key, local = f"tpm:key:{principal.key_id or principal.subject}", False
        try:
            result = await self._store.reserve_window(key, estimate, limit, MINUTE)
        except StateUnavailable:
            if not self._fail_open:
                raise
            result, local = await self._local.reserve_window(key, estimate, limit, MINUTE), True
        if not result.allowed:
            self._metrics.tokens.labels("refused_key_minute").inc(estimate)
            needs = (
                f"this request needs up to {estimate}, more than the key's budget"
                if estimate > limit
                else f"this request needs up to {estimate}"
            )
            raise QuotaExceeded(
                f"key tokens per minute exceeded: {result.used} of {limit} used this "
                f"minute, {needs}",
                max(1, math.ceil(result.reset_ms / 1000)),
            )
        return result.window_key, local

    async def _reserve_day(self, principal: Principal, estimate: int) -> Reservation:
        key, limit, local = f"quota:{principal.account}", self.limit(principal), False
        try:
            result = await self._store.reserve_daily(key, estimate, limit)
        except StateUnavailable:
            if not self._fail_open:
                raise
            result, local = await self._local.reserve_daily(key, estimate, limit), True
        if not result.allowed:
            self._metrics.tokens.labels("refused").inc(estimate)
            raise QuotaExceeded(
                f"daily token quota exceeded: {result.used} of {limit} used, "
                f"this request needs up to {estimate}",
                max(1, result.reset_s),
                {
                    "X-Quota-Limit": str(limit),
                    "X-Quota-Remaining": str(max(0, (limit or 0) - result.used)),
                },
            )
        self._metrics.tokens.labels("reserved").inc(estimate)
        return Reservation(principal.account, result.day_key, estimate, local=local)

    async def settle(self, reservation: Reservation) -> None:
        """Replace the reserved estimate by what was used. Idempotent."""
        if reservation.settled:
            return
        reservation.settled = True
        delta = reservation.used - reservation.reserved
        if reservation.minute_key is not None:
            minute = self._local if reservation.minute_local else self._store
            try:
                await minute.adjust_window(reservation.minute_key, delta)
            except StateUnavailable:
                # The estimate stays counted until the minute ends: at most one minute.
                log.warning("key token minute not settled: redis unreachable")
        store = self._local if reservation.local else self._store
        try:
            await store.adjust(reservation.day_key, delta)
        except StateUnavailable:
            # The estimate stays counted: callers are charged at most what they reserved.
            self._metrics.tokens.labels("settle_failed").inc(reservation.reserved)
            log.warning("token quota not settled: redis unreachable")
            return
        self._metrics.tokens.labels("settled").inc(reservation.used)

    @asynccontextmanager
    async def hold(self, principal: Principal, estimate: int) -> AsyncIterator[Reservation]:
        reservation = await self.reserve(principal, estimate)
        try:
            yield reservation
        finally:
            # Shielded: a client disconnect cancels the request task, and the settle
            # must still happen.
            await asyncio.shield(self.settle(reservation))

    async def usage(self, principal: Principal) -> QuotaState:
        key, limit = f"quota:{principal.account}", self.limit(principal)
        try:
            used, reset = await self._store.daily_used(key)
        except StateUnavailable:
            if not self._fail_open:
                raise
            used, reset = await self._local.daily_used(key)
        remaining = None if limit is None else max(0, limit - used)
        return QuotaState(used, limit, remaining, reset)

    async def key_minute_usage(self, principal: Principal) -> QuotaState | None:
        """The key's tokens this minute, or None when it has no tokens_per_minute."""
        limit = _tokens_per_minute(principal)
        if limit is None:
            return None
        key = f"tpm:key:{principal.key_id or principal.subject}"
        try:
            used, reset_ms = await self._store.window_used(key, MINUTE)
        except StateUnavailable:
            if not self._fail_open:
                raise
            used, reset_ms = await self._local.window_used(key, MINUTE)
        return QuotaState(used, limit, max(0, limit - used), math.ceil(reset_ms / 1000))


def _tokens_per_minute(principal: Principal) -> int | None:
    return principal.limits.tokens_per_minute if principal.limits else None
