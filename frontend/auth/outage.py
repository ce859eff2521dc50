"""What this worker last saw of a record, for Redis outages under the fail-open policy:
records seen within `max_age_s` keep working; otherwise (or fail-closed) the outage
surfaces as StateUnavailable (503). Revocations made during the outage are not seen."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

from ..errors import StateUnavailable

T = TypeVar("T")


class OutageCache(Generic[T]):
    def __init__(self, fail_open: bool, max_age_s: float) -> None:
        self._enabled = fail_open and max_age_s > 0
        self._max_age_s = max_age_s
        self._fail_open = fail_open
        self._seen: dict[str, tuple[T, float]] = {}

    def remember(self, key: str, record: T) -> None:
        if self._enabled:
            self._seen[key] = (record, time.monotonic())

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)

    def recall(self, key: str) -> T:
        seen = self._seen.get(key)
        if not self._fail_open or seen is None or time.monotonic() - seen[1] > self._max_age_s:
            raise StateUnavailable("shared state is unreachable", {"retry_after_s": 1})
        return seen[0]
