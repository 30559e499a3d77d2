"""explain tuning: a tuning lesson's rates, its best lever candidates and why the winner won."""

from __future__ import annotations

import json

import click

from lowcap_learning import db, output, simulate

# The active slices of a pattern whose scope_subset the given scope contains (PostgreSQL's `@>`),
# named when no override applies to the scope (unranked: the ranking is the runtime's, design §12).
COVERING_SLICES = """
SELECT l.scope_subset
FROM public.learning_lessons AS l
WHERE l.module = 'pm' AND l.lesson_type = 'tuning_rates' AND l.action_category = 'tuning'
    AND l.status = 'active' AND l.pattern_key = %(pattern_key)s::text AND %(scope)s::jsonb @> l.scope_subset
ORDER BY l.scope_subset::text COLLATE "C"
"""

SLICE_OVERRIDES = """
SELECT o.action_category, o.multiplier, o.tuning_params -> 'delta', o.status, o.last_updated_at
FROM public.pm_overrides AS o
WHERE o.pattern_key = %(pattern_key)s::text AND o.scope_subset = %(scope)s::jsonb
    AND o.action_category LIKE 'tuning\\_%%'
ORDER BY o.action_category
"""

RUNTIME_SELECTION = """
SELECT action_category, multiplier, delta, scope_subset
FROM learning.select_execution_overrides(%(pattern_key)s::text, %(scope)s::jsonb)
ORDER BY action_category
"""


# The words for the ranking key (simulate.ranking_keys) that puts the winner ahead of the runner-up.
_DECIDERS = {
    "smoothed ratio": "smoothed ratio ({a.smoothed_ratio:.3f} vs {b.smoothed_ratio:.3f})",
    "gained": "gained at an equal smoothed ratio ({a.gained} vs {b.gained})",
    "levers": "fewer levers at equal counts ({a.nonzero_levers} vs {b.nonzero_levers})",
    "grid steps": "fewer grid steps at equal counts ({a.grid_steps} vs {b.grid_steps})",
}
_SMALLER_TUPLE = "the smaller (d_ts, d_halo, d_slope) tuple at equal counts"


def _decider(best: simulate.Candidate, other: simulate.Candidate) -> str:
    """Which ranking key (design §10) puts best ahead of other."""
    text = _DECIDERS.get(simulate.deciding_key(best, other), _SMALLER_TUPLE)
    return text.format(a=best, b=other)


def _lesson(conn, pattern_key: str, scope: dict) -> simulate.Lesson | None:
    """The tuning lesson of exactly this slice (any status), or None."""
    found = simulate.load_lessons(conn, pattern_key=pattern_key, scope=scope)
    return found[0] if found else None


def _slice_lesson(conn, pattern_key: str, scope: dict, runtime: list[dict]) -> tuple[simulate.Lesson, dict, str | None]:
    """The lesson to explain for scope: its own slice's, else the slice whose overrides the runtime
    applies to it (learning.select_execution_overrides, design §12), with a note saying so."""
    lesson = _lesson(conn, pattern_key, scope)
    if lesson is not None:
        return lesson, scope, None
    if runtime:
        applied = runtime[0]["scope_subset"]
        lesson = _lesson(conn, pattern_key, applied)
        if lesson is not None:
            note = (
                f"no lesson for exactly {simulate.fmt_scope(scope)}; the runtime applies the overrides of slice "
                f"{simulate.fmt_scope(applied)} to it"
            )
            return lesson, applied, note
    covering = [r[0] for r in conn.execute(COVERING_SLICES, {"pattern_key": pattern_key, "scope": json.dumps(scope)})]
    if covering:
        raise click.ClickException(
            f"no tuning lesson for pattern {pattern_key} and scope {simulate.fmt_scope(scope)}, and no tuning "
            "override applies to it; the active slices covering it: "
            + ", ".join(simulate.fmt_scope(c) for c in covering)
            + " (pass one as --scope)"
        )
    raise click.ClickException(
        f"no tuning lesson for pattern {pattern_key} covering scope {simulate.fmt_scope(scope)} "
        "(run `lowcap-learning run tuning-miner` first, or check the pattern key)"
    )


def _why(status: str, result: simulate.SimulationResult, tunables: simulate.Tunables) -> str:
    """Why the slice has its override (or none): the checks the winner passed and what beat the next."""
    best = result.best
    if status != "active":
        return "the lesson is inactive (its slice was not re-mined), so the materializer applies nothing from it"
    if best is None:
        return f"nothing applied: {result.no_override_reason}"
    runner_up = next((c for c in result.candidates if c.eligible and c.grid != best.grid), None)
    if best.rule == "evidence":
        test = f"evidence {best.evidence_text()} (" + "; ".join(e.text() for e in best.evidence) + ")"
    else:
        test = f"p={best.p_value:.4g} <= {tunables.max_p_value:g}"
    return (
        f"{best.label} won: gained {best.gained} >= min_gain {max(tunables.min_gain, 1)}, ratio "
        f"{best.ratio_text()} >= {simulate.fmt_ratio(tunables.min_ratio)}x, {test}, dodge guard "
        + ("passed" if simulate.dodge_guard_armed(result.dodge_rate, tunables) else "not armed")
        + (
            f"; it beats the next eligible {runner_up.label} on {_decider(best, runner_up)}"
            if runner_up
            else "; it is the only eligible candidate"
        )
    )


def explain_data(conn, pattern_key: str, scope: dict, top: int = 5) -> dict:
    runtime = [
        {"action_category": r[0], "multiplier": r[1], "delta": r[2], "scope_subset": r[3]}
        for r in conn.execute(RUNTIME_SELECTION, {"pattern_key": pattern_key, "scope": json.dumps(scope)})
    ]
    lesson, scope, note = _slice_lesson(conn, pattern_key, scope, runtime)
    status = lesson.status
    tunables = simulate.Tunables.from_json(conn.execute(simulate.TUNABLES).fetchone()[0])
    events = simulate.load_events(conn, [lesson])[lesson.id]
    result = simulate.simulate(events, tunables)
    best = result.best
    overrides = [
        {"action_category": r[0], "multiplier": r[1], "delta": r[2], "status": r[3], "last_updated_at": str(r[4])}
        for r in conn.execute(SLICE_OVERRIDES, {"pattern_key": pattern_key, "scope": json.dumps(scope)})
    ]
    why = _why(status, result, tunables)
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
    rate = simulate.rate_text
    sim = data["simulation"]
    lines = [f"note: {data['note']}"] if data.get("note") else []
    lines += [
        f"tuning lesson: pattern={data['pattern_key']} scope={simulate.fmt_scope(data['scope'])} "
        f"| status={data['lesson']['status']} n={data['lesson']['n']}",
        f"  rates: wr={rate(s.get('wr'))} fpr={rate(s.get('fpr'))} mr={rate(s.get('mr'))} dr={rate(s.get('dr'))}"
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
            lines.append(
                f"        evidence {simulate.lever_flips_text(e, 5)}: p={e['p_value']:.3g} "
                f"({'<=' if simulate.within_alpha(e['p_value'], c['threshold']) else '>'} alpha {c['threshold']:.3g})"
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
