"""Poison rows: whatever one writer inserts, the mining jobs finish in bounded time and keep learning
from everyone else's rows (design §2, §14), scaled down from the attacks on main:

- scopes with many scalar keys (40 keys: 102,141 strength lessons, materializer > 295 s; 30 keys on
  episode windows: tuning miner > 199 s) are mined without their dimensions, with one WARNING;
- a scope value too long for a btree key (3 kB: every run failed on learning_lessons_scope_key) is
  dropped from that row's dimensions, and a slice whose key still cannot be stored is skipped;
- one trade with many actions of distinct scopes (quadratic builder) and the per-trade action cap;
- the strength materializer's deactivation is set-based whatever work_mem holds.
"""

from __future__ import annotations

import json
import random
import string
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from conftest import reset_learning
from lowcap_learning.strength import materialize_strength, run_lesson_builder
from lowcap_learning.tuning import run_tuning_miner
from reliability_support import changed, snapshot

AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
PATTERN = "pm.uptrend.S1.entry"
NORMAL_SCOPE = {"chain": "solana", "timeframe": "1h", "mcap_bucket": "micro"}

INSERT_TRADES = """
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
SELECT r.id, '1h', r.pct, r.at, r.actions
FROM pg_catalog.jsonb_to_recordset(%s::jsonb) AS r (id text, pct float8, at timestamptz, actions jsonb)
"""
INSERT_WINDOWS = """
INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, outcome, factors, timestamp)
SELECT r.scope, r.pattern_key, r.episode_id, r.decision, r.outcome, r.factors, r.timestamp
FROM pg_catalog.jsonb_to_recordset(%s::jsonb) AS r (
    scope jsonb, pattern_key text, episode_id text, decision text, outcome text, factors jsonb, timestamp timestamptz
)
"""
LESSONS = """
SELECT pattern_key, scope_subset, n FROM public.learning_lessons
WHERE action_category = %s AND status = 'active'
"""
WARNINGS = "SELECT message FROM learning.learning_log WHERE level = 'WARNING' ORDER BY id"


def reset(conn) -> None:
    reset_learning(conn)
    conn.execute(
        "DELETE FROM public.learning_lessons; DELETE FROM public.pm_overrides;"
        " DELETE FROM public.pattern_episode_events"
    )


def action(scope: dict, pattern: str = PATTERN) -> dict:
    return {"pattern_key": pattern, "action_category": "entry", "scope": scope}


def insert_trades(conn, prefix: str, actions_of: list[list[dict]], start: int = 0) -> list[str]:
    """One trade per action list, all losses (so lessons have a direction), an hour apart."""
    rows = [
        {
            "id": f"{prefix}{j}",
            "pct": -3.0 - j % 5,
            "at": (AS_OF - timedelta(hours=start + j + 1)).isoformat(),
            "actions": actions,
        }
        for j, actions in enumerate(actions_of)
    ]
    conn.execute(INSERT_TRADES, (json.dumps(rows),))
    return [r["id"] for r in rows]


def insert_windows(conn, prefix: str, scope: dict, count: int = 33, pattern: str = PATTERN) -> list[str]:
    rows = [
        {
            "scope": scope,
            "pattern_key": pattern,
            "episode_id": f"{prefix}{j}",
            "decision": "acted" if j % 2 else "skipped",
            "outcome": "success" if j % 3 else "failure",
            "factors": {"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0},
            "timestamp": (AS_OF - timedelta(hours=j + 1)).isoformat(),
        }
        for j in range(count)
    ]
    conn.execute(INSERT_WINDOWS, (json.dumps(rows),))
    return [r["episode_id"] for r in rows]


def lessons(conn, category: str) -> dict:
    return {(p, json.dumps(s, sort_keys=True)): n for p, s, n in conn.execute(LESSONS, (category,)).fetchall()}


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def random_text(rng: random.Random, size: int) -> str:
    """Incompressible ASCII: a btree cannot squeeze it under its row limit."""
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(size))


def warnings(conn) -> list[str]:
    return [m for (m,) in conn.execute(WARNINGS).fetchall()]


# --- scopes with too many keys -------------------------------------------------------------------

def many_keys(count: int) -> dict:
    return {f"k{i:02d}": f"v{i}" for i in range(count)}


