"""The lever simulation (design §10) against a plain-Python brute force, plus the pinned cases."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcap_learning.simulate import (
    GRID,
    N_CANDIDATES,
    STEPS,
    EventArrays,
    Tunables,
    fmt_ratio,
    sign_test_p_value,
    simulate,
)

# ---------------------------------------------------------------------------------------------
# The oracle: one event at a time, one candidate at a time, exact fractions for the ranking.


def gate_pass(ev: dict, d_ts: float, d_halo: float, d_slope: float) -> bool:
    ts = ev["ts_ok"] if ev["ts_score"] is None else ev["ts_score"] >= ev["ts_min"] * (1 + d_ts)
    halo = ev["entry_zone_ok"] if ev["halo_distance"] is None else ev["halo_distance"] <= ev["halo_max"] * (1 + d_halo)
    thr = ev["slope_min"] + d_slope
    if ev["ema60_slope"] is None and ev["ema144_slope"] is None:
        slope = ev["slope_ok"]
    else:
        slope = (ev["ema60_slope"] is not None and ev["ema60_slope"] > thr) or (
            ev["ema144_slope"] is not None and ev["ema144_slope"] >= thr
        )
    return ts and halo and slope


def gates(ev: dict) -> dict:
    """Per-gate base results, as blocked_by judges them."""
    out = {}
    out["ts"] = ev["ts_ok"] if ev["ts_score"] is None else ev["ts_score"] >= ev["ts_min"]
    out["halo"] = ev["entry_zone_ok"] if ev["halo_distance"] is None else ev["halo_distance"] <= ev["halo_max"]
    if ev["ema60_slope"] is None and ev["ema144_slope"] is None:
        out["slope"] = ev["slope_ok"]
    else:
        out["slope"] = (ev["ema60_slope"] is not None and ev["ema60_slope"] > ev["slope_min"]) or (
            ev["ema144_slope"] is not None and ev["ema144_slope"] >= ev["slope_min"]
        )
    return out


def p_value(g: int, lo: int) -> float:
    n = g + lo
    if g == 0:
        return 1.0
    return float(Fraction(sum(math.comb(n, k) for k in range(g, n + 1)), 2**n))


def brute_force(events: list[dict], t: Tunables, prune: bool = True):
    """(best grid or None, tested, skipped, {grid: (mc, fa, wl, fv)}) by plain loops."""
    counts = {}
    missed_fail = {"ts": False, "halo": False, "slope": False}
    for ev in events:
        base = gate_pass(ev, 0.0, 0.0, 0.0)
        if not ev["acted"] and not base and ev["success"]:
            for lever, ok in gates(ev).items():
                missed_fail[lever] |= not ok
    skipped_n = sum(1 for ev in events if not ev["acted"])
    skipped_fail = sum(1 for ev in events if not ev["acted"] and not ev["success"])
    dr = skipped_fail / skipped_n if skipped_n else None
    loosening = {"ts": (0, 1), "halo": (3, 4), "slope": (0, 1)}
    ranked = []
    tested = 0
    for grid in itertools.product(range(5), repeat=3):
        if grid == (2, 2, 2):
            continue
        if prune and any(
            not missed_fail[lever] and grid[col] in loosening[lever]
            for col, lever in enumerate(("ts", "halo", "slope"))
        ):
            continue
        tested += 1
        d = (STEPS["ts"][grid[0]], STEPS["halo"][grid[1]], STEPS["slope"][grid[2]])
        mc = fa = wl = fv = 0
        for ev in events:
            base = gate_pass(ev, 0.0, 0.0, 0.0)
            if base != ev["acted"]:
                continue  # inconsistent: never flips
            now = gate_pass(ev, *d)
            if not ev["acted"] and now:
                if ev["success"]:
                    mc += 1
                else:
                    fa += 1
            elif ev["acted"] and not now:
                if ev["success"]:
                    wl += 1
                else:
                    fv += 1
        counts[grid] = (mc, fa, wl, fv)
        g, lo = mc + fv, fa + wl
        ok = g >= max(t.min_gain, 1) and (lo == 0 or g / lo >= t.min_ratio)
        ok = ok and (t.max_p_value >= 1.0 or p_value(g, lo) <= t.max_p_value)
        if dr is not None and dr >= t.dodge_high:
            ok = ok and fa / skipped_n <= t.dodge_max_drop
        nonzero = sum(i != 2 for i in grid)
        steps = sum(abs(i - 2) for i in grid)
        key = (-Fraction(g + 1, lo + 1), -g, nonzero, steps, d)
        ranked.append((key, grid, ok))
    ranked.sort()
    best = next((grid for _, grid, ok in ranked if ok), None)
    return best, tested, N_CANDIDATES - tested, counts, [grid for _, grid, _ in ranked]


def to_arrays(events: list[dict]) -> EventArrays:
    def f(name):
        return [np.nan if e[name] is None else e[name] for e in events]

    return EventArrays(
        acted=[e["acted"] for e in events],
        success=[e["success"] for e in events],
        ts_score=f("ts_score"),
        halo_distance=f("halo_distance"),
        ema60_slope=f("ema60_slope"),
        ema144_slope=f("ema144_slope"),
        ts_ok=[e["ts_ok"] for e in events],
        slope_ok=[e["slope_ok"] for e in events],
        entry_zone_ok=[e["entry_zone_ok"] for e in events],
        ts_min=[e["ts_min"] for e in events],
        halo_max=[e["halo_max"] for e in events],
        slope_min=[e["slope_min"] for e in events],
    )


# Values on and around the lever grid so that boundaries (>=, >, <=) and ties are exercised.
TS_VALUES = [0.5, 0.54, 0.57, 0.6, 0.63, 0.66, 0.7]
HALO_VALUES = [0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]
SLOPE_VALUES = [-0.003, -0.002, -0.001, 0.0, 0.001, 0.002]


@st.composite
def event(draw, consistent_bias: bool = True):
    ev = {
        "ts_score": draw(st.one_of(st.none(), st.sampled_from(TS_VALUES))),
        "halo_distance": draw(st.one_of(st.none(), st.sampled_from(HALO_VALUES))),
        "ema60_slope": draw(st.one_of(st.none(), st.sampled_from(SLOPE_VALUES))),
        "ema144_slope": draw(st.one_of(st.none(), st.sampled_from(SLOPE_VALUES))),
        "ts_ok": draw(st.booleans()),
        "slope_ok": draw(st.booleans()),
        "entry_zone_ok": draw(st.booleans()),
        "ts_min": draw(st.sampled_from([0.6, 0.6, 0.55])),
        "halo_max": draw(st.sampled_from([1.0, 1.0, 1.1])),
        "slope_min": draw(st.sampled_from([0.0, 0.0, 0.001])),
        "success": draw(st.booleans()),
    }
    base = gate_pass(ev, 0.0, 0.0, 0.0)
    # Mostly consistent decisions (as the bot records them), some inconsistent ones.
    ev["acted"] = base if draw(st.integers(0, 9)) > 0 else not base
    # Skipped events are mostly misses, so that loosenings often become eligible winners.
    if not ev["acted"] and draw(st.integers(0, 2)) > 0:
        ev["success"] = True
    return ev


# These oracles pin the plan rule of design §10 (the evidence rule has its own tests).
tunables_st = st.builds(
    Tunables,
    tuning_rule=st.just("plan"),
    min_gain=st.integers(1, 4),
    min_ratio=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    max_p_value=st.sampled_from([1.0, 0.5, 0.2]),
    dodge_high=st.sampled_from([0.85, 0.5, 1.0]),
    dodge_max_drop=st.sampled_from([0.05, 0.1]),
)


@settings(max_examples=120, deadline=None)
@given(events=st.lists(event(), min_size=0, max_size=40), t=tunables_st, prune=st.booleans())
def test_simulate_equals_brute_force(events, t, prune):
    result = simulate(to_arrays(events), t, prune=prune)
    best, tested, skipped, counts, ranking = brute_force(events, t, prune=prune)
    assert (result.tested, result.skipped) == (tested, skipped)
    assert result.tested + result.skipped == 124
    got_best = result.best.grid if result.best else None
    assert got_best == best
    # Every tested candidate's counts, and the full ranking order (tie-breaks included).
    cands = result.candidates
    assert [c.grid for c in cands] == ranking
    for c in cands:
        assert (c.misses_caught, c.failures_added, c.wins_lost, c.failures_avoided) == counts[c.grid]


@settings(max_examples=80, deadline=None)
@given(events=st.lists(event(), min_size=0, max_size=40), t=tunables_st)
def test_pruning_never_changes_the_best(events, t):
    pruned = simulate(to_arrays(events), t, prune=True)
    full = simulate(to_arrays(events), t, prune=False)
    assert full.tested == 124 and full.skipped == 0
    assert pruned.tested + pruned.skipped == 124
    assert (pruned.best.grid if pruned.best else None) == (full.best.grid if full.best else None)


# ---------------------------------------------------------------------------------------------
# Pinned cases, built from events whose flips are known.


def ev(acted, success, ts=0.7, halo=0.5, e60=0.001, e144=0.001, ts_min=0.6, halo_max=1.0, slope_min=0.0):
    return {
        "acted": acted,
        "success": success,
        "ts_score": ts,
        "halo_distance": halo,
        "ema60_slope": e60,
        "ema144_slope": e144,
        "ts_ok": False,
        "slope_ok": False,
        "entry_zone_ok": False,
        "ts_min": ts_min,
        "halo_max": halo_max,
        "slope_min": slope_min,
    }


def ts_case(caught: int, added: int, dodgers: int = 0) -> list[dict]:
    """Skipped events at ts 0.56 (caught by ts-0.1 -> threshold 0.54): `caught` successes, `added`
    failures; plus `dodgers` skipped failures far below (0.3) that no lever reaches."""
    out = [ev(False, True, ts=0.56) for _ in range(caught)]
    out += [ev(False, False, ts=0.56) for _ in range(added)]
    out += [ev(False, False, ts=0.3) for _ in range(dodgers)]
    return out


def find(result, grid):
    return next(c for c in result.candidates if c.grid == grid)


TS_MINUS_10 = (0, 2, 2)


def test_six_gained_two_lost_is_accepted_at_3x():
    r = simulate(to_arrays(ts_case(6, 2)), Tunables(tuning_rule="plan"))
    c = find(r, TS_MINUS_10)
    assert (c.gained, c.lost, c.ratio) == (6, 2, 3.0)
    assert c.eligible and r.best is not None and r.best.grid == TS_MINUS_10
    assert fmt_ratio(c.ratio) == "3.0"


def test_four_gained_three_lost_is_refused():
    r = simulate(to_arrays(ts_case(4, 3)), Tunables(tuning_rule="plan"))
    c = find(r, TS_MINUS_10)
    assert (c.gained, c.lost) == (4, 3) and fmt_ratio(c.ratio) == "1.33"
    assert not c.eligible and "min_ratio" in c.reason
    assert r.best is None


def test_gain_below_min_gain_is_refused_even_at_infinite_ratio():
    r = simulate(to_arrays(ts_case(2, 0)), Tunables(tuning_rule="plan", min_gain=3))
    c = find(r, TS_MINUS_10)
    assert (c.gained, c.lost, c.ratio) == (2, 0, None)
    assert not c.eligible and "min_gain" in c.reason
    assert r.best is None
    assert simulate(to_arrays(ts_case(3, 0)), Tunables(tuning_rule="plan", min_gain=3)).best.grid == TS_MINUS_10


def test_dodge_guard_refuses_a_loosening_that_drops_a_high_dodge_rate():
    # 4 successes + 2 reachable failures + 14 unreachable failures: DR = 16/20 = 0.80 < 0.85: not armed.
    unguarded = simulate(to_arrays(ts_case(4, 2, dodgers=14)), Tunables(tuning_rule="plan"))
    assert unguarded.dodge_rate == pytest.approx(0.8)
    assert find(unguarded, TS_MINUS_10).eligible
    # 4 successes + 2 reachable failures + 34 unreachable: DR = 36/40 = 0.90; adding 2 failures
    # drops it by exactly 0.05 (allowed); adding 3 of 40 (0.075) is refused.
    ok = simulate(to_arrays(ts_case(4, 2, dodgers=34)), Tunables(tuning_rule="plan"))
    assert ok.dodge_rate == pytest.approx(0.9) and find(ok, TS_MINUS_10).eligible
    guarded = simulate(to_arrays(ts_case(6, 3, dodgers=31)), Tunables(tuning_rule="plan"))
    c = find(guarded, TS_MINUS_10)
    assert (c.gained, c.lost) == (6, 3) and guarded.dodge_rate == pytest.approx(34 / 40)
    assert not c.eligible and c.reason.startswith("dodge guard")
    # The same counts with the guard disarmed are eligible.
    disarmed = Tunables(tuning_rule="plan", dodge_high=0.9)
    assert find(simulate(to_arrays(ts_case(6, 3, dodgers=31)), disarmed), TS_MINUS_10).eligible


def test_pruning_reports_skipped_candidates():
    # Missed events fail only the ts gate: halo (+0.1, +0.2) and slope (-0.001, -0.002) loosenings are skipped.
    r = simulate(to_arrays(ts_case(6, 2)), Tunables(tuning_rule="plan"))
    assert r.loosening_tested == {"ts": True, "halo": False, "slope": False}
    # Candidates without halo in {3, 4} and slope in {0, 1}: 5 * 3 * 3 - 1 = 44 tested.
    assert (r.tested, r.skipped) == (44, 80)
    assert all(c.grid[1] not in (3, 4) and c.grid[2] not in (0, 1) for c in r.candidates)


def test_tie_breaks_fewer_levers_then_fewer_steps_then_smallest_tuple():
    # One miss at ts 0.56: ts-0.1 alone and ts-0.1 with any tightening elsewhere tie on counts.
    r = simulate(to_arrays(ts_case(3, 0)), Tunables(tuning_rule="plan"))
    assert r.best.grid == TS_MINUS_10 and r.best.label == "ts-0.1"
    # Three misses at 0.58 (caught by ts-0.05 and ts-0.1): fewer steps wins.
    events = [ev(False, True, ts=0.58) for _ in range(3)]
    assert simulate(to_arrays(events), Tunables(tuning_rule="plan")).best.label == "ts-0.05"


def test_inconsistent_events_never_flip():
    # Recorded as acted but failing the base ts gate: counted as inconsistent, never a flip.
    events = [ev(True, True, ts=0.5)] * 5 + ts_case(3, 0)
    r = simulate(to_arrays(events), Tunables(tuning_rule="plan"))
    assert r.n_inconsistent == 5
    assert all(c.wins_lost == 0 for c in r.candidates)


def test_sign_test_p_value():
    assert sign_test_p_value(6, 2) == pytest.approx(37 / 256)
    assert sign_test_p_value(3, 0) == pytest.approx(1 / 8)
    assert sign_test_p_value(0, 5) == 1.0
    assert len(GRID) == 124
