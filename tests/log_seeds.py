"""Secrets and personal data to seed into requests, the app's logs captured while they are
sent, and the check that none of them (in any spelling a log could hold: as sent,
percent-encoded, plus-encoded, without its separators) reached a log. Shared by the unit
and the integration masking tests."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

from frontend.observability.logging import JsonFormatter

# One of each kind the masks know. Each value is specific enough that finding it (or a
# telling piece of it) in a log can only mean a leak.
PII = {
    "email": "jane.doe@example.com",
    "phone": "+1 (555) 123-4567",
    "card": "4111 1111 1111 1111",
    "card_dashed": "5500-0000-0000-0004",
    "ssn": "123-45-6789",
    "iban": "DE89 3704 0044 0532 0130 00",
    "iban_compact": "GB82WEST12345698765432",
    "aws_key": "AKIAIOSFODNN7EXAMPLE",
    "api_key": "ig_live_9f8e7d6c5b4a3f2e_" + "S3cr3tK3y" * 4 + "abcdefg",
    "openai_key": "sk-proj" + "Zq9Xw8Vu7Ts6Rr5Qp4" * 2,
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJlU2VjcmV0",
}
# Secret values under the parameter names that announce one.
SECRET_PARAMS = {
    name: f"Val{i}x{name.replace('_', '')}Q7"
    for i, name in enumerate(
        (
            "pwd",
            "passwd",
            "password",
            "secret",
            "client_secret",
            "token",
            "access_token",
            "refresh_token",
            "api_key",
            "apikey",
        )
    )
}
BEARER = "opaqueBearerT0kenValue9"
# Every request header the app reads or a proxy commonly adds: each gets `seeded_text()`.
HEADERS = (
    "User-Agent",
    "Referer",
    "Cookie",
    "X-Model-Version",
    "X-On-Behalf-Of",
    "If-None-Match",
    "Cache-Control",
    "X-Forwarded-For",
    "Origin",
)


def path_seeds() -> list[str]:
    """Every seed as it can stand alone in a path or a header: a bare secret has no shape
    to know it by, so secrets come with their name (`token=...`, `Bearer ...`)."""
    labelled = [f"{k}={v}" for k, v in SECRET_PARAMS.items()] + [f"Bearer {BEARER}"]
    return [*PII.values(), *labelled]


def query_variants() -> list[str]:
    """Every seed in a query string, as sent raw, percent-encoded and form-encoded (`+`)
    and twice percent-encoded."""
    pairs = [*((f"q_{k}", v) for k, v in PII.items()), *SECRET_PARAMS.items()]
    return [
        "&".join(f"{k}={v}" for k, v in pairs),
        "&".join(f"{k}={quote(v, safe='')}" for k, v in pairs),
        "&".join(f"{k}={quote_plus(v)}" for k, v in pairs),
        "&".join(f"{k}={quote(quote(v, safe=''), safe='')}" for k, v in pairs),
    ]


def forms(value: str) -> set[str]:
    """The spellings of one value that a log could hold."""
    compact = re.sub(r"[ ()+-]", "", value)
    spellings = {value, quote(value, safe=""), quote_plus(value), quote(value)}
    if len(compact) >= 9:
        spellings.add(compact)
    return {s for s in spellings if s}


def telltales() -> dict[str, set[str]]:
    """What must not be found, by seed. Besides each whole value: the middle of each
    card, IBAN and phone number (a partial mask would leave those), each secret's distinct
    core."""
    found: dict[str, set[str]] = {name: forms(value) for name, value in PII.items()}
    found["card"] |= {"1111 1111", "11111111"}
    found["card_dashed"] |= {"0000-0000", "00000000"}
    found["iban"] |= {"3704 0044", "37040044"}
    found["iban_compact"] |= {"12345698765432"}
    found["phone"] |= {"123-4567"}
    found["ssn"] |= {"45-6789"}
    found["api_key"] |= {"S3cr3tK3y"}
    found["openai_key"] |= {"Zq9Xw8Vu7Ts6Rr5Qp4"}
    found["jwt"] |= {"c2lnbmF0dXJlU2VjcmV0"}
    found["bearer"] = {BEARER}
    for name, value in SECRET_PARAMS.items():
        found[f"param {name}"] = {value}
    return found


def leaks(logged: str) -> list[str]:
    return [
        f"{name}: {spelling!r}"
        for name, spellings in telltales().items()
        for spelling in spellings
        if spelling in logged
    ]


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """What the app's formatter writes, as on stderr, while the block runs: the app's
    logs, not the test client's own request log (httpx logs every URL)."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(lambda record: not record.name.startswith("httpx"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield sink
    finally:
        root.removeHandler(handler)


def seeded_text() -> str:
    """Every seed in one free text (a body, a header value)."""
    return " ".join(
        [
            *PII.values(),
            f"Bearer {BEARER}",
            *(f"{k}={v}" for k, v in SECRET_PARAMS.items()),
        ]
    )
