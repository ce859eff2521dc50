"""`python -m frontend db ...` and the import of the previous version's Redis, on both
engines (a fresh SQLite file, a fresh database on a private PostgreSQL) with the
session's private Redis; and `serve`'s database step (prod refuses an unmigrated
database), called as serve calls it, without Triton."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from frontend.app import create_app
from frontend.container import ServiceOverrides
from frontend.db import migrate
from frontend.db.cli import CommandError, prepare_database
from frontend.db.import_redis import ImportReport, import_redis
from frontend.db.tables import ApiKeyRow, AuditRow, RoutingHistoryRow, RoutingRow, UserRow
from frontend.settings import DatabaseSettings, Settings, TritonSettings
from frontend.triton.client import TritonClient
from procs.ports import free_port
from tests.db_support import (
    ACCOUNT_TABLES,
    JOB_TABLES,
    NOTIFY_TABLES,
    ROUTING_USAGE_TABLES,
    engine,
    table_names,
)
from tests.unit.test_frontend_errors import FakeTriton

from .conftest import ROOT, RedisServer

pytestmark = pytest.mark.integration
REDIS_DB = 7  # the old layout in a database of its own: other tests use 0 of the same server
# Real credentials, as the previous version stored them: an argon2id hash of the
# password, and each key's HMAC-SHA256 under the key derived from the server secret.
OLD_SECRET = secrets.token_urlsafe(48)  # the previous install's INFERGATE_SECRET_KEY
PASSWORD = "correct horse battery staple"
HASH = PasswordHasher().hash(PASSWORD)
LAPTOP_KEY = f"ig_live_0123456789abcdef_{secrets.token_urlsafe(32)}"
JOB_KEY = f"ig_live_fedcba9876543210_{secrets.token_urlsafe(32)}"


def old_digest(key: str) -> str:
    """A key's digest as the previous version computed it (written out, not imported:
    a change to the derivation that strands imported keys fails the tests here)."""
    hash_key = hmac.new(OLD_SECRET.encode(), b"infergate:api-key-hash", hashlib.sha256).digest()
    return hmac.new(hash_key, key.encode(), hashlib.sha256).hexdigest()


USERS: list[dict[str, Any]] = [
    {
        "id": "a1" * 8,
        "username": "Alice",
        "role": "admin",
        "tier": "unlimited",
        "created_at": 1_700_000_000.5,
        "password_hash": HASH,
        "disabled": False,
    },
    {
        "id": "b2" * 8,
        "username": "bob",
        "role": "user",
        "tier": "free",
        "created_at": 1_700_000_001.0,
        "password_hash": HASH,
        "disabled": True,
    },
]
KEYS: list[dict[str, Any]] = [
    {
        "id": "0123456789abcdef",
        "name": "alice laptop",
        "owner": "user:" + "a1" * 8,
        "role": "admin",
        "tier": "unlimited",
        "created_at": 1_700_000_010.0,
        "created_by": "user:" + "a1" * 8,
        "digest": old_digest(LAPTOP_KEY),
        "revoked_at": None,
    },
    {
        "id": "fedcba9876543210",
        "name": "batch job",
        "owner": "key:fedcba9876543210",
        "role": "user",
        "tier": "free",
        "created_at": 1_700_000_020.0,
        "created_by": "bootstrap",
        "digest": old_digest(JOB_KEY),
        "revoked_at": 1_700_000_500.0,
    },
]
ROUTING = {
    "intent": {"default": "2", "stable": ["1", "2"]},
    "sentiment": {"default": "1", "stable": ["1"]},
}


def old_redis(redis_server: RedisServer) -> str:
    """The previous version's layout, written with a plain client; returns its URL."""
    import redis

    url = f"redis://127.0.0.1:{redis_server.port}/{REDIS_DB}"
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
        for user in USERS:
            client.sadd("ig:users", user["id"])
            client.set(f"ig:user:{user['id']}", json.dumps(user))
            client.set(f"ig:username:{user['username'].lower()}", user["id"])
        client.sadd("ig:users", "c3" * 8)  # indexed, its record garbled: skipped, counted
        client.set("ig:user:" + "c3" * 8, b"{not json")
        for key in KEYS:
            client.sadd("ig:keys", key["id"])
            client.set(f"ig:key:{key['id']}", json.dumps(key))
        client.set("ig:key_used:0123456789abcdef", "1700000600.25")
        client.set("ig:routing:overrides", json.dumps(ROUTING))
    finally:
        client.close()
    return url


def run(database_url: str, scenario):
    async def wrapped():
        db = engine(database_url)
        try:
            return await scenario(db)
        finally:
            await db.dispose()

    return asyncio.run(wrapped())


