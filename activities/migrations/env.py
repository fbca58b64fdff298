"""Alembic environment for the zhiping tables, on SQLite or PostgreSQL (async drivers).

Two ways in:

- ``Database.create_schema()`` (the worker, the stack, ``zhiping db upgrade``, the tests)
  hands over an open connection in ``config.attributes["connection"]``, so migrations run
  inside the caller's event loop and transaction;
- the ``alembic`` command line (``alembic.ini`` at the repository root) connects by itself,
  to ``sqlalchemy.url`` if set, else to ``ZHIPING_DATABASE_URL``.

On PostgreSQL a transaction-scoped advisory lock serialises workers that start together:
the second waits, then finds the schema at head and does nothing.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, TypeDecorator, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from models.tables import Base

MIGRATION_LOCK = 0x7A68_6970  # "zhip": the advisory lock key of schema migrations

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name)  # the command line only: leave a host's logging alone


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from zhiping.settings import get_settings  # only on the command line

    return get_settings().database_url


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write a model's own column type (``UTCDateTime``) as the type it stores, so a
    revision never imports ``models`` and stays valid when the models move on."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def _options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "render_item": _render_item,
        "compare_type": True,
        # SQLite alters a table by copying it: Alembic's batch mode does that.
        "render_as_batch": dialect_name == "sqlite",
    }


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    url = _database_url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(url.split(":", 1)[0].split("+", 1)[0]),
    )
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def _migrate_async() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(_migrate_async())
    else:
        _migrate(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
