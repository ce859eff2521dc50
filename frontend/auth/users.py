"""Admin-created users (username + argon2 password hash), under `user:<id>`; the name
index `username:<name>` is claimed with SET NX so two admins cannot create the same name."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass

import orjson

from ..errors import Conflict, NotFound, StateUnavailable
from ..state.store import StateStore
from .outage import OutageCache
from .password_policy import check_new_password, common_passwords
from .passwords import Passwords
from .principal import Principal, Role


@dataclass(slots=True)
class UserRecord:
    id: str
    username: str
    role: Role
    tier: str
    created_at: float
    password_hash: str
    disabled: bool = False

    def public(self) -> dict:
        data = asdict(self)
        del data["password_hash"]
        return data

    def principal(self, token_id: str | None = None, family: str | None = None) -> Principal:
        subject = f"user:{self.id}"
        return Principal(subject, "user", self.role, self.tier, subject, token_id, family)


class Users:
    def __init__(
        self,
        store: StateStore,
        passwords: Passwords,
        fail_open: bool = False,
        outage_cache_s: float = 0.0,
    ) -> None:
        self._store = store
        self._passwords = passwords
        common_passwords()  # read the blocklist now (tens of ms), not in a request
        self._seen: OutageCache[UserRecord] = OutageCache(fail_open, outage_cache_s)

    def remember(self, record: UserRecord) -> None:
        self._seen.remember(record.id, record)

    def during_outage(self, user_id: str) -> UserRecord:
        """Fail-open only: the record as this worker last saw it, if recent enough; else
        StateUnavailable (the request gets 503)."""
        return self._seen.recall(user_id)

    async def for_auth(self, user_id: str) -> UserRecord | None:
        try:
            record = await self.get(user_id)
        except StateUnavailable:
            return self.during_outage(user_id)
        if record is not None:
            self.remember(record)
        return record

    @staticmethod
    def parse(raw: bytes | None) -> UserRecord | None:
        return UserRecord(**orjson.loads(raw)) if raw else None

    async def create(self, username: str, password: str, role: Role, tier: str) -> UserRecord:
        # Before the name is claimed: a refused password must not leave it taken. Any
        # future way to set a password goes through the same check.
        check_new_password(password, username)
        user_id = secrets.token_hex(8)
        name = username.lower()
        if not await self._store.put(f"username:{name}", user_id.encode(), only_if_absent=True):
            raise Conflict(f"user {username!r} already exists")
        record = UserRecord(
            id=user_id,
            username=username,
            role=role,
            tier=tier,
            created_at=time.time(),
            password_hash=await self._passwords.hash(password),
        )
        await self._save(record)
        await self._store.add_member("users", user_id)
        return record

    async def _save(self, record: UserRecord) -> None:
        await self._store.put(f"user:{record.id}", orjson.dumps(asdict(record)))

    async def get(self, user_id: str) -> UserRecord | None:
        return self.parse(await self._store.get(f"user:{user_id}"))

    async def require(self, user_id: str) -> UserRecord:
        record = await self.get(user_id)
        if record is None:
            raise NotFound(f"no user {user_id}")
        return record

    async def listing(self) -> list[dict]:
        ids = sorted(await self._store.members("users"))
        raws = await self._store.get_many([f"user:{i}" for i in ids])
        records = [r for r in (self.parse(raw) for raw in raws) if r is not None]
        return [r.public() for r in sorted(records, key=lambda r: r.created_at)]

    async def update(
        self, user_id: str, tier: str | None = None, disabled: bool | None = None
    ) -> UserRecord:
        record = await self.require(user_id)
        if tier is not None:
            record.tier = tier
        if disabled is not None:
            record.disabled = disabled
        await self._save(record)
        return record

    async def check_password(
        self, username: str, password: str, priority: bool = False
    ) -> UserRecord | None:
        raw_id = await self._store.get(f"username:{username.lower()}")
        record = await self.get(raw_id.decode()) if raw_id else None
        stored = record.password_hash if record else None
        ok = await self._passwords.verify(stored, password, priority)
        if not ok or record is None or record.disabled:
            return None
        return record
