"""Schema fuzzing (RELIABILITY row 25): every operation of /openapi.json, up to 100
generated examples each, against the real app over the real Triton: no 5xx other than a
documented 503, and every response conforms to the documented schema.

(schemathesis' pytest fixture integration does not run under pytest 9 yet, so the
operations' hypothesis strategies are driven directly.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from .conftest import ADMIN

pytestmark = pytest.mark.integration


def _checker(operation: Any, base_url: str, counts: dict[str, int]) -> Callable[[], None]:
    label = operation.label
    counts[label] = 0

    @given(case=operation.as_strategy())
    @settings(
        max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case: Any) -> None:
        counts[label] += 1
        # As the admin: every route is reachable (401/403 paths are unit-tested).
        # 180 s: a schema-valid chat request may ask for 1 024 tokens (~45 s here alone).
        response = case.call(base_url=base_url, timeout=180, headers=ADMIN)
        assert response.status_code < 500 or response.status_code == 503, (
            label,
            response.status_code,
            response.text[:300],
        )
        case.validate_response(response)

    return check


def test_every_operation(frontend):
    schema = schemathesis.openapi.from_url(frontend.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    counts: dict[str, int] = {}
    for operation in operations:
        _checker(operation, frontend.url, counts)()
    print(counts)
    # Operations with inputs get 100 examples; those without have one possible request.
    assert all(n == 100 for label, n in counts.items() if "{" in label or "POST" in label)
