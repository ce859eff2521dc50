"""The engine, its sessions, and the one way to use them: `Database.run(operation, work)`
runs `work(session)` in a transaction under a deadline and the circuit breaker, so no
request waits on a dead or hung database for longer than `deadline_s`, and only the first
one waits at all (the rest get DatabaseUnavailable until the probe finds it back)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from ..breaker import Breaker
from ..errors import DatabaseUnavailable
from ..observability.metrics import Metrics
from ..settings import DatabaseSettings

log = logging.getLogger("infergate.database")
T = TypeVar("T")
MEMORY_URL = "sqlite+aiosqlite:///:memory:"
WAKE_FLAG = "notify.wake"  # notifications.WAKE (that module imports this one's layer)
# What "the database is unreachable or too slow" looks like. IntegrityError (a unique
# name taken), ProgrammingError and DataError are answers, not outages: they go through.
FAILURES: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    OSError,
    TimeoutError,
    ConnectionError,
)


def _unavailable() -> DatabaseUnavailable:
    return DatabaseUnavailable("the database is unreachable", {"retry_after_s": 1})


def engine_for(url: str, settings: DatabaseSettings) -> AsyncEngine:
    """An engine with every wait bounded: connect, pool checkout, statement."""
    if url.startswith("sqlite"):
        connect_args: dict[str, Any] = {"timeout": settings.statement_timeout_s}
        if ":memory:" in url or url.endswith("://"):
            # One connection shared by every session: each new connection to ":memory:"
            # would be a new, empty database.
            engine = create_async_engine(
                url,
                connect_args=connect_args | {"check_same_thread": False},
                poolclass=StaticPool,
            )
        else:
            engine = create_async_engine(url, connect_args=connect_args)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL: readers do not wait for the one writer; NORMAL is durable at each
            # checkpoint and survives a process crash (only an OS crash can lose the last
            # transactions). Foreign keys are off by default in SQLite.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(settings.statement_timeout_s * 1000)}")
            cursor.close()

        return engine
    return create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.deadline_s,
        pool_pre_ping=True,
        # A connection older than this is replaced: a server restart or a proxy's idle
        # cut never leaves the pool holding only dead sockets.
        pool_recycle=300,
        connect_args={
            "timeout": settings.connect_timeout_s,
            "command_timeout": settings.deadline_s,
            "server_settings": {
                "statement_timeout": str(int(settings.statement_timeout_s * 1000)),
                "application_name": "infergate",
            },
        },
    )


class Database:
    def __init__(self, url: str, settings: DatabaseSettings, metrics: Metrics) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]  # "sqlite" | "postgresql"
        self.engine = engine_for(url, settings)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.breaker = Breaker(
            "database",
            deadline_s=settings.deadline_s,
            probe_s=0.25,
            failures=FAILURES,
            unavailable=_unavailable,
            on_up=lambda up: metrics.database_up.set(int(up)),
            on_error=lambda op, error: metrics.database_errors.labels(op, error).inc(),
            # A hung PostgreSQL: SQLAlchemy's shielded graceful close of the cancelled
            # connection would add up to 2 s to the request (measured: 5.0 s for 3 s).
            detach_on_deadline=True,
        )
        self.breaker.attach(self.ping_once)
        # Called after a commit whose work set `session.info[WAKE_FLAG]` (the outbox's
        # dispatcher: a new event is sent at once, not at its next poll).
        self._on_commit: list[Callable[[], None]] = []
        # In memory there is one connection (StaticPool) for every session, and SQLite has
        # one transaction per connection: two sessions at once would share it (one's
        # rollback undoing the other's insert; seen as a key created and then unknown).
        # So transactions there take turns.
        self._turn: contextlib.AbstractAsyncContextManager[object] = (
            asyncio.Lock() if self.in_memory else contextlib.nullcontext()
        )

    def on_commit(self, hook: Callable[[], None]) -> None:
        self._on_commit.append(hook)

    @property
    def in_memory(self) -> bool:
        return self.url == MEMORY_URL

    async def run(self, operation: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work` in one transaction (committed when it returns, rolled back when it
        raises), under the deadline; DatabaseUnavailable when the database cannot answer."""

        async def transaction() -> T:
            async with self._turn, self._sessions() as session:
                async with session.begin():
                    result = await work(session)
                if session.info.get(WAKE_FLAG):  # committed: wake who waits for it
                    for hook in self._on_commit:
                        hook()
                return result

        try:
            return await self.breaker.run(operation, transaction)
        except (IntegrityError, ProgrammingError, DataError):
            raise
        except SQLAlchemyError as exc:  # anything else from the driver: an outage
            self.breaker.failed(operation, exc)
            raise _unavailable() from None

    async def ping_once(self) -> None:
        async with self._turn, self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def ping(self) -> None:
        """For readiness: one round trip through the breaker (fails fast while open)."""
        await self.breaker.run("ping", self.ping_once)

    async def close(self) -> None:
        await self.breaker.close()
        await self.engine.dispose()
