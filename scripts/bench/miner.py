"""Tuning miner (design §9) against the same enumeration of slices and rates in pandas."""

from __future__ import annotations

import psycopg

from bench import frames
from bench.harness import AS_OF, NOT_AVAILABLE, optional, spans, timed
from bench.table import Row, filled, not_compared, verdict
from bench.workload import active_lessons, sql_function_exists
from lowcap_learning import synthetic

SIZES = {False: {"miner_events": (100_000, 1_000_000)}, True: {"miner_events": (20_000,)}}
TARGET = "≤ 20 s at 1M events, faster than pandas"


def job_prepare(url: str, size: dict, events: int, seed: int = 61) -> dict:
    """`events` episode events, loaded in chunks. The miner reads scope, decision and outcome only, so
    the load skips the episode-capture trigger (session_replication_role = replica) to keep it short."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE public.pattern_episode_events, public.learning_lessons, public.pm_overrides")
        conn.execute("SET session_replication_role = replica")
        with timed() as t:
            for k, _, m, start, span in spans(events, 25000):
                rows = synthetic.episode_events(m, seed=seed + k, start=start, span_days=span, id_prefix=f"b{k}")
                synthetic.insert_episode_events(conn, rows)
        conn.execute("VACUUM ANALYZE public.pattern_episode_events")
    return {"load_seconds": t.seconds, "events": events}


def job_sql(url: str, size: dict) -> dict:
    """The miner through its job API, else its SQL function."""
    job = optional("lowcap_learning.tuning", "run_tuning_miner")
    with psycopg.connect(url, autocommit=True) as conn:
        if job is None and not sql_function_exists(conn, "mine_tuning_lessons"):
            return {"status": NOT_AVAILABLE}
        with timed() as t:
            if job is not None:
                result = job(conn, as_of=AS_OF)
            else:
                result = conn.execute("SELECT learning.mine_tuning_lessons(%s::timestamptz)", (AS_OF,)).fetchone()[0]
        lessons = active_lessons(conn, "tuning_rates")
    return {"seconds": t.seconds, "lessons": lessons, "result": str(result)[:200]}


def job_pandas(url: str, size: dict) -> dict:
    import numpy as np

    with psycopg.connect(url, autocommit=True) as conn, timed() as fetch:
        df = frames.window_frame(
            conn,
            "public.pattern_episode_events",
            ["decision", "outcome"],
            "outcome IS NOT NULL",
            {"decision": "category", "outcome": "category"},
        )
    with timed() as compute:
        acted = (df["decision"] == "acted").to_numpy()
        success = (df["outcome"] == "success").to_numpy()
        failure = (df["outcome"] == "failure").to_numpy()
        units = {
            "n": success | failure,
            "wins": acted & success,
            "fps": acted & failure,
            "misses": ~acted & success,
            "dodges": ~acted & failure,
            "neutral": (df["outcome"] == "neutral").to_numpy(),
        }
        for name, flag in units.items():
            df[name] = flag.astype(np.int64)
        lessons = frames.slices(df.drop(columns=["decision", "outcome"]), list(units))
        if len(lessons):
            acted_n = lessons["wins"] + lessons["fps"]
            lessons["wr"] = lessons["wins"] / acted_n.where(acted_n > 0)
            lessons["fpr"] = lessons["fps"] / acted_n.where(acted_n > 0)
            skipped = lessons["misses"] + lessons["dodges"]
            lessons["mr"] = lessons["misses"] / skipped.where(skipped > 0)
            lessons["dr"] = lessons["dodges"] / skipped.where(skipped > 0)
    return frames.pandas_result(fetch, compute, lessons)


JOBS = {"prepare": job_prepare, "sql": job_sql, "pandas": job_pandas}


def measure(run, size: dict) -> dict:
    points = [
        {"events": n, "load": run("prepare", events=n), "sql": run("sql"), "pandas": run("pandas")}
        for n in size["miner_events"]
    ]
    return {"miner": {"points": points}}


ROW = Row(
    "tuning miner, {events:,} events",
    "{sql_seconds:.2f} s SQL vs {pandas_seconds:.2f} s pandas (fetch {pandas_fetch_seconds:.2f} + compute"
    " {pandas_compute_seconds:.2f})",
    "{speedup:.2f}× pandas; {sql_lessons:,} vs {pandas_lessons:,} lessons",
    TARGET,
    "{verdict}",
)


def row(p: dict) -> Row:
    s, pd_ = p["sql"], p["pandas"]
    missing = not_compared(f"tuning miner, {p['events']:,} events", s, pd_, TARGET)
    if missing:
        return missing
    ok = s["seconds"] <= 20 and s["seconds"] < pd_["seconds"] if p["events"] >= 1_000_000 else None
    return filled([ROW], {**frames.compared(s, pd_), "events": p["events"], "verdict": verdict(ok)})[0]


def rows(t: dict) -> list[Row]:
    return [row(p) for p in t["points"]]


def memory(t: dict) -> list[tuple[str, float | None]]:
    out = []
    for p in t["points"]:
        out += [(f"miner {p['events']:,}", p["sql"].get("peak_rss_mib"))]
        out += [(f"miner pandas {p['events']:,}", p["pandas"].get("peak_rss_mib"))]
    return out
