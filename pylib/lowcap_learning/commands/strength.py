"""explain strength: which pm_strength overrides match a scope and how they steer A and E."""

from __future__ import annotations

import json

import click

from lowcap_learning import db, output, runtime

TUNABLES = "SELECT learning.tunables()"
# A pattern is known to strength learning once it has a pm_strength lesson or override (any status).
KNOWN_PATTERN = """
SELECT EXISTS (
    SELECT FROM public.learning_lessons AS l
    WHERE l.pattern_key = %(pattern_key)s::text AND l.lesson_type = 'pm_strength'
) OR EXISTS (
    SELECT FROM public.pm_overrides AS o
    WHERE o.pattern_key = %(pattern_key)s::text AND o.action_category = 'pm_strength'
)
"""


def _scope(text: str) -> dict:
    try:
        scope = json.loads(text)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not JSON: {err.msg}", param_hint="--scope") from err
    if not isinstance(scope, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--scope")
    return scope


def _unit(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be in [0, 1]", param_hint=name)
    return value


def explain_data(conn, pattern_key: str, scope: dict, a: float, e: float) -> dict:
    result = runtime.apply_strength_overrides(conn, pattern_key, scope, a, e)
    tun = runtime.SteeringTunables.from_json(conn.execute(TUNABLES).fetchone()[0])
    data = result.as_dict()
    data.update(
        pattern_key=pattern_key,
        scope=scope,
        tunables={k: getattr(tun, k) for k in runtime.SteeringTunables.__dataclass_fields__},
        conf_min_filter=any(m.confidence >= tun.conf_min for m in result.matches),
    )
    return data


def render(d: dict) -> list[str]:
    t = d["tunables"]
    scope = json.dumps(d["scope"], sort_keys=True)
    lines = [
        f"strength: pattern={d['pattern_key']} scope={scope} | A_flags={d['a_flags']:.4f} E_flags={d['e_flags']:.4f}"
    ]
    if not d["matches"]:
        lines.append("  no active pm_strength override matches: A and E pass through unchanged")
    else:
        lines.append(f"  matches ({len(d['matches'])}, scope_subset contained in the scope):")
        lines.append(
            f"    {'id':>6}  {'dims':>4}{'dirA':>9}{'dirE':>9}{'conf':>8}{'edge':>9}{'n':>7}  {'kept':<5}"
            f"{'weight':>8}{'share':>7}  scope_subset"
        )
        total = d["weight_sum"] or 0.0
        for m in d["matches"]:
            share = m["weight"] / total if total > 0 else 0.0
            n = m["n"] if m["n"] is not None else "-"
            lines.append(
                f"    {m['override_id']:>6}  {m['dims']:>4}{m['dir_a']:>9.4f}{m['dir_e']:>9.4f}{m['confidence']:>8.4f}"
                f"{m['edge_raw_roi']:>9.4f}{n:>7}  {'yes' if m['kept'] else 'no':<5}"
                f"{m['weight']:>8.4f}{share:>7.1%}  {json.dumps(m['scope_subset'], sort_keys=True)}"
            )
        if d["conf_min_filter"]:
            dropped = sum(1 for m in d["matches"] if not m["kept"])
            lines.append(f"  CONF_MIN {t['conf_min']:.2f}: a match reaches it, so {dropped} weaker match(es) dropped")
        else:
            lines.append(f"  CONF_MIN {t['conf_min']:.2f}: no match reaches it, so every match is kept")
        lines.append("  weight w = (1 + dims) * confidence")
    if d["applied"]:
        lines += [
            f"  blended: dirA={d['dir_a']:.4f} dirE={d['dir_e']:.4f} conf={d['confidence']:.4f} "
            f"edge_raw_roi={d['edge_raw_roi']:.4f} (sum w={d['weight_sum']:.4f})",
            f"  STEER_MAX_eff = min({t['steer_base']:g} + {t['steer_gain']:g}*{d['confidence']:.4f}, "
            f"{t['steer_max_hard']:g}) = {d['steer_max_eff']:.4f}",
            f"  deltaA = {d['steer_max_eff']:.4f}*{d['dir_a']:.4f} + {t['base_bias']:g}*{d['edge_raw_roi']:.4f}"
            f" = {d['delta_a']:+.4f};  deltaE = {d['steer_max_eff']:.4f}*{d['dir_e']:.4f} = {d['delta_e']:+.4f}",
            "  headroom: x + d*(1-x) for d >= 0, x + d*x for d < 0; clamp [0, 1]",
        ]
    elif d["matches"]:
        lines.append("  every kept weight is 0 (confidence 0): A and E pass through unchanged")
    lines.append(
        f"  result: A {d['a_flags']:.4f} -> {d['a_final']:.4f} | E {d['e_flags']:.4f} -> {d['e_final']:.4f}"
        f" | position_size_frac = 0.10 + 0.50*A = {d['position_size_frac']:.4f}"
    )
    return lines


def register(cli: click.Group) -> None:
    explain = cli.commands["explain"]

    @explain.command("strength")
    @click.argument("pattern_key")
    @click.option("--scope", "scope_json", default="{}", show_default=True, help="The action's scope (JSON object).")
    @click.option("--a", "a_flags", type=float, default=0.5, show_default=True, help="A from the flags, in [0, 1].")
    @click.option("--e", "e_flags", type=float, default=0.5, show_default=True, help="E from the flags, in [0, 1].")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_obj
    def explain_strength(obj, pattern_key: str, scope_json: str, a_flags: float, e_flags: float, as_json: bool) -> None:
        """How the pm_strength overrides matching PATTERN_KEY and --scope steer A and E."""
        scope = _scope(scope_json)
        a = _unit(a_flags, "--a")
        e = _unit(e_flags, "--e")
        with db.connection(obj["url"]) as conn:
            try:
                data = explain_data(conn, pattern_key, scope, a, e)
            except ValueError as err:  # the runtime's input rule (pattern_key, scope values)
                raise click.BadParameter(str(err)) from None
            if not conn.execute(KNOWN_PATTERN, {"pattern_key": pattern_key}).fetchone()[0]:
                raise click.ClickException(
                    f"unknown pattern {pattern_key!r}: no pm_strength lesson or override has this pattern_key "
                    "(keys look like pm.uptrend.S1.entry)"
                )
        if as_json:
            click.echo(output.dumps(data, indent=2, sort_keys=True))
            return
        for line in render(data):
            click.echo(line)
