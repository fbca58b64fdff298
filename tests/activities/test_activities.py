"""The activities against real SQLite and PostgreSQL databases (``db`` in conftest), run in a
real Temporal activity context."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import Database, ZhipingActivities, channel_from_name, render
from activities.notifications import (
    TEMPLATES,
    LogChannel,
    NullChannel,
    UnknownTemplateError,
)
from models.policy import Level
from models.records import (
    ApplicationKey,
    BanQuery,
    BanRecord,
    Notification,
    PendingDeadline,
    TransitionRecord,
)
from models.tables import Application, FraudBan, NotificationOutbox, TransitionLog

CST = timezone(timedelta(hours=8))
STATES = [
    "draft",
    "under_review",
    "returned",
    "accepted",
    "fee_due",
    "paid",
    "defense_pending",
    "awaiting_meeting",
    "in_meeting",
    "publicity",
    "under_investigation",
    "approved",
    "not_approved",
    "abandoned",
    "rejected",
    "lapsed",
    "withdrawn",
    "disqualified",
]
CODES = [f"state.{s}" for s in STATES] + [
    "reminder.submission_cutoff",
    "reminder.fee_deadline",
    "defense.scheduled",
]
PARAMS = {
    "application_id": "2024-aksu-000123",
    "round": "2",
    "deadline": "2024-08-30 18:00",
    "amount": "700",
    "reason": "继续教育学时证明缺少 2022 年度专业课记录",
    "time_left": "3 天",
    "place": "阿克苏地委党校 3 号楼 201 会议室",
}


class RecordingChannel:
    """A channel that remembers what it delivered, and can fail on demand."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.fail_next = 0

    async def deliver(self, row: NotificationOutbox) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("gateway down")
        self.delivered.append(row.key)


@pytest.fixture
def channel() -> RecordingChannel:
    return RecordingChannel()


@pytest.fixture
def acts(db: Database, channel: RecordingChannel) -> ZhipingActivities:
    return ZhipingActivities(db, channel)


def transition(seq: int, source: str, dest: str, **changes: object) -> TransitionRecord:
    fields: dict[str, object] = {
        "application_id": "app-1",
        "cycle_id": "2024-aksu",
        "workflow_id": "application-app-1",
        "seq": seq,
        "trigger": f"to_{dest}",
        "source": source,
        "dest": dest,
        "actor": "reviewer",
        "at": datetime(2024, 8, 1, 10, seq, tzinfo=CST),
        "level": Level.deputy_senior,
        "submission_round": 1,
        "fee_paid": False,
    }
    fields.update(changes)
    return TransitionRecord.model_validate(fields)


async def count(db: Database, entity: type[object]) -> int:
    async with db.sessions() as session:
        total = await session.scalar(select(func.count()).select_from(entity))
    return int(total or 0)


async def test_sqlite_schema_is_created_in_a_new_directory_with_wal(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path}/nested/zhiping.db")
    try:
        await db.create_schema()
        assert (tmp_path / "nested" / "zhiping.db").exists()
        async with db.engine.connect() as connection:
            mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
        assert mode == "wal"
    finally:
        await db.dispose()


async def test_record_transition_repeated_keeps_one_log_row(
    db: Database, acts: ZhipingActivities
) -> None:
    record = transition(
        1,
        "draft",
        "under_review",
        deadlines=[
            PendingDeadline(
                kind="review_due",
                at=datetime(2024, 9, 10, 18, tzinfo=CST),
                label="评审委员会审核截止",
                automatic=False,
            ),
            PendingDeadline(
                kind="fee",
                at=datetime(2024, 9, 16, tzinfo=CST),
                label="评审费缴纳截止",
                automatic=True,
            ),
        ],
    )
    env = ActivityEnvironment()
    for _ in range(3):
        await env.run(acts.record_transition, record)

    assert await count(db, TransitionLog) == 1
    async with db.sessions() as session:
        app = await session.get(Application, ("2024-aksu", "app-1"))
    assert app is not None
    assert (app.state, app.last_seq, app.level) == ("under_review", 1, "deputy_senior")
    assert app.next_deadline_kind == "review_due"
    assert app.next_deadline_at == datetime(2024, 9, 10, 10, tzinfo=UTC)
    assert [d["kind"] for d in app.deadlines] == ["review_due", "fee"]


