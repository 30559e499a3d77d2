"""Bulk replay: one multi-row INSERT ... SELECT of a staged history into closed_trades (one step per
trade, positions redistributed once, design §5 and §6), against its write floor (the same rows copied
into trigger-less tables)."""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from bench.harness import spans, timed
from bench.table import Row, filled, verdict
from bench.workload import load_positions, reset, table_stats, tracked_rows
from lowcap_learning import synthetic

SIZES = {False: {"bulk_n": 100_000, "bulk_tokens": 1000}, True: {"bulk_n": 3000, "bulk_tokens": 100}}
TARGET = "≥ 20,000 trades/s"
COLUMNS = "trade_id, position_id, token_contract, token_chain, timeframe, rpnl_pct, closed_at, actions"

STAGE = f"""
INSERT INTO public.bench_stage ({COLUMNS})
SELECT {COLUMNS}
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r (
    trade_id text, position_id text, token_contract text, token_chain text, timeframe text,
    rpnl_pct double precision, closed_at timestamptz, actions jsonb
)
"""
REPLAY = f"INSERT INTO public.closed_trades ({COLUMNS}) SELECT {COLUMNS} FROM public.bench_stage"
WRITTEN = """
SELECT (SELECT count(*) FROM public.pattern_trade_events), (SELECT count(*) FROM learning.allocation_history),
    (SELECT count(*) FROM learning.learning_log)
"""
FLOOR_TABLES = (
    ("public.closed_trades", "bench_floor_trades"),
    ("public.pattern_trade_events", "bench_floor_events"),
    ("learning.allocation_history", "bench_floor_history"),
    ("learning.learning_log", "bench_floor_log"),
)
FLOOR_POSITIONS = (
    "UPDATE public.lowcap_positions SET total_allocation_pct = total_allocation_pct * 1.0001"
    " WHERE status IN ('watchlist', 'active', 'dormant') AND total_allocation_pct IS NOT NULL"
)


def job_prepare(url: str, size: dict) -> dict:
    """The staged history: n trades over the window on the positions of bulk_tokens tokens."""
    n = size["bulk_n"]
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn)
        pos = load_positions(conn, size["bulk_tokens"])
        conn.execute("DROP TABLE IF EXISTS public.bench_stage")
        conn.execute("CREATE TABLE public.bench_stage (LIKE public.closed_trades INCLUDING DEFAULTS)")
        for k, _, m, start, span in spans(n, 20000):
            rows = synthetic.closed_trades(
                m, seed=41 + k, start=start, span_days=span, tokens=pos, id_prefix=f"bulk{k}"
            )
            conn.execute(STAGE, {"rows": json.dumps(rows)})
        conn.execute("VACUUM ANALYZE public.bench_stage")
    return {}


def write_floor(conn: psycopg.Connection) -> tuple[float, float]:
    """Seconds (wall, server CPU) to write what the replay wrote, with no logic: the same rows into
    trigger-less copies of each table (same indexes), plus one UPDATE of the tracked positions."""
    copies = [(sql.Identifier(*source.split(".")), sql.Identifier(copy)) for source, copy in FLOOR_TABLES]
    for source, copy in copies:
        conn.execute(sql.SQL("CREATE TABLE public.{} (LIKE {} INCLUDING ALL)").format(copy, source))
    with timed(conn) as t, conn.transaction():
        for source, copy in copies:
            conn.execute(sql.SQL("INSERT INTO public.{} SELECT * FROM {}").format(copy, source))
        conn.execute(FLOOR_POSITIONS)
    for _, copy in copies:
        conn.execute(sql.SQL("DROP TABLE public.{}").format(copy))
    return t.seconds, t.cpu


def job_bulk(url: str, size: dict) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        n = conn.execute("SELECT count(*) FROM public.bench_stage").fetchone()[0]
        tracked = tracked_rows(conn)
        before = table_stats(conn, "public.lowcap_positions")
        with timed(conn) as t:
            conn.execute(REPLAY)
        after = table_stats(conn, "public.lowcap_positions")
        floor_seconds, floor_cpu = write_floor(conn)
        events, history, log = conn.execute(WRITTEN).fetchone()
        conn.execute("DROP TABLE public.bench_stage")
    return {
        "n": n,
        "seconds": t.seconds,
        "trades_per_s": n / t.seconds,
        "backend_cpu_seconds": t.cpu,
        "floor_seconds": floor_seconds,
        "floor_backend_cpu_seconds": floor_cpu,
        "floor_trades_per_s": n / floor_seconds,
        "tracked_rows": tracked,
        "positions_bytes_before": before["bytes"],
        "positions_bytes_after": after["bytes"],
        "positions_rows_updated": after["upd"] - before["upd"],
        "positions_hot_updates": after["hot_upd"] - before["hot_upd"],
        "positions_dead_tuples": after["dead"],
        "trade_events": events,
        "history_rows": history,
        "log_rows": log,
    }


JOBS = {"prepare": job_prepare, "bulk": job_bulk}


def measure(run, size: dict) -> dict:
    prepared = run("prepare")
    failed = prepared.get("status")
    return {"bulk_prepare": prepared, "bulk": {"status": failed} if failed else run("bulk")}


FIGURE = "bulk replay"
ROW = Row(
    "bulk replay, {n:,} trades, {tracked_rows:,} positions",
    "{seconds:.2f} s (server CPU {backend_cpu_seconds:.2f} s); write floor {floor_seconds:.2f} s ="
    " {floor_trades_per_s:,.0f} trades/s",
    "{trades_per_s:,.0f} trades/s",
    TARGET,
    "{verdict}",
)
BLOAT = (
    "Bulk replay bloat: lowcap_positions {positions_bytes_before:,} → {positions_bytes_after:,} bytes,"
    " {positions_rows_updated:,} rows updated ({positions_hot_updates:,} HOT), {positions_dead_tuples:,} dead"
    " tuples; {trade_events:,} trade events, {history_rows:,} history rows, {log_rows:,} log rows written in"
    " the same statement."
)


def rows(t: dict) -> list[Row]:
    return filled([ROW], {**t, "verdict": verdict(t["trades_per_s"] >= 20000)})


def paragraphs(t: dict) -> list:
    return [BLOAT.format(**t)] if "seconds" in t else []
