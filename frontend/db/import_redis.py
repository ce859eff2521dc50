"""Bring the records of the previous version, which kept them in Redis, into SQL: users,
API keys (with their last-used times) and routing overrides. `python -m frontend db
import-redis` runs it.

The previous layout, every key under `ig:`: `users` (set of ids), `user:<id>` (JSON:
id, username, role, tier, created_at, password_hash, disabled), `username:<lowername>`
(the id, the name index); `keys` (set of ids), `key:<id>` (JSON: id, name, owner, role,
tier, created_at, created_by, digest, revoked_at), `key_used:<id>` (last use, epoch
seconds as text); `routing:overrides` (JSON object: model -> routing configuration).

Idempotent: a row that exists in SQL already wins (same id, or for a user the same name
in any case), so running it twice adds and changes nothing. Everything is written in one
transaction with one audit entry (`import.redis`), so a failed run leaves nothing half
done. Redis is only read."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from . import audit
from .tables import ApiKeyRow, RoutingHistoryRow, RoutingRow, UserRow

PREFIX = "ig:"
BATCH = 500  # records per MGET
ACTOR = "import"  # updated_by / actor of the imported routing


@dataclass(slots=True)
class Snapshot:
    """What the previous version stored, as read from Redis (values still raw JSON)."""

    users: list[bytes] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    key_used: dict[str, float] = field(default_factory=dict)
    routing: bytes | None = None


@dataclass(slots=True)
class Tally:
    imported: int = 0
    present: int = 0  # already in SQL: left as it is
    invalid: int = 0  # unreadable or incomplete record, or a user name taken by another id

    def line(self, what: str) -> str:
        text = f"{what}: {self.imported} imported, {self.present} already present"
        return text + (f", {self.invalid} skipped (invalid)" if self.invalid else "")


@dataclass(slots=True)
class ImportReport:
    users: Tally = field(default_factory=Tally)
    keys: Tally = field(default_factory=Tally)
    routing: Tally = field(default_factory=Tally)

    def details(self) -> dict[str, dict[str, int]]:
        return {
            name: {"imported": t.imported, "present": t.present, "invalid": t.invalid}
            for name, t in (("users", self.users), ("keys", self.keys), ("routing", self.routing))
        }

    def lines(self) -> list[str]:
        return [
            self.users.line("users"),
            self.keys.line("api keys"),
            self.routing.line("routing"),
        ]


def masked(url: str) -> str:
    """`url` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# --- reading Redis ---------------------------------------------------------------------


def _raw(value: bytes | str | None) -> bytes | None:
    """A value as bytes (the client answers str when made with decode_responses)."""
    return value.encode() if isinstance(value, str) else value


async def _values(client: redis.Redis, keys: list[str]) -> list[bytes | None]:
    values: list[bytes | None] = []
    for start in range(0, len(keys), BATCH):
        values += [_raw(v) for v in await client.mget(keys[start : start + BATCH])]
    return values


async def _members(client: redis.Redis, key: str) -> list[str]:
    return sorted(m.decode() if isinstance(m, bytes) else m for m in await client.smembers(key))


async def read_snapshot(client: redis.Redis) -> Snapshot:
    user_ids = await _members(client, f"{PREFIX}users")
    key_ids = await _members(client, f"{PREFIX}keys")
    users = await _values(client, [f"{PREFIX}user:{i}" for i in user_ids])
    keys = await _values(client, [f"{PREFIX}key:{i}" for i in key_ids])
    used = await _values(client, [f"{PREFIX}key_used:{i}" for i in key_ids])
    key_used: dict[str, float] = {}
    for key_id, raw in zip(key_ids, used, strict=True):
        if raw is not None:  # None: never used
            with contextlib.suppress(ValueError):  # garbled: as if never used
                key_used[key_id] = float(raw)
    return Snapshot(
        users=[u for u in users if u is not None],
        keys=[k for k in keys if k is not None],
        key_used=key_used,
        routing=_raw(await client.get(f"{PREFIX}routing:overrides")),
    )


# --- records to rows -------------------------------------------------------------------


def _text(data: dict[str, Any], name: str, longest: int) -> str:
    value = data[name]
    if not isinstance(value, str) or not value or len(value) > longest:
        raise ValueError(name)
    return value


def _time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("time")
    return float(value)


