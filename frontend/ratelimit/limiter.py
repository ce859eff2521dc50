"""Request rate limits per principal: fixed windows counted atomically in the state store.

Why not `limits`' own strategies on Redis (measured and read, see the issue note): its
fixed window costs an INCR round trip plus a TTL round trip per window for the headers
(four for a two-window tier), counts a request refused by one window in the other, and
reads TTL in whole seconds rounded to nearest, so Retry-After could be 0.5 s early; its
moving window stamps entries with the worker's clock. Our Lua script does all windows in
one round trip on the Redis server's clock, all or nothing. `limits` still parses the
tier notation.

An API key with its own `requests_per_minute` (KeyLimits) adds a 60 s window keyed on
the key to the same script call, so the key's window and its account's tier windows are
counted all or nothing together: a request the key's window refuses uses none of the
tier's, and the other way round. The headers describe every window counted: the
RateLimit-Policy lists the tier's windows then `"key.minute";q=<rpm>;w=60`, RateLimit
gives each one's remaining, and X-RateLimit-* the tightest of all (key's included).

The key's concurrent requests (`max_concurrent`) are slots, not windows: `slot()` here,
concurrency.py.

Redis unreachable: policy "open" counts in a per-process store (limits then hold per
worker), "closed" answers 503. Either way the request never waits on Redis for longer
than the guard's deadline, and the next call after the cool-down tries Redis again."""

from __future__ import annotations

import math
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from ..auth.principal import Principal
from ..errors import RateLimited, StateUnavailable
from ..observability.metrics import Metrics
from ..settings import Tier
from ..state.memory import MemoryStore
from ..state.store import StateStore, Window, WindowHit
from .concurrency import ConcurrencyLimiter
from .policy import WindowSpec, key_minute_spec, window_specs


@dataclass(frozen=True, slots=True)
class WindowState:
    spec: WindowSpec
    used: int
    remaining: int
    reset_s: int  # whole seconds until the window resets (rounded up)


class RateLimiter:
    def __init__(
        self, tiers: dict[str, Tier], store: StateStore, fail_open: bool, metrics: Metrics
    ) -> None:
        self._specs = {name: window_specs(name, tier) for name, tier in tiers.items()}
        self._store = store
        self._local = MemoryStore()
        self._fail_open = fail_open
        self._metrics = metrics
        self.concurrency = ConcurrencyLimiter(store, fail_open, metrics)

    def specs(self, tier: str) -> tuple[WindowSpec, ...]:
        return self._specs.get(tier, ())

    def slot(self, principal: Principal) -> AbstractAsyncContextManager[None]:
        """Hold one of the key's `max_concurrent` slots (a no-op without that limit)."""
        return self.concurrency.slot(principal)

    def _windows(self, principal: Principal) -> tuple[tuple[WindowSpec, ...], list[Window]]:
        """The tier's windows for the account, then the key's own minute, if it has one."""
        specs = self.specs(principal.tier)
        windows = [Window(f"rl:{principal.account}:{s.seconds}", s.limit, s.seconds) for s in specs]
        rpm = principal.limits.requests_per_minute if principal.limits else None
        if rpm is not None:
            key = principal.key_id or principal.subject
            # Not `rl:key:<id>`: that is already a standalone key's own tier window (its
            # account is `key:<id>`), and one Redis key counted twice in a call breaks it.
            spec = key_minute_spec(rpm)
            specs = (*specs, spec)
            windows.append(Window(f"rl:keyrpm:{key}:{spec.seconds}", rpm, spec.seconds))
        return specs, windows

    async def check(self, principal: Principal, cost: int = 1) -> dict[str, str]:
        """Count one request; the headers to send, or RateLimited with them."""
        specs, windows = self._windows(principal)
        if not specs:
            return {}
        local = False
        try:
            hit = await self._store.hit_windows(windows, cost)
        except StateUnavailable:
            if not self._fail_open:
                self._metrics.ratelimit.labels("unavailable").inc()
                raise
            hit, local = await self._local.hit_windows(windows, cost), True
        states = _states(specs, hit)
        headers = headers_for(states)
        suffix = "_local" if local else ""
        if not hit.allowed:
            self._metrics.ratelimit.labels("limited" + suffix).inc()
            full = [s for s in states if s.used + cost > s.spec.limit]
            retry_after = max(s.reset_s for s in full) if full else 1
            names = ", ".join(s.spec.described for s in full)
            raise RateLimited(f"rate limit exceeded ({names})", max(1, retry_after), headers)
        self._metrics.ratelimit.labels("allowed" + suffix).inc()
        return headers

    async def usage(self, principal: Principal) -> list[WindowState]:
        specs, windows = self._windows(principal)
        if not specs:
            return []
        try:
            hit = await self._store.peek_windows(windows)
        except StateUnavailable:
            if not self._fail_open:
                raise
            hit = await self._local.peek_windows(windows)
        return _states(specs, hit)


def _states(specs: tuple[WindowSpec, ...], hit: WindowHit) -> list[WindowState]:
    return [
        WindowState(spec, used, max(0, spec.limit - used), max(0, math.ceil(reset / 1000)))
        for spec, used, reset in zip(specs, hit.counts, hit.reset_ms, strict=True)
    ]


def headers_for(states: list[WindowState]) -> dict[str, str]:
    """IETF draft-ietf-httpapi-ratelimit-headers (RateLimit-Policy / RateLimit, structured
    fields with named policies) and the de-facto X-RateLimit-* of the tightest window.
    X-RateLimit-Reset is seconds until reset, like the draft's `t` (no client clock)."""
    if not states:
        return {}
    tightest = min(states, key=lambda s: (s.remaining, -s.reset_s))
    return {
        "RateLimit-Policy": ", ".join(
            f'"{s.spec.name}";q={s.spec.limit};w={s.spec.seconds}' for s in states
        ),
        "RateLimit": ", ".join(f'"{s.spec.name}";r={s.remaining};t={s.reset_s}' for s in states),
        "X-RateLimit-Limit": str(tightest.spec.limit),
        "X-RateLimit-Remaining": str(tightest.remaining),
        "X-RateLimit-Reset": str(tightest.reset_s),
    }
