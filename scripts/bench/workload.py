"""The rows the figures write and read: synthetic trades and positions (lowcap_learning.synthetic),
the single-row INSERT the bot issues, and the table statistics the figures report."""

from __future__ import annotations

import time

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bench.harness import timed
from lowcap_learning import synthetic

DIMS = tuple(synthetic.SCOPE_DIMS)

# The position rows a trade redistributes (design §6).
TRACKED = (
    "status IN ('watchlist', 'active', 'dormant') AND total_allocation_pct IS NOT NULL"
    " AND timeframe IN ('15m', '1h', '4h')"
)


# The data tables reset empties; an older version built by `--sql-from` may lack the newer ones.
DATA_TABLES = (
    "public.closed_trades", "public.pattern_trade_events", "public.lowcap_positions",
    "public.pattern_episode_events", "public.learning_lessons", "public.pm_overrides",
    "learning.allocation_history", "learning.learning_log", "learning.pending_redistribution",
    "learning.allocation_state",
)


def reset(conn: psycopg.Connection) -> None:
    """Back to the state after migration: empty data tables, fresh decision_maker row."""
    tables = [t for t in DATA_TABLES if conn.execute("SELECT to_regclass(%s::text)", (t,)).fetchone()[0]]
    conn.execute(
        sql.SQL(
            """
        ALTER TABLE public.closed_trades DISABLE TRIGGER _100_append_only;
        TRUNCATE {};
        ALTER TABLE public.closed_trades ENABLE TRIGGER _100_append_only;
        DELETE FROM public.learning_configs;
        SELECT learning.ensure_decision_maker_config();
        TRUNCATE learning.learning_log;  -- a non-default tau's delete logs a ROI RECOMPUTE line
        """
        ).format(sql.SQL(", ").join(sql.Identifier(*t.split(".")) for t in tables))
    )


def sql_function_exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'learning' AND p.proname = %(name)s::text",
        {"name": name},
    ).fetchone()
    return row[0] > 0


INSERT_ONE = """
INSERT INTO {table} (
    trade_id, position_id, token_contract, token_chain, timeframe, rpnl_pct, closed_at, actions
) VALUES (
    %(trade_id)s::text, %(position_id)s::text, %(token_contract)s::text, %(token_chain)s::text,
    %(timeframe)s::text, %(rpnl_pct)s::double precision, %(closed_at)s::timestamptz, %(actions)s::jsonb
)
"""

TRADE_COLUMNS = ("trade_id", "position_id", "token_contract", "token_chain", "timeframe", "rpnl_pct", "closed_at")


def insert_one_statement(table: str) -> sql.Composed:
    schema, name = table.split(".")
    return sql.SQL(INSERT_ONE).format(table=sql.Identifier(schema, name))


def plain_copy(conn: psycopg.Connection, copy: str = "bench_closed_trades_plain") -> sql.Composed:
    """A trigger-less copy of closed_trades (same indexes) and the single-row INSERT into it."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS public.{}").format(sql.Identifier(copy)))
    conn.execute(
        sql.SQL("CREATE TABLE public.{} (LIKE public.closed_trades INCLUDING ALL)").format(sql.Identifier(copy))
    )
    return insert_one_statement(f"public.{copy}")


def trade_params(row: dict) -> dict:
    return {**{c: row[c] for c in TRADE_COLUMNS}, "actions": Jsonb(row["actions"])}


def timed_inserts(conn: psycopg.Connection, statement, rows: list[dict]) -> float:
    """Seconds for len(rows) single-row INSERTs, one autocommit transaction each."""
    params = [trade_params(r) for r in rows]
    t0 = time.perf_counter()
    for p in params:
        conn.execute(statement, p, prepare=True)
    return time.perf_counter() - t0


def timed_inserts_cpu(conn: psycopg.Connection, statement, rows: list[dict]) -> tuple[float, float]:
    """(wall seconds, server CPU seconds) of timed_inserts."""
    with timed(conn) as t:
        seconds = timed_inserts(conn, statement, rows)
    return seconds, t.cpu


TABLE_STATS = """
SELECT pg_catalog.pg_relation_size(%(t)s::regclass), coalesce(s.n_tup_upd, 0), coalesce(s.n_tup_hot_upd, 0),
    coalesce(s.n_dead_tup, 0), coalesce(s.n_live_tup, 0)
FROM pg_catalog.pg_stat_user_tables AS s WHERE s.relid = %(t)s::regclass
"""


def table_stats(conn: psycopg.Connection, table: str) -> dict:
    conn.execute("SELECT pg_catalog.pg_stat_force_next_flush()")
    row = conn.execute(TABLE_STATS, {"t": table}).fetchone()
    return dict(zip(("bytes", "upd", "hot_upd", "dead", "live"), row, strict=True))


def load_positions(conn: psycopg.Connection, n_tokens: int, seed: int = 11) -> list[dict]:
    rows = synthetic.positions(n_tokens, seed=seed)
    for i in range(0, len(rows), 30000):
        synthetic.insert_positions(conn, rows[i : i + 30000])
    conn.execute("VACUUM ANALYZE public.lowcap_positions")
    return rows


def tracked_rows(conn: psycopg.Connection) -> int:
    return conn.execute(f"SELECT count(*) FROM public.lowcap_positions WHERE {TRACKED}").fetchone()[0]


def count(conn: psycopg.Connection, query: str) -> int:
    return conn.execute(query).fetchone()[0]


def active_lessons(conn: psycopg.Connection, lesson_type: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM public.learning_lessons WHERE lesson_type = %(t)s::text AND status = 'active'",
        {"t": lesson_type},
    ).fetchone()[0]
