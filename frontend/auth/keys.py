"""API keys: `ig_live_<id>_<secret>`, shown once, stored in SQL only as HMAC-SHA256 under a
key derived from the server secret, compared in constant time, looked up by id.

A key may expire (`expires_at`), be limited to some models and routes (`scopes`), carry
its own limits on top of its account's tier (`limits`) and free-form `labels`; rotation
gives it a new secret while the old one stays valid for a grace period.

Authentication reads no SQL on the hot path: the key (with its owner or parent) is held
per worker and invalidated through the state store on every change (frontend/auth/
held.py). Last-used times are collected per worker and written every few seconds."""

from __future__ import annotations

import logging
import re
import secrets as pysecrets
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ..db import accounts, audit
from ..db.database import Database
from ..db.tables import ApiKeyRow
from ..errors import DatabaseUnavailable, NotFound, StateUnavailable, Unauthorized
from ..state.store import StateStore
from .held import UNKNOWN, HeldRecords
from .key_record import KeyBundle, KeyRecord
from .principal import Role
from .secrets import derive, keyed_hash
from .users import UserRecord

log = logging.getLogger("infergate.auth")
KEY_RE = re.compile(r"^(ig_live|ig_test)_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class ApiKeys:
    def __init__(
        self,
        db: Database,
        store: StateStore,
        secret_key: str,
        prefix: str,
        *,
        held_s: float,
        outage_s: float,
        last_used_interval_s: float,
    ) -> None:
        self._db = db
        self._hash_key = derive(secret_key, "api-key-hash")
        self._prefix = prefix
        self.held: HeldRecords[KeyBundle] = HeldRecords(store, "key", held_s, outage_s)
        self._last_used_interval_s = last_used_interval_s
        self._touched: dict[str, float] = {}  # key id -> last time this worker wrote it
        self._used: dict[str, float] = {}  # key id -> last use, not yet written

    def digest(self, key: str) -> str:
        return keyed_hash(self._hash_key, key)

    def _new_secret(self, key_id: str) -> str:
        return f"{self._prefix}_{key_id}_{pysecrets.token_urlsafe(32)}"

    # --- writes (each with its audit entry, in one transaction) ------------------------

    async def create(
        self,
        name: str,
        owner: str | None,
        role: Role,
        tier: str,
        *,
        actor: str,
        request_id: str | None,
        expires_at: float | None = None,
        scopes: dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        labels: dict[str, Any] | None = None,
    ) -> tuple[KeyRecord, str]:
        key_id = pysecrets.token_hex(8)
        key = self._new_secret(key_id)
        now = time.time()
        row = ApiKeyRow(
            id=key_id,
            name=name,
            owner=owner or f"key:{key_id}",
            role=role,
            tier=tier,
            created_at=now,
            created_by=actor,
            digest=self.digest(key),
            expires_at=expires_at,
            scopes=scopes,
            limits=limits,
            labels=labels or {},
        )

        async def write(session: AsyncSession) -> KeyRecord:
            session.add(row)
            audit.add(
                session,
                actor=actor,
                action="key.create",
                target=f"key:{key_id}",
                request_id=request_id,
                details={"owner": row.owner, "role": role, "tier": tier, "name": name},
            )
            return KeyRecord.of(row)

        record = await self._db.run("key.create", write)
        log.info("api key created", extra={"key_id": key_id, "role": role, "tier": tier})
        return record, key

    async def _change(
        self,
        key_id: str,
        owner: str | None,
        action: str,
        values: dict[str, Any] | None,
        *,
        actor: str,
        request_id: str | None,
        bump_children: bool = False,
    ) -> KeyRecord:
        """Apply `values` to a key (404 when absent or not the owner's), audit it, then
        invalidate every worker's held copy (and its children's when asked)."""

        async def write(session: AsyncSession) -> tuple[KeyRecord, list[str]]:
            row = await accounts.key(session, key_id)
            if row is None or (owner is not None and not _owns(row, owner)):
                raise NotFound(f"no API key {key_id}")
            changed = accounts.changes(row, values or {})
            details = {k: v for k, v in changed.items() if k not in ("digest", "previous_digest")}
            if changed or values is None:
                audit.add(
                    session,
                    actor=actor,
                    action=action,
                    target=f"key:{key_id}",
                    request_id=request_id,
                    details=details,
                )
            children = await accounts.key_ids_owned_by(session, f"key:{key_id}")
            return KeyRecord.of(row), children if bump_children else []

        record, children = await self._db.run(action, write)
        await self.invalidate([key_id, *children])
        return record

    async def invalidate(self, key_ids: list[str]) -> None:
        try:
            await self.held.bump(key_ids)
        except StateUnavailable:
            log.warning("key change not broadcast: shared state down", extra={"keys": len(key_ids)})

    async def revoke(
        self, key_id: str, owner: str | None, *, actor: str, request_id: str | None
    ) -> KeyRecord:
        current = await self.get_owned(key_id, owner)
        values = {"revoked_at": current.revoked_at or time.time()}
        record = await self._change(
            key_id,
            owner,
            "key.revoke",
            values,
            actor=actor,
            request_id=request_id,
            bump_children=True,
        )
        log.info("api key revoked", extra={"key_id": key_id})
        return record

    async def update(
        self, key_id: str, values: dict[str, Any], *, actor: str, request_id: str | None
    ) -> KeyRecord:
        return await self._change(
            key_id,
            None,
            "key.update",
            values,
            actor=actor,
            request_id=request_id,
            bump_children=True,
        )

    async def rotate(
        self,
        key_id: str,
        owner: str | None,
        grace_s: int,
        *,
        actor: str,
        request_id: str | None,
    ) -> tuple[KeyRecord, str]:
        """A new secret; the current one keeps working for `grace_s` (0: refused at once).
        A second rotation inside the grace period ends the oldest secret at once."""
        current = await self.get_owned(key_id, owner)
        if current.revoked_at is not None:
            raise NotFound(f"no live API key {key_id}")
        key = self._new_secret(key_id)
        now = time.time()
        values = {
            "digest": self.digest(key),
            "previous_digest": current.digest if grace_s > 0 else None,
            "previous_valid_until": now + grace_s if grace_s > 0 else None,
            "rotated_at": now,
        }
        record = await self._change(
            key_id, owner, "key.rotate", values, actor=actor, request_id=request_id
        )
        return record, key

    # --- reads -------------------------------------------------------------------------

    async def get(self, key_id: str) -> KeyRecord | None:
        row = await self._db.run("key.get", lambda s: accounts.key(s, key_id))
        return KeyRecord.of(row) if row is not None else None

    async def get_owned(self, key_id: str, owner: str | None) -> KeyRecord:
        """The record, or 404 when it does not exist or belongs to someone else."""
        row = await self._db.run("key.get", lambda s: accounts.key(s, key_id))
        if row is None or (owner is not None and not _owns(row, owner)):
            raise NotFound(f"no API key {key_id}")
        return self._seen_use(KeyRecord.of(row))

    async def listing(self, owner: str | None) -> list[dict[str, Any]]:
        rows = await self._db.run("key.list", lambda s: accounts.keys(s, owner))
        return [self._seen_use(KeyRecord.of(r)).public() for r in rows]

    def _seen_use(self, record: KeyRecord) -> KeyRecord:
        """With this worker's use not yet written (other workers' within seconds)."""
        pending = self._used.get(record.id)
        if pending is not None and (record.last_used_at or 0) < pending:
            record.last_used_at = pending
        return record

    # --- the hot path ------------------------------------------------------------------

    async def authenticate(self, presented: str) -> KeyBundle:
        """The live key whose digest matches, with its owner; Unauthorized otherwise."""
        match = KEY_RE.match(presented)
        if match is None:
            raise Unauthorized()
        key_id = match.group(2)
        bundle = await self._bundle(key_id)
        now = time.time()
        key = bundle.key
        if not key.matches(self.digest(presented), now):
            raise Unauthorized()
        if key.revoked_at is not None:
            raise Unauthorized()
        if key.expires_at is not None and now >= key.expires_at:
            raise Unauthorized("this API key has expired")
        if bundle.parent is not None and not bundle.parent.live(now):
            raise Unauthorized()  # revoking (or expiring) a key ends the keys it minted
        if key.owner.startswith("user:") and (bundle.user is None or bundle.user.disabled):
            raise Unauthorized()
        self._note_use(key_id, now)
        return bundle

    async def _bundle(self, key_id: str) -> KeyBundle:
        try:
            [marker] = await self.held.markers([key_id])
        except StateUnavailable:
            marker = UNKNOWN
        # Held keys keep working through a database outage; new ones get 503.
        bundle = await self.held.resolve(
            key_id, marker, lambda: self._db.run("key.auth", lambda s: _load_bundle(s, key_id))
        )
        if bundle is None:
            raise Unauthorized()
        return bundle

    def _note_use(self, key_id: str, now: float) -> None:
        if now - self._touched.get(key_id, -1e12) >= self._last_used_interval_s:
            # The first use since the last write: what the listings show stays put until
            # the next write (within `last_used_interval_s` of it).
            self._used.setdefault(key_id, round(now, 3))

    async def write_last_used(self) -> None:
        """This worker's last-used times since the last write (informational: a failed
        write is retried with the next ones)."""
        used, self._used = self._used, {}
        if not used:
            return
        try:
            await self._db.run("key.last_used", lambda s: accounts.touch_keys(s, used))
        except DatabaseUnavailable:
            for key_id, at in used.items():
                self._used[key_id] = max(at, self._used.get(key_id, 0.0))
            return
        self._touched.update(used)


def _owns(row: ApiKeyRow, owner: str) -> bool:
    return row.owner == owner


async def _load_bundle(session: AsyncSession, key_id: str) -> KeyBundle | None:
    row = await accounts.key(session, key_id)
    if row is None:
        return None
    key = KeyRecord.of(row)
    user = parent = None
    if key.owner.startswith("user:"):
        user_row = await accounts.user(session, key.owner.removeprefix("user:"))
        user = UserRecord.of(user_row) if user_row is not None else None
    elif key.parent_id is not None:
        parent_row = await accounts.key(session, key.parent_id)
        parent = KeyRecord.of(parent_row) if parent_row is not None else None
    return KeyBundle(key, user, parent)
