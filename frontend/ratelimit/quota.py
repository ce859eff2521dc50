"""Daily token budgets for the text-generation routes: reserve an estimate before the
work starts, settle the real count when it ends — including when the client disconnects
mid-stream (the settle runs in `finally`, shielded from the cancellation).

    async with quota.hold(principal, estimate=prompt_tokens + max_tokens) as held:
        async for token in stream:
            held.used += 1          # what to charge if the stream is cut here
    # settled: today's counter moved by (held.used - estimate)
"""

from __future__ import annotations

import asyncio
import logging
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


@dataclass(slots=True)
class Reservation:
    subject: str
    day_key: str
    reserved: int
    used: int = 0
    local: bool = False
    settled: bool = False


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
        store = self._local if reservation.local else self._store
        try:
            await store.adjust(reservation.day_key, reservation.used - reservation.reserved)
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