async def counts(db: AsyncEngine) -> dict[str, int]:
    async with AsyncSession(db) as session:
        return {
            row.__tablename__: int(await session.scalar(select(func.count()).select_from(row)) or 0)
            for row in (UserRow, ApiKeyRow, RoutingRow, RoutingHistoryRow, AuditRow)
        }


def tallies(report: ImportReport) -> dict[str, tuple[int, int, int]]:
    return {
        name: (t["imported"], t["present"], t["invalid"]) for name, t in report.details().items()
    }


def test_import_brings_users_keys_and_routing_once(database_url, redis_server):
    redis_url = old_redis(redis_server)

    async def scenario(db: AsyncEngine) -> None:
        await migrate.upgrade(db)
        first = await import_redis(db, redis_url)
        assert tallies(first) == {"users": (2, 0, 1), "keys": (2, 0, 0), "routing": (2, 0, 0)}
        after_first = await counts(db)
        assert after_first == {
            "users": 2,
            "api_keys": 2,
            "routing": 2,
            "routing_history": 2,
            "audit_log": 1,
        }
        async with AsyncSession(db) as session:
            alice = await session.get(UserRow, "a1" * 8)
            bob = await session.get(UserRow, "b2" * 8)
            laptop = await session.get(ApiKeyRow, "0123456789abcdef")
            job = await session.get(ApiKeyRow, "fedcba9876543210")
            intent = await session.get(RoutingRow, "intent")
            history = (await session.scalars(select(RoutingHistoryRow))).all()
            entry = await session.scalar(select(AuditRow))
        assert alice is not None and bob is not None and laptop is not None and job is not None
        assert (alice.username, alice.username_key, alice.role, alice.tier) == (
            "Alice",
            "alice",
            "admin",
            "unlimited",
        )
        assert alice.password_hash == HASH and alice.created_at == 1_700_000_000.5
        assert not alice.disabled and bob.disabled
        assert laptop.digest == old_digest(LAPTOP_KEY) and laptop.last_used_at == 1_700_000_600.25
        assert laptop.revoked_at is None and job.revoked_at == 1_700_000_500.0
        assert job.last_used_at is None and job.owner == "key:fedcba9876543210"
        assert job.labels == {} and job.scopes is None
        assert intent is not None and intent.config == ROUTING["intent"]
        assert intent.updated_by == "import"
        assert sorted(
            (h.model, h.actor, h.previous, h.current == ROUTING[h.model]) for h in history
        ) == [
            ("intent", "import", None, True),
            ("sentiment", "import", None, True),
        ]
        assert entry is not None and (entry.actor, entry.action) == ("cli", "import.redis")
        assert entry.details["users"] == {"imported": 2, "present": 0, "invalid": 1}

        # SQL's rows win over Redis's: change one on each side, import again.
        async with AsyncSession(db) as session, session.begin():
            row = await session.get(UserRow, "a1" * 8)
            assert row is not None
            row.tier = "pro"
        again = await import_redis(db, redis_url)
        assert tallies(again) == {"users": (0, 2, 1), "keys": (0, 2, 0), "routing": (0, 2, 0)}
        assert await counts(db) == after_first | {"audit_log": 2}  # one entry per run
        async with AsyncSession(db) as session:
            kept = await session.get(UserRow, "a1" * 8)
        assert kept is not None and kept.tier == "pro"

    run(database_url, scenario)


def test_a_name_taken_in_sql_by_another_account_is_not_imported(database_url, redis_server):
    redis_url = old_redis(redis_server)

    async def scenario(db: AsyncEngine) -> None:
        await migrate.upgrade(db)
        async with AsyncSession(db) as session, session.begin():
            session.add(
                UserRow(
                    id="ee" * 8,
                    username="ALICE",
                    username_key="alice",
                    role="user",
                    tier="free",
                    password_hash=HASH,
                    disabled=False,
                    created_at=1.0,
                    updated_at=1.0,
                )
            )
        report = await import_redis(db, redis_url)
        assert tallies(report)["users"] == (1, 0, 2)  # bob; Alice's name is taken, c3 garbled
        async with AsyncSession(db) as session:
            names = sorted((await session.scalars(select(UserRow.username))).all())
        assert names == ["ALICE", "bob"]

    run(database_url, scenario)


