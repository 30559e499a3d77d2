"""Trigger overhead: single-row INSERTs into closed_trades (the learning trigger, design §1) against
the same INSERTs into a trigger-less copy, and against the write floor (the rows the trigger writes,
written by one plain statement), alternating in blocks within one run."""

from __future__ import annotations

import psycopg

from bench.harness import SPAN_DAYS, START, alternating
from bench.table import Row, filled, verdict
from bench.workload import count, insert_one_statement, plain_copy, reset, timed_inserts_cpu
from lowcap_learning import synthetic

SIZES = {False: {"trigger_n": 2000}, True: {"trigger_n": 150}}
TARGET = "≥ 0.70 of plain rate"

TRADE_FLOOR = """
WITH t AS (
    INSERT INTO public.bench_closed_trades_plain (
        trade_id, position_id, token_contract, token_chain, timeframe, rpnl_pct, closed_at, actions
    ) VALUES (
        %(trade_id)s::text, %(position_id)s::text, %(token_contract)s::text, %(token_chain)s::text,
        %(timeframe)s::text, %(rpnl_pct)s::double precision, %(closed_at)s::timestamptz, %(actions)s::jsonb
    )
    RETURNING *
),

e AS (
    INSERT INTO public.bench_floor_events (
        pattern_key, action_category, scope, trade_id, roi, did_trim, reached_s3, "timestamp"
    )
    SELECT a ->> 'pattern_key', a ->> 'action_category', a -> 'scope', t.trade_id, t.rpnl_pct / 100, false,
        false, t.closed_at
    FROM t CROSS JOIN LATERAL jsonb_array_elements(t.actions) AS x (a)
),

h AS (
    INSERT INTO public.bench_floor_history (
        trade_id, timeframe, closed_at, trade_roi, reason, allocation_before, allocation_after, desired,
        scores, roi_short, trade_counts, step_limit
    )
    SELECT t.trade_id, t.timeframe, t.closed_at, t.rpnl_pct / 100, 'step', '{0.15,0.5,0.35}',
        '{0.15,0.5,0.35}', '{0.15,0.5,0.35}', '{1,1,1}', '{0.01,0.02,0.03}', '{5,5,5}', 0.003
    FROM t
),

l AS (
    INSERT INTO public.bench_floor_log (level, message)
    SELECT 'INFO', 'ROI UPDATE: timeframe=' || t.timeframe || ' | trade_id=' || t.trade_id || ' | line ' || k
    FROM t CROSS JOIN generate_series(1, 2) AS k
)

UPDATE public.bench_floor_config
SET config_data = config_data || jsonb_build_object('last', (SELECT t.trade_id FROM t)), updated_at = now()
WHERE module_id = 'decision_maker'
"""

FLOOR_SETUP = """
CREATE TABLE public.bench_floor_events (LIKE public.pattern_trade_events INCLUDING ALL);
CREATE TABLE public.bench_floor_history (LIKE learning.allocation_history INCLUDING ALL);
CREATE TABLE public.bench_floor_log (LIKE learning.learning_log INCLUDING ALL);
CREATE TABLE public.bench_floor_config (LIKE public.learning_configs INCLUDING ALL);
INSERT INTO public.bench_floor_config SELECT * FROM public.learning_configs WHERE module_id = 'decision_maker';
"""

FLOOR_DROP = """
DROP TABLE public.bench_floor_events, public.bench_floor_history, public.bench_floor_log,
    public.bench_floor_config, public.bench_closed_trades_plain
"""

SIDES = ("plain", "learn", "floor")


def job_trigger(url: str, size: dict) -> dict:
    n = size["trigger_n"]
    rows = synthetic.closed_trades(n, seed=21, start=START, span_days=SPAN_DAYS)
    floor_rows = synthetic.closed_trades(n, seed=22, start=START, span_days=SPAN_DAYS, id_prefix="floor")
    wall, cpu = dict.fromkeys(SIDES, 0.0), dict.fromkeys(SIDES, 0.0)
    # Blocks alternate (A B C, C B A, ...) so warm-up and the machine's drift fall on every side alike.
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn)
        statements = {
            "plain": plain_copy(conn),
            "learn": insert_one_statement("public.closed_trades"),
            "floor": TRADE_FLOOR,
        }
        conn.execute(FLOOR_SETUP.encode())
        block = max(10, n // 10)
        for side, i in alternating(n, block, SIDES):
            part = (floor_rows if side == "floor" else rows)[i : i + block]
            seconds, server = timed_inserts_cpu(conn, statements[side], part)
            wall[side] += seconds
            cpu[side] += server
        events = count(conn, "SELECT count(*) FROM public.pattern_trade_events")
        conn.execute(FLOOR_DROP)
    rate = {side: n / wall[side] for side in SIDES}
    return {
        "n": n,
        "plain_per_s": rate["plain"],
        "trigger_per_s": rate["learn"],
        "ratio": rate["learn"] / rate["plain"],
        "floor_per_s": rate["floor"],
        "ratio_floor": rate["learn"] / rate["floor"],
        "backend_cpu_ms_floor": 1000 * cpu["floor"] / n,
        "ms_plain": 1000 * wall["plain"] / n,
        "ms_trigger": 1000 * wall["learn"] / n,
        "backend_cpu_ms_plain": 1000 * cpu["plain"] / n,
        "backend_cpu_ms_trigger": 1000 * cpu["learn"] / n,
        "trade_events": events,
    }


JOBS = {"trigger": job_trigger}
FIGURE = "trigger overhead"


ROWS = (
    Row(
        FIGURE,
        "{trigger_per_s:,.1f} vs {plain_per_s:,.1f} inserts/s ({ms_trigger:,.3f} vs {ms_plain:,.3f} ms;"
        " server CPU {backend_cpu_ms_trigger:,.3f} vs {backend_cpu_ms_plain:,.3f} ms)",
        "{ratio:.2f}",
        TARGET,
        "{verdict}",
    ),
    Row(
        "trigger vs its write floor (the same trade, pattern_trade_events, history, 2 log rows and the config"
        " row written by one plain statement)",
        "{trigger_per_s:,.1f} vs {floor_per_s:,.1f} /s (server CPU {backend_cpu_ms_floor:,.3f} ms)",
        "{ratio_floor:.2f}",
        "(diagnostic)",
    ),
    Row(
        "the write floor vs the plain INSERT: the highest trigger-overhead ratio the trade's writes allow here,"
        " with no logic at all",
        "{floor_per_s:,.1f} vs {plain_per_s:,.1f} /s",
        "{ceiling:.2f}",
        "(ceiling)",
    ),
)


def rows(t: dict) -> list[Row]:
    return filled(ROWS, {**t, "ceiling": t["floor_per_s"] / t["plain_per_s"], "verdict": verdict(t["ratio"] >= 0.70)})
