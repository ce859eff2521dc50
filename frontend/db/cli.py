"""`python -m frontend db ...`: the schema's migrations, its revision, and the import of
the previous version's Redis; and the database step of `serve`.

    python -m frontend db upgrade [--revision head]
    python -m frontend db downgrade <revision>       # "0001", or "base" (drops everything)
    python -m frontend db current
    python -m frontend db import-redis [--redis-url redis://...]

The database is the one the app uses (`resolve_url`): INFERGATE_DATABASE__URL, or outside
prod the embedded file `.infergate/infergate.db`. Every failure is one line naming what
to do (never a traceback, never a password)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from alembic.util import CommandError as AlembicError
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ..settings import DatabaseSettings, Settings
from .import_redis import import_redis, masked
from .migrate import UPGRADE_HINT, NotMigrated, current, downgrade, head, require_head, upgrade
from .startup import EMBEDDED_URL, database_url

T = TypeVar("T")
URL_VARIABLE = "INFERGATE_DATABASE__URL"
DRIVERS = ("postgresql+asyncpg", "sqlite+aiosqlite")  # the drivers the app installs


class CommandError(Exception):
    """A failure to report as one line (the process then exits non-zero)."""


def settings_error(exc: ValidationError | ValueError) -> str:
    """A settings error on one line: each field and what is wrong with it."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
    return " ".join(str(exc).split())


def load_settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:  # ValidationError is a ValueError
        raise CommandError(f"invalid settings: {settings_error(exc)}") from None


def embedded_url() -> str:
    """The embedded database `serve` and the CLI use outside prod without a URL: the
    file `.infergate/infergate.db` under the current directory, as an absolute path (the
    workers, whatever their directory, open the same file)."""
    relative = make_url(EMBEDDED_URL).database
    assert relative is not None
    return f"sqlite+aiosqlite:///{Path(relative).resolve()}"


def resolve_url(settings: Settings) -> str:
    """The one database `serve` and every `db` command use: the configured URL, else
    (outside prod) the embedded file; prod without a URL, or a driver the app does not
    ship, is an error."""
    if settings.database.url is None and settings.environment != "prod":
        return embedded_url()
    try:
        url = database_url(settings)
    except NotMigrated as exc:  # prod without a URL
        raise CommandError(str(exc)) from None
    try:
        driver = make_url(url).drivername
    except ArgumentError:
        driver = None
    if driver not in DRIVERS:
        raise CommandError(
            f"{URL_VARIABLE} must start with postgresql+asyncpg:// or sqlite+aiosqlite:/// "
            f"(got {driver or 'no valid URL'})"
        )
    return url


