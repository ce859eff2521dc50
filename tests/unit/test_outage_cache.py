"""The fail-open outage cache keeps a record this worker saw for `outage_cache_s` (5 minutes
by default) and not a moment longer; fail-closed never serves from it."""

from __future__ import annotations

import pytest

from frontend.auth.outage import OutageCache
from frontend.errors import StateUnavailable
from frontend.settings import AuthSettings

from .clock import FakeClock, fake_monotonic


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    return fake_monotonic(monkeypatch, start=1000.0)


def test_default_is_five_minutes():
    assert AuthSettings().outage_cache_s == 300


def test_a_record_is_served_until_it_is_older_than_the_window(clock):
    cache: OutageCache[str] = OutageCache(fail_open=True, max_age_s=300)
    cache.remember("key:a", "record")
    clock.now += 299.9
    assert cache.recall("key:a") == "record"
    clock.now += 0.2  # 300.1 s after it was seen
    with pytest.raises(StateUnavailable) as refused:
        cache.recall("key:a")
    assert refused.value.details == {"retry_after_s": 1}


def test_seeing_a_record_again_restarts_its_window(clock):
    cache: OutageCache[str] = OutageCache(fail_open=True, max_age_s=300)
    cache.remember("key:a", "old")
    clock.now += 200
    cache.remember("key:a", "new")
    clock.now += 200
    assert cache.recall("key:a") == "new"


def test_never_seen_forgotten_and_fail_closed_are_refused(clock):
    cache: OutageCache[str] = OutageCache(fail_open=True, max_age_s=300)
    with pytest.raises(StateUnavailable):
        cache.recall("key:unknown")
    cache.remember("key:b", "record")
    cache.forget("key:b")  # a revocation seen before the outage
    with pytest.raises(StateUnavailable):
        cache.recall("key:b")
    closed: OutageCache[str] = OutageCache(fail_open=False, max_age_s=300)
    closed.remember("key:c", "record")
    with pytest.raises(StateUnavailable):
        closed.recall("key:c")
    off: OutageCache[str] = OutageCache(fail_open=True, max_age_s=0)
    off.remember("key:d", "record")
    with pytest.raises(StateUnavailable):
        off.recall("key:d")
