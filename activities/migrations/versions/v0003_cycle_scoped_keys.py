"""Key applications by (cycle, application id): an id is unique within its cycle only.

The read model, the audit log and the ban registry were keyed by the application id
alone, so the same id in a second cycle would have been merged into the first one's rows.
The audit log gains its cycle, taken from the read model row it was written with. The
read model also keeps each application's whole record, from which a later run continues
an ended application (a fraud found after it ended). The webhook delivery log gains the
cycle too, read from each event id (``application:<cycle>:<application>:<seq>``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _applications(*key: str) -> sa.Table:
    """The read model table as revision 0001 made it, with ``key`` as its primary key."""
    return sa.Table(
        "applications",
        sa.MetaData(),
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
        sa.PrimaryKeyConstraint(*key, name="pk_applications"),
        sa.Index("ix_applications_cycle_state", "cycle_id", "state"),
        sa.Index("ix_applications_next_deadline_at", "next_deadline_at"),
        sa.Index("ix_applications_state", "state"),
    )


def _set_applications_key(*key: str) -> None:
    """PostgreSQL swaps the constraint in place; SQLite copies the table into the new shape."""
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("applications", copy_from=_applications(*key), recreate="always"):
            pass
        return
    old = sa.inspect(op.get_bind()).get_pk_constraint("applications")["name"]
    op.drop_constraint(old or "applications_pkey", "applications", type_="primary")
    op.create_primary_key("pk_applications", "applications", list(key))


def _add_delivery_cycles() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("cycle_id", sa.String(), nullable=True))
    deliveries = sa.table(
        "webhook_deliveries", sa.column("id", sa.Integer()), sa.column("event_id", sa.String())
    )
    bind = op.get_bind()
    for row_id, event_id in bind.execute(sa.select(deliveries.c.id, deliveries.c.event_id)):
        bind.execute(
            sa.text("UPDATE webhook_deliveries SET cycle_id = :cycle WHERE id = :id"),
            {"cycle": event_id.split(":")[1], "id": row_id},
        )
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.alter_column("cycle_id", existing_type=sa.String(), nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("transition_log") as batch:
        batch.add_column(sa.Column("cycle_id", sa.String(), nullable=True))
    op.execute(
        "UPDATE transition_log SET cycle_id = (SELECT a.cycle_id FROM applications a"
        " WHERE a.application_id = transition_log.application_id)"
    )
    with op.batch_alter_table("transition_log") as batch:
        batch.alter_column("cycle_id", existing_type=sa.String(), nullable=False)
        batch.drop_constraint("uq_transition_log_app_seq", type_="unique")
        batch.create_unique_constraint(
            "uq_transition_log_cycle_app_seq", ["cycle_id", "application_id", "seq"]
        )
    _set_applications_key("cycle_id", "application_id")
    with op.batch_alter_table("applications") as batch:
        batch.add_column(sa.Column("record", sa.JSON(), nullable=True))
    _add_delivery_cycles()
    with op.batch_alter_table("fraud_bans") as batch:
        batch.drop_constraint("uq_fraud_bans_person_app", type_="unique")
        batch.create_unique_constraint(
            "uq_fraud_bans_person_cycle_app", ["person_key", "cycle_id", "application_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_column("cycle_id")
    with op.batch_alter_table("fraud_bans") as batch:
        batch.drop_constraint("uq_fraud_bans_person_cycle_app", type_="unique")
        batch.create_unique_constraint("uq_fraud_bans_person_app", ["person_key", "application_id"])
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("record")
    _set_applications_key("application_id")
    with op.batch_alter_table("transition_log") as batch:
        batch.drop_constraint("uq_transition_log_cycle_app_seq", type_="unique")
        batch.create_unique_constraint("uq_transition_log_app_seq", ["application_id", "seq"])
        batch.drop_column("cycle_id")
