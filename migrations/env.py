"""Alembic environment: plain SQL migrations over psycopg 3, version table of our own."""

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool

from lowcap_learning.db import database_url

VERSION_TABLE = "lowcap_learning_alembic_version"  # the bot may run its own alembic


def libpq_url() -> str:
    return context.config.get_main_option("sqlalchemy.url") or database_url()


def run_migrations_online() -> None:
    # libpq parses the connection string (URL or key=value form); SQLAlchemy's URL parser knows only URLs.
    url = libpq_url()
    engine = create_engine("postgresql+psycopg://", poolclass=pool.NullPool, creator=lambda: psycopg.connect(url))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            version_table=VERSION_TABLE,
            version_table_schema="public",
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline mode is not supported: migrations run frozen SQL against a database")
run_migrations_online()
