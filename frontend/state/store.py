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

    async def add_fields(self, key: str, increments: dict[str, int]) -> None:
        """Add to integer fields of a hash (counters that several workers share)."""
        ...

    async def fields(self, key: str) -> dict[str, int]: ...

    async def close(self) -> None: ...
