"""Tuning end to end on PostgreSQL: capture -> miner -> materializer -> runtime, idempotence, explain."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowcap_learning import simulate, synthetic
from lowcap_learning.cli import cli
from lowcap_learning.runtime import apply_execution_overrides
from lowcap_learning.tuning import run_tuning_miner

AS_OF = datetime(2026, 1, 10, tzinfo=UTC)
SNAPSHOT_LESSONS = """
SELECT id, ctid::text, module, pattern_key, action_category, scope_subset, n, stats, status, updated_at
FROM public.learning_lessons ORDER BY id
"""
SNAPSHOT_OVERRIDES = """
SELECT id, ctid::text, pattern_key, action_category, scope_subset, multiplier, tuning_params, n, status,
    last_updated_at
FROM public.pm_overrides ORDER BY id
"""


def reset(conn) -> None:
    conn.execute(
        "TRUNCATE public.pattern_episode_events, public.learning_lessons, public.pm_overrides, learning.learning_log"
    )
    conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")
    # These tests pin the plan rule of design §10 (tests/test_tuning_evidence.py covers evidence).
    conn.execute("SELECT learning.set_tunable('tuning_rule', '\"plan\"')")
    conn.execute("TRUNCATE learning.learning_log")


def insert(conn, rows) -> None:
    synthetic.insert_episode_events(conn, rows)


def window(pattern, scope, n, decision, outcome, ts, halo=0.5, e60=0.001, e144=0.001, prefix="w"):
    return [
        {
            "scope": scope,
            "pattern_key": pattern,
            "episode_id": f"{prefix}_{pattern}_{decision}_{outcome}_{ts}_{i}",
            "decision": decision,
            "outcome": outcome,
            "factors": {
                "ts_min": 0.6,
                "halo_max": 1.0,
                "slope_min": 0.0,
                "samples": [{"ts_score": ts, "halo_distance": halo, "ema60_slope": e60, "ema144_slope": e144}],
            },
            "timestamp": "2026-01-05T00:00:00+00:00",
        }
        for i in range(n)
    ]


def logs(conn, prefix: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT message FROM learning.learning_log WHERE message LIKE %(p)s ORDER BY id", {"p": prefix + "%"}
        )
    ]


def six_two(pattern="tm.six"):
    """6 skipped successes and 2 skipped failures at ts 0.56 (caught by ts-0.1), plus acted wins and
    dodged failures no lever reaches: the winner is ts-0.1 at 3.0x."""
    scope = {"timeframe": "15m"}
    return (
        window(pattern, scope, 6, "skipped", "success", 0.56)
        + window(pattern, scope, 2, "skipped", "failure", 0.56)
        + window(pattern, scope, 6, "acted", "success", 0.9)
        + window(pattern, scope, 2, "skipped", "failure", 0.2)
    )


def test_winner_written_as_a_unit_with_exact_figures(conn):
    reset(conn)
    insert(conn, six_two())
    assert run_tuning_miner(conn, AS_OF)["lessons"] == 0  # n = 16 < n_min 33
    conn.execute("SELECT learning.set_tunable('n_min', '10')")
    assert run_tuning_miner(conn, AS_OF)["lessons"] == 2  # {} and {timeframe: 15m}
    out = simulate.materialize_tuning(conn, AS_OF)
    assert out["lessons"] == 2 and out["eligible"] == 2 and out["overrides_written"] == 6
    rows = conn.execute(
        "SELECT action_category, multiplier, tuning_params FROM public.pm_overrides "
        "WHERE scope_subset = '{}' AND status = 'active' ORDER BY action_category"
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("tuning_halo", 1.0), ("tuning_slope_min", 1.0), ("tuning_ts_min", 0.9)]
    p = rows[2][2]
    assert p["delta"] == -0.1 and p["levers"] == {"ts": -0.1, "halo": 0.0, "slope": 0.0}
    assert (p["gained"], p["misses_caught"], p["lost"], p["failures_added"], p["wins_lost"]) == (6, 6, 2, 2, 0)
    assert p["ratio"] == 3.0 and p["ratio_infinite"] is False
    assert p["tested"] + p["skipped"] == 124 and p["skipped"] == 80
    assert p["p_value"] == pytest.approx(37 / 256)
    assert rows[0][2]["delta"] == 0.0 and rows[1][2]["delta"] == 0.0
    assert (
        "SIMULATION: pattern=tm.six scope={} | tested=44 skipped=80 | best=ts-0.1 ratio=3.0x (gained=6 "
        "misses_caught=6 failures_avoided=0 lost=2 failures_added=2 wins_lost=0)"
    ) in logs(conn, "SIMULATION")
    assert (
        "OVERRIDE CREATED: pattern=tm.six | action=tuning_ts_min | multiplier=0.9 | delta=-0.1 | scope={} | ratio=3.0x"
    ) in logs(conn, "OVERRIDE CREATED")
    assert logs(conn, "Override Materializer starting") == ["Override Materializer starting | lessons=2"]
    assert logs(conn, "Override Materializer completed")[0].startswith(
        "Override Materializer completed | overrides_created=6 | unchanged=0 | deactivated=0 | duration="
    )

    # Runtime: the 1-key slice is the most specific match; multipliers and the delta apply exactly.
    base = {"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "dx_min": 0.5}
    res = apply_execution_overrides(conn, "tm.six", {"timeframe": "15m", "chain": "sol"}, base)
    assert res.thresholds == {"ts_min": 0.6 * 0.9, "halo_max": 1.0, "slope_min": 0.0, "dx_min": 0.5}
    assert len(res.applied) == 3 and all(o.scope_subset == {"timeframe": "15m"} for o in res.applied)
    assert apply_execution_overrides(conn, "tm.other", {}, base).thresholds == base

    # Raising min_ratio leaves no eligible candidate: the slices lose their overrides, with a reason.
    conn.execute("SELECT learning.set_tunable('min_ratio', '4.0')")
    out = simulate.materialize_tuning(conn, AS_OF)
    assert out["eligible"] == 0 and out["deactivated"] == 6
    assert conn.execute("SELECT count(*) FROM public.pm_overrides WHERE status = 'active'").fetchone()[0] == 0
    assert (
        "NO OVERRIDE: pattern=tm.six | scope={} | reason=best candidate ts-0.1 refused: ratio 3.0x < min_ratio 4.0x"
        " | top=ts-0.1 ratio=3.0x gained=6 lost=2"
    ) in logs(conn, "NO OVERRIDE")
    assert apply_execution_overrides(conn, "tm.six", {"timeframe": "15m"}, base).thresholds == base


def test_slope_delta_applies_exactly(conn):
    reset(conn)
    conn.execute(
        "INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier, tuning_params, n) "
        "VALUES ('tm.s', 'tuning_slope_min', '{}', 1.0, '{\"delta\": -0.001}', 40), "
        "('tm.s', 'tuning_halo', '{\"chain\": \"sol\"}', 1.2, '{\"delta\": 0.2}', 40)"
    )
    res = apply_execution_overrides(conn, "tm.s", {"chain": "sol"}, {"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0})
    assert res.thresholds == {"ts_min": 0.6, "halo_max": 1.0 * 1.2, "slope_min": 0.0 + -0.001}


def test_rerunning_miner_and_materializer_changes_no_row(conn, db_url):
    reset(conn)
    rows = synthetic.episode_events(1500, seed=7, start=datetime(2025, 12, 1, tzinfo=UTC), span_days=30)
    synthetic.insert_episode_events(conn, rows)
    conn.execute("SELECT learning.set_tunable('n_min', '60')")
    first = run_tuning_miner(conn, AS_OF)
    m1 = simulate.materialize_tuning(conn, AS_OF)
    assert first["lessons"] > 10 and m1["overrides_written"] > 0
    lessons = conn.execute(SNAPSHOT_LESSONS).fetchall()
    overrides = conn.execute(SNAPSHOT_OVERRIDES).fetchall()
    again = run_tuning_miner(conn, AS_OF)
    m2 = simulate.materialize_tuning(conn, AS_OF)
    assert again == first
    assert m2["overrides_written"] == 0 and m2["deactivated"] == 0 and m2["unchanged"] == m1["overrides_written"]
    assert conn.execute(SNAPSHOT_LESSONS).fetchall() == lessons
    assert conn.execute(SNAPSHOT_OVERRIDES).fetchall() == overrides
    # Every active slice holds exactly three tuning rows (a unit), and they agree on the levers.
    units = conn.execute(
        "SELECT pattern_key, scope_subset, count(*), count(DISTINCT tuning_params -> 'levers') "
        "FROM public.pm_overrides WHERE status = 'active' GROUP BY 1, 2"
    ).fetchall()
    assert units and all(u[2] == 3 and u[3] == 1 for u in units)

    # explain tuning on one of them: rates, top 5 and the verdict.
    url = db_url
    pattern, scope = units[0][0], units[0][1]
    result = CliRunner().invoke(
        cli, ["--database-url", url, "explain", "tuning", pattern, "--scope", json.dumps(scope)]
    )
    assert result.exit_code == 0, result.output
    assert "rates: wr=" in result.output and "top 5 candidates" in result.output and " won: " in result.output
    js = CliRunner().invoke(
        cli, ["--database-url", url, "explain", "tuning", pattern, "--scope", json.dumps(scope), "--json"]
    )
    data = json.loads(js.output)
    assert len(data["top"]) == 5 and data["winner"] is not None
    assert data["winner"]["label"] == data["top"][0]["label"] or not data["top"][0]["eligible"]
    # A full scope (an extra key) is explained through the most specific slice covering it.
    wider = dict(scope, not_a_dim="x")
    res = CliRunner().invoke(cli, ["--database-url", url, "explain", "tuning", pattern, "--scope", json.dumps(wider)])
    assert res.exit_code == 0, res.output
    assert (
        res.output.startswith("note: no lesson for exactly") and "runtime applies for this scope: slice" in res.output
    )
    missing = CliRunner().invoke(cli, ["--database-url", url, "explain", "tuning", "nope", "--scope", "{}"])
    assert missing.exit_code != 0 and "no tuning lesson" in missing.output


SAMPLE = st.fixed_dictionaries(
    {},
    optional={
        "ts_score": st.sampled_from([0.5, 0.6, 0.61, 0.7]),
        "halo_distance": st.sampled_from([0.5, 1.0, 1.01, 1.5]),
        "ema60_slope": st.sampled_from([-0.001, 0.0, 0.001]),
        "ema144_slope": st.sampled_from([-0.001, 0.0, 0.001]),
        "ts_ok": st.booleans(),
        "slope_ok": st.booleans(),
        "entry_zone_ok": st.booleans(),
    },
)
THRESHOLDS = st.fixed_dictionaries(
    {},
    optional={
        "ts_min": st.sampled_from([0.6, 0.0, 0.65]),
        "halo_max": st.sampled_from([1.0, -1.0, 1.2]),
        "slope_min": st.sampled_from([0.0, 0.001]),
    },
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(st.lists(SAMPLE, max_size=3), THRESHOLDS), min_size=1, max_size=12))
def test_blocked_by_is_the_simulation_base_judgement(conn, events):
    """The trigger's blocked_by (SQL) equals the gates the simulation fails at base (numpy)."""
    reset(conn)
    rows = [
        {
            "scope": {},
            "pattern_key": "tm.bb",
            "episode_id": f"bb{i}",
            "decision": "skipped",
            "outcome": "success",
            "factors": {"samples": samples, **th},
            "timestamp": "2026-01-05T00:00:00+00:00",
        }
        for i, (samples, th) in enumerate(events)
    ]
    insert(conn, rows)
    stored = [
        r[0] for r in conn.execute("SELECT factors -> 'blocked_by' FROM public.pattern_episode_events ORDER BY id")
    ]
    lesson = simulate.Lesson(0, "tm.bb", {}, 0, {}, datetime(2026, 1, 1, tzinfo=UTC), AS_OF)
    ev = simulate.load_events(conn, [lesson])[0]
    assert simulate.blocked_by(ev) == stored
    assert np.all(~ev.acted)


