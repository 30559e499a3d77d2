"""Strength jobs (design §11, §14) against PostgreSQL: exact distinct-trade counting (brute-force oracle),
idempotence, and a lesson falling below n_min."""

from __future__ import annotations

import json
import math
import statistics
from datetime import UTC, datetime, timedelta
from itertools import combinations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import reset_learning
from lowcap_learning import synthetic
from lowcap_learning.runtime import apply_strength_overrides
from lowcap_learning.strength import materialize_strength, run_lesson_builder

AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
INSERT_TRADE = """
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions, did_trim, reached_s3)
VALUES (%(id)s, '1h', %(pct)s, %(at)s, %(actions)s::jsonb, %(trim)s, %(s3)s)
"""
LESSONS = """
SELECT pattern_key, scope_subset, n, stats, status
FROM public.learning_lessons
WHERE module = 'pm' AND action_category = 'pm_strength' AND lesson_type = 'pm_strength'
"""


def reset(conn) -> None:
    reset_learning(conn)
    conn.execute("DELETE FROM public.learning_lessons; DELETE FROM public.pm_overrides")


def lessons(conn, status: str = "active") -> dict:
    return {
        (p, json.dumps(s, sort_keys=True)): (n, stats)
        for p, s, n, stats, st_ in conn.execute(LESSONS).fetchall()
        if st_ == status
    }


# --- brute-force oracle ----------------------------------------------------------------------------

def scalar_dims(scope: dict) -> dict:
    return {k: v for k, v in scope.items() if isinstance(v, str | bool | int | float) and v is not None}


def oracle(trades: list[dict], n_min: int, max_dims: int = 4) -> dict:
    rois = [t["pct"] / 100 for t in trades]
    baseline = sum(rois) / len(rois) if rois else 0.0
    by_pattern: dict[str, dict[str, list[dict]]] = {}
    for t in trades:
        for a in t["actions"]:
            by_pattern.setdefault(a["pattern_key"], {}).setdefault(t["id"], []).append(scalar_dims(a["scope"]))
    out = {}
    for pattern, per_trade in by_pattern.items():
        candidates = set()
        for scopes in per_trade.values():
            for dims in scopes:
                items = sorted(dims.items())
                for k in range(min(len(items), max_dims) + 1):
                    for combo in combinations(items, k):
                        candidates.add(json.dumps(dict(combo), sort_keys=True))
        tmap = {t["id"]: t for t in trades}
        for cand in candidates:
            sl = json.loads(cand)
            members = [
                tmap[tid] for tid, scopes in per_trade.items()
                if any(all(k in d and d[k] == v and type(d[k]) is type(v) for k, v in sl.items()) for d in scopes)
            ]
            if len(members) < n_min:
                continue
            r = [m["pct"] / 100 for m in members]
            x = [math.tanh(v / 0.10) for v in r]
            w = [abs(v) for v in x]
            da = [(-1 if v < 0 else (1 if v > 0 and m["s3"] else 0)) for v, m in zip(r, members, strict=True)]
            de = [
                (1 if v < 0 and m["trim"] else (-1 if v > 0 and m["s3"] else 0))
                for v, m in zip(r, members, strict=True)
            ]
            n = len(members)
            var = statistics.variance(x) if n > 1 else 0.0
            sw = sum(w)
            support = 1 - math.exp(-n / 50)
            reliability = 1 / (1 + var + 0.25 / n)
            out[(pattern, cand)] = {
                "n": n,
                "mean_roi": sum(r) / n,
                "edge_raw_roi": sum(r) / n - baseline,
                "p_trim": sum(m["trim"] for m in members) / n,
                "p_s3": sum(m["s3"] for m in members) / n,
                "dirA": sum(a * b for a, b in zip(w, da, strict=True)) / sw if sw > 0 else 0.0,
                "dirE": sum(a * b for a, b in zip(w, de, strict=True)) / sw if sw > 0 else 0.0,
                "variance": var,
                "confidence": support * reliability,
            }
    return out


