"""explain tuning: a tuning lesson's rates, its best lever candidates and why the winner won."""

from __future__ import annotations

import json

import click

from lowcap_learning import db, output, simulate

LESSON_BY_SCOPE = """
SELECT
    l.id,
    l.pattern_key,
    l.scope_subset,
    l.n,
    l.stats,
    w.window_start,
    w.window_end,
    l.status
FROM public.learning_lessons AS l
CROSS JOIN LATERAL learning.tuning_lesson_window(l.stats, pg_catalog.now()) AS w
WHERE l.module = 'pm' AND l.lesson_type = 'tuning_rates' AND l.action_category = 'tuning'
    AND l.pattern_key = %(pattern_key)s::text AND l.scope_subset = %(scope)s::jsonb
"""

# The slice the runtime would use for a full scope: the active lesson with the most keys contained
# in it (ties: higher n, then scope_subset::text), as learning.select_execution_overrides ranks.
MOST_SPECIFIC_SLICE = """
SELECT l.scope_subset
FROM public.learning_lessons AS l
WHERE l.module = 'pm' AND l.lesson_type = 'tuning_rates' AND l.action_category = 'tuning'
    AND l.status = 'active' AND l.pattern_key = %(pattern_key)s::text AND %(scope)s::jsonb @> l.scope_subset
ORDER BY (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(l.scope_subset)) DESC, l.n DESC,
    l.scope_subset::text ASC
LIMIT 1
"""

SLICE_OVERRIDES = """
SELECT o.action_category, o.multiplier, o.tuning_params -> 'delta', o.status, o.last_updated_at
FROM public.pm_overrides AS o
WHERE o.pattern_key = %(pattern_key)s::text AND o.scope_subset = %(scope)s::jsonb
    AND o.action_category LIKE 'tuning\\_%%'
ORDER BY o.action_category
"""

TUNABLES = "SELECT learning.tunables()"
RUNTIME_SELECTION = """
SELECT action_category, multiplier, delta, scope_subset
FROM learning.select_execution_overrides(%(pattern_key)s::text, %(scope)s::jsonb)
ORDER BY action_category
"""


