"""The Alembic migrations against the ORM models, on SQLite and PostgreSQL.

Head must build exactly ``models.tables``: a change to the models without a revision (or
a revision that does not match) fails here. Generate one with
``.venv/bin/alembic revision --autogenerate -m "what changed"``.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, delete, func, inspect, select, text
from typer.testing import CliRunner

from activities import Database
from activities.database import PRE_MIGRATION_SCHEMAS, alembic_config, head_revision
from models.tables import Application, Base, TransitionLog, WebhookDelivery
from zhiping.cli import app
from zhiping.settings import get_settings

AT = datetime(2024, 8, 26, 1, 0, tzinfo=UTC)
MIGRATE_AND_REPORT = """
import asyncio, sys
from activities.database import Database

async def main(url):
    db = Database.from_url(url)
    before = await db.schema_revision()
    await db.create_schema()
    print(f"{before}->{await db.schema_revision()}")
    await db.dispose()

asyncio.run(main(sys.argv[1]))
"""


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def drift(db: Database) -> list[Any]:
    """What autogenerate would add to a new revision: empty when head matches the models."""
    async with db.engine.connect() as connection:
        return await connection.run_sync(_drift)


async def tables(db: Database) -> set[str]:
    async with db.engine.connect() as connection:
        return await connection.run_sync(lambda c: set(inspect(c).get_table_names()))


async def log_rows(db: Database) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(TransitionLog)) or 0)


async def add_log_row(db: Database) -> None:
    async with db.sessions.begin() as session:
        session.add(
            TransitionLog(
                cycle_id="2024-aksu",
                application_id="A1",
                seq=1,
                trigger="submit",
                source="draft",
                dest="under_review",
                actor="applicant",
                at=AT,
            )
        )


async def test_head_matches_the_models(db: Database) -> None:
    assert head_revision() is not None
    assert await db.schema_revision() == head_revision()
    assert await drift(db) == []
    assert await tables(db) == {*Base.metadata.tables, "alembic_version"}


async def test_upgrade_at_head_changes_nothing(db: Database) -> None:
    await add_log_row(db)
    await db.create_schema()
    await db.create_schema()
    assert await db.schema_revision() == head_revision()
    assert await log_rows(db) == 1


async def test_downgrade_to_base_then_upgrade_again(db: Database) -> None:
    def downgrade(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "base")

    async with db.engine.begin() as connection:
        await connection.run_sync(downgrade)
    assert await tables(db) <= {"alembic_version"}
    assert await db.schema_revision() is None

    await db.create_schema()
    assert await db.schema_revision() == head_revision()
    assert await drift(db) == []


async def test_each_revision_upgrades_from_the_one_before(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
    for revision, expected in reversed(PRE_MIGRATION_SCHEMAS):
        await db.create_schema(revision)
        assert await db.schema_revision() == revision
        assert await tables(db) == {*expected, "alembic_version"}


OLD_ROWS = [
    "INSERT INTO applications (application_id, cycle_id, workflow_id, level, state,"
    " submission_round, fee_paid, last_seq, updated_at, deadlines) VALUES ('A1', '2024-aksu',"
    " 'application:2024-aksu:A1', 'intermediate', 'under_review', 1, false, 2,"
    " '2024-08-26 01:00:00', '[]')",
    "INSERT INTO transition_log (application_id, seq, trigger, source, dest, actor, at)"
    " VALUES ('A1', 1, 'create', 'draft', 'draft', 'platform', '2024-08-26 00:00:00')",
    "INSERT INTO transition_log (application_id, seq, trigger, source, dest, actor, at)"
    " VALUES ('A1', 2, 'submit', 'draft', 'under_review', 'applicant', '2024-08-26 01:00:00')",
]
"""An application and its audit log as revisions 0001 and 0002 stored them."""


async def add_old_rows(db: Database) -> None:
    async with db.engine.begin() as connection:
        for statement in OLD_ROWS:
            await connection.execute(text(statement))


async def assert_old_rows_kept(db: Database) -> None:
    """The rows of ``OLD_ROWS`` at head: the log rows now carry their application's cycle."""
    async with db.sessions() as session:
        log = (
            await session.execute(
                select(TransitionLog.cycle_id, TransitionLog.application_id, TransitionLog.seq)
            )
        ).all()
        app_row = await session.get(Application, ("2024-aksu", "A1"))
    assert sorted(tuple(row) for row in log) == [("2024-aksu", "A1", 1), ("2024-aksu", "A1", 2)]
    assert app_row is not None and app_row.state == "under_review"


