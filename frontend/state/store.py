"""The operations the gateway needs from its shared state, and nothing more.

Values are bytes; each operation is atomic in both implementations (one Redis command or
Lua script; no await inside the in-process store's critical sections)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Window:
    """One fixed window: `limit` requests per `seconds`, counted under `key`."""

    key: str
    limit: int
    seconds: int


@dataclass(frozen=True, slots=True)
class WindowHit:
    allowed: bool
    counts: tuple[int, ...]  # per window, after this hit (or unchanged when refused)
    reset_ms: tuple[int, ...]  # per window, milliseconds until it resets (server time)


@dataclass(frozen=True, slots=True)
class DailyReservation:
    allowed: bool
    used: int  # tokens counted today, including this reservation when allowed
    reset_s: int  # seconds until the day (UTC, server clock) ends
    day_key: str  # where the reservation was counted: settle against the same day


@dataclass(frozen=True, slots=True)
class WindowReservation:
    """An amount counted in a fixed window aligned to the store's clock (minute n runs
    from n*60 s to (n+1)*60 s): the key's tokens per minute."""

    allowed: bool
    used: int  # counted in this window, including this reservation when allowed
    reset_ms: int  # milliseconds until the window ends
    window_key: str  # the window it was counted in: adjust that one, never its successor


@dataclass(frozen=True, slots=True)
class SlotClaim:
    """One concurrency slot asked for: granted or not, and how many are held now."""

    allowed: bool
    held: int  # live slots under the key, including this one when allowed


class StateStore(Protocol):
    async def ping(self) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def put(
        self, key: str, value: bytes, ttl_s: int | None = None, only_if_absent: bool = False
    ) -> bool: ...

    async def add_member(self, key: str, member: str) -> None: ...

    async def members(self, key: str) -> set[str]: ...

    async def hit_windows(self, windows: Sequence[Window], cost: int = 1) -> WindowHit:
        """Count `cost` in every window only if all of them have room (all or nothing)."""
        ...

    async def peek_windows(self, windows: Sequence[Window]) -> WindowHit: ...

    async def reserve_daily(self, key: str, amount: int, limit: int | None) -> DailyReservation:
        """Add `amount` to today's counter under `key` unless it would pass `limit`."""
        ...

    async def adjust(self, day_key: str, delta: int) -> None: ...

    async def daily_used(self, key: str) -> tuple[int, int]:
        """(used today, seconds until the day ends)."""
        ...

    async def reserve_window(
        self, key: str, amount: int, limit: int | None, seconds: int
    ) -> WindowReservation:
        """Add `amount` to the current `seconds`-long window under `key` unless it would
        pass `limit` (None: count only)."""
        ...

    async def adjust_window(self, window_key: str, delta: int) -> None:
        """Add `delta` to a window `reserve_window` counted in, if it has not ended yet;
        the count never goes below 0."""
        ...

    async def window_used(self, key: str, seconds: int) -> tuple[int, int]:
        """(counted in the current window, milliseconds until it ends)."""
        ...

    async def acquire_slot(self, key: str, holder: str, limit: int, lease_ms: int) -> SlotClaim:
        """Take one of `limit` slots under `key` for `holder`, leased for `lease_ms`: a
        lease not renewed in time is dropped (a crashed worker's slots come back)."""
        ...

    async def renew_slot(self, key: str, holder: str, lease_ms: int) -> bool:
        """Extend `holder`'s lease; False when it was already dropped (not re-taken)."""
        ...

    async def release_slot(self, key: str, holder: str) -> None: ...

    async def add_fields(self, key: str, increments: dict[str, int]) -> None:
        """Add to integer fields of a hash (counters that several workers share)."""
        ...

    async def fields(self, key: str) -> dict[str, int]: ...

    async def close(self) -> None: ...
