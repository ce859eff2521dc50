"""A tier's request windows, parsed once with `limits` ("10/minute", "100/day"), and an
API key's own requests-per-minute window on top of them."""

from __future__ import annotations

from dataclasses import dataclass

from limits import RateLimitItem, parse_many

from ..settings import Tier


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str  # "free.minute", "free.5second": names the policy in the RateLimit headers
    limit: int
    seconds: int
    title: str = ""  # what a 429 calls the window (default: its name)

    @property
    def described(self) -> str:
        return self.title or self.name


KEY_MINUTE = "key.minute"  # the key's window in the RateLimit headers


def key_minute_spec(requests_per_minute: int) -> WindowSpec:
    return WindowSpec(KEY_MINUTE, requests_per_minute, 60, "key requests per minute")


def window_specs(tier_name: str, tier: Tier) -> tuple[WindowSpec, ...]:
    specs: list[WindowSpec] = []
    for text in tier.rate:
        for item in parse_many(text):
            specs.append(WindowSpec(f"{tier_name}.{_label(item)}", item.amount, item.get_expiry()))
    return tuple(sorted(specs, key=lambda s: s.seconds))


def _label(item: RateLimitItem) -> str:
    granularity = item.GRANULARITY.name
    return granularity if item.multiples == 1 else f"{item.multiples}{granularity}"
