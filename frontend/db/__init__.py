"""The system of record: SQLAlchemy 2 (async) over PostgreSQL (asyncpg) or SQLite
(aiosqlite). Accounts, API keys, routing and its history, the audit log and the usage
ledger live here; Redis only holds what can be rebuilt from it (counters, the response
cache, revocations of short-lived tokens, change notifications). Migrations: Alembic,
in `migrations/` beside the tables (`python -m frontend db upgrade`)."""