def test_strength_jobs_ignore_a_scope_with_too_many_keys(conn):
    """33 trades whose scope has 24 keys (main: 12,951 extra lessons; 40 keys: 102,141) add no slice:
    they count in their pattern's {} lesson, the other trades' lessons are unchanged, and both jobs
    stay within 2x their time without them."""
    reset(conn)
    insert_trades(conn, "ok", [[action(NORMAL_SCOPE)]] * 33)
    _, t_build = timed(run_lesson_builder, conn, as_of=AS_OF)
    _, t_mat = timed(materialize_strength, conn)
    baseline = lessons(conn, "pm_strength")
    overrides = conn.execute("SELECT count(*) FROM public.pm_overrides WHERE status = 'active'").fetchone()[0]

    conn.execute("SET statement_timeout = '60s'")
    poison = insert_trades(conn, "poison", [[action(many_keys(24))]] * 33, start=40)
    counts, t_build_poison = timed(run_lesson_builder, conn, as_of=AS_OF)
    _, t_mat_poison = timed(materialize_strength, conn)

    after = lessons(conn, "pm_strength")
    assert set(after) == set(baseline), "the many-key scope must add no slice"
    assert after[(PATTERN, "{}")] == 66, "its trades still count in the pattern's {} slice"
    assert all(after[k] == n for k, n in baseline.items() if k != (PATTERN, "{}"))
    assert counts["lessons"] == len(baseline)
    assert conn.execute("SELECT count(*) FROM public.pm_overrides WHERE status = 'active'").fetchone()[0] == overrides
    assert t_build_poison <= 2 * t_build + 1.0
    assert t_mat_poison <= 2 * t_mat + 1.0
    unmined = [w for w in warnings(conn) if "scope dimensions not mined" in w]
    assert len(unmined) == 1, unmined
    assert "STRENGTH LESSONS" in unmined[0] and "trades=33" in unmined[0]
    assert sorted(poison)[0] in unmined[0] and "dims_of_scopes_over_16=24" in unmined[0]


def test_tuning_miner_ignores_a_scope_with_too_many_keys(conn):
    """33 episode windows with 24 keys (main: 12,951 extra lessons; 30 keys: > 199 s) add no slice."""
    reset(conn)
    insert_windows(conn, "ok", NORMAL_SCOPE)
    _, t_mine = timed(run_tuning_miner, conn, as_of=AS_OF)
    baseline = lessons(conn, "tuning")

    conn.execute("SET statement_timeout = '60s'")
    conn.execute("DELETE FROM learning.learning_log")
    poison = insert_windows(conn, "poison", many_keys(24))
    _, t_mine_poison = timed(run_tuning_miner, conn, as_of=AS_OF)

    after = lessons(conn, "tuning")
    assert set(after) == set(baseline)
    assert after[(PATTERN, "{}")] == 66
    assert t_mine_poison <= 2 * t_mine + 1.0
    unmined = [w for w in warnings(conn) if "scope dimensions not mined" in w]
    assert len(unmined) == 1, unmined
    assert "TuningMiner" in unmined[0] and "episodes=33" in unmined[0] and sorted(poison)[0] in unmined[0]


# --- values too long for a key -------------------------------------------------------------------

def test_a_long_scope_value_is_dropped_not_the_run(conn):
    """A 3 kB scope value on 33 trades and 33 windows (main: every run of both jobs failed on
    learning_lessons_scope_key) is dropped from those rows' dimensions; their other dimensions and
    every other row are learned from, with one WARNING per job naming the rows."""
    reset(conn)
    rng = random.Random(15)
    scope = {"chain": "base", "blob": random_text(rng, 3000)}
    trades = insert_trades(conn, "long", [[action(scope)]] * 33)
    insert_trades(conn, "ok", [[action(NORMAL_SCOPE)]] * 33, start=40)
    episodes = insert_windows(conn, "long", scope)

    run_lesson_builder(conn, as_of=AS_OF)
    materialize_strength(conn)
    run_tuning_miner(conn, as_of=AS_OF)

    for category, total in (("pm_strength", 66), ("tuning", 33)):
        got = lessons(conn, category)
        assert got[(PATTERN, '{"chain": "base"}')] == 33
        assert got[(PATTERN, "{}")] == total
        assert not any("blob" in scope for _, scope in got)
    assert lessons(conn, "pm_strength")[(PATTERN, '{"chain": "solana"}')] == 33
    unmined = [w for w in warnings(conn) if "scope dimensions not mined" in w]
    assert len(unmined) == 2, unmined
    assert sorted(trades)[0] in unmined[0] and "pairs_over_200_bytes=1" in unmined[0]
    assert sorted(episodes)[0] in unmined[1]


