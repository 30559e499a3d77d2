"""Runtime API for the bot (contract 4): strength steering at the top, execution overrides at the bottom."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# ---------------------------------------------------------------------------------------------
# Strength part (strength helper): apply_strength_overrides, StrengthResult, batch form.
#
# SPEC 8: matches = active pm_strength overrides whose scope_subset is contained in the scope (one
# indexed query); the conditional CONF_MIN filter, the (1 + dims) x confidence blend, the dynamic
# steering strength and the headroom step are done here, in Python, with every intermediate kept.

STRENGTH_MATCHES = """
SELECT
    learning.tunables() AS tunables,
    coalesce(
        (
            SELECT
                pg_catalog.jsonb_agg(
                    pg_catalog.jsonb_build_object(
                        'id', o.id, 'scope_subset', o.scope_subset, 'dir_a', o.dira, 'dir_e', o.dire,
                        'confidence', o.confidence_score, 'edge_raw_roi', o.edge_raw_roi, 'n', o.n
                    )
                    ORDER BY o.id
                )
            FROM public.pm_overrides AS o
            WHERE o.pattern_key = %(pattern_key)s::text
                AND o.action_category = 'pm_strength'
                AND o.status = 'active'
                AND o.scope_subset <@ %(scope)s::jsonb
                AND (o.dira IS NOT NULL OR o.dire IS NOT NULL)
        ),
        '[]'::jsonb
    ) AS matches
"""

STRENGTH_MATCHES_BATCH = """
WITH req AS (
    SELECT r.i, r.pattern_key, r.scope
    FROM pg_catalog.jsonb_to_recordset(%(rows)s::jsonb) AS r (i integer, pattern_key text, scope jsonb)
)
SELECT
    learning.tunables() AS tunables,
    coalesce(
        (
            SELECT
                pg_catalog.jsonb_agg(
                    pg_catalog.jsonb_build_object(
                        'i', r.i, 'id', o.id, 'scope_subset', o.scope_subset, 'dir_a', o.dira,
                        'dir_e', o.dire, 'confidence', o.confidence_score,
                        'edge_raw_roi', o.edge_raw_roi, 'n', o.n
                    )
                    ORDER BY r.i, o.id
                )
            FROM req AS r
            INNER JOIN public.pm_overrides AS o
                ON o.pattern_key = r.pattern_key
                AND o.action_category = 'pm_strength'
                AND o.status = 'active'
                AND o.scope_subset <@ r.scope
            WHERE o.dira IS NOT NULL OR o.dire IS NOT NULL
        ),
        '[]'::jsonb
    ) AS matches
