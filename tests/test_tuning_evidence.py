"""tuning_rule evidence (design §10): each changed lever's own flips must beat the base rates, at a
family-wise error of max_false_override over the lesson's tested candidates. A plain-Python oracle
(exact Fisher tails in fractions), pinned cases, and the materializer / log / explain end to end."""

from __future__ import annotations

import itertools
import json
import math
import re
from datetime import UTC, datetime
from fractions import Fraction

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcap_learning import simulate, synthetic
from lowcap_learning.cli import cli
from lowcap_learning.simulate import N_CANDIDATES, Tunables, hypergeom_upper_tail
from lowcap_learning.tuning import run_tuning_miner
from test_tuning_simulate import STEPS, ev, event, gate_pass, gates, to_arrays, ts_case

LOOSENING = {"ts": (0, 1), "halo": (3, 4), "slope": (0, 1)}
LEVERS = ("ts", "halo", "slope")


def fisher_upper(y: int, good: int, draws: int, total: int) -> Fraction:
    """P(Y >= y), Y ~ Hypergeometric(total, good, draws), exactly."""
    if y <= 0 or draws == 0:
        return Fraction(1)
    top = sum(math.comb(good, x) * math.comb(total - good, draws - x) for x in range(y, min(good, draws) + 1))
    return Fraction(top, math.comb(total, draws))


def oracle(events: list[dict], t: Tunables, prune: bool = True) -> dict:
    """{grid: (eligible, candidate p as Fraction)} for every tested candidate, and the best grid."""
    consistent = [e for e in events if gate_pass(e, 0, 0, 0) == e["acted"]]
    acted = [e for e in consistent if e["acted"]]
    skipped = [e for e in consistent if not e["acted"]]
    missed_fail = {lever: False for lever in LEVERS}
    for e in skipped:
        if e["success"]:
            for lever, ok in gates(e).items():
                missed_fail[lever] |= not ok
    all_skipped = [e for e in events if not e["acted"]]
    dr = sum(not e["success"] for e in all_skipped) / len(all_skipped) if all_skipped else None
    grids = [
        g
        for g in itertools.product(range(5), repeat=3)
        if g != (2, 2, 2)
        and not (prune and any(not missed_fail[lv] and g[c] in LOOSENING[lv] for c, lv in enumerate(LEVERS)))
    ]
    tested = len(grids)
    threshold = t.max_false_override / tested if tested else 0.0
    out, ranked = {}, []
    for g in grids:
        d = tuple(STEPS[lv][g[c]] for c, lv in enumerate(LEVERS))
        mc = sum(e["success"] and gate_pass(e, *d) for e in skipped)
        fa = sum(not e["success"] and gate_pass(e, *d) for e in skipped)
        wl = sum(e["success"] and not gate_pass(e, *d) for e in acted)
        fv = sum(not e["success"] and not gate_pass(e, *d) for e in acted)
        gained, lost = mc + fv, fa + wl
        ok = gained >= max(t.min_gain, 1) and (lost == 0 or gained / lost >= t.min_ratio)
        if dr is not None and dr >= t.dodge_high:
            ok = ok and fa / len(all_skipped) <= t.dodge_max_drop
        p = Fraction(0)
        for c, lv in enumerate(LEVERS):
            if g[c] == 2:
                continue
            without = list(d)
            without[c] = 0.0
            if g[c] in LOOSENING[lv]:
                flipped = [e for e in skipped if gate_pass(e, *d) and not gate_pass(e, *without)]
                ref = acted
                y = sum(e["success"] for e in flipped)
                good = y + sum(e["success"] for e in ref)
            else:
                flipped = [e for e in acted if gate_pass(e, *without) and not gate_pass(e, *d)]
                ref = [e for e in acted if gate_pass(e, *d)]
                y = sum(not e["success"] for e in flipped)
                good = y + sum(not e["success"] for e in ref)
            p = max(p, fisher_upper(y, good, len(flipped), len(flipped) + len(ref)))
        eligible = ok and p <= Fraction(threshold)
        out[g] = (eligible, p)
        key = (-Fraction(gained + 1, lost + 1), -gained, sum(i != 2 for i in g), sum(abs(i - 2) for i in g), d)
        ranked.append((key, g))
    ranked.sort()
    best = next((g for _, g in ranked if out[g][0]), None)
    return {"candidates": out, "best": best, "tested": tested, "threshold": threshold}