def test_a_slice_whose_key_cannot_be_stored_is_skipped(conn):
    """Dimensions each within the limit can still make a slice too big for the lessons' btree key
    (max_slice_dims 8, eight pairs of 190-byte keys and values): those slices are skipped with one
    WARNING per job, every smaller slice is stored, and the jobs succeed (main: both failed whole)."""
    reset(conn)
    rng = random.Random(8)
    conn.execute("SELECT learning.set_tunable('max_slice_dims', '8')")
    try:
        pattern = "pm.wide." + random_text(rng, 150)
        scope = {random_text(rng, 190): random_text(rng, 190) for _ in range(8)}
        insert_trades(conn, "wide", [[action(scope, pattern)]] * 33)
        insert_trades(conn, "ok", [[action(NORMAL_SCOPE)]] * 33, start=40)
        insert_windows(conn, "wide", scope, pattern=pattern)
        conn.execute("DELETE FROM learning.learning_log")

        counts = run_lesson_builder(conn, as_of=AS_OF)
        materialize_strength(conn)
        run_tuning_miner(conn, as_of=AS_OF)
    finally:
        conn.execute("SELECT learning.set_tunable('max_slice_dims', '4')")

    unstored = [w for w in warnings(conn) if "lessons not stored" in w]
    assert len(unstored) == 2, unstored
    for category, warning in zip(("pm_strength", "tuning"), unstored, strict=True):
        wide = [json.loads(s) for p, s in lessons(conn, category) if p == pattern]
        skipped = int(warning.split("lessons=")[1].split(" ")[0])
        assert len(wide) + skipped == 2**8, "every slice is either stored or skipped"
        assert {} in wide and max(len(s) for s in wide) >= 4, "the smaller slices are stored"
        assert max(len(s) for s in wide) < 7, "the slices too big for the key are skipped"
    assert (PATTERN, '{"chain": "solana"}') in lessons(conn, "pm_strength")
    assert counts["lessons"] == len(lessons(conn, "pm_strength"))


# --- many actions on one trade -------------------------------------------------------------------

def spread_actions(trades: int, per_trade: int, prefix: str) -> list[list[dict]]:
    return [
        [action({"chain": "solana", "n": f"{prefix}{t * per_trade + i}"}) for i in range(per_trade)]
        for t in range(trades)
    ]


def test_builder_time_is_linear_in_the_actions_of_one_trade(conn):
    """4 trades of 1,000 actions of distinct scopes cost about what 4,000 one-action trades cost
    (main: the containment check compared every pair of a trade's scopes, 4 x 1,000 took > 2 s)."""
    reset(conn)
    insert_trades(conn, "single", spread_actions(4000, 1, "s"))
    _, t_single = timed(run_lesson_builder, conn, as_of=AS_OF)
    reset(conn)
    insert_trades(conn, "multi", spread_actions(4, 1000, "m"))
    counts, t_multi = timed(run_lesson_builder, conn, as_of=AS_OF)
    assert counts["trades"] == 4
    assert t_multi <= 3 * t_single + 0.5, (t_multi, t_single)
    assert any("trades_over_scope_cap=4" in w for w in warnings(conn))


def test_a_trade_with_too_many_actions_is_refused_and_nothing_written(conn):
    reset(conn)
    insert_trades(conn, "fits", spread_actions(1, 1000, "f"))
    before = snapshot(conn)
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
        insert_trades(conn, "over", spread_actions(1, 1001, "o"), start=5)
    assert info.value.diag.column_name == "actions"
    assert "1001 actions" in str(info.value) and "at most 1000" in str(info.value)
    assert changed(before, snapshot(conn)) == set()


