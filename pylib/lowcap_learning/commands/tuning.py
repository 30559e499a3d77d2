"""explain tuning: a tuning lesson's rates, its best lever candidates and why the winner won."""

from __future__ import annotations

import json

import click

from lowcap_learning import db, simulate

LESSON_BY_SCOPE = """
SELECT
    l.id,
    l.pattern_key,
    l.scope_subset,
    l.n,
    l.stats,
    coalesce(
        (l.stats ->> 'window_start')::timestamptz,
        pg_catalog.now()
        - pg_catalog.make_interval(secs => (learning.tunables() ->> 'lookback_days')::float8 * 86400)
    ),
    coalesce((l.stats ->> 'window_end')::timestamptz, pg_catalog.now()),
    l.status
FROM public.learning_lessons AS l
WHERE l.module = 'pm' AND l.lesson_type = 'tuning_rates' AND l.action_category = 'tuning'
    AND l.pattern_key = %(pattern_key)s::text AND l.scope_subset = %(scope)s::jsonb
"""

SLICE_OVERRIDES = """
SELECT o.action_category, o.multiplier, o.tuning_params -> 'delta', o.status, o.last_updated_at
FROM public.pm_overrides AS o
WHERE o.pattern_key = %(pattern_key)s::text AND o.scope_subset = %(scope)s::jsonb
    AND o.action_category LIKE 'tuning\\_%%'
ORDER BY o.action_category
"""

TUNABLES = "SELECT learning.tunables()"


def _rate(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def explain_data(conn, pattern_key: str, scope: dict, top: int = 5) -> dict:
    row = conn.execute(LESSON_BY_SCOPE, {"pattern_key": pattern_key, "scope": json.dumps(scope)}).fetchone()
    if row is None:
        raise click.ClickException(
            f"no tuning lesson for pattern {pattern_key} scope {simulate.fmt_scope(scope)} "
            "(run `lowcap-learning run tuning-miner` first, or check the scope: it must equal the slice)"
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
        why = (
            f"{best.label} won: gained {best.gained} >= min_gain {max(tunables.min_gain, 1)}, ratio "
            f"{best.ratio_text()} >= {simulate.fmt_ratio(tunables.min_ratio)}x, p={best.p_value:.4g} <= "
            f"{tunables.max_p_value:g}, dodge guard "
            + ("passed" if result.dodge_rate is not None and result.dodge_rate >= tunables.dodge_high else "not armed")
            + f"; it ranks first by smoothed ratio {best.smoothed_ratio:.3f}"
            + (
                f" (next eligible: {runner_up.label} at {runner_up.smoothed_ratio:.3f}, gained {runner_up.gained})"
                if runner_up
                else " (the only eligible candidate)"
            )
        )
    return {
        "pattern_key": pattern_key,
        "scope": scope,
        "lesson": {"id": lesson.id, "status": status, "n": lesson.n, "stats": lesson.stats},
        "simulation": {
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
    }


def render(data: dict) -> list[str]:
    s = data["lesson"]["stats"]
    sim = data["simulation"]
    lines = [
        f"tuning lesson: pattern={data['pattern_key']} scope={simulate.fmt_scope(data['scope'])} "
        f"| status={data['lesson']['status']} n={data['lesson']['n']}",
        f"  rates: wr={_rate(s.get('wr'))} fpr={_rate(s.get('fpr'))} mr={_rate(s.get('mr'))} dr={_rate(s.get('dr'))}"
        f" | acted={s.get('n_acted')} skipped={s.get('n_skipped')} misses={s.get('n_misses')} fps={s.get('n_fps')}"
        f" neutral={s.get('n_neutral')} | window=({s.get('window_start')}, {s.get('window_end')}]",
        f"  simulation: events={sim['events']} inconsistent={sim['inconsistent']} tested={sim['tested']} "
        f"skipped={sim['skipped']} | loosening tested: "
        + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in sim["loosening_tested"].items()),
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
    return lines


def register(cli: click.Group) -> None:
    explain_group: click.Group = cli.commands["explain"]

    @explain_group.command("tuning")
    @click.argument("pattern_key")
    @click.option("--scope", "scope_text", default="{}", show_default=True, help="The slice, a JSON object.")
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
            click.echo(json.dumps(data, indent=2, default=str))
            return
        for line in render(data):
            click.echo(line)
