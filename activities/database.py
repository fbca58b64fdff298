"""The SQL database the activities write: one async engine, its session factory, and the
Alembic migrations that shape its schema (``activities/migrations``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from models.tables import Base

MIGRATIONS = Path(__file__).with_name("migrations")
"""The Alembic script directory; inside the package, so an installed copy has it too."""

PRE_MIGRATION_SCHEMAS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "0002",
        frozenset(
            {
                "applications",
                "transition_log",
                "notification_outbox",
                "fraud_bans",
                "webhook_subscriptions",
                "webhook_deliveries",
            }
        ),
    ),
    ("0001", frozenset({"applications", "transition_log", "notification_outbox", "fraud_bans"})),
)
"""Schemas that ``metadata.create_all`` made before there were migrations, newest first:
the revision each equals and the tables that identify it. Such a database (tables but no
``alembic_version``) is stamped at that revision, then upgraded. Frozen: every database
created since carries its revision."""

SQLITE_BUSY_TIMEOUT_MS = 5000
"""Workers and the API share one SQLite file: wait for a lock instead of failing at once."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (API, ops) run while an activity writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration without an ini file; with ``connection``, migrations run on
    it (inside its transaction) instead of connecting by themselves."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest migration: what ``create_schema()`` brings a database to."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config(connection)
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables:
        for adopted, required in PRE_MIGRATION_SCHEMAS:
            if required <= tables:
                command.stamp(config, adopted)
                break
    command.upgrade(config, revision)


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


class Database:
    """An ``AsyncEngine`` plus ``async_sessionmaker``, injected into the activities.

    Built from a URL so the same code runs on SQLite (default, ``sqlite+aiosqlite``) and
    PostgreSQL (``postgresql+asyncpg``).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            engine, expire_on_commit=False
        )

    @classmethod
    def from_url(cls, url: str, *, echo: bool = False) -> Database:
        """Create the engine; for a SQLite file, create its directory and enable WAL."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(url, echo=echo)
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            engine = create_async_engine(url, echo=echo, pool_pre_ping=True)
        return cls(engine)

    @property
    def url(self) -> str:
        """The URL the engine was made from, password included (to hand to another process)."""
        return self.engine.url.render_as_string(hide_password=False)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``: selects the insert-on-conflict construct."""
        return self.engine.dialect.name

    def insert(self, table: type[Base]) -> sqlite.Insert | postgresql.Insert:
        """A dialect-specific INSERT that supports ``on_conflict_do_nothing/update``."""
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        raise NotImplementedError(f"unsupported database dialect {self.dialect!r}")

    async def create_schema(self, revision: str = "head") -> None:
        """Apply the Alembic migrations up to ``revision`` (all of them by default).

        The worker, the stack and ``zhiping db upgrade`` call this on start-up. At head it
        is a no-op, and on PostgreSQL workers starting together take turns (an advisory
        lock, see ``migrations/env.py``). A database made by ``create_all`` before there
        were migrations is adopted first (``PRE_MIGRATION_SCHEMAS``).
        """
        async with self.engine.begin() as connection:
            await connection.run_sync(_upgrade, revision)

    async def schema_revision(self) -> str | None:
        """The revision the database is at; ``None`` before the first migration."""
        async with self.engine.connect() as connection:
            return await connection.run_sync(_current_revision)

    async def dispose(self) -> None:
        """Close pooled connections (call on worker shutdown and at the end of tests)."""
        await self.engine.dispose()


__all__ = ["MIGRATIONS", "Database", "alembic_config", "head_revision"]