async def test_older_transition_after_newer_keeps_newer_state(
    db: Database, acts: ZhipingActivities
) -> None:
    env = ActivityEnvironment()
    await env.run(acts.record_transition, transition(2, "under_review", "accepted"))
    await env.run(acts.record_transition, transition(1, "draft", "under_review"))

    assert await count(db, TransitionLog) == 2
    async with db.sessions() as session:
        app = await session.get(Application, ("2024-aksu", "app-1"))
        seqs = (await session.scalars(select(TransitionLog.seq).order_by(TransitionLog.seq))).all()
    assert app is not None
    assert (app.state, app.last_seq) == ("accepted", 2)
    assert seqs == [1, 2]

    await env.run(acts.record_transition, transition(3, "accepted", "fee_due", fee_paid=False))
    async with db.sessions() as session:
        app = await session.get(Application, ("2024-aksu", "app-1"))
    assert app is not None
    assert (app.state, app.last_seq) == ("fee_due", 3)


def notification(key: str = "application-app-1:state.fee_due") -> Notification:
    return Notification(
        key=key,
        application_id="app-1",
        cycle_id="2024-aksu",
        template="state.fee_due",
        params={"application_id": "app-1", "amount": "700", "deadline": "2024-09-16 00:00"},
        created_at=datetime(2024, 9, 1, 9, tzinfo=CST),
    )


async def test_send_notification_retried_writes_and_delivers_once(
    db: Database, acts: ZhipingActivities, channel: RecordingChannel
) -> None:
    env = ActivityEnvironment()
    channel.fail_next = 1
    with pytest.raises(ConnectionError):
        await env.run(acts.send_notification, notification())
    for _ in range(3):
        await env.run(acts.send_notification, notification())

    assert channel.delivered == ["application-app-1:state.fee_due"]
    async with db.sessions() as session:
        rows = (await session.scalars(select(NotificationOutbox))).all()
    assert len(rows) == 1
    row = rows[0]
    assert row.attempts == 2
    assert row.delivered_at is not None
    assert "700 元" in row.body
    assert "2024-09-16 00:00" in row.body


async def test_send_notification_unknown_template_is_not_retryable(
    db: Database, acts: ZhipingActivities
) -> None:
    bad = notification().model_copy(update={"template": "state.nonexistent"})
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(acts.send_notification, bad)
    assert info.value.non_retryable
    assert await count(db, NotificationOutbox) == 0


@pytest.mark.parametrize("code", CODES)
def test_every_template_renders(code: str) -> None:
    text = render(code, PARAMS)
    assert "{" not in text and "}" not in text
    assert "未提供" not in text
    assert PARAMS["application_id"] in text


def test_templates_cover_exactly_the_emitted_codes() -> None:
    assert sorted(TEMPLATES) == sorted(CODES)


def test_deadline_templates_name_the_deadline() -> None:
    for code in ["state.returned", "state.fee_due", "reminder.fee_deadline", "state.draft"]:
        assert "2024-08-30 18:00" in render(code, PARAMS), code


def test_missing_param_falls_back_visibly() -> None:
    text = render("state.returned", {"application_id": "app-1"})
    assert "{" not in text
    assert "（reason未提供）" in text
    assert "（deadline未提供）" in text


def test_unknown_template_raises() -> None:
    with pytest.raises(UnknownTemplateError):
        render("state.unknown", PARAMS)


