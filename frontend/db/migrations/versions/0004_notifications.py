"""Notifications: webhooks, the outbox of job events and their deliveries, the attempt
log; a job's notification choices; a user's verified e-mail address.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

USER_COLUMNS: tuple[sa.Column[object], ...] = (
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("email_verified_at", sa.Double(), nullable=True),
    sa.Column("email_pending", sa.String(320), nullable=True),
    sa.Column("email_code_digest", sa.String(128), nullable=True),
    sa.Column("email_code_expires_at", sa.Double(), nullable=True),
    sa.Column("email_code_attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("email_jobs", sa.Boolean(), nullable=False, server_default=sa.false()),
)


def upgrade() -> None:
    with op.batch_alter_table("users") as users:
        for column in USER_COLUMNS:
            users.add_column(column)
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("notify", sa.JSON(), nullable=True))
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("url", sa.String(8192), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(256), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret", sa.String(256), nullable=False),
        sa.Column("previous_secret", sa.String(256), nullable=True),
        sa.Column("previous_valid_until", sa.Double(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("disabled_reason", sa.String(256), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("rotated_at", sa.Double(), nullable=True),
        sa.Column("last_delivered_at", sa.Double(), nullable=True),
        sa.Column("last_failed_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    op.create_index("ix_webhooks_owner_created", "webhooks", ["owner", "created_at", "id"])
    op.create_table(
        "notification_events",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_events")),
    )
    op.create_index(op.f("ix_notification_events_job_id"), "notification_events", ["job_id"])
    op.create_index(
        op.f("ix_notification_events_created_at"), "notification_events", ["created_at"]
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("webhook_id", sa.String(32), nullable=True),
        sa.Column("target", sa.String(8192), nullable=True),
        sa.Column("secret", sa.String(256), nullable=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("lease_owner", sa.String(96), nullable=True),
        sa.Column("lease_until", sa.Double(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("last_latency_ms", sa.Double(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("delivered_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
    )
    op.create_index(
        "ix_notification_deliveries_state_due",
        "notification_deliveries",
        ["state", "next_attempt_at"],
    )
    op.create_index(
        "ix_notification_deliveries_webhook",
        "notification_deliveries",
        ["webhook_id", "created_at", "id"],
    )
    op.create_index(
        op.f("ix_notification_deliveries_event_id"), "notification_deliveries", ["event_id"]
    )
    op.create_index(
        op.f("ix_notification_deliveries_finished_at"),
        "notification_deliveries",
        ["finished_at"],
    )
    op.create_table(
        "notification_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("delivery_id", sa.String(40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("error", sa.String(512), nullable=True),
        sa.Column("next_attempt_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_attempts")),
    )
    op.create_index(
        op.f("ix_notification_attempts_delivery_id"), "notification_attempts", ["delivery_id"]
    )


def downgrade() -> None:
    op.drop_table("notification_attempts")
    op.drop_table("notification_deliveries")
    op.drop_table("notification_events")
    op.drop_table("webhooks")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("notify")
    with op.batch_alter_table("users") as users:
        for column in reversed(USER_COLUMNS):
            users.drop_column(column.name)
