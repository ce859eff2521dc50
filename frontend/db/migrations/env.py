"""Alembic environment: migrations run on the connection frontend.db.migrate hands in."""

from __future__ import annotations

from alembic import context

from frontend.db.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit(
        "run migrations with `python -m frontend db upgrade` (it connects with the "
        "settings' INFERGATE_DATABASE__URL)"
    )
# Batch mode: SQLite cannot ALTER most things in place; Alembic copies the table instead.
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