def user_row(raw: bytes) -> UserRow:
    data = orjson.loads(raw)
    username = _text(data, "username", 64)
    created_at = _time(data["created_at"])
    if created_at is None:
        raise ValueError("created_at")
    return UserRow(
        id=_text(data, "id", 32),
        username=username,
        username_key=username.lower(),
        role=_text(data, "role", 16),
        tier=_text(data, "tier", 64),
        password_hash=_text(data, "password_hash", 256),
        disabled=data.get("disabled", False) is True,
        created_at=created_at,
        updated_at=created_at,
    )


def key_row(raw: bytes, last_used: dict[str, float]) -> ApiKeyRow:
    data = orjson.loads(raw)
    key_id = _text(data, "id", 32)
    created_at = _time(data["created_at"])
    if created_at is None:
        raise ValueError("created_at")
    return ApiKeyRow(
        id=key_id,
        name=_text(data, "name", 128),
        owner=_text(data, "owner", 64),
        role=_text(data, "role", 16),
        tier=_text(data, "tier", 64),
        created_at=created_at,
        created_by=_text(data, "created_by", 64),
        digest=_text(data, "digest", 128),
        revoked_at=_time(data.get("revoked_at")),
        last_used_at=last_used.get(key_id),
        labels={},
    )


def routing_overrides(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("routing:overrides is not a JSON object")
    return data


# --- writing SQL -----------------------------------------------------------------------


async def _import_users(session: AsyncSession, snapshot: Snapshot, tally: Tally) -> None:
    existing = (await session.execute(select(UserRow.id, UserRow.username_key))).all()
    ids = {row.id for row in existing}
    names = {row.username_key for row in existing}
    for raw in snapshot.users:
        try:
            row = user_row(raw)
        except (ValueError, KeyError, TypeError):
            tally.invalid += 1
            continue
        if row.id in ids:
            tally.present += 1
        elif row.username_key in names:  # the name belongs to another account already
            tally.invalid += 1
        else:
            session.add(row)
            ids.add(row.id)
            names.add(row.username_key)
            tally.imported += 1


async def _import_keys(session: AsyncSession, snapshot: Snapshot, tally: Tally) -> None:
    ids = set((await session.scalars(select(ApiKeyRow.id))).all())
    for raw in snapshot.keys:
        try:
            row = key_row(raw, snapshot.key_used)
        except (ValueError, KeyError, TypeError):
            tally.invalid += 1
            continue
        if row.id in ids:
            tally.present += 1
        else:
            session.add(row)
            ids.add(row.id)
            tally.imported += 1


async def _import_routing(
    session: AsyncSession, snapshot: Snapshot, tally: Tally, now: float
) -> None:
    try:
        overrides = routing_overrides(snapshot.routing)
    except ValueError:
        tally.invalid += 1
        return
    models = set((await session.scalars(select(RoutingRow.model))).all())
    for model, config in sorted(overrides.items()):
        if not isinstance(config, dict) or not model or len(model) > 128:
            tally.invalid += 1
        elif model in models:
            tally.present += 1
        else:
            session.add(RoutingRow(model=model, config=config, updated_at=now, updated_by=ACTOR))
            session.add(
                RoutingHistoryRow(
                    model=model, changed_at=now, actor=ACTOR, previous=None, current=config
                )
            )
            tally.imported += 1


async def import_snapshot(session: AsyncSession, snapshot: Snapshot) -> ImportReport:
    """Add what `snapshot` holds and SQL lacks, and the audit entry, in `session`'s
    transaction."""
    report = ImportReport()
    await _import_users(session, snapshot, report.users)
    await _import_keys(session, snapshot, report.keys)
    await _import_routing(session, snapshot, report.routing, time.time())
    audit.add(
        session,
        actor="cli",
        action="import.redis",
        target="redis",
        request_id=None,
        details=report.details(),
    )
    return report


async def import_redis(
    engine: AsyncEngine, redis_url: str, timeout_s: float = 10.0
) -> ImportReport:
    """Read the previous version's records at `redis_url` and add them to the database
    behind `engine` (its schema at head); returns the counts."""
    client = redis.Redis.from_url(
        redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        snapshot = await read_snapshot(client)
    finally:
        await client.aclose()
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        return await import_snapshot(session, snapshot)