tunables_st = st.builds(
    Tunables,
    tuning_rule=st.just("evidence"),
    min_gain=st.integers(1, 4),
    min_ratio=st.sampled_from([1.0, 1.5, 2.0]),
    max_p_value=st.sampled_from([1.0, 0.01]),  # ignored under evidence
    dodge_high=st.sampled_from([0.85, 1.0]),
    dodge_max_drop=st.sampled_from([0.05, 0.1]),
    max_false_override=st.sampled_from([0.05, 0.5]),
)


@settings(max_examples=80, deadline=None)
@given(events=st.lists(event(), min_size=0, max_size=40), t=tunables_st, prune=st.booleans())
def test_evidence_equals_the_oracle(events, t, prune):
    result = simulate.simulate(to_arrays(events), t, prune=prune)
    want = oracle(events, t, prune)
    assert result.tested == want["tested"]
    assert result.threshold == pytest.approx(want["threshold"], rel=1e-15)
    for c in result.candidates:
        eligible, p = want["candidates"][c.grid]
        assert c.p_value == pytest.approx(float(p), rel=1e-9, abs=1e-300)
        if abs(float(p) - want["threshold"]) > 1e-9 * want["threshold"]:
            assert c.eligible == eligible, (c.label, c.reason, float(p))
    assert (result.best.grid if result.best else None) == want["best"]


@settings(max_examples=40, deadline=None)
@given(events=st.lists(event(), min_size=0, max_size=40), t=tunables_st)
def test_pruned_candidates_could_never_pass(events, t):
    """A pruned loosening admits no success through its lever (p = 1), so pruning removes only
    candidates that cannot pass; the family it leaves (tested) sets the threshold."""
    pruned = simulate.simulate(to_arrays(events), t, prune=True)
    full = simulate.simulate(to_arrays(events), t, prune=False)
    kept = {c.grid for c in pruned.candidates}
    for c in full.candidates:
        if c.grid not in kept:
            assert not c.eligible and c.p_value == 1.0
    assert pruned.threshold == pytest.approx(t.max_false_override / pruned.tested) if pruned.tested else True


def test_hypergeom_tail_is_exact():
    for y, good, draws, total in [(16, 25, 20, 80), (1, 3, 40, 100), (0, 5, 5, 10), (3, 3, 3, 3), (5, 50, 0, 60)]:
        assert hypergeom_upper_tail(y, good, draws, total)[()] == pytest.approx(
            float(fisher_upper(y, good, draws, total)), rel=1e-12
        )


def acted_block(n: int, successes: int, ts: float) -> list[dict]:
    return [ev(True, i < successes, ts=ts, e60=0.01, e144=0.01) for i in range(n)]


def null_tightening() -> list[dict]:
    """Acted events succeed 10 % whatever their ts; skipped far below every lever: the plan 'gains' 9x by
    removing the acted windows at ts 0.62 (ts+0.05)."""
    return acted_block(40, 4, 0.62) + acted_block(60, 6, 0.9) + [ev(False, i < 5, ts=0.3) for i in range(50)]


def test_null_tightening_is_taken_by_plan_and_refused_by_evidence():
    plan = simulate.simulate(to_arrays(null_tightening()), Tunables(tuning_rule="plan"))
    assert plan.best is not None and plan.best.label == "ts+0.05"
    assert (plan.best.gained, plan.best.lost) == (36, 4)
    r = simulate.simulate(to_arrays(null_tightening()), Tunables())
    assert r.best is None
    top = r.candidates[0]
    assert top.label == "ts+0.05" and top.reason.startswith("evidence p=")
    (e,) = top.evidence
    assert (e.lever, e.direction, e.flipped, e.flipped_success, e.reference, e.reference_success) == (
        "ts", "tighten", 40, 4, 60, 6
    )
    # 4 of 40 removed vs 6 of 60 kept: equal rates, far from significant.
    assert e.p_value == pytest.approx(float(fisher_upper(36, 36 + 54, 40, 100)), rel=1e-12) and e.p_value > 0.4
    assert r.threshold == pytest.approx(0.05 / r.tested)
    assert "refused: evidence p=" in r.no_override_reason


