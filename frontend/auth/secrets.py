"""Purpose-bound keys derived from INFERGATE_SECRET_KEY, so one setting never serves two
uses (a key hash can never be replayed as a JWT signature and vice versa)."""

from __future__ import annotations

import hashlib
import hmac


def derive(secret_key: str, purpose: str) -> bytes:
    return hmac.new(secret_key.encode(), f"infergate:{purpose}".encode(), hashlib.sha256).digest()


def keyed_hash(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
