"""Routing (with its history) and the usage ledger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# SQLite makes an INTEGER PRIMARY KEY its rowid (auto-incremented); BIGINT would not be.
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "routing",
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("model", name=op.f("pk_routing")),
    )
    op.create_table(
        "routing_history",
        sa.Column("id", SERIAL, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("changed_at", sa.Double(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("previous", sa.JSON(), nullable=True),
        sa.Column("current", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_history")),
    )
    op.create_index(op.f("ix_routing_history_model"), "routing_history", ["model"])
    op.create_table(
        "usage_ledger",
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("minute", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("items", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_hits", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "subject", "model", "version", "minute", name=op.f("pk_usage_ledger")
        ),
    )
    op.create_index("ix_usage_ledger_minute", "usage_ledger", ["minute"])
    op.create_index("ix_usage_ledger_account_minute", "usage_ledger", ["account", "minute"])


def downgrade() -> None:
    op.drop_index("ix_usage_ledger_account_minute", table_name="usage_ledger")
    op.drop_index("ix_usage_ledger_minute", table_name="usage_ledger")
    op.drop_table("usage_ledger")
    op.drop_index(op.f("ix_routing_history_model"), table_name="routing_history")
    op.drop_table("routing_history")
    op.drop_table("routing")
