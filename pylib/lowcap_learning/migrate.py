"""Alembic, configured in code from the packaged migrations: no alembic.ini is read at run time, so the
CLI, the demo and the tests migrate the same way from any working directory and from an installed wheel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import psycopg
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from lowcap_learning import db

SCRIPT_PACKAGE = "lowcap_learning.migrations"
# What a migration can fail with that a user can act on; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (psycopg.Error, SQLAlchemyError, CommandError)


class MigrateError(RuntimeError):
    """A migrate that did not happen, said in one line."""


@contextmanager
def alembic_config(url: str | None = None) -> Iterator[Config]:
    """Alembic's configuration; its script location is a real directory while the block runs."""
    with resources.as_file(resources.files(SCRIPT_PACKAGE)) as script_dir:
        cfg = Config()
        cfg.set_main_option("script_location", str(script_dir))
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("sqlalchemy.url", db.database_url(url).replace("%", "%%"))
        yield cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    with alembic_config(url) as cfg:
        command.upgrade(cfg, revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    with alembic_config(url) as cfg:
        command.downgrade(cfg, revision)


def one_line(err: BaseException) -> str:
    """The user's message for a failed migration: the database's own words where there are some."""
    if isinstance(err, DBAPIError) and isinstance(err.orig, psycopg.Error):
        err = err.orig
    if isinstance(err, psycopg.Error):
        return db.describe_error(err)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def migrate(url: str | None = None, *, create_db: bool = True, revision: str = "head") -> bool:
    """Create the database if asked and missing, then upgrade it; True when this call created it.

    A failure raises MigrateError with one line. The migration runs in one transaction, so a database
    that existed is left as it was; a database this call created is dropped again, so a failed first
    migrate leaves nothing half-made behind.
    """
    created = False
    try:
        if create_db:
            created = db.ensure_database(url)
        upgrade(url, revision)
    except BaseException as err:
        note = ""
        if created:
            try:
                db.drop_database(url)
                note = " (the database this migrate created was dropped again)"
            except psycopg.Error as drop_err:
                note = f" (the database this migrate created could not be dropped: {db.describe_error(drop_err)})"
        if isinstance(err, EXPECTED_ERRORS):
            raise MigrateError(one_line(err) + note) from err
        raise
    return created
