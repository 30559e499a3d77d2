"""Strength lesson builder (design §11) against the same lessons computed in pandas: three fresh
builds and three pandas runs, alternating so both meet the same machine load; medians compared."""

from __future__ import annotations

import math

import psycopg

from bench import frames
from bench.harness import AS_OF, NOT_AVAILABLE, median_run, optional, spans, timed
from bench.table import Row, filled, not_compared, seconds_list, verdict
from bench.workload import active_lessons, count, reset, sql_function_exists
from lowcap_learning import synthetic

SIZES = {False: {"strength_trades": 250_000}, True: {"strength_trades": 5000}}
TARGET = "≤ 20 s at ~250k trades, faster than pandas"
REPEATS = 3  # one run varied by ~8% here


def job_prepare(url: str, size: dict) -> dict:
    n = size["strength_trades"]
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn)
        with timed() as t:
            for k, _, m, start, span in spans(n, 25000):
                rows = synthetic.closed_trades(m, seed=71 + k, start=start, span_days=span, id_prefix=f"s{k}")
                synthetic.insert_closed_trades(conn, rows)
        conn.execute("VACUUM ANALYZE public.pattern_trade_events")
        events = count(conn, "SELECT count(*) FROM public.pattern_trade_events")
    return {"trades": n, "trade_events": events, "load_seconds": t.seconds}


def build(conn: psycopg.Connection, builder):
    """The builder through its job API, else its SQL function."""
    if builder is not None:
        return builder(conn, as_of=AS_OF)
    return conn.execute("SELECT learning.build_strength_lessons(%s::timestamptz)", (AS_OF,)).fetchone()[0]


def job_sql(url: str, size: dict) -> dict:
    builder = optional("lowcap_learning.strength", "run_lesson_builder")
    with psycopg.connect(url, autocommit=True) as conn:
        if builder is None and not sql_function_exists(conn, "build_strength_lessons"):
            return {"status": NOT_AVAILABLE}
        conn.execute("TRUNCATE public.learning_lessons")  # every timed build is a first build
        with timed() as first:
            result = build(conn, builder)
        lessons = active_lessons(conn, "pm_strength")
        with timed() as rerun:  # the daily job's usual case: the same window again, every lesson stored
            build(conn, builder)
    return {"seconds": first.seconds, "rerun_seconds": rerun.seconds, "lessons": lessons, "result": str(result)[:200]}


def strength_columns(df, np) -> None:
    """Per (pattern, trade) row: the weights and directions of design §11, as summable columns."""
    roi = df["roi"].to_numpy()
    trim = (df["did_trim"] == "t").to_numpy()
    s3 = (df["reached_s3"] == "t").to_numpy()
    w = np.tanh(np.abs(roi) / 0.10)
    da = np.where(roi < 0, -1.0, np.where((roi > 0) & s3, 1.0, 0.0))
    de = np.where((roi < 0) & trim, 1.0, np.where((roi > 0) & s3, -1.0, 0.0))
    t = np.tanh(roi / 0.10)
    columns = {"n": 1, "roi_sum": roi, "trim": trim.astype(np.int64), "s3": s3.astype(np.int64), "w": w}
    columns |= {"wa": w * da, "we": w * de, "t": t, "t2": t * t}
    for name, values in columns.items():
        df[name] = values


def strength_stats(lessons, global_mean: float, np) -> None:
    n = lessons["n"]
    lessons["mean_roi"] = lessons["roi_sum"] / n
    lessons["edge_raw_roi"] = lessons["mean_roi"] - global_mean
    lessons["p_trim"] = lessons["trim"] / n
    lessons["p_s3"] = lessons["s3"] / n
    lessons["dirA"] = (lessons["wa"] / lessons["w"]).fillna(0)
    lessons["dirE"] = (lessons["we"] / lessons["w"]).fillna(0)
    var = (lessons["t2"] - lessons["t"] ** 2 / n) / (n - 1)
    lessons["variance"] = var.clip(lower=0)
    lessons["confidence"] = (1 - np.exp(-n / 50)) / (1 + lessons["variance"] + 0.25 / n)


def job_pandas(url: str, size: dict) -> dict:
    import numpy as np

    with psycopg.connect(url, autocommit=True) as conn, timed() as fetch:
        df = frames.window_frame(
            conn,
            "public.pattern_trade_events",
            ["trade_id", "roi", "did_trim", "reached_s3"],
            "roi IS NOT NULL",
            {"trade_id": "str", "roi": "float64"},
        )
    with timed() as compute:
        global_mean = df.drop_duplicates("trade_id")["roi"].mean()
        # Distinct trades per pattern: a trade's actions share its scope, so dedupe (pattern_key, trade_id).
        df = df.drop_duplicates(["pattern_key", "trade_id"]).copy()
        strength_columns(df, np)
        df = df.drop(columns=["trade_id", "roi", "did_trim", "reached_s3"])
        lessons = frames.slices(df, ["n", "roi_sum", "trim", "s3", "w", "wa", "we", "t", "t2"])
        if len(lessons):
            strength_stats(lessons, global_mean, np)
    return frames.pandas_result(fetch, compute, lessons)


JOBS = {"prepare": job_prepare, "sql": job_sql, "pandas": job_pandas}


def measure(run, size: dict) -> dict:
    load = run("prepare")
    runs: dict[str, list[dict]] = {"sql": [], "pandas": []}
    for _ in range(REPEATS):
        runs["sql"].append(run("sql"))
        runs["pandas"].append(run("pandas"))
    return {"strength": {"load": load, **{k: median_run(v) for k, v in runs.items()}}}


ROW = Row(
    "strength lesson builder, {trade_events:,} rows ({trades:,} trades)",
    "{sql_seconds:.2f} s SQL vs {pandas_seconds:.2f} s pandas (medians of {repeats} alternating runs: SQL"
    " {sql_runs}; pandas {pandas_runs}; the median pandas run: fetch {pandas_fetch_seconds:.2f} + compute"
    " {pandas_compute_seconds:.2f}; SQL re-run on the same window, every lesson stored: median"
    " {sql_rerun_seconds:.2f} s)",
    "{speedup:.2f}× pandas; {sql_lessons:,} vs {pandas_lessons:,} lessons",
    TARGET,
    "{verdict}",
)


def rows(t: dict) -> list[Row]:
    s, pd_ = t["sql"], t["pandas"]
    load = {"trade_events": 0, "trades": 0} | t["load"]
    missing = not_compared(ROW.figure.format(**load), s, pd_, TARGET)
    if missing:
        return [missing]
    values = load | {"sql_rerun_seconds": math.nan} | frames.compared(s, pd_)
    values |= {"repeats": len(s["runs"]), "sql_runs": seconds_list(s["runs"]), "pandas_runs": seconds_list(pd_["runs"])}
    return filled([ROW], values | {"verdict": verdict(s["seconds"] <= 20 and s["seconds"] < pd_["seconds"])})


def memory(t: dict) -> list[tuple[str, float | None]]:
    return [("strength builder", t["sql"].get("peak_rss_mib")), ("strength pandas", t["pandas"].get("peak_rss_mib"))]