@pytest.mark.parametrize(
    ("revision", "made_tables"), PRE_MIGRATION_SCHEMAS, ids=[r for r, _ in PRE_MIGRATION_SCHEMAS]
)
async def test_a_database_from_before_migrations_is_adopted(
    database_url: str, revision: str, made_tables: frozenset[str]
) -> None:
    """``create_all`` made these tables, as the models of that revision were, before there
    were migrations: keep their rows, add what is missing, carry on from there."""
    db = Database.from_url(database_url)
    try:
        await db.create_schema(revision)  # the same tables, then forget the revision
        async with db.engine.begin() as connection:
            await connection.execute(text("DROP TABLE alembic_version"))
        assert await db.schema_revision() is None
        assert await tables(db) == made_tables
        await add_old_rows(db)
        await db.create_schema()
        assert await db.schema_revision() == head_revision()
        assert await drift(db) == []
        await assert_old_rows_kept(db)
    finally:
        await db.dispose()


async def test_application_keys_gain_their_cycle(db: Database) -> None:
    """0003: the audit log takes each row's cycle from the read model, the delivery log
    from the event id, and the same application id can then be used in another cycle."""
    async with db.engine.begin() as connection:
        await connection.run_sync(lambda c: command.downgrade(alembic_config(c), "0002"))
    await add_old_rows(db)
    async with db.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO webhook_deliveries (subscription_id, event_id, event_type,"
                " application_id, seq, status, attempts, first_attempt_at, last_attempt_at)"
                " VALUES ('feed', 'application:2024-aksu:A1:2', 'cn.zhiping.application.submit',"
                " 'A1', 2, 'delivered', 1, '2024-08-26 01:00:00', '2024-08-26 01:00:00')"
            )
        )
    await db.create_schema()
    assert await drift(db) == []
    await assert_old_rows_kept(db)
    async with db.sessions() as session:
        delivery = (await session.execute(select(WebhookDelivery.cycle_id))).scalar_one()
    assert delivery == "2024-aksu"
    async with db.sessions.begin() as session:
        session.add(
            TransitionLog(
                cycle_id="2025-aksu",
                application_id="A1",
                seq=1,
                trigger="create",
                source="draft",
                dest="draft",
                actor="platform",
                at=AT,
            )
        )
    assert await log_rows(db) == 3

    # And back: the key is the application id alone again, the rows of one cycle kept.
    async with db.sessions.begin() as session:
        await session.execute(delete(TransitionLog).where(TransitionLog.cycle_id == "2025-aksu"))
    async with db.engine.begin() as connection:
        await connection.run_sync(lambda c: command.downgrade(alembic_config(c), "0002"))
    assert await db.schema_revision() == "0002"
    assert await log_rows(db) == 2


@pytest.mark.databases("postgresql")
async def test_workers_starting_together_migrate_once(database_url: str) -> None:
    """Every worker process migrates on start-up; on PostgreSQL an advisory lock makes them
    take turns, so the ones after the first find head and do nothing. (Separate processes:
    Alembic's context is process-global, one migration at a time per process.)"""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            MIGRATE_AND_REPORT,
            database_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [(await p.communicate())[0].decode().strip() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    # Without the lock the later ones fail ("relation ... already exists").
    assert all(output.endswith(f"->{head_revision()}") for output in outputs), outputs


async def test_zhiping_db_upgrade_twice(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIPING_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        first = await asyncio.to_thread(runner.invoke, app, ["db", "upgrade"])
        second = await asyncio.to_thread(runner.invoke, app, ["db", "upgrade"])
    finally:
        get_settings.cache_clear()
    assert first.exit_code == 0, first.output
    assert f"升级到 {head_revision()}" in first.output
    assert second.exit_code == 0, second.output
    assert "无需迁移" in second.output

    db = Database.from_url(database_url)
    try:
        assert await db.schema_revision() == head_revision()
        assert await drift(db) == []
    finally:
        await db.dispose()
