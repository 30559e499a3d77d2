"""Runtime API for the bot (contract 4): strength steering at the top, execution overrides at the bottom."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

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

STRENGTH_OVERRIDES_OF_PATTERNS = """
SELECT
    learning.tunables() AS tunables,
    coalesce(
        (
            SELECT
                pg_catalog.jsonb_agg(
                    pg_catalog.jsonb_build_object(
                        'id', o.id, 'pattern_key', o.pattern_key, 'scope_subset', o.scope_subset,
                        'dir_a', o.dira, 'dir_e', o.dire, 'confidence', o.confidence_score,
                        'edge_raw_roi', o.edge_raw_roi, 'n', o.n
                    )
                    ORDER BY o.id
                )
            FROM public.pm_overrides AS o
            WHERE o.pattern_key = ANY(%(patterns)s::text [])
                AND o.action_category = 'pm_strength'
                AND o.status = 'active'
                AND (o.dira IS NOT NULL OR o.dire IS NOT NULL)
        ),
        '[]'::jsonb
    ) AS overrides
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
        return asdict(replace(self, matches=list(self.matches)))


def steer_max_eff(confidence: float, tun: SteeringTunables = SteeringTunables()) -> float:
    """STEER_MAX_eff = min(STEER_BASE + STEER_GAIN * conf, STEER_MAX_HARD)."""
    return min(tun.steer_base + tun.steer_gain * confidence, tun.steer_max_hard)


def apply_delta_with_headroom(x, delta):
    """x + delta * (1 - x) for delta >= 0, x + delta * x for delta < 0 (the plan's headroom step).

    Works on floats and on numpy arrays (the batch path) alike.
    """
    out = np.where(np.asarray(delta) >= 0, x + delta * (1.0 - x), x + delta * x)
    return float(out) if out.ndim == 0 else out


def position_size_frac(a: float) -> float:
    """The bot's sizing formula: 0.10 + 0.50 * A."""
    return 0.10 + 0.50 * a


def _steer_vectors(req, dims, dir_a, dir_e, conf, edge, a_flags, e_flags, tun: SteeringTunables) -> dict:
    """The SPEC 8 maths for many requests at once: the one implementation of the steering rule.

    req[j] is the request of match j; dims/dir_a/dir_e/conf/edge describe match j; a_flags/e_flags
    are per request. Returns per-match `kept`/`weight` and per-request arrays of every intermediate.
    """
    n = len(a_flags)
    strong = np.bincount(req, weights=(conf >= tun.conf_min).astype(float), minlength=n) > 0
    kept = ~strong[req] | (conf >= tun.conf_min)
    weight = np.where(kept, (1.0 + dims) * conf, 0.0)
    total = np.bincount(req, weights=weight, minlength=n)
    applied = total > 0
    safe = np.where(applied, total, 1.0)
    blend_dir_a = np.bincount(req, weights=weight * dir_a, minlength=n) / safe
    blend_dir_e = np.bincount(req, weights=weight * dir_e, minlength=n) / safe
    blend_conf = np.bincount(req, weights=weight * conf, minlength=n) / safe
    blend_edge = np.bincount(req, weights=weight * edge, minlength=n) / safe
    steer = np.minimum(tun.steer_base + tun.steer_gain * blend_conf, tun.steer_max_hard)
    delta_a = np.where(applied, steer * blend_dir_a + tun.base_bias * blend_edge, 0.0)
    delta_e = np.where(applied, steer * blend_dir_e, 0.0)

    def headroom(x, delta):
        return np.clip(apply_delta_with_headroom(x, delta), 0.0, 1.0)

    return {
        "kept": kept,
        "weight": weight,
        "applied": applied,
        "weight_sum": total,
        "dir_a": np.where(applied, blend_dir_a, 0.0),
        "dir_e": np.where(applied, blend_dir_e, 0.0),
        "confidence": np.where(applied, blend_conf, 0.0),
        "edge_raw_roi": np.where(applied, blend_edge, 0.0),
        "steer_max_eff": np.where(applied, steer, 0.0),
        "delta_a": delta_a,
        "delta_e": delta_e,
        "a_final": np.where(applied, headroom(a_flags, delta_a), a_flags),
        "e_final": np.where(applied, headroom(e_flags, delta_e), e_flags),
    }