def _rate(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _decider(best: simulate.Candidate, other: simulate.Candidate) -> str:
    """Which ranking key (SPEC 7 order) puts best ahead of other."""
    a, b = (best.gained + 1) * (other.lost + 1), (other.gained + 1) * (best.lost + 1)
    if a != b:
        return f"smoothed ratio ({best.smoothed_ratio:.3f} vs {other.smoothed_ratio:.3f})"
    if best.gained != other.gained:
        return f"gained at an equal smoothed ratio ({best.gained} vs {other.gained})"
    if best.nonzero_levers != other.nonzero_levers:
        return f"fewer levers at equal counts ({best.nonzero_levers} vs {other.nonzero_levers})"
    if best.grid_steps != other.grid_steps:
        return f"fewer grid steps at equal counts ({best.grid_steps} vs {other.grid_steps})"
    return "the smaller (d_ts, d_halo, d_slope) tuple at equal counts"


def explain_data(conn, pattern_key: str, scope: dict, top: int = 5) -> dict:
    runtime = [
        {"action_category": r[0], "multiplier": r[1], "delta": r[2], "scope_subset": r[3]}
        for r in conn.execute(RUNTIME_SELECTION, {"pattern_key": pattern_key, "scope": json.dumps(scope)})
    ]
    row = conn.execute(LESSON_BY_SCOPE, {"pattern_key": pattern_key, "scope": json.dumps(scope)}).fetchone()
    note = None
    if row is None:
        # Not a slice itself: explain the slice that covers this scope (the one the runtime would use).
        covering = conn.execute(
            MOST_SPECIFIC_SLICE, {"pattern_key": pattern_key, "scope": json.dumps(scope)}
        ).fetchone()
        if covering is not None:
            note = (
                f"no lesson for exactly {simulate.fmt_scope(scope)}; the most specific slice it falls in is "
                f"{simulate.fmt_scope(covering[0])}"
            )
            scope = covering[0]
            row = conn.execute(LESSON_BY_SCOPE, {"pattern_key": pattern_key, "scope": json.dumps(scope)}).fetchone()
    if row is None:
        raise click.ClickException(
            f"no tuning lesson for pattern {pattern_key} covering scope {simulate.fmt_scope(scope)} "
            "(run `lowcap-learning run tuning-miner` first, or check the pattern key)"
        )
    status = row[7]
    lesson = simulate.Lesson(*row[:7])
    tunables = simulate.Tunables.from_json(conn.execute(TUNABLES).fetchone()[0])
    events = simulate.load_events(conn, [lesson])[lesson.id]
    result = simulate.simulate(events, tunables)
    best = result.best
    overrides = [
        {"action_category": r[0], "multiplier": r[1], "delta": r[2], "status": r[3], "last_updated_at": str(r[4])}
        for r in conn.execute(SLICE_OVERRIDES, {"pattern_key": pattern_key, "scope": json.dumps(scope)})
    ]
    if status != "active":
        why = "the lesson is inactive (its slice was not re-mined), so the materializer applies nothing from it"
    elif best is None:
        why = f"nothing applied: {result.no_override_reason}"
    else:
        runner_up = next((c for c in result.candidates if c.eligible and c.grid != best.grid), None)
        if best.rule == "evidence":
            test = (
                f"evidence {best.evidence_text()} ("
                + "; ".join(e.text() for e in best.evidence)
                + ")"
            )
        else:
            test = f"p={best.p_value:.4g} <= {tunables.max_p_value:g}"
        why = (
            f"{best.label} won: gained {best.gained} >= min_gain {max(tunables.min_gain, 1)}, ratio "
            f"{best.ratio_text()} >= {simulate.fmt_ratio(tunables.min_ratio)}x, {test}, dodge guard "
            + ("passed" if result.dodge_rate is not None and result.dodge_rate >= tunables.dodge_high else "not armed")
            + (
                f"; it beats the next eligible {runner_up.label} on {_decider(best, runner_up)}"
                if runner_up
                else "; it is the only eligible candidate"
            )
        )
    return {
        "pattern_key": pattern_key,
        "scope": scope,
        "note": note,
        "lesson": {"id": lesson.id, "status": status, "n": lesson.n, "stats": lesson.stats},
        "simulation": {
            "rule": tunables.tuning_rule,
            "alpha": tunables.max_false_override if tunables.tuning_rule == "evidence" else None,
            "threshold": result.threshold,
            "events": result.n_events,
            "inconsistent": result.n_inconsistent,
            "tested": result.tested,
            "skipped": result.skipped,
            "loosening_tested": result.loosening_tested,
            "dodge_rate": result.dodge_rate,
        },
        "top": [c.as_dict() for c in result.top(top)],
        "winner": best.as_dict() if best is not None and status == "active" else None,
        "why": why,
        "overrides": overrides,
        "runtime": runtime,
    }


def render(data: dict) -> list[str]:
    s = data["lesson"]["stats"]
    sim = data["simulation"]
    lines = [f"note: {data['note']}"] if data.get("note") else []
    lines += [
        f"tuning lesson: pattern={data['pattern_key']} scope={simulate.fmt_scope(data['scope'])} "
        f"| status={data['lesson']['status']} n={data['lesson']['n']}",
        f"  rates: wr={_rate(s.get('wr'))} fpr={_rate(s.get('fpr'))} mr={_rate(s.get('mr'))} dr={_rate(s.get('dr'))}"
        f" | acted={s.get('n_acted')} skipped={s.get('n_skipped')} misses={s.get('n_misses')} fps={s.get('n_fps')}"
        f" neutral={s.get('n_neutral')} | window=({s.get('window_start')}, {s.get('window_end')}]",
        f"  simulation: events={sim['events']} inconsistent={sim['inconsistent']} tested={sim['tested']} "
        f"skipped={sim['skipped']} | loosening tested: "
        + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in sim["loosening_tested"].items()),
        f"  rule: tuning_rule={sim.get('rule', 'plan')}"
        + (
            f" | each changed lever's own flips must beat the base rates, p <= alpha = max_false_override "
            f"{sim['alpha']:g} / tested {sim['tested']} = {sim['threshold']:.3g}"
            if sim.get("rule") == "evidence" and sim.get("threshold") is not None
            else " | sign test of gained vs lost at max_p_value"
        ),
        f"  top {len(data['top'])} candidates (smoothed ratio, then gained, fewer levers, fewer steps):",
        f"    {'candidate':<26}{'gained':>7}{'caught':>7}{'avoid':>7}{'lost':>6}{'added':>7}{'w.lost':>7}"
        f"{'ratio':>8}{'smooth':>8}{'p':>9}  verdict",
    ]
    for c in data["top"]:
        ratio = "inf" if c["ratio"] is None else simulate.fmt_ratio(c["ratio"]) + "x"
        verdict = "eligible" if c["eligible"] else c["reason"]
        lines.append(
            f"    {c['label']:<26}{c['gained']:>7}{c['misses_caught']:>7}{c['failures_avoided']:>7}{c['lost']:>6}"
            f"{c['failures_added']:>7}{c['wins_lost']:>7}{ratio:>8}{c['smoothed_ratio']:>8.3f}{c['p_value']:>9.3g}"
            f"  {verdict}"
        )
        for e in c.get("evidence") or []:
            what, ref = ("admits", "acted at base") if e["direction"] == "loosen" else ("removes", "kept")
            lines.append(
                f"        evidence {e['lever']:<5} {what} {e['flipped']} succeeding {_rate(e['rate'])} vs {ref} "
                f"{_rate(e['reference_rate'])} of {e['reference']}: p={e['p_value']:.3g} "
                f"({'<=' if e['p_value'] <= c['threshold'] else '>'} alpha {c['threshold']:.3g})"
            )
    lines.append(f"  why: {data['why']}")
    if data["overrides"]:
        lines.append("  overrides of this slice now:")
        for o in data["overrides"]:
            lines.append(
                f"    {o['action_category']:<18} multiplier={o['multiplier']:g} delta={o['delta']} "
                f"status={o['status']} updated={o['last_updated_at']}"
            )
    else:
        lines.append("  overrides of this slice now: none")
    if data["runtime"]:
        applied = ", ".join(
            f"{r['action_category']} x{r['multiplier']:g} (delta {r['delta']:g})" for r in data["runtime"]
        )
        where = simulate.fmt_scope(data["runtime"][0]["scope_subset"])
        lines.append(f"  runtime applies for this scope: slice {where}: {applied}")
    else:
        lines.append("  runtime applies for this scope: nothing (base thresholds)")
    return lines


def register(cli: click.Group) -> None:
    explain_group: click.Group = cli.commands["explain"]

    @explain_group.command("tuning")
    @click.argument("pattern_key")
    @click.option(
        "--scope",
        "scope_text",
        default="{}",
        show_default=True,
        help="A slice, or a full scope (then the most specific slice covering it), as a JSON object.",
    )
    @click.option("--top", default=5, show_default=True, type=click.IntRange(min=1), help="Candidates shown.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_obj
    def explain_tuning(obj, pattern_key: str, scope_text: str, top: int, as_json: bool) -> None:
        """Why a tuning slice has (or has no) execution override: rates, best candidates, verdict."""
        try:
            scope = json.loads(scope_text)
        except json.JSONDecodeError as err:
            raise click.BadParameter(f"--scope is not JSON: {err}") from None
        if not isinstance(scope, dict):
            raise click.BadParameter('--scope must be a JSON object, e.g. \'{"timeframe": "15m"}\'')
        with db.connection(obj["url"]) as conn:
            data = explain_data(conn, pattern_key, scope, top)
        if as_json:
            click.echo(output.dumps(data, indent=2))
            return
        for line in render(data):
            click.echo(line)