scope_st = st.fixed_dictionaries(
    {},
    optional={
        "chain": st.sampled_from(["sol", "eth"]),
        "mcap": st.sampled_from(["s", "m"]),
        "tf": st.sampled_from(["1h", "4h"]),
        "tags": st.just(["x"]),
        "meta": st.just({"k": 1}),
        "gone": st.none(),
    },
)
action_st = st.fixed_dictionaries(
    {"pattern_key": st.sampled_from(["pm.a", "pm.b"]), "action_category": st.just("entry"), "scope": scope_st}
)
trades_st = st.lists(
    st.fixed_dictionaries(
        {
            "pct": st.sampled_from([-12.0, -3.0, 0.0, 2.0, 7.5, 25.0]),
            "trim": st.booleans(),
            "s3": st.booleans(),
            "actions": st.lists(action_st, min_size=0, max_size=4),
        }
    ),
    min_size=1,
    max_size=9,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trades=trades_st, n_min=st.integers(1, 3))
def test_lessons_match_brute_force_distinct_trade_oracle(conn, trades, n_min):
    reset(conn)
    for i, t in enumerate(trades):
        t["id"] = f"t{i}"
        conn.execute(INSERT_TRADE, {
            "id": t["id"], "pct": t["pct"], "at": AS_OF - timedelta(days=1, minutes=i),
            "actions": json.dumps(t["actions"]), "trim": t["trim"], "s3": t["s3"],
        })
    counts = run_lesson_builder(conn, as_of=AS_OF, n_min=n_min)
    # trades without actions are not strength facts: they are not in the window mean either
    expected = oracle([t for t in trades if t["actions"]], n_min)
    assert counts["lessons"] == len(expected)
    assert_lessons_are(conn, expected)


def assert_lessons_are(conn, expected: dict) -> None:
    """The active lessons are exactly the oracle's, with its n and stats (floats within 1e-9)."""
    got = lessons(conn)
    assert set(got) == set(expected)
    for key, exp in expected.items():
        n, stats = got[key]
        assert n == exp["n"], key
        for k, v in exp.items():
            assert stats[k] == pytest.approx(v, rel=1e-9, abs=1e-12), (key, k)


INSERT_EVENT = """
INSERT INTO public.pattern_trade_events (pattern_key, action_category, scope, trade_id, roi, did_trim, reached_s3,
    "timestamp")
VALUES (%(pattern_key)s, 'entry', %(scope)s::jsonb, %(trade_id)s, %(roi)s, %(trim)s, %(s3)s, %(at)s)
"""

