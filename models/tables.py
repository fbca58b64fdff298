"""SQL tables: the read model ops query, the audit log, the notification outbox, the ban registry.

The workflow is the single writer of an application's state; these tables are projections
written by activities. They hold opaque ids and person keys only: never a name, an ID
number or an employer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    DateTime,
    Dialect,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.lifecycle import FINAL_STATES


class UTCDateTime(TypeDecorator[datetime]):
    """An aware instant stored in UTC.

    SQLite drops the offset, so every instant is normalised to UTC on the way in and
    tagged UTC on the way out: comparisons (``next_deadline_at < now``) stay correct on
    SQLite and PostgreSQL alike. A naive datetime is refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("instants must carry an explicit UTC offset")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Application(Base):
    """Read model: the latest known state of one application (newest ``seq`` wins).

    An application id is unique within its cycle only, so the key is the pair."""

    __tablename__ = "applications"

    cycle_id: Mapped[str] = mapped_column(String)
    """Filtered through ``ix_applications_cycle_state`` (cycle alone or cycle + state)."""
    application_id: Mapped[str] = mapped_column(String)
    workflow_id: Mapped[str] = mapped_column(String)
    level: Mapped[str] = mapped_column(String)
    state: Mapped[str] = mapped_column(String, index=True)
    submission_round: Mapped[int] = mapped_column(Integer)
    fee_paid: Mapped[bool] = mapped_column(Boolean)
    last_seq: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    next_deadline_kind: Mapped[str | None] = mapped_column(String)
    deadlines: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The workflow's whole ``ApplicationRecord`` as of ``last_seq`` (no personal data)."""

    __table_args__ = (
        PrimaryKeyConstraint("cycle_id", "application_id", name="pk_applications"),
        Index("ix_applications_cycle_state", "cycle_id", "state"),
    )

    @classmethod
    def overdue_at(cls, now: datetime) -> ColumnElement[bool]:
        """Past its next deadline at ``now``, and not ended (the one definition of overdue,
        for ``apps list --overdue`` and the metrics)."""
        return and_(cls.next_deadline_at < now, cls.state.not_in([s.value for s in FINAL_STATES]))


class TransitionLog(Base):
    """Append-only audit log: one row per (cycle, application, seq), whatever the retries."""

    __tablename__ = "transition_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cycle_id: Mapped[str] = mapped_column(String)
    application_id: Mapped[str] = mapped_column(String)
    seq: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String)
    source: Mapped[str] = mapped_column(String)
    dest: Mapped[str] = mapped_column(String)
    actor: Mapped[str] = mapped_column(String)
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint(
            "cycle_id", "application_id", "seq", name="uq_transition_log_cycle_app_seq"
        ),
    )


class NotificationOutbox(Base):
    """One message per ``key``; ``delivered_at`` is set once a channel took it."""

    __tablename__ = "notification_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String, unique=True)
    application_id: Mapped[str] = mapped_column(String, index=True)
    cycle_id: Mapped[str] = mapped_column(String, index=True)
    recipient: Mapped[str] = mapped_column(String)
    template: Mapped[str] = mapped_column(String)
    params: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    body: Mapped[str] = mapped_column(Text)
    """Rendered zh-CN text, kept as sent."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class FraudBan(Base):
    """A person barred from applying in cycle years ``from_year``..``until_year`` (附件3)."""

    __tablename__ = "fraud_bans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_key: Mapped[str] = mapped_column(String)
    """Keyed pseudonym (``models.identity.person_key``), never the ID number itself."""
    application_id: Mapped[str] = mapped_column(String)
    cycle_id: Mapped[str] = mapped_column(String)
    from_year: Mapped[int] = mapped_column(Integer)
    until_year: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint(
            "person_key", "cycle_id", "application_id", name="uq_fraud_bans_person_cycle_app"
        ),
    )


class WebhookSubscription(Base):
    """An outbound webhook: where to POST which application events, signed with ``secret``.

    Written only by the ``WebhookRegistryWorkflow``'s activity; the delivery activities read
    it. An unsubscribed row stays (``active`` false) so its delivery log keeps its meaning.
    """

    __tablename__ = "webhook_subscriptions"

    subscription_id: Mapped[str] = mapped_column(String, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Exact CloudEvent types or ``cn.zhiping.application.*``."""
    secret: Mapped[str] = mapped_column(String)
    """HMAC-SHA256 key of ``X-Zhiping-Signature``; never returned by the API."""
    description: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    """One event for one subscription: its attempts and outcome, for ops and metrics."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String, index=True)
    event_id: Mapped[str] = mapped_column(String)
    event_type: Mapped[str] = mapped_column(String)
    cycle_id: Mapped[str] = mapped_column(String)
    application_id: Mapped[str] = mapped_column(String, index=True)
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String, index=True)
    """``pending`` (failing, being retried), ``delivered`` or ``dropped`` (unsubscribed)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    first_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id", name="uq_webhook_deliveries_sub_event"),
    )


__all__ = [
    "Application",
    "Base",
    "FraudBan",
    "NotificationOutbox",
    "TransitionLog",
    "UTCDateTime",
    "WebhookDelivery",
    "WebhookSubscription",
]