"""


@dataclass(frozen=True)
class SteeringTunables:
    """The section-10 values the runtime uses (from learning.tunables())."""

    conf_min: float = 0.40
    steer_base: float = 0.03
    steer_gain: float = 0.20
    steer_max_hard: float = 0.22
    base_bias: float = 0.0

    @classmethod
    def from_json(cls, tun: dict | None) -> SteeringTunables:
        tun = tun or {}
        defaults = cls()
        return cls(**{k: float(tun.get(k, getattr(defaults, k))) for k in cls.__dataclass_fields__})


@dataclass
class StrengthMatch:
    """One matched override, its blend weight (0 when dropped by the CONF_MIN filter)."""

    override_id: int
    scope_subset: dict
    dims: int
    dir_a: float
    dir_e: float
    confidence: float
    edge_raw_roi: float
    n: int | None
    kept: bool = True
    weight: float = 0.0

    @classmethod
    def from_json(cls, m: dict) -> StrengthMatch:
        scope = m.get("scope_subset") or {}
        return cls(
            override_id=m["id"],
            scope_subset=scope,
            dims=len(scope),
            dir_a=float(m.get("dir_a") or 0.0),
            dir_e=float(m.get("dir_e") or 0.0),
            confidence=float(m.get("confidence") or 0.0),
            edge_raw_roi=float(m.get("edge_raw_roi") or 0.0),
            n=m.get("n"),
        )


@dataclass
class StrengthResult:
    """A and E after strength steering, with every intermediate for logs and explain."""

    a_final: float
    e_final: float
    position_size_frac: float
    delta_a: float
    delta_e: float
    dir_a: float
    dir_e: float
    confidence: float
    steer_max_eff: float
    matches: list[StrengthMatch] = field(default_factory=list)
    a_flags: float = 0.0
    e_flags: float = 0.0
    edge_raw_roi: float = 0.0
    weight_sum: float = 0.0
    applied: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def steer_max_eff(confidence: float, tun: SteeringTunables = SteeringTunables()) -> float:
    """STEER_MAX_eff = min(STEER_BASE + STEER_GAIN * conf, STEER_MAX_HARD)."""
    return min(tun.steer_base + tun.steer_gain * confidence, tun.steer_max_hard)


def apply_delta_with_headroom(x: float, delta: float) -> float:
    """x + delta * (1 - x) for delta >= 0, x + delta * x for delta < 0 (the plan's headroom step)."""
    return x + delta * (1.0 - x) if delta >= 0 else x + delta * x


def _clamp01(x: float) -> float:
    return min(1.0, max(0.0, x))


def position_size_frac(a: float) -> float:
    """The bot's sizing formula: 0.10 + 0.50 * A."""
    return 0.10 + 0.50 * a


def steer_strength(
    matches: list[StrengthMatch], a_flags: float, e_flags: float, tun: SteeringTunables = SteeringTunables()
) -> StrengthResult:
    """The SPEC 8 maths on already matched overrides (pure; used by the single and batch forms)."""
    if any(m.confidence >= tun.conf_min for m in matches):
        for m in matches:
            m.kept = m.confidence >= tun.conf_min
    for m in matches:
        m.weight = (1 + m.dims) * m.confidence if m.kept else 0.0
    total = sum(m.weight for m in matches)
    if not matches or total <= 0:
        return StrengthResult(
            a_final=a_flags, e_final=e_flags, position_size_frac=position_size_frac(a_flags),
            delta_a=0.0, delta_e=0.0, dir_a=0.0, dir_e=0.0, confidence=0.0, steer_max_eff=0.0,
            matches=matches, a_flags=a_flags, e_flags=e_flags, weight_sum=total, applied=False,
        )
    dir_a = sum(m.weight * m.dir_a for m in matches) / total
    dir_e = sum(m.weight * m.dir_e for m in matches) / total
    conf = sum(m.weight * m.confidence for m in matches) / total
    edge = sum(m.weight * m.edge_raw_roi for m in matches) / total
    steer = steer_max_eff(conf, tun)
    delta_a = steer * dir_a + tun.base_bias * edge
    delta_e = steer * dir_e
    a_final = _clamp01(apply_delta_with_headroom(a_flags, delta_a))
    e_final = _clamp01(apply_delta_with_headroom(e_flags, delta_e))
    return StrengthResult(
        a_final=a_final, e_final=e_final, position_size_frac=position_size_frac(a_final),
        delta_a=delta_a, delta_e=delta_e, dir_a=dir_a, dir_e=dir_e, confidence=conf, steer_max_eff=steer,
        matches=matches, a_flags=a_flags, e_flags=e_flags, edge_raw_roi=edge, weight_sum=total, applied=True,
    )


def apply_strength_overrides(conn, pattern_key: str, scope: dict, a_flags: float, e_flags: float) -> StrengthResult:
    """Steer the flags' A and E by the active pm_strength overrides matching (pattern_key, scope).

    One round trip: the tunables and every active override whose scope_subset is contained in scope.
    With no match (or all weights 0) A and E pass through unchanged.
    """
    tunables, matches = conn.execute(
        STRENGTH_MATCHES, {"pattern_key": pattern_key, "scope": json.dumps(scope or {})}
    ).fetchone()
    tun = SteeringTunables.from_json(tunables)
    return steer_strength([StrengthMatch.from_json(m) for m in matches], float(a_flags), float(e_flags), tun)


def apply_strength_overrides_batch(conn, rows) -> list[StrengthResult]:
    """apply_strength_overrides for many (pattern_key, scope, a_flags, e_flags) rows in one round trip."""
    rows = list(rows)
    if not rows:
        return []
    payload = [{"i": i, "pattern_key": r[0], "scope": r[1] or {}} for i, r in enumerate(rows)]
    tunables, matches = conn.execute(STRENGTH_MATCHES_BATCH, {"rows": json.dumps(payload)}).fetchone()
    tun = SteeringTunables.from_json(tunables)
    by_row: dict[int, list[StrengthMatch]] = {}
    for m in matches:
        by_row.setdefault(m["i"], []).append(StrengthMatch.from_json(m))
    return [steer_strength(by_row.get(i, []), float(r[2]), float(r[3]), tun) for i, r in enumerate(rows)]


# ---------------------------------------------------------------------------------------------
# Execution part (tuning helper): the most specific tuning override per category, applied exactly.

SELECT_EXECUTION_OVERRIDES = """
SELECT action_category, multiplier, delta, scope_subset, n, override_id
FROM learning.select_execution_overrides(%(pattern_key)s::text, %(scope)s::jsonb)
"""


@dataclass(frozen=True)
class ExecutionOverride:
    action_category: str
    multiplier: float
    delta: float | None
    scope_subset: dict
    n: int | None
    override_id: int


@dataclass
class ExecutionResult:
    """The thresholds after overrides (`thresholds`), the base ones, and the overrides applied."""

    base: dict
    thresholds: dict
    applied: list[ExecutionOverride] = field(default_factory=list)


def apply_execution_overrides(conn, pattern_key: str, scope: dict, base: dict) -> ExecutionResult:
    """Apply the most specific active tuning override per category to {ts_min, halo_max, slope_min}.

    ts_min x tuning_ts_min.multiplier, halo_max x tuning_halo.multiplier, slope_min + the
    tuning_slope_min delta (tuning_params.delta); no blending. Other keys of base pass through.
    """
    rows = conn.execute(
        SELECT_EXECUTION_OVERRIDES, {"pattern_key": pattern_key, "scope": json.dumps(scope or {})}
    ).fetchall()
    applied = [ExecutionOverride(*row) for row in rows]
    out = dict(base)
    for o in applied:
        if o.action_category == "tuning_ts_min" and out.get("ts_min") is not None:
            out["ts_min"] = out["ts_min"] * o.multiplier
        elif o.action_category == "tuning_halo" and out.get("halo_max") is not None:
            out["halo_max"] = out["halo_max"] * o.multiplier
        elif o.action_category == "tuning_slope_min" and out.get("slope_min") is not None:
            out["slope_min"] = out["slope_min"] + (o.delta or 0.0)
    return ExecutionResult(base=dict(base), thresholds=out, applied=applied)
