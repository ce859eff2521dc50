"""API keys: `ig_live_<id>_<secret>`, shown once, stored only as HMAC-SHA256 under a key
derived from the server secret, compared in constant time, looked up by id.

Records live in the state store as JSON under `key:<id>`; `keys` and `keys:owner:<owner>`
index them; `key_used:<id>` holds the last-used time apart from the record so that the
hot path never rewrites it."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets as pysecrets
import time
from dataclasses import asdict, dataclass

import orjson

from ..errors import NotFound, StateUnavailable
from ..state.store import StateStore
from .outage import OutageCache
from .principal import Principal, Role
from .secrets import derive, keyed_hash, same

log = logging.getLogger("infergate.auth")
KEY_RE = re.compile(r"^(ig_live|ig_test)_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(slots=True)
class KeyRecord:
    id: str
    name: str
    owner: str
    role: Role
    tier: str
    created_at: float
    created_by: str
    digest: str
    revoked_at: float | None = None

    def public(self, last_used_at: float | None = None) -> dict:
        data = asdict(self)
        del data["digest"]
        data["prefix"] = f"{self.id}"
        data["last_used_at"] = last_used_at
        return data

    @property
    def parent_id(self) -> str | None:
        """The key whose account this one shares: set for a key minted through /v1/keys by
        a standalone key (owner `key:<parent>`), None for a standalone or a user's key."""
        if self.owner.startswith("key:") and self.owner != f"key:{self.id}":
            return self.owner.removeprefix("key:")
        return None

    def principal(self, account_tier: str | None = None) -> Principal:
        """A user's key acts as the user, and a key minted by a standalone key acts as that
        key: the owner's tier, limits and quota (`account_tier` is the owner's tier), so
        minting keys never multiplies anyone's limits."""
        if account_tier is not None and (self.owner.startswith("user:") or self.parent_id):
            return Principal(
                f"key:{self.id}", "api_key", self.role, account_tier, self.owner, account=self.owner
            )
        return Principal(f"key:{self.id}", "api_key", self.role, self.tier, self.owner)


class ApiKeys:
    def __init__(
        self,
        store: StateStore,
        secret_key: str,
        prefix: str,
        outage_cache_s: float,
        last_used_interval_s: float,
        fail_open: bool,
    ) -> None:
        self._store = store
        self._hash_key = derive(secret_key, "api-key-hash")
        self._prefix = prefix
        self._last_used_interval_s = last_used_interval_s
        self._seen: OutageCache[KeyRecord] = OutageCache(fail_open, outage_cache_s)
        self._touched: dict[str, float] = {}

    def digest(self, key: str) -> str:
        return keyed_hash(self._hash_key, key)

    async def create(
        self, name: str, owner: str | None, role: Role, tier: str, created_by: str
    ) -> tuple[KeyRecord, str]:
        key_id = pysecrets.token_hex(8)
        key = f"{self._prefix}_{key_id}_{pysecrets.token_urlsafe(32)}"
        record = KeyRecord(
            id=key_id,
            name=name,
            owner=owner or f"key:{key_id}",
            role=role,
            tier=tier,
            created_at=time.time(),
            created_by=created_by,
            digest=self.digest(key),
        )
        await self._save(record)
        await self._store.add_member("keys", key_id)
        await self._store.add_member(f"keys:owner:{record.owner}", key_id)
        log.info("api key created", extra={"key_id": key_id, "role": role, "tier": tier})
        return record, key

    async def _save(self, record: KeyRecord) -> None:
        await self._store.put(f"key:{record.id}", orjson.dumps(asdict(record)))

    async def get(self, key_id: str) -> KeyRecord | None:
        raw = await self._store.get(f"key:{key_id}")
        return KeyRecord(**orjson.loads(raw)) if raw else None

    async def get_owned(self, key_id: str, owner: str | None) -> KeyRecord:
        """The record, or 404 when it does not exist or belongs to someone else."""
        record = await self.get(key_id)
        if record is None or (owner is not None and record.owner != owner):
            raise NotFound(f"no API key {key_id}")
        return record

    async def listing(self, owner: str | None) -> list[dict]:
        ids = sorted(await self._store.members("keys" if owner is None else f"keys:owner:{owner}"))
        raws = await self._store.get_many([f"key:{i}" for i in ids])
        used = await self._store.get_many([f"key_used:{i}" for i in ids])
        records = [KeyRecord(**orjson.loads(r)) for r in raws if r]
        last = {i: float(u) for i, u in zip(ids, used, strict=True) if u}
        return [r.public(last.get(r.id)) for r in sorted(records, key=lambda r: r.created_at)]

    async def revoke(self, key_id: str, owner: str | None) -> KeyRecord:
        record = await self.get_owned(key_id, owner)
        if record.revoked_at is None:
            record.revoked_at = time.time()
            await self._save(record)
            log.info("api key revoked", extra={"key_id": key_id})
        self._seen.forget(key_id)
        return record

    async def set_tier(self, key_id: str, tier: str) -> KeyRecord:
        record = await self.get_owned(key_id, None)
        record.tier = tier
        await self._save(record)
        return record

    async def live_parent(self, record: KeyRecord) -> KeyRecord | None:
        """The key `record` was minted by, if it is still live (revoking a key ends its
        children too). Redis down: as `authenticate`, the record this worker last saw."""
        assert record.parent_id is not None
        try:
            parent = await self.get(record.parent_id)
        except StateUnavailable:
            parent = self._seen.recall(record.parent_id)
        if parent is None or parent.revoked_at is not None:
            return None
        self._seen.remember(parent.id, parent)
        return parent

    async def last_used(self, key_id: str) -> float | None:
        raw = await self._store.get(f"key_used:{key_id}")
        return float(raw) if raw else None

    async def authenticate(self, presented: str) -> KeyRecord | None:
        """The live record whose digest matches, or None. Revocation is read from the store
        on every request, so a revoked key fails at once in every worker."""
        match = KEY_RE.match(presented)
        if match is None:
            return None
        key_id = match.group(2)
        try:
            record = await self.get(key_id)
        except StateUnavailable:
            record = self._seen.recall(key_id)
        if record is None or not same(record.digest, self.digest(presented)):
            return None
        if record.revoked_at is not None:
            return None
        self._seen.remember(key_id, record)
        await self._touch(key_id)
        return record

    async def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(key_id, -1e9) < self._last_used_interval_s:
            return
        self._touched[key_id] = now
        with contextlib.suppress(StateUnavailable):  # last-used time is informational
            await self._store.put(f"key_used:{key_id}", str(round(time.time(), 3)).encode())