async def test_log_channel_writes_one_line_without_the_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert isinstance(channel_from_name("none"), NullChannel)
    log_channel = channel_from_name("log")
    assert isinstance(log_channel, LogChannel)
    row = NotificationOutbox(
        key="application-app-1:state.rejected",
        application_id="app-1",
        cycle_id="2024-aksu",
        recipient="applicant",
        template="state.rejected",
        params=PARAMS,
        body=render("state.rejected", PARAMS),
        created_at=datetime(2024, 9, 1, tzinfo=CST),
        attempts=0,
    )
    with caplog.at_level(logging.INFO, logger="activities.notifications"):
        await log_channel.deliver(row)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "state.rejected" in message
    assert PARAMS["reason"] not in message
    with pytest.raises(ValueError):
        channel_from_name("sms")


def ban(application_id: str = "app-9") -> BanRecord:
    return BanRecord(
        person_key="a" * 64,
        application_id=application_id,
        cycle_id="2024-aksu",
        from_year=2024,
        until_year=2027,
        reason="提供虚假学历证明",
        at=datetime(2024, 10, 8, tzinfo=CST),
    )


async def test_ban_window_is_inclusive(acts: ZhipingActivities) -> None:
    env = ActivityEnvironment()
    await env.run(acts.record_ban, ban())

    async def banned(year: int, person: str = "a" * 64) -> bool:
        status = await env.run(acts.check_ban, BanQuery(person_key=person, cycle_year=year))
        return status.banned

    assert not await banned(2023)
    assert await banned(2024)
    assert await banned(2027)
    assert not await banned(2028)
    assert not await banned(2025, person="b" * 64)
    status = await env.run(acts.check_ban, BanQuery(person_key="a" * 64, cycle_year=2025))
    assert (status.until_year, status.application_id) == (2027, "app-9")


async def test_record_ban_twice_keeps_one_row(db: Database, acts: ZhipingActivities) -> None:
    env = ActivityEnvironment()
    await env.run(acts.record_ban, ban())
    await env.run(acts.record_ban, ban())
    assert await count(db, FraudBan) == 1
    await env.run(acts.record_ban, ban("app-10"))
    assert await count(db, FraudBan) == 2


async def test_worker_gets_every_activity(acts: ZhipingActivities) -> None:
    names = {fn.__name__ for fn in acts.all()}
    assert names == {
        "record_transition",
        "send_notification",
        "check_ban",
        "record_ban",
        "newest_record",
    }


async def test_the_same_application_id_in_two_cycles_keeps_both(
    db: Database, acts: ZhipingActivities
) -> None:
    """An application id is unique within its cycle only: each cycle's numbering may start
    again at the same ids, and neither application may lose a row to the other."""
    env = ActivityEnvironment()
    for cycle_id in ("2024-aksu", "2025-aksu"):
        await env.run(
            acts.record_transition,
            transition(
                1,
                "draft",
                "under_review",
                cycle_id=cycle_id,
                workflow_id=cycle_id,
                record={"state": "under_review"},
            ),
        )
    await env.run(
        acts.record_transition,
        transition(
            2,
            "under_review",
            "accepted",
            cycle_id="2025-aksu",
            workflow_id="2025-aksu",
            record={"state": "accepted"},
        ),
    )

    async with db.sessions() as session:
        log = (
            await session.execute(
                select(TransitionLog.cycle_id, TransitionLog.seq).order_by(
                    TransitionLog.cycle_id, TransitionLog.seq
                )
            )
        ).all()
        states = (
            await session.execute(
                select(Application.cycle_id, Application.state).order_by(Application.cycle_id)
            )
        ).all()
    assert [tuple(row) for row in log] == [("2024-aksu", 1), ("2025-aksu", 1), ("2025-aksu", 2)]
    assert [tuple(row) for row in states] == [
        ("2024-aksu", "under_review"),
        ("2025-aksu", "accepted"),
    ]
    # Each keeps its own whole record, for a run that continues it after it ended.
    newest = [
        await env.run(acts.newest_record, ApplicationKey(cycle_id=c, application_id=a))
        for c, a in [("2024-aksu", "app-1"), ("2025-aksu", "app-1"), ("2025-aksu", "app-2")]
    ]
    assert newest == [{"state": "under_review"}, {"state": "accepted"}, {}]
