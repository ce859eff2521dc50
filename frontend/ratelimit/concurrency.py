"""An API key's concurrent requests (`KeyLimits.max_concurrent`): a slot taken before
the request's work and given back when it ends, on success, error, cancellation or a
client gone alike.

    async with limiter.slot(principal):     # RateLimited (429, Retry-After: 1) when full
        ...                                 # the whole request, a stream to its last frame

Exact across workers: the slots are leases in the state store (one Redis sorted set per
key, taken by a Lua script that refuses at the limit, on the Redis server's clock). A
worker renews its leases every third of `lease_s` while the requests run, so a long
stream keeps its slot; a worker that crashed stops renewing, and its slots come back at
most `lease_s` after their last renewal — whatever the key's other traffic does (a
plain counter with a TTL refreshed on every acquire would heal only after a quiet
`lease_s`, never under steady load).

Redis unreachable: policy "open" counts the slots in this process (the limit then holds
per worker), "closed" answers 503. A release or renewal that fails is not retried: the
lease runs out on its own within `lease_s`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from ..auth.principal import Principal
from ..errors import RateLimited, StateUnavailable
from ..observability.metrics import Metrics
from ..state.memory import MemoryStore
from ..state.store import StateStore

log = logging.getLogger("infergate.concurrency")
LEASE_S = 30.0


@dataclass(slots=True)
class Slot:
    key: str
    holder: str
    store: StateStore
    local: bool
    renewer: asyncio.Task[None] | None = field(default=None, repr=False)
    released: bool = False


class ConcurrencyLimiter:
    def __init__(
        self, store: StateStore, fail_open: bool, metrics: Metrics, lease_s: float = LEASE_S
    ) -> None:
        self._store = store
        self._local = MemoryStore()
        self._fail_open = fail_open
        self._metrics = metrics
        self._lease_ms = max(1, int(lease_s * 1000))

    @staticmethod
    def limit(principal: Principal) -> int | None:
        return principal.limits.max_concurrent if principal.limits else None

    async def acquire(self, principal: Principal) -> Slot | None:
        """One slot of the key's, or None when it has no concurrency limit."""
        limit = self.limit(principal)
        if limit is None:
            return None
        key = f"slots:key:{principal.key_id or principal.subject}"
        holder = uuid.uuid4().hex
        store, local = self._store, False
        try:
            claim = await store.acquire_slot(key, holder, limit, self._lease_ms)
        except StateUnavailable:
            if not self._fail_open:
                self._metrics.ratelimit.labels("unavailable").inc()
                raise
            store, local = self._local, True
            claim = await store.acquire_slot(key, holder, limit, self._lease_ms)
        suffix = "_local" if local else ""
        if not claim.allowed:
            self._metrics.ratelimit.labels("concurrency_limited" + suffix).inc()
            raise RateLimited(
                f"too many concurrent requests for this key: max_concurrent is {limit}", 1
            )
        self._metrics.ratelimit.labels("concurrency_allowed" + suffix).inc()
        slot = Slot(key, holder, store, local)
        slot.renewer = asyncio.get_running_loop().create_task(self._renew(slot))
        return slot

    async def release(self, slot: Slot | None) -> None:
        """Give the slot back. Idempotent; never raises (the lease ends on its own)."""
        if slot is None or slot.released:
            return
        slot.released = True
        if slot.renewer is not None:
            slot.renewer.cancel()
        try:
            await slot.store.release_slot(slot.key, slot.holder)
        except StateUnavailable:
            log.warning("concurrency slot not released: redis unreachable (its lease ends)")

    async def _renew(self, slot: Slot) -> None:
        every_s = self._lease_ms / 3000
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(StateUnavailable):  # the next renewal may reach it
                if not await slot.store.renew_slot(slot.key, slot.holder, self._lease_ms):
                    # Its lease ran out (Redis unreachable for longer than it): the request
                    # goes on uncounted rather than over-counting a slot it may not own.
                    log.warning("concurrency slot lost: its lease ran out before renewal")
                    return

    @asynccontextmanager
    async def slot(self, principal: Principal) -> AsyncIterator[None]:
        held = await self.acquire(principal)
        try:
            yield
        finally:
            # Shielded: a client disconnect cancels the request task, and the release
            # must still happen.
            await asyncio.shield(self.release(held))