def _result(v: dict, i: int, matches, a_flags: float, e_flags: float) -> StrengthResult:
    """Request i's StrengthResult from _steer_vectors output (arrays or, faster, lists)."""
    a_final = float(v["a_final"][i])
    return StrengthResult(
        a_final=a_final,
        e_final=float(v["e_final"][i]),
        position_size_frac=position_size_frac(a_final),
        delta_a=float(v["delta_a"][i]),
        delta_e=float(v["delta_e"][i]),
        dir_a=float(v["dir_a"][i]),
        dir_e=float(v["dir_e"][i]),
        confidence=float(v["confidence"][i]),
        steer_max_eff=float(v["steer_max_eff"][i]),
        matches=matches,
        a_flags=a_flags,
        e_flags=e_flags,
        edge_raw_roi=float(v["edge_raw_roi"][i]),
        weight_sum=float(v["weight_sum"][i]),
        applied=bool(v["applied"][i]),
    )


def steer_strength(
    matches: list[StrengthMatch], a_flags: float, e_flags: float, tun: SteeringTunables = SteeringTunables()
) -> StrengthResult:
    """The SPEC 8 maths on already matched overrides (pure); fills each match's kept and weight."""
    v = _steer_vectors(
        np.zeros(len(matches), dtype=np.int64),
        np.array([m.dims for m in matches], dtype=float),
        np.array([m.dir_a for m in matches], dtype=float),
        np.array([m.dir_e for m in matches], dtype=float),
        np.array([m.confidence for m in matches], dtype=float),
        np.array([m.edge_raw_roi for m in matches], dtype=float),
        np.array([a_flags], dtype=float),
        np.array([e_flags], dtype=float),
        tun,
    )
    for j, m in enumerate(matches):
        m.kept, m.weight = bool(v["kept"][j]), float(v["weight"][j])
    return _result(v, 0, matches, a_flags, e_flags)


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


class _BatchMatches(Sequence):
    """The matches of one batch request, made into StrengthMatch objects only when read."""

    __slots__ = ("_overrides", "_rows", "_kept", "_weight")

    def __init__(self, overrides, rows, kept, weight):
        self._overrides, self._rows, self._kept, self._weight = overrides, rows, kept, weight

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        m = StrengthMatch.from_json(self._overrides[int(self._rows[k])])
        m.kept, m.weight = bool(self._kept[k]), float(self._weight[k])
        return m

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def __repr__(self) -> str:
        return repr(list(self))


_ABSENT = object()


def _value_key(value):
    """A hashable key equal exactly when the jsonb values are equal (true is not 1; 1 is 1.0)."""
    if isinstance(value, (dict, list)):
        return ("j", json.dumps(value, sort_keys=True))
    return (value.__class__ is bool, value)


