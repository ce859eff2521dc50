"""Webhook signatures, in the Standard-Webhooks-like form docs/webhooks.md publishes.

Every delivery carries `Webhook-Id` (the event id, for the receiver's de-duplication),
`Webhook-Timestamp` (unix seconds) and `Webhook-Signature`:
`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. The timestamp is inside the
signed string so that a captured delivery cannot be replayed later with a fresh header;
during a secret rotation's grace period the header holds one `v1=` per live secret, the
new one first, so receivers that already switched and those that haven't both verify.

The published verifier lives in docs/webhooks.md (and tests/unit/test_notify_signing.py
runs it against this module), so a change to the format here must change it there too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"

# A header value with any of these would split or corrupt the HTTP header block.
_HEADER_UNSAFE = frozenset("\r\n\0")


def new_secret() -> str:
    """A fresh signing secret: the prefix (so that a leaked one is recognisable in logs and
    by secret scanners) and 32 random bytes, URL-safe base64 (43 characters)."""
    return SECRET_PREFIX + _secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `"<timestamp>." + body`, keyed by the whole secret string
    (prefix included, UTF-8): receivers key their HMAC with exactly the string they were
    shown, with nothing to strip or decode."""
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    signed = f"{_timestamp(timestamp)}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """`t=<timestamp>,v1=<hex>[,v1=<hex>]`: one `v1=` per secret, in the order given
    (callers pass the new secret first during a rotation's grace period)."""
    if isinstance(secrets, str):
        # A bare string is a Sequence[str] too: each character would become a "secret".
        raise TypeError("secrets must be a sequence of secrets, not one string")
    if not secrets:
        raise ValueError("at least one webhook secret is needed to sign")
    parts = [f"t={_timestamp(timestamp)}"]
    parts.extend(f"v1={signature(secret, timestamp, body)}" for secret in secrets)
    return ",".join(parts)


def delivery_headers(
    event_id: str, timestamp: int, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """The headers of one delivery attempt. The timestamp is the attempt's (receivers reject
    old ones), so a retry is signed afresh; the event id stays the same across retries."""
    if not event_id or any(ch in _HEADER_UNSAFE for ch in event_id):
        raise ValueError("the event id must be a non-empty, single-line header value")
    return {
        "Webhook-Id": event_id,
        "Webhook-Timestamp": str(_timestamp(timestamp)),
        "Webhook-Signature": signature_header(secrets, timestamp, body),
        "Content-Type": "application/json",
    }


def _timestamp(timestamp: int) -> int:
    # A float would sign "1700000000.5." and a bool "True.", neither of which the
    # published verifier (integer Webhook-Timestamp) could ever reproduce.
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("the signing timestamp must be a non-negative integer (unix seconds)")
    return timestamp
