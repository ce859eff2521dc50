"""The database an app starts with: which one, and its schema made ready (or checked)."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

from ..observability.metrics import Metrics
from ..settings import Settings
from .database import MEMORY_URL, Database
from .migrate import NotMigrated, create_all, require_head, upgrade

EMBEDDED_URL = "sqlite+aiosqlite:///.infergate/infergate.db"  # what `serve` uses by default


def database_url(settings: Settings) -> str:
    if settings.database.url is not None:
        return settings.database.url.get_secret_value()
    if settings.environment == "prod":
        raise NotMigrated("INFERGATE_DATABASE__URL must be set in prod (postgresql+asyncpg://...)")
    return MEMORY_URL


async def open_database(settings: Settings, metrics: Metrics) -> Database:
    """Outside prod the schema is migrated to the code's head here (in memory: made);
    in prod an unmigrated database refuses the start, naming the command that migrates."""
    url = database_url(settings)
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # It holds password hashes and key digests: readable by its owner only.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = Database(url, settings.database, metrics)
    try:
        if db.in_memory:
            await create_all(db.engine)
        elif settings.environment == "prod":
            await require_head(db.engine)
        else:
            await upgrade(db.engine)
    except BaseException:
        await db.close()
        raise
    return db
