"""Migration revisions, oldest first; ``tests/activities/test_migrations.py`` checks that
head matches ``models.tables``."""