def admin_engine(url: str, settings: DatabaseSettings) -> AsyncEngine:
    """An engine for migrations and imports: a bounded connect but no statement deadline
    (a request's 2 s would cut a migration of a large table short); no pool to keep."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        if parsed.database not in (None, "", ":memory:"):
            path = Path(parsed.database)
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # It holds password hashes and key digests: made readable by its owner only
            # (SQLite gives its -wal and -shm files the same mode).
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        return create_async_engine(url, connect_args={"timeout": 30.0}, poolclass=NullPool)
    return create_async_engine(
        url,
        poolclass=NullPool,
        connect_args={
            "timeout": settings.connect_timeout_s,
            "server_settings": {"application_name": "infergate-cli"},
        },
    )


def shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _run(url: str, settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """`work(engine)` on a fresh engine; a database failure becomes a CommandError."""

    async def scenario() -> T:
        engine = admin_engine(url, settings.database)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(scenario())
    except (NotMigrated, AlembicError) as exc:  # not at head; no such revision
        raise CommandError(" ".join(str(exc).split())) from None
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        cause = getattr(exc, "orig", None) or exc
        reason = " ".join(str(cause).split()) or type(cause).__name__
        raise CommandError(f"database {shown(url)}: {type(cause).__name__}: {reason}") from None


async def prepare_schema(engine: AsyncEngine, environment: str) -> None:
    """Outside prod, migrate to head; in prod only check, and refuse (NotMigrated,
    naming `db upgrade`) a database not at head."""
    if environment == "prod":
        await require_head(engine)
    else:
        await upgrade(engine)


def prepare_database(settings: Settings) -> str:
    """`serve`'s database step, in the parent before any worker starts: pick the
    database (the embedded file when none is configured outside prod, put into
    INFERGATE_DATABASE__URL so that every worker opens the same one), then migrate it
    (outside prod) or check it is at head (prod). Returns the URL; CommandError when it
    cannot serve."""
    url = resolve_url(settings)
    if settings.database.url is None:
        os.environ[URL_VARIABLE] = url
    _run(url, settings, lambda engine: prepare_schema(engine, settings.environment))
    return url


# --- the commands ----------------------------------------------------------------------


def cmd_upgrade(args: argparse.Namespace, settings: Settings) -> str:
    url = resolve_url(settings)

    async def work(engine: AsyncEngine) -> str:
        before = await current(engine)
        await upgrade(engine, args.revision)
        after = await current(engine)
        if before == after:
            return f"{shown(url)}: at {after or 'base'} already (head {head()})"
        return f"{shown(url)}: upgraded from {before or 'an empty database'} to {after}"

    return _run(url, settings, work)


def cmd_downgrade(args: argparse.Namespace, settings: Settings) -> str:
    url = resolve_url(settings)

    async def work(engine: AsyncEngine) -> str:
        before = await current(engine)
        await downgrade(engine, args.revision)
        after = await current(engine)
        return f"{shown(url)}: downgraded from {before or 'base'} to {after or 'base'}"

    return _run(url, settings, work)


def cmd_current(args: argparse.Namespace, settings: Settings) -> str:
    del args
    url = resolve_url(settings)

    async def work(engine: AsyncEngine) -> str:
        at = await current(engine)
        state = "up to date" if at == head() else f"run `{UPGRADE_HINT}`"
        return f"{shown(url)}: revision {at or 'none (empty)'}, head {head()} ({state})"

    return _run(url, settings, work)


def cmd_import_redis(args: argparse.Namespace, settings: Settings) -> str:
    url = resolve_url(settings)
    redis_url = args.redis_url or (
        settings.redis.url.get_secret_value() if settings.redis.url is not None else None
    )
    if not redis_url:
        raise CommandError("no Redis to import from: give --redis-url or INFERGATE_REDIS__URL")

    async def work(engine: AsyncEngine) -> str:
        await prepare_schema(engine, settings.environment)
        report = await import_redis(engine, redis_url)
        return "\n".join([f"imported {masked(redis_url)} into {shown(url)}:", *report.lines()])

    try:
        return _run(url, settings, work)
    except RedisError as exc:
        reason = " ".join(str(exc).split())
        raise CommandError(f"redis {masked(redis_url)}: {type(exc).__name__}: {reason}") from None


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], str]] = {
    "upgrade": cmd_upgrade,
    "downgrade": cmd_downgrade,
    "current": cmd_current,
    "import-redis": cmd_import_redis,
}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = commands.add_parser("db", help="the database: migrations, revision, Redis import")
    sub = db.add_subparsers(dest="db_command", required=True)
    up = sub.add_parser("upgrade", help="migrate the schema up (default: to head)")
    up.add_argument("--revision", default="head")
    down = sub.add_parser("downgrade", help="migrate the schema down to a revision")
    down.add_argument("revision", help='e.g. "0001", or "base" (drops every table)')
    sub.add_parser("current", help="the database's revision and the code's head")
    imp = sub.add_parser("import-redis", help="import users, keys, routing of a Redis")
    imp.add_argument("--redis-url", help="default: INFERGATE_REDIS__URL")
    db.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Runs one `db` command; prints its result, or its error as one line (exit 1)."""
    try:
        print(COMMANDS[args.db_command](args, load_settings()), flush=True)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
