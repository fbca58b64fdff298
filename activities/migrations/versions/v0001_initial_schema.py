"""Initial schema: read model, audit log, notification outbox, fraud-ban registry.

These are the tables ``metadata.create_all`` made before the project had migrations, so a
database from that time is adopted by stamping it at this revision
(``activities.database.PRE_MIGRATION_SCHEMAS``).

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("application_id", sa.String(), nullable=False),
        sa.Column("cycle_id", sa.String(), nullable=False),
        sa.Column("workflow_id", sa.String(), nullable=False),
        sa.Column("level", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("submission_round", sa.Integer(), nullable=False),
        sa.Column("fee_paid", sa.Boolean(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_deadline_kind", sa.String(), nullable=True),
        sa.Column("deadlines", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("application_id"),
    )
    op.create_index("ix_applications_cycle_state", "applications", ["cycle_id", "state"])
    op.create_index("ix_applications_next_deadline_at", "applications", ["next_deadline_at"])
    op.create_index("ix_applications_state", "applications", ["state"])

    op.create_table(
        "transition_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("application_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("dest", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("application_id", "seq", name="uq_transition_log_app_seq"),
    )

    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("application_id", sa.String(), nullable=False),
        sa.Column("cycle_id", sa.String(), nullable=False),
        sa.Column("recipient", sa.String(), nullable=False),
        sa.Column("template", sa.String(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index(
        "ix_notification_outbox_application_id", "notification_outbox", ["application_id"]
    )
    op.create_index("ix_notification_outbox_cycle_id", "notification_outbox", ["cycle_id"])
    op.create_index("ix_notification_outbox_delivered_at", "notification_outbox", ["delivered_at"])

    op.create_table(
        "fraud_bans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("person_key", sa.String(), nullable=False),
        sa.Column("application_id", sa.String(), nullable=False),
        sa.Column("cycle_id", sa.String(), nullable=False),
        sa.Column("from_year", sa.Integer(), nullable=False),
        sa.Column("until_year", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("person_key", "application_id", name="uq_fraud_bans_person_app"),
    )


def downgrade() -> None:
    op.drop_table("fraud_bans")
    op.drop_index("ix_notification_outbox_delivered_at", table_name="notification_outbox")
    op.drop_index("ix_notification_outbox_cycle_id", table_name="notification_outbox")
    op.drop_index("ix_notification_outbox_application_id", table_name="notification_outbox")
    op.drop_table("notification_outbox")
    op.drop_table("transition_log")
    op.drop_index("ix_applications_state", table_name="applications")
    op.drop_index("ix_applications_next_deadline_at", table_name="applications")
    op.drop_index("ix_applications_cycle_state", table_name="applications")
    op.drop_table("applications")
