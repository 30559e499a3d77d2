"""Runtime steering (design §13) through the public API only (lowcap_learning.runtime): single calls
after a warm-up and each right after a pm_overrides change, and batches likewise."""

from __future__ import annotations

import json
import time

import psycopg

from bench.harness import NOT_AVAILABLE, median_ms, optional, percentiles_ms
from bench.table import Row, filled, seconds_list, verdict
from bench.workload import DIMS
from lowcap_learning import synthetic

SIZES = {
    False: {"runtime_overrides": 5000, "runtime_calls": 10_000, "runtime_cold_calls": 1000},
    True: {"runtime_overrides": 200, "runtime_calls": 300, "runtime_cold_calls": 50},
}
TARGET = "p99 ≤ 1 ms; batch of 10,000 ≤ 100 ms"
PATTERNS = ("pm.uptrend.S1.entry", "pm.uptrend.S2.add", "pm.uptrend.S2.trim", "pm.uptrend.S3.exit")
VALUES = {d: synthetic.SCOPE_DIMS[d][0] for d in DIMS}
A_FLAGS = E_FLAGS = 0.5
WARM_UP_CALLS, BATCH_RUNS = 50, 3

LOAD_OVERRIDES = """
INSERT INTO public.pm_overrides (
    pattern_key, action_category, scope_subset, multiplier, confidence_score, dira, dire, edge_raw_roi, n, status
)
SELECT r.pattern_key, 'pm_strength', r.scope_subset, 1.0, r.confidence_score, r.dira, r.dire, r.edge_raw_roi, r.n,
    'active'
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r (
    pattern_key text, scope_subset jsonb, confidence_score double precision, dira double precision,
    dire double precision, edge_raw_roi double precision, n integer
)
"""
# A real change (the row is rewritten, its transaction commits): what follows every builder run.
TOUCH = "UPDATE public.pm_overrides SET n = n WHERE id = (SELECT min(id) FROM public.pm_overrides)"


def pick(rng, values):
    return values[int(rng.integers(0, len(values)))]


def make_overrides(rng, n: int) -> list[dict]:
    """n distinct active strength overrides over 0-4 scope dimensions of the four patterns."""
    overrides, seen = [], set()
    while len(overrides) < n:
        k = int(rng.integers(0, 5))
        dims = sorted(rng.choice(len(DIMS), size=k, replace=False).tolist())
        subset = {DIMS[j]: pick(rng, VALUES[DIMS[j]]) for j in dims}
        pk = pick(rng, PATTERNS)
        key = (pk, json.dumps(subset, sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        overrides.append(
            {
                "pattern_key": pk,
                "scope_subset": subset,
                "dira": float(rng.uniform(-1, 1)),
                "dire": float(rng.uniform(-1, 1)),
                "confidence_score": float(rng.uniform(0.1, 0.9)),
                "edge_raw_roi": float(rng.normal(0, 0.05)),
                "n": int(rng.integers(33, 500)),
            }
        )
    return overrides


def make_calls(rng, n: int) -> list[tuple[str, dict]]:
    """n (pattern_key, full scope) requests."""
    scopes = [{d: pick(rng, VALUES[d]) for d in DIMS} for _ in range(n)]
    return [(pick(rng, PATTERNS), s) for s in scopes]


def latencies(conn: psycopg.Connection, call, requests: list, touch: bool) -> list[float]:
    """Sorted seconds of call(conn, request) per request; with touch, each right after a pm_overrides change."""
    out = []
    for request in requests:
        if touch:
            conn.execute(TOUCH)
        t0 = time.perf_counter()
        call(conn, request)
        out.append(time.perf_counter() - t0)
    return sorted(out)


def single_figures(conn: psycopg.Connection, single, calls: list, n_cold: int) -> dict:
    def call(c, request):
        return single(c, request[0], request[1], A_FLAGS, E_FLAGS)

    for request in calls[:WARM_UP_CALLS]:
        call(conn, request)
    lat = latencies(conn, call, calls, touch=False)
    cold = latencies(conn, call, calls[:n_cold], touch=True)
    p50, p99 = percentiles_ms(lat)
    cold_p50, cold_p99 = percentiles_ms(cold)
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": 1000 * lat[-1],
        "cold_calls": len(cold),
        "cold_p50_ms": cold_p50,
        "cold_p99_ms": cold_p99,
    }


def batch_figures(conn: psycopg.Connection, batch, calls: list) -> dict:
    """The median of three batches after a warm-up batch, and of three each right after a change."""
    rows = [(pk, s, A_FLAGS, E_FLAGS) for pk, s in calls]
    batch(conn, rows)
    warm = [latencies(conn, batch, [rows], touch=False)[0] for _ in range(BATCH_RUNS)]
    cold = [latencies(conn, batch, [rows], touch=True)[0] for _ in range(BATCH_RUNS)]
    return {
        "batch_ms": median_ms(warm),
        "batch_runs_ms": [round(1000 * r, 1) for r in warm],
        "batch_cold_ms": median_ms(cold),
    }


def job_runtime(url: str, size: dict) -> dict:
    single = optional("lowcap_learning.runtime", "apply_strength_overrides")
    batch = optional("lowcap_learning.runtime", "apply_strength_overrides_batch")
    if single is None or batch is None:
        return {"status": NOT_AVAILABLE}
    import numpy as np

    rng = np.random.default_rng(81)
    overrides = make_overrides(rng, size["runtime_overrides"])
    calls = make_calls(rng, size["runtime_calls"])
    result = {"overrides": len(overrides), "calls": len(calls)}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE public.pm_overrides")
        conn.execute(LOAD_OVERRIDES, {"rows": json.dumps(overrides)})
        conn.execute("VACUUM ANALYZE public.pm_overrides")
        result |= single_figures(conn, single, calls, size["runtime_cold_calls"])
        result |= batch_figures(conn, batch, calls)
    return result


JOBS = {"runtime": job_runtime}
FIGURE = "runtime steering"


ROWS = (
    Row(
        "runtime steering, {calls:,} single calls, {overrides:,} overrides",
        "p50 {p50_ms:.3f} ms, p99 {p99_ms:.3f} ms (after {warm_up} warm-up calls on the same connection)",
        "",
        "p99 ≤ 1 ms",
        "{verdict_single}",
    ),
    Row(
        "runtime steering, {cold_calls:,} single calls each right after a pm_overrides change",
        "p50 {cold_p50_ms:.3f} ms, p99 {cold_p99_ms:.3f} ms",
        "",
        "(diagnostic)",
    ),
    Row(
        "runtime steering, one batch of {calls:,}",
        "{batch_ms:,.1f} ms (median of {batch_runs} after a warm-up batch: {runs} ms)",
        "",
        "batch of 10,000 ≤ 100 ms",
        "{verdict_batch}",
    ),
    Row(
        "runtime steering, one batch of {calls:,} right after a pm_overrides change (median of {batch_runs})",
        "{batch_cold_ms:.1f} ms",
        "",
        "(diagnostic)",
    ),
)


def rows(t: dict) -> list[Row]:
    values = {
        **t,
        "warm_up": WARM_UP_CALLS,
        "batch_runs": BATCH_RUNS,
        "runs": seconds_list(t["batch_runs_ms"], 1),
        "verdict_single": verdict(t["p99_ms"] <= 1.0),
        "verdict_batch": verdict(t["batch_ms"] <= 100),
    }
    return filled(ROWS, values)
