"""A tier's request windows, parsed once with `limits` ("10/minute", "100/day")."""

from __future__ import annotations

from dataclasses import dataclass

from limits import RateLimitItem, parse_many

from ..settings import Tier


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str  # "free.minute", "free.5second": names the policy in the RateLimit headers
    limit: int
    seconds: int


def window_specs(tier_name: str, tier: Tier) -> tuple[WindowSpec, ...]:
    specs: list[WindowSpec] = []
    for text in tier.rate:
        for item in parse_many(text):
            specs.append(WindowSpec(f"{tier_name}.{_label(item)}", item.amount, item.get_expiry()))
    return tuple(sorted(specs, key=lambda s: s.seconds))


def _label(item: RateLimitItem) -> str:
    granularity = item.GRANULARITY.name
    return granularity if item.multiples == 1 else f"{item.multiples}{granularity}"