def test_imported_keys_and_passwords_authenticate(database_url, redis_server, repository):
    redis_url = old_redis(redis_server)

    async def imported(db: AsyncEngine) -> None:
        await migrate.upgrade(db)
        assert tallies(await import_redis(db, redis_url))["keys"] == (2, 0, 0)

    run(database_url, imported)
    # The app over that database, under the previous install's secret (Triton faked:
    # what is under test is who gets in).
    settings = Settings(
        environment="test",
        secret_key=OLD_SECRET,
        database=DatabaseSettings(url=database_url),
        triton=TritonSettings(model_repository=repository),
    )
    overrides = ServiceOverrides(triton=TritonClient(settings.triton, FakeTriton()))
    with TestClient(create_app(settings, overrides)) as client:
        models = client.get("/v1/models", headers={"X-API-Key": LAPTOP_KEY})
        assert models.status_code == 200, models.text
        forged = LAPTOP_KEY[:-1] + ("B" if LAPTOP_KEY.endswith("A") else "A")
        assert client.get("/v1/models", headers={"X-API-Key": forged}).status_code == 401
        # The revocation came across too: the key's digest matches, it is refused.
        assert client.get("/v1/models", headers={"X-API-Key": JOB_KEY}).status_code == 401

        login = client.post("/v1/auth/token", json={"username": "Alice", "password": PASSWORD})
        assert login.status_code == 200, login.text
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert client.get("/v1/models", headers=bearer).status_code == 200
        wrong = client.post("/v1/auth/token", json={"username": "Alice", "password": "nope"})
        assert wrong.status_code == 401
        # bob's hash is the same, his account imported disabled: refused.
        disabled = client.post("/v1/auth/token", json={"username": "bob", "password": PASSWORD})
        assert disabled.status_code == 401


# One routing row the database refuses (a trigger), so that the import fails at its last
# write, after the users and keys are in the transaction.
REFUSE_SENTIMENT = {
    "sqlite": [
        "CREATE TRIGGER refuse_sentiment BEFORE INSERT ON routing WHEN NEW.model = 'sentiment' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_sentiment() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.model = 'sentiment' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER refuse_sentiment BEFORE INSERT ON routing "
        "FOR EACH ROW EXECUTE FUNCTION refuse_sentiment()",
    ],
}
ALLOW_SENTIMENT = {
    "sqlite": ["DROP TRIGGER refuse_sentiment"],
    "postgresql": ["DROP TRIGGER refuse_sentiment ON routing"],
}


async def execute(db: AsyncEngine, statements: list[str]) -> None:
    async with db.begin() as connection:
        for statement in statements:
            await connection.exec_driver_sql(statement)


def test_a_failed_import_leaves_nothing(database_url, redis_server):
    redis_url = old_redis(redis_server)
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    empty = {"users": 0, "api_keys": 0, "routing": 0, "routing_history": 0, "audit_log": 0}

    async def refusing(db: AsyncEngine) -> None:
        await migrate.upgrade(db)
        await execute(db, REFUSE_SENTIMENT[kind])
        with pytest.raises(SQLAlchemyError, match="refused by the test"):
            await import_redis(db, redis_url)
        assert await counts(db) == empty  # no user, key or routing row, no audit entry

    run(database_url, refusing)
    # The command: one line, exit 1, and still nothing written.
    failed = cli("db", "import-redis", "--redis-url", redis_url, env=url_env(database_url))
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1, failed.stderr
    assert "refused by the test" in failed.stderr and "Traceback" not in failed.stderr
    assert run(database_url, counts) == empty

    async def allowed(db: AsyncEngine) -> None:
        await execute(db, ALLOW_SENTIMENT[kind])
        # Nothing of the failed runs counts as present: all of it comes in now.
        report = await import_redis(db, redis_url)
        assert tallies(report) == {"users": (2, 0, 1), "keys": (2, 0, 0), "routing": (2, 0, 0)}
        assert (await counts(db))["audit_log"] == 1

    run(database_url, allowed)


def url_env(database_url: str) -> dict[str, str]:
    return {"INFERGATE_DATABASE__URL": database_url}


