"""Waiting until something holds, always with a deadline, never a fixed sleep."""

from __future__ import annotations

import http.client
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from .process import exited


class WaitError(RuntimeError):
    """A wait gave up: its deadline passed, or what it waited on ended first."""


def wait_for(
    predicate: Callable[[], bool],
    what: str,
    timeout_s: float = 10.0,
    *,
    interval_s: float = 0.01,
    stop_early: Callable[[], str | None] | None = None,
) -> float:
    """Poll until `predicate()` holds; returns the seconds waited. Raises WaitError after
    `timeout_s`, or as soon as `stop_early()` gives a reason (e.g. `exited(proc)`): a
    server that died is not waited on for the rest of the deadline."""
    started = time.monotonic()
    while not predicate():
        reason = stop_early() if stop_early is not None else None
        if reason is not None:
            raise WaitError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() - started > timeout_s:
            raise WaitError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - started


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether a GET of `url` answers 200 now (no answer, an error status: False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):  # URLError and HTTPError are OSErrors
        return False


def wait_http(
    url: str, timeout_s: float = 180.0, *, proc: subprocess.Popen[Any] | None = None
) -> float:
    """Until `url` answers 200 (a server's readiness route); gives up at once if `proc`,
    the server, exits first. Returns the seconds waited."""
    return wait_for(
        lambda: http_ok(url),
        f"{url} to answer 200",
        timeout_s,
        interval_s=0.3,
        stop_early=None if proc is None else lambda: exited(proc),
    )
