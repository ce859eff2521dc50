"""Admin-created users (username + argon2 password hash), in SQL. The lower-cased name is
unique in the table, so two admins (or fifty concurrent requests) cannot create the same
name: exactly one insert wins, the others are 409 before any password is hashed."""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import accounts, audit
from ..db.database import Database
from ..db.tables import UserRow
from ..errors import Conflict, NotFound, StateUnavailable
from ..state.store import StateStore
from .held import HeldRecords
from .password_policy import check_new_password, common_passwords
from .passwords import Passwords
from .principal import Principal, Role

# The password column of a name claimed but not yet hashed: matches no password (argon2
# refuses to parse it) and the row stays disabled until the hash is written.
CLAIMED = "!claimed"


@dataclass(slots=True)
class UserRecord:
    id: str
    username: str
    role: Role
    tier: str
    created_at: float
    password_hash: str
    disabled: bool = False

    @classmethod
    def of(cls, row: UserRow) -> UserRecord:
        return cls(
            id=row.id,
            username=row.username,
            role=row.role,  # type: ignore[arg-type]
            tier=row.tier,
            created_at=row.created_at,
            password_hash=row.password_hash,
            disabled=row.disabled,
        )

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role,
            "tier": self.tier,
            "created_at": self.created_at,
            "disabled": self.disabled,
        }

    def principal(self, token_id: str | None = None, family: str | None = None) -> Principal:
        subject = f"user:{self.id}"
        return Principal(subject, "user", self.role, self.tier, subject, token_id, family)


class Users:
    def __init__(
        self,
        db: Database,
        store: StateStore,
        passwords: Passwords,
        *,
        held_s: float,
        outage_s: float,
    ) -> None:
        self._db = db
        self._passwords = passwords
        common_passwords()  # read the blocklist now (tens of ms), not in a request
        self.held: HeldRecords[UserRecord] = HeldRecords(store, "user", held_s, outage_s)

    async def create(
        self,
        username: str,
        password: str,
        role: Role,
        tier: str,
        *,
        actor: str,
        request_id: str | None,
    ) -> UserRecord:
        # Before the name is claimed: a refused password must not leave it taken. Any
        # future way to set a password goes through the same check.
        check_new_password(password, username)
        now = time.time()
        row = UserRow(
            id=secrets.token_hex(8),
            username=username,
            username_key=username.lower(),
            role=role,
            tier=tier,
            password_hash=CLAIMED,
            disabled=True,
            created_at=now,
            updated_at=now,
        )

        async def claim(session: AsyncSession) -> None:
            session.add(row)
            await session.flush()

        try:
            await self._db.run("user.create", claim)
        except IntegrityError:
            raise Conflict(f"user {username!r} already exists") from None
        try:
            password_hash = await self._passwords.hash(password)
        except BaseException:
            await self._db.run("user.create", lambda s: _delete(s, row.id))
            raise

        async def finish(session: AsyncSession) -> UserRecord:
            claimed = await accounts.user(session, row.id)
            assert claimed is not None
            claimed.password_hash, claimed.disabled = password_hash, False
            audit.add(
                session,
                actor=actor,
                action="user.create",
                target=f"user:{row.id}",
                request_id=request_id,
                details={"username": username, "role": role, "tier": tier},
            )
            return UserRecord.of(claimed)

        return await self._db.run("user.create", finish)

    async def get(self, user_id: str) -> UserRecord | None:
        row = await self._db.run("user.get", lambda s: accounts.user(s, user_id))
        return UserRecord.of(row) if row is not None else None

    async def require(self, user_id: str) -> UserRecord:
        record = await self.get(user_id)
        if record is None:
            raise NotFound(f"no user {user_id}")
        return record

    async def listing(self) -> list[dict[str, Any]]:
        rows = await self._db.run("user.list", accounts.users)
        return [UserRecord.of(r).public() for r in rows]

    async def update(
        self,
        user_id: str,
        *,
        tier: str | None,
        disabled: bool | None,
        actor: str,
        request_id: str | None,
    ) -> tuple[UserRecord, list[str]]:
        """The changed user and the ids of their keys (whose held copies carry the user's
        tier and state: the caller invalidates them too)."""
        values: dict[str, Any] = {}
        if tier is not None:
            values["tier"] = tier
        if disabled is not None:
            values["disabled"] = disabled

        async def write(session: AsyncSession) -> tuple[UserRecord, list[str]]:
            row = await accounts.user(session, user_id)
            if row is None or row.password_hash == CLAIMED:
                raise NotFound(f"no user {user_id}")
            changed = accounts.changes(row, values)
            if changed:
                row.updated_at = time.time()
                action = "user.disable" if changed.get("disabled", [0, 0])[1] else "user.update"
                audit.add(
                    session,
                    actor=actor,
                    action=action,
                    target=f"user:{user_id}",
                    request_id=request_id,
                    details=changed,
                )
            return UserRecord.of(row), await accounts.key_ids_owned_by(session, f"user:{user_id}")

        record, key_ids = await self._db.run("user.update", write)
        # Forgotten here at least; with the store down the others see it within their hold.
        with contextlib.suppress(StateUnavailable):
            await self.held.bump([user_id])
        return record, key_ids

    async def check_password(
        self, username: str, password: str, priority: bool = False
    ) -> UserRecord | None:
        row = await self._db.run("user.login", lambda s: accounts.user_by_name(s, username))
        record = UserRecord.of(row) if row is not None else None
        stored = record.password_hash if record and record.password_hash != CLAIMED else None
        ok = await self._passwords.verify(stored, password, priority)
        if not ok or record is None or record.disabled:
            return None
        return record

    async def for_auth(self, user_id: str, marker: bytes | None) -> UserRecord | None:
        """The user behind a token (held per worker like keys; `marker` read by the
        caller in the same round trip as the token's revocations, UNKNOWN when the state
        store is down)."""

        async def load() -> UserRecord | None:
            row = await self._db.run("user.auth", lambda s: accounts.user(s, user_id))
            return UserRecord.of(row) if row is not None else None

        return await self.held.resolve(user_id, marker, load)


async def _delete(session: AsyncSession, user_id: str) -> None:
    row = await accounts.user(session, user_id)
    if row is not None:
        await session.delete(row)