def planted_loosening() -> list[dict]:
    """16 of 20 skipped at ts 0.56 succeed; acted succeed 9 of 60."""
    return ts_case(16, 4) + acted_block(60, 9, 0.9)


def test_planted_loosening_is_found_with_the_exact_p():
    r = simulate.simulate(to_arrays(planted_loosening()), Tunables())
    assert r.best is not None and r.best.label == "ts-0.1"
    (e,) = r.best.evidence
    assert (e.direction, e.flipped, e.flipped_success, e.reference, e.reference_success) == ("loosen", 20, 16, 60, 9)
    assert r.best.p_value == e.p_value == pytest.approx(float(fisher_upper(16, 25, 20, 80)), rel=1e-12)
    assert e.p_value <= r.threshold
    assert r.best.as_dict()["rule"] == "evidence" and r.best.as_dict()["evidence"][0]["rate"] == 0.8


def test_max_p_value_is_ignored_under_evidence():
    # The sign test of 16 gained vs 4 lost is p = 0.0059: refused by the plan at max_p_value 0.001.
    plan = simulate.simulate(to_arrays(planted_loosening()), Tunables(tuning_rule="plan", max_p_value=0.001))
    assert plan.best is None or plan.best.label != "ts-0.1"
    r = simulate.simulate(to_arrays(planted_loosening()), Tunables(max_p_value=0.001))
    assert r.best is not None and r.best.label == "ts-0.1"


def test_planted_tightening_is_found():
    events = acted_block(40, 1, 0.62) + acted_block(60, 30, 0.9) + [ev(False, False, ts=0.3) for _ in range(30)]
    r = simulate.simulate(to_arrays(events), Tunables())
    assert r.best is not None and r.best.label == "ts+0.05"
    (e,) = r.best.evidence
    assert (e.direction, e.flipped, e.flipped_success, e.reference, e.reference_success) == ("tighten", 40, 1, 60, 30)


def test_every_changed_lever_must_pass_on_its_own_flips():
    # Loosening halo admits skipped events at halo 1.05 that succeed 4 of 10: with the planted ts loosening
    # the pair passes every plan guard (20 gained, 10 lost), but halo's own evidence is weak.
    events = planted_loosening() + [ev(False, i < 4, halo=1.05) for i in range(10)]
    r = simulate.simulate(to_arrays(events), Tunables())
    both = next(c for c in r.candidates if c.label == "ts-0.1+halo+0.1")
    assert (both.gained, both.lost) == (20, 10)
    assert not both.eligible and "halo admits 10 succeeding 0.400" in both.reason
    halo = next(e for e in both.evidence if e.lever == "halo")
    assert (halo.flipped, halo.flipped_success) == (10, 4) and halo.p_value > both.threshold
    ts = next(e for e in both.evidence if e.lever == "ts")
    assert ts.p_value <= both.threshold
    assert r.best is not None and r.best.label == "ts-0.1"


def test_tunables_refuse_an_unknown_rule():
    with pytest.raises(ValueError, match="tuning_rule"):
        Tunables(tuning_rule="maybe")
    assert Tunables.from_json({"tuning_rule": "plan", "max_false_override": 0.01}).tuning_rule == "plan"
    assert Tunables().tuning_rule == "evidence" and N_CANDIDATES == 124


# ---------------------------------------------------------------------------------------------
# Through the database: miner -> materializer, tuning_params, log lines and explain.

AS_OF = datetime(2026, 1, 10, tzinfo=UTC)


