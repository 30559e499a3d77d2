"""Runtime strength steering (design §13): the maths as properties, the matching against PostgreSQL, the CLI."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcap_learning import runtime
from lowcap_learning.cli import cli
from lowcap_learning.runtime import (
    SteeringTunables,
    StrengthMatch,
    apply_delta_with_headroom,
    apply_strength_overrides,
    apply_strength_overrides_batch,
    steer_max_eff,
    steer_strength,
)

TUN = SteeringTunables()
unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
direction = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)


def match(conf: float, dir_a: float = 0.5, dir_e: float = -0.5, scope: dict | None = None, edge: float = 0.0):
    scope = scope or {}
    return StrengthMatch(
        override_id=0, scope_subset=scope, dims=len(scope), dir_a=dir_a, dir_e=dir_e,
        confidence=conf, edge_raw_roi=edge, n=40,
    )


matches_st = st.lists(
    st.builds(
        match,
        conf=unit,
        dir_a=direction,
        dir_e=direction,
        scope=st.dictionaries(st.sampled_from("abcd"), st.integers(0, 2), max_size=4),
        edge=st.floats(min_value=-1.0, max_value=5.0),
    ),
    max_size=6,
)


@pytest.mark.parametrize(("conf", "steer"), [(0.2, 0.07), (0.6, 0.15), (0.9, 0.21), (1.0, 0.22), (0.0, 0.03)])
def test_steer_max_eff_pinned(conf, steer):
    assert steer_max_eff(conf) == pytest.approx(steer, abs=1e-12)


@given(unit)
def test_steer_max_eff_never_exceeds_hard_cap(conf):
    assert 0.03 - 1e-12 <= steer_max_eff(conf) <= 0.22


def test_steer_max_eff_is_the_one_the_steering_uses():
    """One function for floats and arrays (the vectorised steering calls it): the same numbers."""
    import numpy as np

    confs = np.array([0.0, 0.2, 0.6, 0.9, 1.0])
    assert steer_max_eff(confs).tolist() == [steer_max_eff(float(c)) for c in confs]
    general, specific = match(0.3, dir_a=1.0, dir_e=-1.0), match(0.6, dir_a=-1.0, dir_e=1.0, scope={"chain": "sol"})
    r = steer_strength([general, specific], 0.5, 0.5, TUN)
    assert r.steer_max_eff == steer_max_eff(r.confidence, TUN)


@settings(max_examples=200)
@given(matches_st, unit, unit, st.floats(min_value=-1.0, max_value=1.0))
def test_headroom_results_stay_in_unit_interval(matches, a, e, base_bias):
    tun = SteeringTunables(base_bias=base_bias)
    r = steer_strength(matches, a, e, tun)
    assert 0.0 <= r.a_final <= 1.0
    assert 0.0 <= r.e_final <= 1.0
    assert r.position_size_frac == pytest.approx(0.10 + 0.50 * r.a_final)
    assert r.steer_max_eff <= 0.22
    if r.applied:
        assert -1.0 - 1e-12 <= r.dir_a <= 1.0 + 1e-12
        assert r.steer_max_eff == pytest.approx(min(0.03 + 0.20 * r.confidence, 0.22))


@given(unit, direction)
def test_headroom_step_never_leaves_unit_interval(x, delta):
    y = apply_delta_with_headroom(x, delta)
    assert -1e-12 <= y <= 1 + 1e-12
    # moves in the delta's direction, never past the bound
    assert (y - x) * delta >= -1e-15


@given(unit, unit)
def test_no_match_passes_through(a, e):
    r = steer_strength([], a, e, TUN)
    assert (r.a_final, r.e_final, r.delta_a, r.delta_e, r.applied) == (a, e, 0.0, 0.0, False)
    assert r.position_size_frac == pytest.approx(0.10 + 0.50 * a)
    assert type(r.weight_sum) is float and r.weight_sum == 0.0  # not numpy's int zeros of an empty sum


@given(unit, unit)
def test_zero_confidence_matches_pass_through(a, e):
    r = steer_strength([match(0.0), match(0.0, scope={"chain": "sol"})], a, e, TUN)
    assert (r.a_final, r.e_final, r.applied) == (a, e, False)


def test_conf_min_filter_is_conditional():
    weak, strong = match(0.30, dir_a=-1.0, dir_e=1.0), match(0.50, dir_a=1.0, dir_e=-1.0)
    r = steer_strength([weak, strong], 0.5, 0.5, TUN)
    assert [m.kept for m in r.matches] == [False, True]
    assert r.dir_a == pytest.approx(1.0) and r.confidence == pytest.approx(0.50)
    # all below CONF_MIN: all kept (better than no signal)
    weak2 = match(0.30, dir_a=-1.0, dir_e=1.0)
    r = steer_strength([weak2, match(0.20, dir_a=1.0, dir_e=-1.0)], 0.5, 0.5, TUN)
    assert all(m.kept for m in r.matches)
    # weights (1 + dims) x conf: 0.30 and 0.20 -> dirA = (-0.30 + 0.20) / 0.50
    assert r.dir_a == pytest.approx(-0.2)


@given(matches_st, unit, unit)
def test_conf_min_drops_only_when_a_strong_match_exists(matches, a, e):
    r = steer_strength(matches, a, e, TUN)
    strong = any(m.confidence >= 0.40 for m in matches)
    for m in r.matches:
        assert m.kept == (m.confidence >= 0.40 or not strong)


def test_specificity_times_confidence_blend_and_headroom():
    general = match(0.6, dir_a=1.0, dir_e=-1.0)
    specific = match(0.6, dir_a=-1.0, dir_e=1.0, scope={"chain": "sol", "mcap": "s"})
    r = steer_strength([general, specific], 0.8, 0.3, TUN)
    # weights 0.6 and 1.8 -> dirA = (0.6 - 1.8) / 2.4 = -0.5; conf 0.6 -> steer 0.15
    assert r.dir_a == pytest.approx(-0.5) and r.dir_e == pytest.approx(0.5)
    assert r.steer_max_eff == pytest.approx(0.15)
    assert r.delta_a == pytest.approx(-0.075) and r.delta_e == pytest.approx(0.075)
    assert r.a_final == pytest.approx(0.8 - 0.075 * 0.8)
    assert r.e_final == pytest.approx(0.3 + 0.075 * 0.7)
    assert r.position_size_frac == pytest.approx(0.10 + 0.50 * r.a_final)


def test_base_bias_adds_blended_edge():
    r = steer_strength([match(0.6, dir_a=0.0, dir_e=0.0, edge=0.05)], 0.5, 0.5, SteeringTunables(base_bias=0.2))
    assert r.delta_a == pytest.approx(0.01)
    assert r.a_final == pytest.approx(0.5 + 0.01 * 0.5)


# --- against PostgreSQL ---------------------------------------------------------------------------

INSERT_OVERRIDE = """
INSERT INTO public.pm_overrides
    (pattern_key, action_category, scope_subset, confidence_score, dira, dire, edge_raw_roi, n, status)