row_st = st.fixed_dictionaries(
    {
        "pattern_key": st.sampled_from(["pm.a", "pm.b"]),
        "scope": scope_st,
        # mostly the trade's roi (so flags alone can differ), sometimes another or none
        "roi": st.sampled_from(["trade", "trade", "trade", None, -0.03, 0.25]),
        "trim": st.one_of(st.none(), st.booleans()),
        "s3": st.one_of(st.none(), st.booleans()),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    trades=st.lists(
        st.tuples(st.sampled_from([-0.12, 0.0, 0.075]), st.lists(row_st, min_size=1, max_size=4)),
        min_size=1,
        max_size=9,
    ),
    n_min=st.integers(1, 3),
)
def test_rows_written_directly_with_differing_values_match_the_oracle(conn, trades, n_min):
    """The bot may write pattern_trade_events itself: rows of one trade with different roi (the trade's
    roi is their mean), flags that differ between its patterns or are NULL (a trade's flag is any row's),
    rows without roi (ignored). Such trades take the builder's path through the per-trade outcome;
    trades whose rows agree take the shortcut; both must equal the oracle."""
    reset(conn)
    as_trades = []
    for i, (trade_roi, rows) in enumerate(trades):
        at = AS_OF - timedelta(days=1, minutes=i)
        rows = [{**r, "roi": trade_roi if r["roi"] == "trade" else r["roi"]} for r in rows]
        for r in rows:
            conn.execute(INSERT_EVENT, {
                "pattern_key": r["pattern_key"], "scope": json.dumps(r["scope"]), "trade_id": f"d{i}",
                "roi": r["roi"], "trim": r["trim"], "s3": r["s3"], "at": at,
            })
        facts = [r for r in rows if r["roi"] is not None]
        if facts:
            as_trades.append({
                "id": f"d{i}",
                "pct": 100 * statistics.fmean(r["roi"] for r in facts),
                "trim": any(r["trim"] is True for r in facts),
                "s3": any(r["s3"] is True for r in facts),
                "actions": [{"pattern_key": r["pattern_key"], "scope": r["scope"]} for r in facts],
            })
    counts = run_lesson_builder(conn, as_of=AS_OF, n_min=n_min)
    assert counts["trades"] == len(as_trades)
    assert_lessons_are(conn, oracle(as_trades, n_min))


def snapshot(conn) -> tuple:
    lessons_rows = conn.execute(
        "SELECT id, n, stats::text, status, updated_at, xmin::text FROM public.learning_lessons ORDER BY id"
    ).fetchall()
    overrides = conn.execute(
        "SELECT id, dira, dire, confidence_score, edge_raw_roi, n, status, last_updated_at, xmin::text "
        "FROM public.pm_overrides ORDER BY id"
    ).fetchall()
    return lessons_rows, overrides


def test_rerun_changes_no_row_and_counts(conn):
    reset(conn)
    rows = synthetic.closed_trades(600, seed=5, start=AS_OF - timedelta(days=40), span_days=35)
    synthetic.insert_closed_trades(conn, rows)
    first = run_lesson_builder(conn, as_of=AS_OF, n_min=20)
    assert first["lessons"] > 10 and first["inserted"] == first["lessons"] and first["deactivated"] == 0
    mat = materialize_strength(conn, as_of=AS_OF)
    assert mat["active"] > 0 and mat["written"] == mat["active"]
    before = snapshot(conn)
    again = run_lesson_builder(conn, as_of=AS_OF, n_min=20)
    assert (again["inserted"], again["updated"], again["deactivated"]) == (0, 0, 0)
    assert materialize_strength(conn, as_of=AS_OF)["written"] == 0
    assert snapshot(conn) == before
    # every active lesson has >= n_min distinct trades, and overrides mirror directional lessons
    assert conn.execute(
        "SELECT count(*) FROM public.learning_lessons WHERE status = 'active' AND n < 20"
    ).fetchone()[0] == 0
    directional = conn.execute(
        "SELECT count(*) FROM public.learning_lessons WHERE status = 'active' AND action_category = 'pm_strength' "
        "AND NOT ((stats->>'dirA')::float8 = 0 AND (stats->>'dirE')::float8 = 0)"
    ).fetchone()[0]
    active_overrides = conn.execute(
        "SELECT count(*) FROM public.pm_overrides WHERE status = 'active' AND action_category = 'pm_strength'"
    ).fetchone()[0]
    assert directional == active_overrides == mat["active"]


def _trade(i: int, pct: float, scope: dict, s3: bool, days_ago: float) -> dict:
    return {
        "id": f"n{i}", "pct": pct, "at": AS_OF - timedelta(days=days_ago), "trim": False, "s3": s3,
        "actions": json.dumps([{"pattern_key": "pm.n", "action_category": "entry", "scope": scope}]),
    }


def test_lesson_below_n_min_turns_inactive_and_stops_matching(conn):
    reset(conn)
    # 3 S3 winners on chain=sol (two of them old), 3 plain trades on chain=eth.
    for i, (scope, s3, age) in enumerate([
        ({"chain": "sol"}, True, 100), ({"chain": "sol"}, True, 100), ({"chain": "sol"}, True, 1),
        ({"chain": "eth"}, False, 1), ({"chain": "eth"}, False, 1), ({"chain": "eth"}, False, 1),
    ]):
        conn.execute(INSERT_TRADE, _trade(i, 10.0, scope, s3, age))
    early = AS_OF - timedelta(days=95)
    # As of 95 days ago only the two old sol trades exist: lesson {chain: sol} with n = 2.
    run_lesson_builder(conn, as_of=early + timedelta(days=1), n_min=2)
    materialize_strength(conn)
    hit = apply_strength_overrides(conn, "pm.n", {"chain": "sol"}, 0.5, 0.5)
    assert any(m.scope_subset == {"chain": "sol"} for m in hit.matches)
    assert hit.a_final > 0.5 and hit.e_final < 0.5  # clean S3 winners press A, ease E
    # Now: the old trades left the window, sol has 1 trade < n_min.
    counts = run_lesson_builder(conn, as_of=AS_OF, n_min=2)
    assert counts["deactivated"] >= 1
    assert lessons(conn, "inactive").get(("pm.n", '{"chain": "sol"}')) is not None
    assert ("pm.n", '{"chain": "sol"}') not in lessons(conn)
    materialize_strength(conn)
    miss = apply_strength_overrides(conn, "pm.n", {"chain": "sol"}, 0.5, 0.5)
    assert all(m.scope_subset != {"chain": "sol"} for m in miss.matches)
    status = conn.execute(
        "SELECT status FROM public.pm_overrides WHERE pattern_key = 'pm.n' AND scope_subset = '{\"chain\": \"sol\"}'"
    ).fetchone()[0]
    assert status == "inactive"


def test_mixed_outcomes_land_near_zero(conn):
    reset(conn)
    trades = []
    for i in range(20):
        win = i % 2 == 0
        trades.append({
            "id": f"x{i}", "pct": 10.0 + i * 0.1 if win else -(10.0 + i * 0.1), "at": AS_OF - timedelta(days=2),
            "trim": not win, "s3": win,
            "actions": json.dumps([{"pattern_key": "pm.mix", "action_category": "entry", "scope": {}}]),
        })
    for t in trades:
        conn.execute(INSERT_TRADE, t)
    run_lesson_builder(conn, as_of=AS_OF, n_min=5)
    n, stats = lessons(conn)[("pm.mix", "{}")]
    assert n == 20
    assert abs(stats["dirA"]) < 0.05 and abs(stats["dirE"]) < 0.05


def test_builder_refuses_bad_arguments(conn):
    import psycopg

    with pytest.raises(psycopg.errors.InvalidParameterValue):
        run_lesson_builder(conn, as_of=AS_OF, n_min=0)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        run_lesson_builder(conn, as_of=AS_OF, lookback=timedelta(days=-1))


def test_stale_lesson_is_deactivated_while_another_session_changes_lessons(conn, db_url):
    """Review finding: with stale lessons judged by a count, another session deactivating one
    of the run's lessons in the middle of the writes hid a stale one (it stayed active). Stale is now
    decided by id against the run's match: the builder is paused just before its INSERT (a test
    trigger waiting on an advisory lock), another session deactivates the run's lesson pm.a, and the
    stale lesson pm.b must still end inactive."""
    import threading
    import time

    import psycopg

    reset(conn)
    for i, pattern in enumerate(["pm.a", "pm.b"]):
        conn.execute(INSERT_TRADE, {
            "id": f"c{i}", "pct": 5.0, "at": AS_OF - timedelta(days=1), "trim": False, "s3": True,
            "actions": json.dumps([{"pattern_key": pattern, "action_category": "entry", "scope": {}}]),
        })
    run_lesson_builder(conn, as_of=AS_OF, n_min=1)
    assert {k[0] for k in lessons(conn)} == {"pm.a", "pm.b"}
    conn.execute("DELETE FROM public.pattern_trade_events WHERE pattern_key = 'pm.b'")  # pm.b is now stale
    conn.execute(
        """
        CREATE FUNCTION public.test_pause_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_lock(4242); PERFORM pg_advisory_unlock(4242); RETURN NULL; END $$;
        CREATE TRIGGER test_pause BEFORE INSERT ON public.learning_lessons
        FOR EACH STATEMENT EXECUTE FUNCTION public.test_pause_before_insert();
        """
    )
    try:
        conn.execute("SELECT pg_advisory_lock(4242)")
        result: dict = {}

        def build() -> None:
            with psycopg.connect(db_url, autocommit=True) as builder:
                result["pid"] = builder.info.backend_pid
                result["counts"] = run_lesson_builder(builder, as_of=AS_OF, n_min=1)

        thread = threading.Thread(target=build)
        thread.start()
        deadline = time.monotonic() + 30
        while not conn.execute(
            "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = %s)",
            (result.get("pid", 0),),
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the builder never reached its INSERT"
            time.sleep(0.05)
        conn.execute(
            "UPDATE public.learning_lessons SET status = 'inactive' WHERE pattern_key = 'pm.a'"
        )  # committed while the builder waits
        conn.execute("SELECT pg_advisory_unlock(4242)")
        thread.join(30)
        assert not thread.is_alive()
    finally:
        conn.execute("SELECT pg_advisory_unlock_all()")
        conn.execute("DROP TRIGGER IF EXISTS test_pause ON public.learning_lessons")
        conn.execute("DROP FUNCTION IF EXISTS public.test_pause_before_insert()")
    status = dict(conn.execute(
        "SELECT pattern_key, status FROM public.learning_lessons WHERE action_category = 'pm_strength'"
    ).fetchall())
    assert status["pm.b"] == "inactive"
    assert result["counts"]["deactivated"] == 1
