"""Opaque ids of rows the API shows (jobs, webhooks, events, deliveries)."""

from __future__ import annotations

import base64
import secrets


def new_id(prefix: str) -> str:
    """`<prefix>_` and 26 base32 characters of 16 random bytes."""
    return f"{prefix}_" + base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()
