"""Connections, the canonical SQL, and the one place database errors become user messages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg
from psycopg import sql

DEFAULT_URL = "postgresql:///lowcap_learning"
# Package data: the repository's sql/ and migrations/, mapped into the package at build time, so they
# are found the same way in a checkout (editable install) and in an installed wheel.
SQL_DIR: Traversable = resources.files("lowcap_learning.sql")
MIGRATIONS_DIR: Traversable = resources.files("lowcap_learning.migrations")


def database_url(url: str | None = None) -> str:
    """The libpq URL to use: the argument, else DATABASE_URL, else the local default."""
    return url or os.environ.get("DATABASE_URL") or DEFAULT_URL


def connect(url: str | None = None, *, autocommit: bool = False, **kwargs) -> psycopg.Connection:
    return psycopg.connect(database_url(url), autocommit=autocommit, **{"prepare_threshold": None, **kwargs})


@contextmanager
def connection(url: str | None = None, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    with connect(url, autocommit=autocommit) as conn:
        yield conn


def sql_files(directory: Traversable = SQL_DIR) -> list[Traversable]:
    """The canonical SQL files in load order (sql/MANIFEST); another version's sql/ if given."""
    names = [
        line.strip()
        for line in directory.joinpath("MANIFEST").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return [directory.joinpath(name) for name in names]


def canonical_sql(directory: Traversable = SQL_DIR) -> str:
    """All canonical SQL as one script, in load order."""
    return "\n".join(f"-- file: sql/{p.name}\n{p.read_text(encoding='utf-8')}" for p in sql_files(directory))


def run_script(conn: psycopg.Connection, script: str) -> None:
    """Run a multi-statement SQL script (no parameters: the simple query protocol)."""
    conn.execute(script.encode())


def _admin_target(url: str | None) -> tuple[str, str]:
    """(a connection string to the server's postgres database, the URL's database name)."""
    info = psycopg.conninfo.conninfo_to_dict(database_url(url))
    dbname = info.get("dbname") or os.environ.get("PGDATABASE") or os.environ.get("USER", "postgres")
    return psycopg.conninfo.make_conninfo(**dict(info, dbname="postgres")), dbname


def ensure_database(url: str | None = None) -> bool:
    """Create the URL's database if it does not exist; returns True when it was created."""
    admin, dbname = _admin_target(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": dbname})
        if exists.fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return True


def drop_database(url: str | None = None) -> None:
    """Drop the URL's database if it exists (for undoing a database this process just created);
    sessions still connected to it are ended first (WITH (FORCE))."""
    admin, dbname = _admin_target(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def keep_private(url: str | None = None) -> None:
    """Only the owner (and superusers) may connect to the URL's database: a scratch database of ours."""
    admin, dbname = _admin_target(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))


# Constraint names -> what the user should do. Messages raised by our own functions are already
# written for people and pass through unchanged.
CONSTRAINT_MESSAGES = {
    "closed_trades_pkey": "trade_id already recorded: a closed trade counts once",
    "closed_trades_timeframe_check": "timeframe must be one of 1m, 15m, 1h, 4h, 1d",
    "closed_trades_rpnl_pct_check": "rpnl_pct must be a finite percent between -100 and 1000000",
    "closed_trades_actions_check": "actions must be a JSON array",
    "closed_trades_closed_at_check": "closed_at must be a finite timestamp, at most 1 day in the future",
    "closed_trades_trade_id_check": "trade_id must not be empty",
    "pattern_episode_events_decision_check": "decision must be acted or skipped",
    "pattern_episode_events_outcome_check": "outcome must be success, failure, neutral or null",
}


def describe_error(err: psycopg.Error) -> str:
    """A one-line message a user can act on, for any database error."""
    diag = err.diag
    constraint = diag.constraint_name
    if constraint in CONSTRAINT_MESSAGES:
        return f"{CONSTRAINT_MESSAGES[constraint]} ({constraint})"
    if diag.sqlstate == "23502" and diag.column_name:  # not_null_violation
        return f"{diag.column_name} is required (got null)"
    primary = diag.message_primary or str(err).strip().splitlines()[0]
    return primary