VALUES (%(p)s, 'pm_strength', %(s)s::jsonb, %(c)s, %(a)s, %(e)s, %(edge)s, 40, %(status)s)
"""


@pytest.fixture
def overrides(conn):
    conn.execute("DELETE FROM public.pm_overrides")
    rows = [
        ("pm.p", {}, 0.30, 0.5, -0.5, 0.01, "active"),
        ("pm.p", {"chain": "sol"}, 0.60, 1.0, -1.0, 0.02, "active"),
        ("pm.p", {"chain": "sol", "mcap": "s"}, 0.90, -1.0, 1.0, -0.03, "active"),
        ("pm.p", {"chain": "eth"}, 0.90, -1.0, 0.0, 0.0, "active"),
        ("pm.p", {"chain": "sol", "tf": "1h"}, 0.90, -1.0, 0.0, 0.0, "inactive"),
        ("pm.q", {}, 0.90, -1.0, 1.0, 0.0, "active"),
    ]
    for p, s, c, a, e, edge, status in rows:
        conn.execute(INSERT_OVERRIDE, {"p": p, "s": json.dumps(s), "c": c, "a": a, "e": e, "edge": edge,
                                       "status": status})
    conn.execute(
        "INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier) "
        "VALUES ('pm.p', 'tuning_halo', '{}', 1.1)"
    )
    yield
    conn.execute("DELETE FROM public.pm_overrides")


def test_matching_uses_containment_and_active_rows(conn, overrides):
    r = apply_strength_overrides(conn, "pm.p", {"chain": "sol", "mcap": "s", "tf": "1h", "extra": [1]}, 0.5, 0.5)
    assert sorted(json.dumps(m.scope_subset, sort_keys=True) for m in r.matches) == [
        '{"chain": "sol", "mcap": "s"}', '{"chain": "sol"}', "{}",
    ]
    # conf 0.30 < CONF_MIN is dropped because 0.60 and 0.90 exist; w = 2*0.6 and 3*0.9
    kept = {json.dumps(m.scope_subset, sort_keys=True): m for m in r.matches}
    assert not kept["{}"].kept
    assert r.dir_a == pytest.approx((1.2 * 1.0 + 2.7 * -1.0) / 3.9)
    assert r.confidence == pytest.approx((1.2 * 0.6 + 2.7 * 0.9) / 3.9)
    assert r.steer_max_eff == pytest.approx(min(0.03 + 0.20 * r.confidence, 0.22))


def test_no_match_in_database_passes_through(conn, overrides):
    r = apply_strength_overrides(conn, "pm.unknown", {"chain": "sol"}, 0.37, 0.61)
    assert (r.a_final, r.e_final, r.matches, r.applied) == (0.37, 0.61, [], False)


def test_matching_query_uses_the_covering_partial_index(conn, overrides):
    conn.execute("SET enable_seqscan = off")
    plan = "\n".join(
        row[0]
        for row in conn.execute(
            "EXPLAIN SELECT o.id FROM public.pm_overrides AS o WHERE o.pattern_key = 'pm.p' "
            "AND o.action_category = 'pm_strength' AND o.status = 'active' AND o.scope_subset <@ '{}'::jsonb"
        )
    )
    conn.execute("RESET enable_seqscan")
    assert "pm_overrides_active_match_idx" in plan


def test_batch_equals_single(conn, overrides):
    requests = [
        ("pm.p", {"chain": "sol", "mcap": "s"}, 0.5, 0.5),
        ("pm.p", {"chain": "eth"}, 0.9, 0.1),
        ("pm.p", {}, 0.2, 0.8),
        ("pm.q", {"chain": "sol"}, 0.0, 1.0),
        ("pm.none", {}, 0.4, 0.4),
    ]
    batch = apply_strength_overrides_batch(conn, requests)
    assert len(batch) == len(requests)
    for req, b in zip(requests, batch, strict=True):
        s = apply_strength_overrides(conn, *req)
        assert (b.a_final, b.e_final, b.delta_a, b.delta_e, len(b.matches)) == (
            s.a_final, s.e_final, s.delta_a, s.delta_e, len(s.matches)
        )
    assert apply_strength_overrides_batch(conn, []) == []


def test_tunables_come_from_the_database(conn, overrides):
    conn.execute("SELECT learning.set_tunable('steer_base', '0.05')")
    try:
        r = apply_strength_overrides(conn, "pm.q", {}, 0.5, 0.5)
        assert r.steer_max_eff == pytest.approx(min(0.05 + 0.20 * 0.9, 0.22))
    finally:
        conn.execute("SELECT learning.set_tunable('steer_base', '0.03')")


def test_explain_strength_cli(db_url, conn, overrides):
    runner = CliRunner()
    args = ["--database-url", db_url, "explain", "strength", "pm.p", "--scope", '{"chain": "sol", "mcap": "s"}',
            "--a", "0.5", "--e", "0.5"]
    out = runner.invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert "STEER_MAX_eff" in out.output and "CONF_MIN 0.40: a match reaches it" in out.output
    assert "position_size_frac" in out.output
    js = runner.invoke(cli, [*args, "--json"])
    assert js.exit_code == 0, js.output
    data = json.loads(js.output)
    direct = apply_strength_overrides(conn, "pm.p", {"chain": "sol", "mcap": "s"}, 0.5, 0.5)
    assert data["a_final"] == pytest.approx(direct.a_final) and len(data["matches"]) == 3
    bad = runner.invoke(cli, ["--database-url", db_url, "explain", "strength", "pm.p", "--scope", "[1]"])
    assert bad.exit_code != 0 and "JSON object" in bad.output


def test_result_is_a_dataclass_with_every_intermediate(conn, overrides):
    r = apply_strength_overrides(conn, "pm.p", {"chain": "sol"}, 0.5, 0.5)
    d = r.as_dict()
    for key in ("a_final", "e_final", "position_size_frac", "delta_a", "delta_e", "dir_a", "dir_e",
                "confidence", "steer_max_eff", "matches"):
        assert key in d
    assert isinstance(r, runtime.StrengthResult)
    assert not math.isnan(r.a_final)


def test_the_reader_role_can_steer(conn, overrides):
    conn.execute("SET ROLE learning_reader")
    try:
        r = apply_strength_overrides(conn, "pm.p", {"chain": "sol"}, 0.5, 0.5)
        batch = apply_strength_overrides_batch(conn, [("pm.p", {"chain": "sol"}, 0.5, 0.5)])
    finally:
        conn.execute("RESET ROLE")
    assert r.applied and len(r.matches) == 2
    assert batch[0].a_final == r.a_final


def test_batch_leaves_the_garbage_collector_as_it_found_it(conn, overrides):
    import gc

    requests = [("pm.p", {"chain": "sol"}, 0.5, 0.5)]
    assert gc.isenabled()
    apply_strength_overrides_batch(conn, requests)
    assert gc.isenabled()
    gc.disable()
    try:
        apply_strength_overrides_batch(conn, requests)
        assert not gc.isenabled()
    finally:
        gc.enable()
