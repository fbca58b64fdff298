"""The SQL database the activities write: one async engine and its session factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from models.tables import Base

SQLITE_BUSY_TIMEOUT_MS = 5000
"""Workers and the API share one SQLite file: wait for a lock instead of failing at once."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (API, ops) run while an activity writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


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

    async def create_schema(self) -> None:
        """Create missing tables (migrations come later)."""
        async with self.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)

    async def dispose(self) -> None:
        """Close pooled connections (call on worker shutdown and at the end of tests)."""
        await self.engine.dispose()


__all__ = ["Database"]