def cli(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m frontend ...` with only the INFERGATE_ settings given here."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INFERGATE_")}
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "frontend", *args],
        env=clean | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_command(database_url, redis_server):
    redis_url = old_redis(redis_server)
    env = {"INFERGATE_DATABASE__URL": database_url}
    first = cli("db", "import-redis", "--redis-url", redis_url, env=env)
    assert first.returncode == 0, first.stderr
    assert "users: 2 imported, 0 already present, 1 skipped (invalid)" in first.stdout
    assert "api keys: 2 imported, 0 already present" in first.stdout
    assert "routing: 2 imported, 0 already present" in first.stdout
    again = cli("db", "import-redis", env=env | {"INFERGATE_REDIS__URL": redis_url})
    assert again.returncode == 0, again.stderr
    assert "users: 0 imported, 2 already present" in again.stdout
    assert "api keys: 0 imported, 2 already present" in again.stdout
    assert run(database_url, counts)["users"] == 2


def test_the_import_in_prod_needs_the_database_at_head(database_url, redis_server):
    redis_url = old_redis(redis_server)
    prod = url_env(database_url) | {
        "INFERGATE_ENVIRONMENT": "prod",
        "INFERGATE_SECRET_KEY": secrets.token_urlsafe(48),
    }
    refused = cli("db", "import-redis", "--redis-url", redis_url, env=prod)
    assert refused.returncode == 1, refused.stdout
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "the database is empty" in refused.stderr
    assert "run `python -m frontend db upgrade`" in refused.stderr
    assert run(database_url, table_names) == set()  # not migrated, nothing imported
    assert run(database_url, migrate.current) is None

    run(database_url, migrate.upgrade)  # what the message says to do
    done = cli("db", "import-redis", "--redis-url", redis_url, env=prod)
    assert done.returncode == 0, done.stderr
    assert "users: 2 imported" in done.stdout
    assert run(database_url, counts)["audit_log"] == 1


def test_upgrade_current_downgrade_commands(database_url):
    env = {"INFERGATE_DATABASE__URL": database_url}
    current = cli("db", "current", env=env)
    assert current.returncode == 0, current.stderr
    assert (
        "revision none (empty), head 0004 (run `python -m frontend db upgrade`)" in current.stdout
    )

    upgraded = cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "upgraded from an empty database to 0004" in upgraded.stdout
    assert (
        run(database_url, table_names)
        == ACCOUNT_TABLES | ROUTING_USAGE_TABLES | JOB_TABLES | NOTIFY_TABLES
    )

    down = cli("db", "downgrade", "0001", env=env)
    assert down.returncode == 0, down.stderr
    assert run(database_url, table_names) == ACCOUNT_TABLES
    assert "revision 0001, head 0004" in cli("db", "current", env=env).stdout


def test_without_a_url_the_commands_use_the_embedded_file(tmp_path):
    done = cli("db", "upgrade", env={}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = tmp_path / ".infergate" / "infergate.db"
    assert path.exists() and str(path) in done.stdout
    assert path.stat().st_mode & 0o777 == 0o600  # password hashes and key digests inside
    tables = run(f"sqlite+aiosqlite:///{path}", table_names)
    assert tables == ACCOUNT_TABLES | ROUTING_USAGE_TABLES | JOB_TABLES | NOTIFY_TABLES


def test_errors_are_one_line_without_a_traceback_or_the_password(tmp_path):
    port = free_port()  # nothing listens there
    unreachable = {
        "INFERGATE_DATABASE__URL": f"postgresql+asyncpg://ig:s3cretpw@127.0.0.1:{port}/x"
    }
    done = cli("db", "current", env=unreachable)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "s3cretpw" not in done.stderr and f"127.0.0.1:{port}" in done.stderr

    wrong = cli("db", "downgrade", "nosuchrevision", env={}, cwd=tmp_path)
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1
    assert "nosuchrevision" in wrong.stderr

    prod = cli(
        "db",
        "current",
        env={"INFERGATE_ENVIRONMENT": "prod", "INFERGATE_SECRET_KEY": secrets.token_urlsafe(48)},
    )
    assert prod.returncode == 1 and prod.stderr.count("\n") == 1
    assert "INFERGATE_DATABASE__URL must be set in prod" in prod.stderr


def prod_settings(database_url: str | None) -> Settings:
    return Settings(
        environment="prod",
        secret_key=secrets.token_urlsafe(48),
        database=DatabaseSettings(url=database_url),
    )


def test_serve_in_prod_refuses_an_unmigrated_database_naming_the_command(database_url):
    with pytest.raises(CommandError, match=r"database is empty.*`python -m frontend db upgrade`"):
        prepare_database(prod_settings(database_url))
    assert run(database_url, table_names) == set()  # prod never migrates by itself

    run(database_url, lambda db: migrate.upgrade(db, "0001"))
    with pytest.raises(CommandError, match="revision 0001, this version needs 0004"):
        prepare_database(prod_settings(database_url))

    run(database_url, migrate.upgrade)
    assert prepare_database(prod_settings(database_url)) == database_url


def test_serve_in_prod_refuses_to_start_without_a_database_url():
    with pytest.raises(CommandError, match="INFERGATE_DATABASE__URL must be set in prod"):
        prepare_database(prod_settings(None))


def test_serve_outside_prod_migrates_the_configured_database(database_url):
    settings = Settings(environment="dev", database=DatabaseSettings(url=database_url))
    assert prepare_database(settings) == database_url
    assert run(database_url, migrate.current) == "0004"
    assert prepare_database(settings) == database_url  # at head already: nothing to do


def test_serve_outside_prod_without_a_url_picks_the_embedded_file_for_its_workers(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    # Set, then removed: monkeypatch then also undoes what prepare_database puts there.
    monkeypatch.setenv("INFERGATE_DATABASE__URL", "unset")
    monkeypatch.delenv("INFERGATE_DATABASE__URL")
    url = prepare_database(Settings(environment="dev"))
    expected = f"sqlite+aiosqlite:///{tmp_path.resolve() / '.infergate' / 'infergate.db'}"
    assert url == expected and os.environ["INFERGATE_DATABASE__URL"] == expected
    assert run(url, migrate.current) == "0004"
