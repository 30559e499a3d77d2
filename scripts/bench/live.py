"""Live trade with positions: a single-row trade that redistributes every tracked position (design §6)
against the bare UPDATE of the same rows, alternating in blocks, and against the plan's flow (its
pseudo-code with psycopg, one autocommit UPDATE per position)."""

from __future__ import annotations

import math
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from bench.harness import SPAN_DAYS, START, alternating, timed
from bench.table import Row, filled, verdict
from bench.workload import (
    TRACKED,
    insert_one_statement,
    load_positions,
    plain_copy,
    reset,
    table_stats,
    timed_inserts,
    tracked_rows,
    trade_params,
)
from lowcap_learning import synthetic

SIZES = {
    False: {"live_tokens": 1000, "live_n": 300, "plan_n": 3},
    True: {"live_tokens": 100, "live_n": 30, "plan_n": 1},
}
TARGET_BARE = "≥ 0.70 of bare UPDATE rate"
TARGET_PLAN = "≥ 100× the plan's flow"
WARM_UP = 20  # the first trades of a fresh history skip the step (fewer than 2 timeframes traded)
TFS = synthetic.TIMEFRAMES

BARE_UPDATE = (
    "UPDATE public.lowcap_positions SET total_allocation_pct = total_allocation_pct * %(f)s::double precision"
    f" WHERE {TRACKED}"
)
PLAN_CONFIG = "SELECT config_data FROM public.learning_configs WHERE module_id = 'bench_plan'"
PLAN_SAVE = "UPDATE public.learning_configs SET config_data = %(c)s::jsonb WHERE module_id = 'bench_plan'"
PLAN_POSITIONS = (
    "SELECT id, token_contract, token_chain, timeframe, total_allocation_pct FROM public.lowcap_positions"
    " WHERE status = ANY(%(s)s::text[])"
)
PLAN_UPDATE = (
    "UPDATE public.lowcap_positions SET total_allocation_pct = %(v)s::double precision WHERE id = %(id)s::uuid"
)


# ---------------------------------------------------------------------------------------------
# the plan's flow


def plan_fold(cfg: dict, trade: dict) -> None:
    """The plan's EWMA fold of one trade into its timeframe's and the global state (τ 14 d / 90 d)."""
    alloc = cfg["timeframe_allocation"]
    roi = trade["rpnl_pct"] / 100
    at = datetime.fromisoformat(trade["closed_at"]).timestamp()
    for key in (trade["timeframe"], "global"):
        s = cfg.setdefault("state", {}).get(key)
        if s is None:
            s = [at, roi, 1.0, roi, 1.0]
        else:
            ds, dl = math.exp(-(at - s[0]) / (14 * 86400)), math.exp(-(at - s[0]) / (90 * 86400))
            s = [at, s[1] * ds + roi, s[2] * ds + 1, s[3] * dl + roi, s[4] * dl + 1]
        cfg["state"][key] = s
        if key != "global":
            alloc[key]["roi_short"] = s[1] / s[2]
            alloc[key]["n"] = alloc[key].get("n", 0) + 1


def plan_step(alloc: dict) -> bool:
    """The plan's allocation step (capped at 0.003, discounted below 5 trades); False when fewer than
    two timeframes have traded."""
    with_trades = [t for t in TFS if alloc[t].get("n", 0) > 0]
    if len(with_trades) < 2:
        return False
    current = {t: alloc[t]["current_allocation"] for t in TFS}
    total_roi = sum(alloc[t]["roi_short"] for t in with_trades)
    desired = {t: (alloc[t]["roi_short"] / total_roi if total_roi else 1 / len(with_trades)) for t in with_trades}
    for t in TFS:
        desired.setdefault(t, current[t])
    total = sum(desired.values())
    desired = {t: v / total for t, v in desired.items()}
    discount = min(1.0, min(alloc[t]["n"] for t in with_trades) / 5.0)
    new = {
        t: current[t] + max(-0.003, min(0.003, desired[t] - current[t])) * discount if t in with_trades else current[t]
        for t in TFS
    }
    total = sum(new.values())
    for t in TFS:
        alloc[t]["current_allocation"] = new[t] / total
    return True