def test_actions_over_a_mebibyte_of_jsonb_are_refused_compressed_or_not(conn):
    """A trade's actions over 1 MiB as jsonb are refused, naming the field and the limit, and nothing
    is written: sent as JSON, or copied from the writer's own table, where 15 MB of one letter is
    stored compressed in ~170 kB. Actions just under the limit are learned."""
    reset(conn)
    before = snapshot(conn)
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
        insert_trades(conn, "big", [[action({"blob": "x" * 1_100_000})]])
    assert info.value.diag.column_name == "actions" and "1048576 bytes" in str(info.value)
    conn.execute(
        "CREATE TEMP TABLE writer_copy AS SELECT 'packed' AS id, pg_catalog.jsonb_build_array("
        "pg_catalog.jsonb_build_object('pattern_key', %s::text, 'action_category', 'entry', 'scope',"
        " pg_catalog.jsonb_build_object('blob', pg_catalog.repeat('a', 15000000)))) AS actions",
        (PATTERN,),
    )
    assert conn.execute("SELECT pg_column_size(actions) FROM writer_copy").fetchone()[0] < 1_048_576
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        conn.execute(
            "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)"
            " SELECT id, '1h', -3, %s, actions FROM writer_copy",
            (AS_OF - timedelta(hours=1),),
        )
    assert changed(before, snapshot(conn)) == set()
    insert_trades(conn, "fits", [[action({"blob": "x" * 1_000_000})]])
    assert conn.execute("SELECT count(*) FROM public.pattern_trade_events").fetchone()[0] == 1


def test_numbers_with_a_long_text_are_dropped_unprinted(conn):
    """A number's text can be far longer than its jsonb (1e131071: 22 bytes, 131,072 digits). Three
    trades whose scope holds 30,000 of them (780 kB of jsonb, so the insert takes them; 3.9 GB of
    text, ~0.8 ms to print each) leave the builder within 2x its time without them: the miners judge
    a number by its scale and magnitude before printing it. A short number is still a dimension."""
    reset(conn)
    insert_trades(conn, "ok", [[action({"chain": "base", "size": 2.5})]] * 33)
    _, t_build = timed(run_lesson_builder, conn, as_of=AS_OF)
    baseline = lessons(conn, "pm_strength")
    assert baseline[(PATTERN, '{"size": 2.5}')] == 33

    conn.execute(
        "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)"
        " SELECT 'digits' || t, '1h', -3, %s::timestamptz - t * interval '1 hour', pg_catalog.jsonb_build_array("
        "  pg_catalog.jsonb_build_object('pattern_key', %s::text, 'action_category', 'entry', 'scope', ("
        "   SELECT pg_catalog.jsonb_object_agg('k' || i, ('1e' || (131071 - i %% 2))::numeric)"
        "   FROM pg_catalog.generate_series(1, 30000) AS i)))"
        " FROM pg_catalog.generate_series(40, 42) AS t",
        (AS_OF, PATTERN),
    )
    conn.execute("SET statement_timeout = '60s'")
    _, t_build_poison = timed(run_lesson_builder, conn, as_of=AS_OF)
    conn.execute("RESET statement_timeout")
    after = lessons(conn, "pm_strength")
    assert {k: n for k, n in after.items() if k != (PATTERN, "{}")} == {
        k: n for k, n in baseline.items() if k != (PATTERN, "{}")
    }
    assert after[(PATTERN, "{}")] == 36
    assert t_build_poison <= 2 * t_build + 1.0, (t_build, t_build_poison)


# --- the materializer's deactivation -------------------------------------------------------------

MATERIALIZE_SETUP = """
INSERT INTO public.learning_lessons (module, pattern_key, action_category, scope_subset, n, stats, lesson_type, status)
SELECT 'pm', %(pattern)s, 'pm_strength', pg_catalog.jsonb_build_object('chain', 'solana', 'k', i), 40,
    '{"dirA": -0.5, "dirE": 0.2, "confidence": 0.5, "edge_raw_roi": -0.01}', 'pm_strength', 'active'
FROM pg_catalog.generate_series(1, %(n)s) AS i
"""


def test_materializer_deactivation_does_not_rescan_per_row(conn):
    """Deactivating 3,000 of 6,000 overrides when the targets outgrow work_mem (main: a plain subplan
    rescanned the targets per override, quadratic; 102k lessons took ~70 min) costs what it costs
    when they fit."""
    timings = {}
    for work_mem in ("4MB", "64kB"):
        reset(conn)
        conn.execute(MATERIALIZE_SETUP, {"pattern": PATTERN, "n": 6000})
        materialize_strength(conn)
        conn.execute(
            "UPDATE public.learning_lessons SET status = 'inactive' WHERE (scope_subset ->> 'k')::integer % 2 = 0"
        )
        conn.execute(f"SET work_mem = '{work_mem}'")
        try:
            counts, timings[work_mem] = timed(materialize_strength, conn)
        finally:
            conn.execute("RESET work_mem")
        assert counts["deactivated"] == 3000 and counts["active"] == 3000
    assert timings["64kB"] <= 2 * timings["4MB"] + 0.5, timings
