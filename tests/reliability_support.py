"""Helpers of the reliability tests: a before/after fingerprint of every table of the database, a
wait for another session to block on a lock, and the module-wide admin and writer sessions (import
admin_session and writer_session: fixtures `admin` and `writer`)."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import sql

TABLES = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'learning')
ORDER BY 1, 2
"""


@pytest.fixture(scope="module", name="admin")
def admin_session(db_url):
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module", name="writer")
def writer_session(db_url):
    """A session acting as learning_writer, as the bot would."""
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("SET ROLE learning_writer")
        yield c


def snapshot(conn: psycopg.Connection) -> dict[str, tuple[int, str]]:
    """{schema.table: (row count, md5 of every row as text, sorted)} for every table we could touch."""
    result = {}
    for schema, table in conn.execute(TABLES).fetchall():
        query = sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {}.{} AS t"
        ).format(sql.Identifier(schema), sql.Identifier(table))
        result[f"{schema}.{table}"] = tuple(conn.execute(query).fetchone())
    return result


def changed(before: dict, after: dict) -> set[str]:
    """Tables whose rows differ (or that appeared or vanished)."""
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def wait_until_blocked(db_url: str, marker: str, tries: int = 200) -> int:
    """How many sessions of the database wait on a lock running a query that contains marker, once at
    least one does (or after tries x 50 ms)."""
    with psycopg.connect(db_url, autocommit=True) as watcher:
        for _ in range(tries):
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND strpos(query, %s::text) > 0",
                (marker,),
            ).fetchone()[0]
            if waiting:
                return waiting
            threading.Event().wait(0.05)
    return 0
