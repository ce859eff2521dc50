"""Read Triton's Prometheus counters (the tests and the benchmarks).

Triton answers a request before it counts it, so a read right after the last answer
can miss the last few; `settled_counter` reads until two reads a moment apart agree.
"""

from __future__ import annotations

import re
import time
import urllib.request

# wait_for lives in procs.wait; still importable from here for the tests that import it so.
from procs.wait import wait_for as wait_for


def counter(metrics_url: str, name: str, model: str, version: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    pattern = rf'^{name}{{[^}}]*model="{model}"[^}}]*version="{version}"[^}}]*}} (\S+)$'
    values = re.findall(pattern, text, re.M)
    assert values, f"{name} for {model}/{version} missing from Triton's metrics"
    return sum(float(v) for v in values)


def settled_counter(
    metrics_url: str, name: str, model: str, version: str, timeout_s: float = 10.0
) -> float:
    previous = counter(metrics_url, name, model, version)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.15)
        current = counter(metrics_url, name, model, version)
        if current == previous:
            return current
        previous = current
    return previous


def model_gauge(metrics_url: str, name: str, model: str) -> float:
    """A per-model gauge (every version summed), e.g. nv_inference_pending_request_count."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    pattern = rf'^{name}{{[^}}]*model="{model}"[^}}]*}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))
