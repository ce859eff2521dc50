"""Webhook signing secrets, encrypted at rest.

API keys are stored as keyed hashes because we only ever compare them; a webhook secret is
different: every delivery HMACs with it, so it must be recoverable. It is sealed with
AES-256-GCM under a key the caller derives from the server secret for this one purpose
(`SecretBox(frontend.auth.secrets.derive(secret_key, "webhook-secrets"))`), so a database
dump alone reveals no secret, and a tampered value fails loudly instead of signing with
garbage.

The sealed form is `v1.` + URL-safe base64 of (12-byte random nonce + ciphertext + 16-byte
tag). The version prefix leaves room for another algorithm or key later without guessing
from the bytes. The caller's `context` (the webhook's id) is the AEAD associated data: it
is not stored, but a sealed value copied onto another row will not open there.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1."
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16


class SealedValueError(ValueError):
    """A sealed value that does not open: wrong key or context, tampered, or not one of ours.
    The message never includes the value itself."""


class SecretBox:
    """Seals and opens short strings (webhook secrets) with AES-256-GCM."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != _KEY_BYTES:
            raise ValueError(f"a SecretBox key must be exactly {_KEY_BYTES} bytes")
        self._aead = AESGCM(bytes(key))

    def seal(self, plaintext: str, *, context: str) -> str:
        # A random 96-bit nonce per seal: secrets are sealed rarely (creation, rotation), far
        # below the ~2**32 messages per key where random GCM nonces start to risk a repeat.
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return _VERSION + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, *, context: str) -> str:
        if not isinstance(sealed, str) or not sealed.startswith(_VERSION):
            raise SealedValueError("not a sealed value (expected the v1. format)")
        try:
            # validate=True: a stray character is an error, not silently skipped.
            raw = base64.b64decode(
                sealed[len(_VERSION) :].encode("ascii"), altchars=b"-_", validate=True
            )
        except (binascii.Error, UnicodeEncodeError):
            raise SealedValueError("a sealed value's payload is not valid base64") from None
        if len(raw) < _NONCE_BYTES + _TAG_BYTES:
            raise SealedValueError("a sealed value is too short")
        try:
            plaintext = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
        except InvalidTag:
            raise SealedValueError(
                "a sealed value does not open: wrong key or context, or tampered"
            ) from None
        try:
            return plaintext.decode()
        except UnicodeDecodeError:  # authentic yet not ours: only a bug could seal this
            raise SealedValueError("a sealed value is not UTF-8 text") from None
