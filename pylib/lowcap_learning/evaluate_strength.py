"""Strength steering on null data, through the real pipeline: how far apart do slices steer A?

No rule change is asked of strength learning; this reports what it does when nothing is there to
learn. Per seed: the synthetic history's trades (their actions, scopes and timeframes) with every
trade's ROI redrawn from one distribution (σ 25 points) and trim / S3 drawn at 50 % independently, so
no scope predicts anything. The lesson builder and the materializer run on it; then every active
pm_strength override's own scope is steered at A = E = 0.5. The spread of ΔA across them is noise;
their mean is not: the plan's direction rule gives a losing trade dirA −1 and a winner +1 only when it
reached S3, so on null data dirA averages about −0.25 and every slice steers A down a little.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from psycopg import sql

from lowcap_learning import db, runtime, strength, synthetic

START = datetime(2025, 1, 1, tzinfo=UTC)
AS_OF = START + timedelta(days=61)
ACTIVE = """
SELECT pattern_key, scope_subset FROM public.pm_overrides
WHERE status = 'active' AND action_category = 'pm_strength'
ORDER BY id
"""


def _url_with_db(url: str | None, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(db.database_url(url))
    return psycopg.conninfo.make_conninfo(**dict(info, dbname=dbname))


def null_trades(seed: int, n: int) -> list[dict]:
    rows = synthetic.closed_trades(n, seed=seed, start=START, span_days=60.0, id_prefix=f"null{seed}")
    rng = np.random.default_rng(10_000 + seed)
    roi = np.clip(rng.normal(0.0, 25.0, size=n), -99.0, None)
    trims = rng.random(n) < 0.5
    s3 = rng.random(n) < 0.5
    for row, r, t, s in zip(rows, roi, trims, s3, strict=True):
        row["rpnl_pct"] = float(r)
        row["did_trim"] = bool(t)
        row["reached_s3"] = bool(s)
    return rows


def _one_seed(url: str, seed: int, n: int) -> list[float]:
    name = f"ll_eval_strength_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_url_with_db(url, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        target = _url_with_db(url, name)
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(db.canonical_sql().encode())
            synthetic.insert_closed_trades(conn, null_trades(seed, n))
            strength.run_lesson_builder(conn, as_of=AS_OF)
            strength.materialize_strength(conn, as_of=AS_OF)
            deltas = []
            for pattern_key, scope in conn.execute(ACTIVE).fetchall():
                result = runtime.apply_strength_overrides(conn, pattern_key, scope, 0.5, 0.5)
                deltas.append(result.delta_a)
        return deltas
    finally:
        with psycopg.connect(_url_with_db(url, "postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run(url: str | None = None, seeds: Sequence[int] = range(5), n: int = 3000) -> dict:
    """ΔA of every active override on null data, per seed and pooled."""
    per_seed = []
    pooled: list[float] = []
    for seed in seeds:
        deltas = _one_seed(url, seed, n)
        pooled += deltas
        per_seed.append(
            {
                "seed": seed,
                "overrides": len(deltas),
                "delta_a_sd": statistics.pstdev(deltas) if deltas else 0.0,
                "delta_a_max_abs": max((abs(d) for d in deltas), default=0.0),
            }
        )
    return {
        "trades_per_seed": n,
        "seeds": list(seeds),
        "per_seed": per_seed,
        "overrides_per_seed": statistics.mean(s["overrides"] for s in per_seed) if per_seed else 0.0,
        "delta_a_mean": statistics.fmean(pooled) if pooled else 0.0,
        "delta_a_sd": statistics.pstdev(pooled) if pooled else 0.0,
        "delta_a_p10": float(np.quantile(pooled, 0.1)) if pooled else 0.0,
        "delta_a_p90": float(np.quantile(pooled, 0.9)) if pooled else 0.0,
        "delta_a_max_abs": max((abs(d) for d in pooled), default=0.0),
    }
