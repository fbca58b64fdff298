"""Alembic migrations of the zhiping tables (``models.tables``).

A package, so ``pip install .`` ships the migrations with the code that applies them
(``activities.database.MIGRATIONS``). ``Database.create_schema()`` and ``zhiping db
upgrade`` run them to head; ``alembic`` on the command line (``alembic.ini`` at the
repository root) generates new revisions.
"""
