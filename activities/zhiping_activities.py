"""The activities: every side effect of an application workflow, each idempotent.

Temporal may run an activity more than once (retries, a worker lost after the work was
done). Each activity therefore writes under a natural key — ``(application_id, seq)``,
the notification ``key``, ``(person_key, application_id)`` — with insert-on-conflict, so a
repeat changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.database import Database
from activities.notifications import DeliveryChannel, UnknownTemplateError, render
from models.records import (
    ApplicationKey,
    BanQuery,
    BanRecord,
    BanStatus,
    Notification,
    TransitionRecord,
)
from models.tables import Application, FraudBan, NotificationOutbox, TransitionLog

KEY = ("cycle_id", "application_id")
"""An application's key in the read model (its id is unique within its cycle only)."""


class ZhipingActivities:
    """Activities bound to their dependencies; register ``ZhipingActivities(...).all()``."""

    def __init__(self, db: Database, channel: DeliveryChannel) -> None:
        self._db = db
        self._channel = channel

    @property
    def database(self) -> Database:
        return self._db

    def all(self) -> list[Callable[..., Any]]:
        """The activity callables, for ``Worker(activities=...)``."""
        return [
            self.record_transition,
            self.send_notification,
            self.check_ban,
            self.record_ban,
            self.newest_record,
        ]

    @activity.defn
    async def record_transition(self, record: TransitionRecord) -> None:
        """Append the transition to the audit log and project it onto the read model.

        Both writes share one transaction. The log row is keyed by ``(cycle_id,
        application_id, seq)``; the read model only moves forward (``seq > last_seq``), so retries and
        out-of-order replays leave one log row per transition and the newest state.
        """
        upcoming = sorted(record.deadlines, key=lambda d: d.at)
        log_row = (
            self._db.insert(TransitionLog)
            .values(
                cycle_id=record.cycle_id,
                application_id=record.application_id,
                seq=record.seq,
                trigger=record.trigger,
                source=record.source,
                dest=record.dest,
                actor=record.actor,
                reason=record.reason,
                at=record.at,
            )
            .on_conflict_do_nothing(index_elements=["cycle_id", "application_id", "seq"])
        )
        projection: dict[str, Any] = {
            "application_id": record.application_id,
            "cycle_id": record.cycle_id,
            "workflow_id": record.workflow_id,
            "level": record.level.value,
            "state": record.dest,
            "submission_round": record.submission_round,
            "fee_paid": record.fee_paid,
            "last_seq": record.seq,
            "updated_at": record.at,
            "next_deadline_at": upcoming[0].at if upcoming else None,
            "next_deadline_kind": upcoming[0].kind if upcoming else None,
            "deadlines": [d.model_dump(mode="json") for d in upcoming],
            "record": record.record,
        }
        upsert = self._db.insert(Application).values(**projection)
        upsert = upsert.on_conflict_do_update(
            index_elements=["cycle_id", "application_id"],
            set_={name: upsert.excluded[name] for name in projection if name not in KEY},
            where=Application.last_seq < upsert.excluded.last_seq,
        )
        async with self._db.sessions.begin() as session:
            await session.execute(log_row)
            await session.execute(upsert)

    @activity.defn
    async def send_notification(self, n: Notification) -> None:
        """Write the message to the outbox once per key, then deliver it if not yet done.

        Delivery is at-least-once: if the worker dies after the channel accepted the
        message but before the commit, the retry delivers it again (the row stays one).
        On PostgreSQL the row lock also serialises concurrent attempts.
        """
        try:
            body = render(n.template, n.params)
        except UnknownTemplateError as exc:
            raise ApplicationError(str(exc), type="UnknownTemplate", non_retryable=True) from exc
        outbox_row = (
            self._db.insert(NotificationOutbox)
            .values(
                key=n.key,
                application_id=n.application_id,
                cycle_id=n.cycle_id,
                recipient=n.recipient,
                template=n.template,
                params=n.params,
                body=body,
                created_at=n.created_at,
                attempts=0,
            )
            .on_conflict_do_nothing(index_elements=["key"])
        )
        failure: Exception | None = None
        async with self._db.sessions.begin() as session:
            await session.execute(outbox_row)
            row = await session.scalar(
                select(NotificationOutbox).where(NotificationOutbox.key == n.key).with_for_update()
            )
            if row is None:  # pragma: no cover - the insert above guarantees a row
                raise RuntimeError(f"outbox row {n.key!r} vanished")
            if row.delivered_at is not None:
                return
            row.attempts += 1
            try:
                await self._channel.deliver(row)
            except Exception as exc:
                # Keep the row and the attempt count; Temporal retries the activity.
                activity.logger.warning("delivery of %s (%s) failed: %r", n.key, n.template, exc)
                failure = exc
            else:
                row.delivered_at = datetime.now(UTC)
        if failure is not None:
            raise failure

    @activity.defn
    async def newest_record(self, key: ApplicationKey) -> dict[str, Any]:
        """The application's record as of its newest transition (empty if none stored)."""
        async with self._db.sessions() as session:
            stored = await session.scalar(
                select(Application.record).where(
                    Application.cycle_id == key.cycle_id,
                    Application.application_id == key.application_id,
                )
            )
        return stored or {}

    @activity.defn
    async def check_ban(self, q: BanQuery) -> BanStatus:
        """Whether ``person_key`` is barred in ``cycle_year`` (inclusive window)."""
        async with self._db.sessions() as session:
            ban = await session.scalar(
                select(FraudBan)
                .where(
                    FraudBan.person_key == q.person_key,
                    FraudBan.from_year <= q.cycle_year,
                    FraudBan.until_year >= q.cycle_year,
                )
                .order_by(FraudBan.until_year.desc())
                .limit(1)
            )
        if ban is None:
            return BanStatus(banned=False)
        return BanStatus(banned=True, until_year=ban.until_year, application_id=ban.application_id)

    @activity.defn
    async def record_ban(self, b: BanRecord) -> None:
        """Register a ban once per (person, cycle, application); a repeat is a no-op."""
        if b.from_year > b.until_year:
            raise ApplicationError(
                f"ban window {b.from_year}..{b.until_year} is empty",
                type="InvalidBanWindow",
                non_retryable=True,
            )
        statement = (
            self._db.insert(FraudBan)
            .values(
                person_key=b.person_key,
                application_id=b.application_id,
                cycle_id=b.cycle_id,
                from_year=b.from_year,
                until_year=b.until_year,
                reason=b.reason,
                at=b.at,
            )
            .on_conflict_do_nothing(index_elements=["person_key", "cycle_id", "application_id"])
        )
        async with self._db.sessions.begin() as session:
            await session.execute(statement)


__all__ = ["ZhipingActivities"]
