"""In-process state for a single worker (the embedded default when no Redis is set).

Same semantics as the Redis store; time comes from this process's clocks, which is right
here because there is only one process to agree with."""

from __future__ import annotations

import time
from collections.abc import Sequence

from .store import DailyReservation, SlotClaim, Window, WindowHit, WindowReservation

DAY = 86_400
SWEEP_MIN = 4096


class MemoryStore:
    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._sets: dict[str, set[str]] = {}
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (count, expires monotonic)
        self._hashes: dict[str, dict[str, int]] = {}
        self._slots: dict[str, dict[str, float]] = {}  # key -> holder -> lease end (monotonic)
        # Expired values and windows are dropped in a sweep once the maps have doubled since
        # the last one (amortised O(1) per write): a flood of one-off keys (login attempts
        # from many addresses) must not grow memory without bound, as Redis' TTLs ensure.
        self._sweep_at = SWEEP_MIN

    def _sweep_if_due(self) -> None:
        if len(self._values) + len(self._counters) < self._sweep_at:
            return
        now = time.monotonic()
        self._values = {
            k: item for k, item in self._values.items() if item[1] is None or item[1] > now
        }
        self._counters = {k: item for k, item in self._counters.items() if item[1] > now}
        self._slots = {k: live for k in self._slots if (live := self._live_slots(k, now))}
        self._sweep_at = max(SWEEP_MIN, 2 * (len(self._values) + len(self._counters)))

    async def ping(self) -> None:
        return None

    def _live(self, key: str) -> bytes | None:
        item = self._values.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and time.monotonic() >= expires:
            del self._values[key]
            return None
        return value

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._live(k) for k in keys]

    async def put(
        self, key: str, value: bytes, ttl_s: int | None = None, only_if_absent: bool = False
    ) -> bool:
        if only_if_absent and self._live(key) is not None:
            return False
        expires = time.monotonic() + ttl_s if ttl_s is not None else None
        self._values[key] = (value, expires)
        self._sweep_if_due()
        return True

    async def add_member(self, key: str, member: str) -> None:
        self._sets.setdefault(key, set()).add(member)

    async def members(self, key: str) -> set[str]:
        return set(self._sets.get(key, ()))

    def _window(self, window: Window, now: float) -> tuple[int, float]:
        count, expires = self._counters.get(window.key, (0, 0.0))
        if now >= expires:
            return 0, now + window.seconds
        return count, expires

    async def hit_windows(self, windows: Sequence[Window], cost: int = 1) -> WindowHit:
        now = time.monotonic()
        state = [self._window(w, now) for w in windows]
        allowed = all(count + cost <= w.limit for w, (count, _) in zip(windows, state, strict=True))
        if allowed:
            state = [(count + cost, expires) for count, expires in state]
            for w, item in zip(windows, state, strict=True):
                self._counters[w.key] = item
            self._sweep_if_due()
        return WindowHit(
            allowed,
            tuple(c for c, _ in state),
            tuple(max(0, int((e - now) * 1000)) for _, e in state),
        )

    async def peek_windows(self, windows: Sequence[Window]) -> WindowHit:
        now = time.monotonic()
        state = [self._window(w, now) for w in windows]
        return WindowHit(
            True, tuple(c for c, _ in state), tuple(int((e - now) * 1000) for _, e in state)
        )

    @staticmethod
    def _day(key: str) -> tuple[str, int]:
        now = int(time.time())
        return f"{key}:{now // DAY}", DAY - now % DAY

    async def reserve_daily(self, key: str, amount: int, limit: int | None) -> DailyReservation:
        day_key, reset = self._day(key)
        used = int(self._live(day_key) or 0)
        if limit is not None and used + amount > limit:
            return DailyReservation(False, used, reset, day_key)
        used += amount
        self._values[day_key] = (str(used).encode(), time.monotonic() + reset + 3600)
        return DailyReservation(True, used, reset, day_key)

    async def adjust(self, day_key: str, delta: int) -> None:
        value, expires = self._values.get(day_key, (b"0", time.monotonic() + DAY))
        self._values[day_key] = (str(int(value) + delta).encode(), expires)

    async def daily_used(self, key: str) -> tuple[int, int]:
        day_key, reset = self._day(key)
        return int(self._live(day_key) or 0), reset

    @staticmethod
    def _aligned(key: str, seconds: int, now: float) -> tuple[str, float]:
        index = int(now // seconds)
        return f"{key}:{seconds}:{index}", (index + 1) * seconds

    async def reserve_window(
        self, key: str, amount: int, limit: int | None, seconds: int
    ) -> WindowReservation:
        now = time.monotonic()
        window_key, ends = self._aligned(key, seconds, now)
        used, _ = self._counters.get(window_key, (0, ends))
        reset_ms = max(0, int((ends - now) * 1000))
        if limit is not None and used + amount > limit:
            return WindowReservation(False, used, reset_ms, window_key)
        used += amount
        self._counters[window_key] = (used, ends)
        self._sweep_if_due()
        return WindowReservation(True, used, reset_ms, window_key)

    async def adjust_window(self, window_key: str, delta: int) -> None:
        item = self._counters.get(window_key)
        if item is None or time.monotonic() >= item[1]:
            return  # the window has ended: its successor owes nothing to this one
        self._counters[window_key] = (max(0, item[0] + delta), item[1])

    async def window_used(self, key: str, seconds: int) -> tuple[int, int]:
        now = time.monotonic()
        window_key, ends = self._aligned(key, seconds, now)
        used, _ = self._counters.get(window_key, (0, ends))
        return used, max(0, int((ends - now) * 1000))

    def _live_slots(self, key: str, now: float) -> dict[str, float]:
        holders = self._slots.get(key, {})
        return {h: ends for h, ends in holders.items() if ends > now}

    async def acquire_slot(self, key: str, holder: str, limit: int, lease_ms: int) -> SlotClaim:
        now = time.monotonic()
        holders = self._live_slots(key, now)
        if len(holders) >= limit:
            self._slots[key] = holders
            return SlotClaim(False, len(holders))
        holders[holder] = now + lease_ms / 1000
        self._slots[key] = holders
        return SlotClaim(True, len(holders))

    async def renew_slot(self, key: str, holder: str, lease_ms: int) -> bool:
        now = time.monotonic()
        holders = self._live_slots(key, now)
        if holder not in holders:
            if holders:
                self._slots[key] = holders
            else:
                self._slots.pop(key, None)
            return False
        self._slots[key] = holders
        holders[holder] = now + lease_ms / 1000
        return True

    async def release_slot(self, key: str, holder: str) -> None:
        holders = self._slots.get(key)
        if holders is None:
            return
        holders.pop(holder, None)
        if not holders:
            del self._slots[key]  # one entry per key in flight, not per key ever seen

    async def add_fields(self, key: str, increments: dict[str, int]) -> None:
        target = self._hashes.setdefault(key, {})
        for name, amount in increments.items():
            target[name] = target.get(name, 0) + amount

    async def fields(self, key: str) -> dict[str, int]:
        return dict(self._hashes.get(key, {}))

    async def close(self) -> None:
        return None