def rows_of(pattern: str, events: list[dict]) -> list[dict]:
    return [
        {
            "scope": {},
            "pattern_key": pattern,
            "episode_id": f"{pattern}_{i}",
            "decision": "acted" if e["acted"] else "skipped",
            "outcome": "success" if e["success"] else "failure",
            "factors": {
                "ts_min": 0.6,
                "halo_max": 1.0,
                "slope_min": 0.0,
                "samples": [
                    {
                        "ts_score": e["ts_score"],
                        "halo_distance": e["halo_distance"],
                        "ema60_slope": e["ema60_slope"],
                        "ema144_slope": e["ema144_slope"],
                    }
                ],
            },
            "timestamp": "2026-01-05T00:00:00+00:00",
        }
        for i, e in enumerate(events)
    ]


def test_materializer_writes_the_evidence_and_logs_it(conn, db_url):
    conn.execute(
        "TRUNCATE public.pattern_episode_events, public.learning_lessons, public.pm_overrides, learning.learning_log"
    )
    conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")
    synthetic.insert_episode_events(conn, rows_of("te.loose", planted_loosening()))
    synthetic.insert_episode_events(conn, rows_of("te.null", null_tightening()))
    assert run_tuning_miner(conn, AS_OF)["lessons"] == 2
    out = simulate.materialize_tuning(conn, AS_OF)
    assert out["lessons"] == 2 and out["eligible"] == 1 and out["overrides_written"] == 3
    rows = conn.execute(
        "SELECT pattern_key, action_category, multiplier, tuning_params FROM public.pm_overrides "
        "WHERE status = 'active' ORDER BY action_category"
    ).fetchall()
    assert {r[0] for r in rows} == {"te.loose"}
    p = rows[2][3]
    assert rows[2][1] == "tuning_ts_min" and rows[2][2] == pytest.approx(0.9)
    assert p["rule"] == "evidence" and p["levers"] == {"ts": -0.1, "halo": 0.0, "slope": 0.0}
    e = p["evidence"]["ts"]
    assert (e["flipped"], e["flipped_success"], e["reference"], e["reference_success"]) == (20, 16, 60, 9)
    assert p["p_value"] == pytest.approx(float(fisher_upper(16, 25, 20, 80)), rel=1e-12)
    assert p["threshold"] == pytest.approx(0.05 / p["tested"]) and p["alpha"] == 0.05
    log = [r[0] for r in conn.execute("SELECT message FROM learning.learning_log ORDER BY id")]
    sim = next(m for m in log if m.startswith("SIMULATION: pattern=te.loose"))
    assert re.search(r"\| evidence=p=[0-9.e-]+ <= alpha=[0-9.e-]+ \(0\.05/\d+ tested\); ts admits 20 succeeding "
                     r"0\.800 vs acted at base 0\.150 of 60", sim), sim
    refused = next(m for m in log if m.startswith("NO OVERRIDE: pattern=te.null"))
    assert "reason=best candidate ts+0.05 refused: evidence p=" in refused
    assert "ts removes 40 succeeding 0.100" in refused
    # The same data under the plan: the null tightening is taken.
    conn.execute("SELECT learning.set_tunable('tuning_rule', '\"plan\"')")
    assert simulate.materialize_tuning(conn, AS_OF)["eligible"] == 2
    conn.execute("SELECT learning.set_tunable('tuning_rule', '\"evidence\"')")
    assert simulate.materialize_tuning(conn, AS_OF)["deactivated"] == 3
    again = simulate.materialize_tuning(conn, AS_OF)  # the evidence figures are deterministic: no rewrite
    assert (again["overrides_written"], again["unchanged"], again["deactivated"]) == (0, 3, 0)

    res = CliRunner().invoke(cli, ["--database-url", db_url, "explain", "tuning", "te.null", "--scope", "{}"])
    assert res.exit_code == 0, res.output
    assert "rule: tuning_rule=evidence" in res.output
    assert "evidence ts    removes 40 succeeding 0.100 vs kept 0.100 of 60" in res.output
    assert "why: nothing applied: best candidate ts+0.05 refused: evidence p=" in res.output
    won = CliRunner().invoke(cli, ["--database-url", db_url, "explain", "tuning", "te.loose", "--json"])
    data = json.loads(won.output)
    winner = data["winner"]
    assert winner["label"] == "ts-0.1" and winner["evidence"][0]["p_value"] <= winner["threshold"]
    assert "evidence p=" in data["why"]
