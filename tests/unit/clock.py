"""A fake `time.monotonic` for the tests of code that ages things (windows, outage
records): it stands still until the test moves it (`clock.now += 61`)."""

from __future__ import annotations

import time

import pytest


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fake_monotonic(monkeypatch: pytest.MonkeyPatch, start: float = 100.0) -> FakeClock:
    """Replaces `time.monotonic` for the rest of the test. The module attribute: every
    `time.monotonic()` call sees it (the code under test, the event loop), but not a
    `from time import monotonic` made before."""
    clock = FakeClock(start)
    monkeypatch.setattr(time, "monotonic", clock)
    return clock