def plan_redistribute(conn: psycopg.Connection, alloc: dict) -> int:
    """Every position of a token set to the token's total × its timeframe's share, row by row."""
    positions = conn.execute(PLAN_POSITIONS, {"s": ["watchlist", "active", "dormant"]}).fetchall()
    by_token: dict[tuple, list] = {}
    for p in positions:
        by_token.setdefault((p[1], p[2]), []).append(p)
    share = {t: alloc[t]["current_allocation"] for t in TFS}
    updated = 0
    for token_rows in by_token.values():
        total = sum(float(p[4] or 0) for p in token_rows)
        if total == 0:
            continue
        for p in token_rows:
            if p[3] in share:
                conn.execute(PLAN_UPDATE, {"v": total * share[p[3]], "id": p[0]}, prepare=True)
                updated += 1
    return updated


def plan_flow_trade(conn: psycopg.Connection, trade: dict, statement) -> int:
    """The plan's pseudo-code with psycopg: each call its own request (autocommit), rows updated by id."""
    conn.execute(statement, trade_params(trade), prepare=True)
    cfg = conn.execute(PLAN_CONFIG).fetchone()[0]
    plan_fold(cfg, trade)
    moved = plan_step(cfg["timeframe_allocation"])
    conn.execute(PLAN_SAVE, {"c": Jsonb(cfg)})
    return plan_redistribute(conn, cfg["timeframe_allocation"]) if moved else 0


def plan_config(first: float) -> dict:
    """The plan's config after some history: every timeframe traded, so each trade moves the allocation."""
    rois = (-0.01, 0.01, 0.05)
    return {
        "timeframe_allocation": {
            tf: {"current_allocation": a, "n": 5, "roi_short": r}
            for tf, a, r in zip(TFS, (0.15, 0.5, 0.35), rois, strict=True)
        },
        "state": {tf: [first, r, 1.0, r, 1.0] for tf, r in zip(TFS, rois, strict=True)},
    }


def measure_plan(conn: psycopg.Connection, trades: list[dict]) -> tuple[float, int]:
    """(seconds, position rows written) of the plan's flow over the trades."""
    plain = plain_copy(conn)
    first = datetime.fromisoformat(trades[0]["closed_at"]).timestamp() - 3600
    conn.execute(
        "INSERT INTO public.learning_configs (module_id, config_data) VALUES ('bench_plan', %(c)s::jsonb)",
        {"c": Jsonb(plan_config(first))},
    )
    with timed() as t:
        written = sum(plan_flow_trade(conn, r, plain) for r in trades)
    conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'bench_plan'")
    conn.execute("DROP TABLE public.bench_closed_trades_plain")
    return t.seconds, written


# ---------------------------------------------------------------------------------------------
# trades against the bare UPDATE


def bare_updates(conn: psycopg.Connection, k: int) -> float:
    """Seconds for k bare UPDATEs of the tracked rows, each changing every row (autocommit)."""
    with timed() as t:
        for i in range(k):
            conn.execute(BARE_UPDATE, {"f": 1.0001 if i % 2 == 0 else 1 / 1.0001}, prepare=True)
    return t.seconds


