"""JWT access and refresh tokens.

Access tokens are short-lived; a refresh token is used once: /v1/auth/refresh claims its
jti with SET NX and hands out a new pair in the same family. Presenting a used refresh
token again means it was stolen (or replayed), so the whole family is revoked: every
access and refresh token of that login stops working in every worker at once.

State: `revoked:<jti>` and `family_revoked:<fam>` (TTL = the longest life of a token that
can carry them), `refresh_used:<jti>` (TTL = the refresh token's remaining life)."""

from __future__ import annotations

import base64
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from ..errors import StateUnavailable, Unauthorized
from ..observability.logging import fingerprint
from ..settings import JwtSettings
from ..state.store import StateStore
from .held import UNKNOWN
from .jwt_keys import ALGORITHM, SigningKeys
from .principal import Principal
from .users import UserRecord, Users

log = logging.getLogger("infergate.auth")
REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti"]
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def canonical_segment(segment: str) -> bool:
    """Unpadded base64url as RFC 7515 writes it, and the only spelling of its bytes (no
    spare bits set in the last character). PyJWT accepts `=` padding on purpose (some
    issuers add it), so `<token>==` verified as the token itself; we issue unpadded
    tokens only, and accept nothing but that exact text, whatever a PyJWT version allows."""
    if len(segment) % 4 == 1 or not _B64URL.fullmatch(segment):
        return False
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == segment


def canonical_jws(token: str) -> bool:
    """Three segments, each canonical: only the exact text we signed is accepted."""
    segments = token.split(".")
    return len(segments) == 3 and all(canonical_segment(s) for s in segments)


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    token_type: str = "Bearer"


class Tokens:
    def __init__(
        self,
        settings: JwtSettings,
        keys: SigningKeys,
        store: StateStore,
        users: Users,
        fail_open: bool = True,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._store = store
        self._users = users
        self._fail_open = fail_open

    def _encode(self, user: UserRecord, kind: str, family: str, ttl: int) -> str:
        now = int(time.time())
        claims = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": user.id,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
            "typ": kind,
            "fam": family,
            "role": user.role,
        }
        kid, key = self._keys.signer()
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})

    def issue(self, user: UserRecord, family: str | None = None) -> TokenPair:
        family = family or secrets.token_urlsafe(12)
        s = self._settings
        return TokenPair(
            access_token=self._encode(user, "access", family, s.access_ttl_s),
            refresh_token=self._encode(user, "refresh", family, s.refresh_ttl_s),
            expires_in=s.access_ttl_s,
            refresh_expires_in=s.refresh_ttl_s,
        )

    def decode(self, token: str, kind: str) -> dict[str, Any]:
        """Canonical form, signature, algorithm, kid, required claims, iss, aud, exp and
        type; or 401."""
        if not canonical_jws(token):
            raise Unauthorized()
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.verifier(header.get("kid"))
            if key is None:
                raise Unauthorized()
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_s,
                options={"require": REQUIRED},
            )
        except jwt.PyJWTError:
            raise Unauthorized() from None
        if claims.get("typ") != kind or not isinstance(claims.get("fam"), str):
            raise Unauthorized()
        return claims

    async def authenticate(self, token: str) -> Principal:
        claims = self.decode(token, "access")
        try:
            held = self._users.held
            names = [f"revoked:{claims['jti']}", f"family_revoked:{claims['fam']}"]
            revoked, family_revoked, *markers = await self._store.get_many(
                [*names, *held.names([claims["sub"]])]
            )
            [marker] = await held.combine(markers)
        except StateUnavailable:
            if not self._fail_open:
                raise
            # Fail-open: a valid signature and the user from SQL (or as this worker last
            # saw them); revocations made during the outage cannot be seen (documented).
            revoked, family_revoked, marker = None, None, UNKNOWN
        if revoked or family_revoked:
            raise Unauthorized()
        user = await self._users.for_auth(claims["sub"], marker)
        if user is None or user.disabled:
            raise Unauthorized()
        # Role and tier come from the user record, so an admin's change applies at once.
        return user.principal(claims["jti"], claims["fam"])

    async def refresh(self, refresh_token: str) -> TokenPair:
        claims = self.decode(refresh_token, "refresh")
        family = claims["fam"]
        if await self._store.get(f"family_revoked:{family}"):
            raise Unauthorized()
        remaining = max(1, int(claims["exp"]) - int(time.time()) + self._settings.leeway_s)
        first_use = await self._store.put(
            f"refresh_used:{claims['jti']}", b"1", ttl_s=remaining, only_if_absent=True
        )
        if not first_use:
            await self.revoke_family(family)
            log.warning(
                "refresh token reuse: family revoked", extra={"subject": fingerprint(claims["sub"])}
            )
            raise Unauthorized()
        user = await self._users.get(claims["sub"])
        if user is None or user.disabled:
            raise Unauthorized()
        return self.issue(user, family)

    async def revoke_family(self, family: str) -> None:
        ttl = self._settings.refresh_ttl_s + self._settings.leeway_s
        await self._store.put(f"family_revoked:{family}", b"1", ttl_s=ttl)

    async def logout(self, principal: Principal, refresh_token: str | None) -> None:
        if principal.token_id:
            ttl = self._settings.access_ttl_s + self._settings.leeway_s
            await self._store.put(f"revoked:{principal.token_id}", b"1", ttl_s=ttl)
        if principal.family:
            await self.revoke_family(principal.family)
        if refresh_token:
            claims = self.decode(refresh_token, "refresh")
            if claims["sub"] != principal.subject.removeprefix("user:"):
                raise Unauthorized()
            await self.revoke_family(claims["fam"])
