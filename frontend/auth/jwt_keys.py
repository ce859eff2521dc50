"""The Ed25519 key ring for JWTs: sign with the active kid, verify with any listed kid.

Algorithm pinned to EdDSA: a token whose header says `none` or HS256 (for instance one
signed with our public key as an HMAC secret) never reaches a verifier."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..settings import JwtSettings
from .secrets import derive

ALGORITHM = "EdDSA"


class SigningKeys:
    def __init__(self, settings: JwtSettings, secret_key: str) -> None:
        self._private: dict[str, Ed25519PrivateKey] = {}
        for item in settings.signing_keys:
            key = serialization.load_pem_private_key(
                item.private_key_pem.get_secret_value().encode(), password=None
            )
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"jwt signing key {item.kid!r} is not an Ed25519 key")
            self._private[item.kid] = key
        if not self._private:
            # Derived from the server secret: the same in every worker and replica.
            key = Ed25519PrivateKey.from_private_bytes(derive(secret_key, "jwt-ed25519"))
            self._private[self.kid_of(key.public_key())] = key
        self.active_kid = settings.active_kid or next(iter(self._private))
        self._public = {kid: key.public_key() for kid, key in self._private.items()}

    @staticmethod
    def kid_of(public: Ed25519PublicKey) -> str:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "k" + hashlib.sha256(raw).hexdigest()[:12]

    def signer(self) -> tuple[str, Ed25519PrivateKey]:
        return self.active_kid, self._private[self.active_kid]

    def verifier(self, kid: object) -> Ed25519PublicKey | None:
        return self._public.get(kid) if isinstance(kid, str) else None

    def public_pem(self, kid: str) -> bytes:
        return self._public[kid].public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
