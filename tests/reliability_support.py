"""Helpers of the reliability tests: a before/after fingerprint of every table of the database."""

from __future__ import annotations

import psycopg
from psycopg import sql

TABLES = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'learning')
ORDER BY 1, 2
"""


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