def _match_batch(overrides: list[dict], requests: list[tuple[str, dict]]) -> tuple[np.ndarray, np.ndarray]:
    """(request index, override index) of every override whose scope_subset is contained in the
    request's scope, for the same pattern. Overrides are grouped by (pattern, key set); within a group
    a request matches by equal values, found with a sorted search over mixed-radix codes."""
    keys = sorted({k for o in overrides for k in o["scope_subset"]})
    col = {k: i for i, k in enumerate(keys)}
    vocab: list[dict] = [{} for _ in keys]
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    codes_of: list[tuple[int, ...]] = []
    for j, o in enumerate(overrides):
        cols = tuple(sorted(col[k] for k in o["scope_subset"]))
        codes_of.append(
            tuple(vocab[c].setdefault(_value_key(o["scope_subset"][keys[c]]), len(vocab[c]) + 1) for c in cols)
        )
        groups.setdefault((o["pattern_key"], cols), []).append(j)
    codes = np.zeros((len(requests), max(len(keys), 1)), dtype=np.int64)  # 0: key absent or value unknown
    by_pattern_lists: dict[str, list[int]] = {}
    for i, (pattern, _) in enumerate(requests):
        by_pattern_lists.setdefault(pattern, []).append(i)
    by_pattern = {p: np.asarray(ix, dtype=np.int64) for p, ix in by_pattern_lists.items()}
    empty = np.zeros(0, dtype=np.int64)
    for c, k in enumerate(keys):
        known = vocab[c]
        try:  # scalar values: the key inline (the common case, and the hot loop)
            column = [
                0 if (v := scope.get(k, _ABSENT)) is _ABSENT else known.get((v.__class__ is bool, v), 0)
                for _, scope in requests
            ]
        except TypeError:  # an object or array value somewhere in this column
            column = [
                0 if (v := scope.get(k, _ABSENT)) is _ABSENT else known.get(_value_key(v), 0) for _, scope in requests
            ]
        codes[:, c] = column
    radix = np.array([len(v) + 1 for v in vocab] or [1], dtype=object)
    req_parts, ovr_parts = [], []
    for (pattern, cols), members in groups.items():
        reqs = by_pattern.get(pattern, empty)
        if reqs.size == 0:
            continue
        if not cols:  # the empty slice matches every request of its pattern
            req_parts.append(reqs)
            ovr_parts.append(np.full(reqs.size, members[0], dtype=np.int64))
            continue
        weights = np.cumprod([1, *radix[list(cols[:-1])]]).astype(object)
        if int(weights[-1]) * int(radix[cols[-1]]) >= 2**62:
            raise OverflowError("too many scope values to match in one batch")
        weights = weights.astype(np.int64)
        sub = codes[np.ix_(reqs, cols)]
        req_key = np.where((sub > 0).all(axis=1), sub @ weights, -1)
        ovr_key = np.array([codes_of[j] for j in members], dtype=np.int64) @ weights
        order = np.argsort(ovr_key)
        pos = np.searchsorted(ovr_key[order], req_key)
        pos = np.minimum(pos, len(order) - 1)
        hit = ovr_key[order][pos] == req_key
        req_parts.append(reqs[hit])
        ovr_parts.append(np.asarray(members, dtype=np.int64)[order][pos[hit]])
    if not req_parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    req, ovr = np.concatenate(req_parts), np.concatenate(ovr_parts)
    ids = np.array([o["id"] for o in overrides], dtype=np.int64)
    order = np.lexsort((ids[ovr], req))  # per request in override id order, as the single call
    return req[order], ovr[order]


def apply_strength_overrides_batch(conn, rows) -> list[StrengthResult]:
    """apply_strength_overrides for many (pattern_key, scope, a_flags, e_flags) rows in one round trip.

    The active overrides of the requested patterns are read once and matched in numpy (a scope key
    set per override group, equal values found by sorted search); the steering maths is the same
    vectorised function the single call uses.
    """
    rows = list(rows)
    if not rows:
        return []
    patterns = sorted({r[0] for r in rows})
    tunables, overrides = conn.execute(STRENGTH_OVERRIDES_OF_PATTERNS, {"patterns": patterns}).fetchone()
    tun = SteeringTunables.from_json(tunables)
    for o in overrides:
        if not isinstance(o["scope_subset"], dict):
            o["scope_subset"] = {}
    req, ovr = _match_batch(overrides, [(r[0], r[1] or {}) for r in rows])
    # Per-override attributes once, then gathered per match.
    per_override = {
        name: np.array([float(o.get(key) or 0.0) for o in overrides] or [0.0], dtype=float)[ovr]
        for name, key in (("dir_a", "dir_a"), ("dir_e", "dir_e"), ("conf", "confidence"), ("edge", "edge_raw_roi"))
    }
    dims = np.array([len(o["scope_subset"]) for o in overrides] or [0], dtype=float)[ovr]
    a_flags = np.array([float(r[2]) for r in rows], dtype=float)
    e_flags = np.array([float(r[3]) for r in rows], dtype=float)
    v = _steer_vectors(
        req,
        dims,
        per_override["dir_a"],
        per_override["dir_e"],
        per_override["conf"],
        per_override["edge"],
        a_flags,
        e_flags,
        tun,
    )
    bounds = np.searchsorted(req, np.arange(len(rows) + 1)).tolist()
    per_request = {k: a.tolist() for k, a in v.items() if k not in ("kept", "weight")}
    a_list, e_list = a_flags.tolist(), e_flags.tolist()
    return [
        _result(
            per_request,
            i,
            _BatchMatches(overrides, ovr[lo:hi], v["kept"][lo:hi], v["weight"][lo:hi]),
            a_list[i],
            e_list[i],
        )
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]


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