def test_a_lesson_has_the_events_whose_scope_contains_its_slice(conn):
    """PostgreSQL's jsonb containment matches slices to episodes (design §10): numbers by value (1 =
    1.0), booleans and strings apart, an array never equals a scalar, a non-object scope counts as {}."""
    reset(conn)
    scopes = [{"n": 1}, {"n": 1.0}, {"n": "1"}, {"n": True}, {"n": [1]}, {"n": 1, "x": "y"}, {}, [], "s"]
    rows = []
    for i, scope in enumerate(scopes):
        (row,) = window("tm.sc", scope, 1, "skipped", "success", 0.5 + i / 100, prefix=f"sc{i}")
        rows.append(row)
    insert(conn, rows)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    slices = {1: {"n": 1}, 2: {"n": "1"}, 3: {"n": True}, 4: {}, 5: {"x": "y", "n": 1.0}, 6: {"n": 2}}
    lessons = [simulate.Lesson(k, "tm.sc", s, 0, {}, start, AS_OF) for k, s in slices.items()]
    events = simulate.load_events(conn, lessons)
    got = {k: sorted(round((ev.ts_score[j] - 0.5) * 100) for j in range(len(ev))) for k, ev in events.items()}
    assert got == {1: [0, 1, 5], 2: [2], 3: [3], 4: list(range(9)), 5: [5], 6: []}


def test_explain_a_full_scope_no_override_applies_to(conn, db_url):
    """A full scope is explained through the slice whose overrides the runtime applies to it; with none
    applied, explain names the active slices covering it (the ranking is the runtime's alone, design §12)."""
    reset(conn)
    insert(conn, six_two("tm.cover"))
    conn.execute("SELECT learning.set_tunable('n_min', '10')")
    assert run_tuning_miner(conn, AS_OF)["lessons"] == 2
    args = ["--database-url", db_url, "explain", "tuning", "tm.cover", "--scope"]
    full = json.dumps({"timeframe": "15m", "chain": "sol"})
    res = CliRunner().invoke(cli, [*args, full])
    assert res.exit_code == 1
    assert "no tuning override applies to it; the active slices covering it: {timeframe: 15m}, {}" in res.output
    simulate.materialize_tuning(conn, AS_OF)
    res = CliRunner().invoke(cli, [*args, full])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(
        "note: no lesson for exactly {chain: sol, timeframe: 15m}; the runtime applies the overrides of slice "
        "{timeframe: 15m} to it"
    )