def measure_trades(conn: psycopg.Connection, trades: list[dict]) -> dict:
    """Trades and bare UPDATEs alternating in blocks, so both meet the same table state (bloat,
    checkpoints, other load on the machine): wall and server CPU of each, position rows written."""
    n, block = len(trades), max(5, len(trades) // 10)
    learn = insert_one_statement("public.closed_trades")
    out = {"learn": 0.0, "bare": 0.0, "cpu_learn": 0.0, "cpu_bare": 0.0, "written": 0, "hot": 0}
    for side, i in alternating(n, block, ("learn", "bare")):
        part = trades[i : i + block]
        before = table_stats(conn, "public.lowcap_positions") if side == "learn" else None
        with timed(conn) as t:
            seconds = timed_inserts(conn, learn, part) if side == "learn" else bare_updates(conn, len(part))
        if before is not None:
            after = table_stats(conn, "public.lowcap_positions")
            out["written"] += after["upd"] - before["upd"]
            out["hot"] += after["hot_upd"] - before["hot_upd"]
        out[side] += seconds
        out[f"cpu_{side}"] += t.cpu
    return out


def job_live(url: str, size: dict) -> dict:
    n, tokens, m = size["live_n"], size["live_tokens"], size["plan_n"]
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn)
        pos = load_positions(conn, tokens)
        tracked = tracked_rows(conn)
        rows = synthetic.closed_trades(n + WARM_UP, seed=31, start=START, span_days=SPAN_DAYS, tokens=pos)
        timed_inserts(conn, insert_one_statement("public.closed_trades"), rows[:WARM_UP])
        t = measure_trades(conn, rows[WARM_UP:])
        pos_bytes = table_stats(conn, "public.lowcap_positions")["bytes"]
        t_plan, plan_written = measure_plan(conn, rows[WARM_UP : WARM_UP + m])
    learn_rate, bare_rate, plan_rate = n / t["learn"], n / t["bare"], m / t_plan
    return {
        "tokens": tokens,
        "positions": len(pos),
        "tracked_rows": tracked,
        "n": n,
        "trigger_per_s": learn_rate,
        "bare_update_per_s": bare_rate,
        "plan_per_s": plan_rate,
        "ratio_bare": learn_rate / bare_rate,
        "ratio_plan": learn_rate / plan_rate,
        "rows_written_per_trade": t["written"] / n,
        "positions_bytes_after": pos_bytes,
        "hot_share": t["hot"] / max(t["written"], 1),
        "backend_cpu_ms_trigger": 1000 * t["cpu_learn"] / n,
        "backend_cpu_ms_bare": 1000 * t["cpu_bare"] / n,
        "plan_rows_written_per_trade": plan_written / m,
    }


JOBS = {"live": job_live}
FIGURE = "live trade"


ROWS = (
    Row(
        "live trade, {tokens:,} tokens × 3 ({tracked_rows:,} tracked rows) vs bare UPDATE",
        "{trigger_per_s:,.1f} vs {bare_update_per_s:,.1f} /s (server CPU {backend_cpu_ms_trigger:,.2f} vs"
        " {backend_cpu_ms_bare:,.2f} ms)",
        "{ratio_bare:.2f}",
        TARGET_BARE,
        "{verdict_bare}",
    ),
    Row(
        "live trade vs the plan's flow",
        "{trigger_per_s:,.1f} vs {plan_per_s:,.3f} trades/s",
        "{ratio_plan:.0f}×",
        TARGET_PLAN,
        "{verdict_plan}",
    ),
    Row(
        "the bare UPDATE vs the plan's flow: the highest live-vs-plan ratio this machine allows (no trigger,"
        " no token totals)",
        "{bare_update_per_s:,.1f} vs {plan_per_s:,.3f} /s",
        "{ceiling:.0f}×",
        "(ceiling)",
    ),
)
CHURN = (
    "Live trade churn: {rows_written_per_trade:.0f} position rows written per trade ({hot_pct:.0f}% HOT; the"
    " table is {positions_bytes_after:,} bytes after the trades and bare UPDATEs); the plan's flow writes"
    " {plan_rows_written_per_trade:.0f} rows per trade, one autocommit UPDATE each."
)


def rows(t: dict) -> list[Row]:
    return filled(
        ROWS,
        {
            **t,
            "ceiling": t["bare_update_per_s"] / t["plan_per_s"],
            "verdict_bare": verdict(t["ratio_bare"] >= 0.70),
            "verdict_plan": verdict(t["ratio_plan"] >= 100),
        },
    )


def paragraphs(t: dict) -> list:
    return [CHURN.format(**t, hot_pct=100 * t["hot_share"])] if "rows_written_per_trade" in t else []
