"""Runtime API for the bot: strength steering (design §13) at the top, execution overrides (design §12)
at the bottom."""

from __future__ import annotations

import copy
import gc
import json
import math
import reprlib
import weakref
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from functools import cached_property, partial
from itertools import chain, repeat
from operator import itemgetter

import numpy as np

# ---------------------------------------------------------------------------------------------
# Strength part: apply_strength_overrides, StrengthResult, batch form (design §13).
#
# Matching is PostgreSQL's `scope_subset <@ scope` over the active pm_strength overrides, or, for
# overrides kept in the connection's cache (_Cache), its exact equivalent on them in one matcher
# (_MatchIndex) for the single call (a batch of one) and the batch: for overrides whose values are
# all scalars, containment in a scope is equality of the scope's values at the override's keys;
# any other override is matched by PostgreSQL. The steering maths is one vectorised function
# (_steer_vectors) for the single call, the batch and steer_strength, with every intermediate kept.

# The overrides come back as one array per column (binary protocol; the scopes as the elements of
# one JSON array, parsed in one call): cheaper on both sides than one JSON object per override.
# Every aggregate of one Agg node sees the rows in the same order, so the arrays line up. Rows whose
# scope_subset is not an object never match (containment in an object scope is false for them), in
# the single and the batch form.
_OVERRIDE_ARRAYS = """
    pg_catalog.array_agg(o.id) AS ids,
    pg_catalog.string_agg(o.scope_subset::text, ',') AS scope_subsets,
    pg_catalog.array_agg(coalesce(o.dira, 0.0)) AS dir_a,
    pg_catalog.array_agg(coalesce(o.dire, 0.0)) AS dir_e,
    pg_catalog.array_agg(coalesce(o.confidence_score, 0.0)) AS confidence,
    pg_catalog.array_agg(coalesce(o.edge_raw_roi, 0.0)) AS edge_raw_roi,
    pg_catalog.array_agg(o.n) AS n"""

# Which overrides steer (design §13), one rule for every query below: active pm_strength rows with
# a direction (legacy rows with both dira and dire NULL never match). status = 'active' is also the
# predicate of the partial index pm_overrides_active_match_idx.
_STEERING = """o.action_category = 'pm_strength'
    AND o.status = 'active'
    AND (o.dira IS NOT NULL OR o.dire IS NOT NULL)"""


@dataclass(frozen=True)
class SteeringTunables:
    """The design §3 values the runtime uses (from learning.tunables())."""

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

    @classmethod
    def from_row(cls, row: dict) -> SteeringTunables:
        """From a query's _TUNABLES columns (NULL: the tunable is unknown, its default applies)."""
        defaults = cls()
        return cls(**{k: getattr(defaults, k) if row[k] is None else row[k] for k in cls.__dataclass_fields__})


# The tunables in the same round trip as the overrides, as float columns (the client parses no
# JSON for them); learning.tunables() runs once, as the record's one function call.
_TUNABLES = "pg_catalog.jsonb_to_record(learning.tunables()) AS t ({})".format(
    ", ".join(f"{k} double precision" for k in SteeringTunables.__dataclass_fields__)
)

# The single call: the tunables and the overrides whose scope_subset is contained in the scope, in
# one indexed scan (pm_overrides_active_match_idx covers every column read: an index-only scan).
STRENGTH_MATCHES = f"""
SELECT
    t.*,
    m.*
FROM {_TUNABLES}
CROSS JOIN (
    SELECT{_OVERRIDE_ARRAYS}
    FROM public.pm_overrides AS o
    WHERE o.pattern_key = %(pattern_key)s::text
        AND o.scope_subset <@ %(scope)s::jsonb
        AND {_STEERING}
) AS m
"""

# The batch: the tunables and every steering override of the patterns asked (matched in
# _MatchIndex, which agrees with the containment above; see there).
STRENGTH_OVERRIDES_OF_PATTERNS = f"""
SELECT
    t.*,
    m.*
FROM {_TUNABLES}
CROSS JOIN (
    SELECT
        pg_catalog.array_agg(o.pattern_key) AS pattern_keys,{_OVERRIDE_ARRAYS}
    FROM public.pm_overrides AS o
    WHERE o.pattern_key = ANY(%(patterns)s::text [])
        AND pg_catalog.jsonb_typeof(o.scope_subset) = 'object'
        AND {_STEERING}
) AS m
"""

_COLUMNS = ("ids", "scope_subsets", "dir_a", "dir_e", "confidence", "edge_raw_roi", "n")


def _own_copy(scope):
    """A scope_subset the caller may change: a dict copied (deeply when a value is a list or an
    object; learned overrides never have one)."""
    if not isinstance(scope, dict):
        return scope
    if any(isinstance(v, (dict, list)) for v in scope.values()):
        return copy.deepcopy(scope)
    return dict(scope)


@dataclass(frozen=True)
class _Overrides:
    """Overrides as columns, sorted by id (the order matches are reported in)."""

    ids: list
    scope_subsets: list
    dir_a: list
    dir_e: list
    confidence: list
    edge_raw_roi: list
    n: list
    pattern_keys: list | None = None

    @classmethod
    def from_row(cls, row: dict) -> _Overrides:
        """From the query's row of arrays (all NULL when nothing matched)."""
        names = [k for k in (*_COLUMNS, "pattern_keys") if k in row]
        columns = {k: row[k] or [] for k in names}
        columns["scope_subsets"] = json.loads(
            f"[{row['scope_subsets'] or ''}]", parse_float=_parse_float, parse_int=_parse_int
        )
        ids = columns["ids"]
        if ids != sorted(ids):
            order = sorted(range(len(ids)), key=ids.__getitem__)
            columns = {k: [col[i] for i in order] for k, col in columns.items()}
        return cls(**columns)

    def __len__(self) -> int:
        return len(self.ids)

    def match(self, j: int, kept: bool = True, weight: float = 0.0) -> StrengthMatch:
        scope = self.scope_subsets[j]
        return StrengthMatch(
            override_id=self.ids[j],
            scope_subset=_own_copy(scope),  # the caller's own copy, nested values included
            dims=len(scope),
            dir_a=self.dir_a[j],
            dir_e=self.dir_e[j],
            confidence=self.confidence[j],
            edge_raw_roi=self.edge_raw_roi[j],
            n=self.n[j],
            kept=kept,
            weight=weight,
        )

    @cached_property
    def _vector_columns(self) -> tuple[np.ndarray, ...]:
        return (
            np.fromiter((len(s) for s in self.scope_subsets), dtype=float, count=len(self)),
            np.asarray(self.dir_a, dtype=float),
            np.asarray(self.dir_e, dtype=float),
            np.asarray(self.confidence, dtype=float),
            np.asarray(self.edge_raw_roi, dtype=float),
        )

    def vectors(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """dims, dir_a, dir_e, confidence, edge_raw_roi of the overrides at rows, as float arrays
        (the columns are made once per _Overrides: the cache keeps them)."""
        return tuple(c[rows] for c in self._vector_columns)


_COLUMN_NAMES: dict[str, list[str]] = {}


def _one_row(conn, query: str, params: dict) -> dict:
    """The query's one row as a dict. Each query here names a fixed list of columns, so their names
    are read from the cursor's description once per query (building it cost ~40 us a call)."""
    with conn.cursor(binary=True) as cur:
        cur.execute(query, params)
        names = _COLUMN_NAMES.get(query)
        if names is None:
            names = _COLUMN_NAMES.setdefault(query, [d.name for d in cur.description])
        return dict(zip(names, cur.fetchone(), strict=True))


def _fetch(conn, query: str, params: dict) -> tuple[SteeringTunables, _Overrides]:
    """The tunables and the overrides of a STRENGTH_* query's one row."""
    row = _one_row(conn, query, params)
    return SteeringTunables.from_row(row), _Overrides.from_row(row)


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
    matches: Sequence[StrengthMatch] = field(default_factory=list)  # built when read (_LazyMatches)
    a_flags: float = 0.0
    e_flags: float = 0.0
    edge_raw_roi: float = 0.0
    weight_sum: float = 0.0
    applied: bool = False

    def as_dict(self) -> dict:
        return asdict(replace(self, matches=list(self.matches)))


def steer_max_eff(confidence, tun: SteeringTunables = SteeringTunables()):
    """STEER_MAX_eff = min(STEER_BASE + STEER_GAIN * conf, STEER_MAX_HARD) (design §13).

    A float for a float, an array for an array (the steering of every call goes through here)."""
    out = np.minimum(tun.steer_base + tun.steer_gain * np.asarray(confidence, dtype=float), tun.steer_max_hard)
    return float(out) if out.ndim == 0 else out


def apply_delta_with_headroom(x, delta):
    """x + delta * (1 - x) for delta >= 0, x + delta * x for delta < 0 (design §13's headroom step).

    Works on floats and on numpy arrays alike.
    """
    out = np.where(np.asarray(delta) >= 0, x + delta * (1.0 - x), x + delta * x)
    return float(out) if out.ndim == 0 else out


def position_size_frac(a: float) -> float:
    """The bot's sizing formula: 0.10 + 0.50 * A."""
    return 0.10 + 0.50 * a


def _sum_by(req: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Per request, the sum of its matches' weights, as floats (numpy gives int zeros when empty)."""
    return np.bincount(req, weights=weights, minlength=n).astype(float, copy=False)


def _steer_vectors(req, dims, dir_a, dir_e, conf, edge, a_flags, e_flags, tun: SteeringTunables) -> dict:
    """The design §13 maths for many requests at once: the one implementation of the steering rule.

    req[j] is the request of match j; dims/dir_a/dir_e/conf/edge describe match j; a_flags/e_flags
    are per request. Returns per-match `kept`/`weight` and per-request arrays of every intermediate.
    """
    n = len(a_flags)
    strong = _sum_by(req, (conf >= tun.conf_min).astype(float), n) > 0
    kept = ~strong[req] | (conf >= tun.conf_min)
    weight = np.where(kept, (1.0 + dims) * conf, 0.0)
    total = _sum_by(req, weight, n)
    applied = total > 0
    safe = np.where(applied, total, 1.0)
    blend_dir_a = _sum_by(req, weight * dir_a, n) / safe
    blend_dir_e = _sum_by(req, weight * dir_e, n) / safe
    blend_conf = _sum_by(req, weight * conf, n) / safe
    blend_edge = _sum_by(req, weight * edge, n) / safe
    steer = steer_max_eff(blend_conf, tun)
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


_PER_REQUEST = (
    "a_final", "e_final", "delta_a", "delta_e", "dir_a", "dir_e", "confidence", "steer_max_eff",
    "edge_raw_roi", "weight_sum", "applied",
)  # fmt: skip


def _results(v: dict, matches_of, a_flags: list[float], e_flags: list[float]) -> list[StrengthResult]:
    """Every request's StrengthResult from _steer_vectors output; matches_of(i) gives request i's matches.

    A batch makes 10,000 of them: each gets its fields as one dict, as StrengthResult's generated
    __init__ would set them (it has no __post_init__; a test checks the names against its fields),
    at ~2/3 of the cost of calling it."""
    columns = [v[k].tolist() for k in _PER_REQUEST]
    new = object.__new__
    results = []
    append = results.append
    for i, (
        a_final,
        e_final,
        delta_a,
        delta_e,
        dir_a,
        dir_e,
        confidence,
        steer,
        edge,
        weight_sum,
        applied,
    ) in enumerate(zip(*columns, strict=True)):
        result = new(StrengthResult)
        result.__dict__ = {
            "a_final": a_final,
            "e_final": e_final,
            "position_size_frac": position_size_frac(a_final),
            "delta_a": delta_a,
            "delta_e": delta_e,
            "dir_a": dir_a,
            "dir_e": dir_e,
            "confidence": confidence,
            "steer_max_eff": steer,
            "matches": matches_of(i),
            "a_flags": a_flags[i],
            "e_flags": e_flags[i],
            "edge_raw_roi": edge,
            "weight_sum": weight_sum,
            "applied": applied,
        }
        append(result)
    return results


def steer_strength(
    matches: list[StrengthMatch], a_flags: float, e_flags: float, tun: SteeringTunables = SteeringTunables()
) -> StrengthResult:
    """The design §13 maths on already matched overrides (pure); fills each match's kept and weight."""
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
    return _results(v, lambda _: matches, [a_flags], [e_flags])[0]


def apply_strength_overrides(conn, pattern_key: str, scope: dict, a_flags: float, e_flags: float) -> StrengthResult:
    """Steer the flags' A and E by the active pm_strength overrides matching (pattern_key, scope).

    The inputs are checked first (_checked_request, the batch's rule too): a ValueError naming the
    field, before any round trip, for a pattern_key that is not a non-empty str, a scope that is not a
    dict (another Mapping, or None for {}) of str keys and JSON values, a non-finite number in it, or
    flags that are not real numbers in [0, 1].

    One round trip: the tunables and the generation of pm_overrides; the pattern's active overrides
    come along only when the connection's cache does not hold them under that generation (_cached).
    The cached overrides are matched as a batch of one (_MatchIndex); uncached (a transaction that
    changed pm_overrides, another client encoding), the indexed containment query (STRENGTH_MATCHES)
    answers. With no match (or all weights 0) A and E pass through unchanged.
    """
    pattern_key, scope, a_flags, e_flags = _checked_request(pattern_key, scope, a_flags, e_flags)
    index = None
    if _utf8(conn):
        params = {"pattern_key": pattern_key}
        tunables, index = _cached(conn, STRENGTH_GENERATION, pattern_key, params, partial(_pattern_index, pattern_key))
    if index is None or index is _UNPARSED:  # PostgreSQL decides
        params = {"pattern_key": pattern_key, "scope": json.dumps(scope)}
        tunables, overrides = _fetch(conn, STRENGTH_MATCHES, params)
        req, rows = np.zeros(len(overrides), dtype=np.int64), np.arange(len(overrides))
    else:
        overrides = index.overrides
        req, rows = index.match([pattern_key], [scope], conn)
    return _steer_requests(overrides, req, rows, [a_flags], [e_flags], tunables)[0]


def _steer_requests(overrides: _Overrides, req, rows, a_flags: list, e_flags: list, tun) -> list[StrengthResult]:
    """Every request's StrengthResult: match j is request req[j]'s override at rows[j] (requests in
    order, each one's matches in id order); the matches become StrengthMatch objects only when read."""
    v = _steer_vectors(
        req, *overrides.vectors(rows), np.array(a_flags, dtype=float), np.array(e_flags, dtype=float), tun
    )
    bounds = np.searchsorted(req, np.arange(len(a_flags) + 1)).tolist()
    columns = _MatchColumns(overrides, rows, v["kept"], v["weight"])
    return _results(v, lambda i: _LazyMatches(columns, bounds[i], bounds[i + 1]), a_flags, e_flags)


# ---------------------------------------------------------------------------------------------
# Input checks: one rule for the single call and every row of the batch, applied before any round
# trip (nothing is read or written for a refused request). A scope is what jsonb stores as given:
# str keys; values bool, int, float, str, None, list or dict (subclasses as Python's json writes
# them: a StrEnum member or np.str_ as its str, np.float64 as its float); no NaN or Infinity
# (not JSON), no NUL character or lone surrogate (jsonb refuses them), no integer Python's json
# cannot write. Anything else (numpy.int64, numpy.bool_, a tuple, a set, a Decimal) is refused
# rather than converted: json refuses it too, and a guess (np.True_ as 1?) would steer by a slice
# the caller did not mean.

_JSON_VALUES = "bool, int, float, str, None, list or dict"


def _shown(value) -> str:
    """A value for an error message: its type and a short repr."""
    t = type(value)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    if isinstance(value, int) and value.bit_length() > 64:  # repr() refuses ints past 4,300 digits
        return f"{name} of {value.bit_length()} bits"
    return f"{name} {reprlib.repr(value)}"


_NOT_TEXT = "contains a NUL character or a lone surrogate, which jsonb cannot store"


def _checked_key(key, where: str) -> None:
    """ValueError unless key is a str jsonb stores (where names the object)."""
    if not isinstance(key, str):
        raise ValueError(f"{where}: key {_shown(key)} is not a str (JSON object keys are strings)")
    if not _valid_text(key):
        raise ValueError(f"{where}: key {key!r} {_NOT_TEXT}")


def _checked_value(value, where: str) -> None:
    """ValueError unless value is a JSON value jsonb stores as given (the rule above)."""
    if isinstance(value, str):
        if not _valid_text(value):
            raise ValueError(f"{where} {_NOT_TEXT}")
    elif value is None or value.__class__ is bool:
        pass
    elif isinstance(value, int):
        if value.bit_length() > 64:
            try:
                int.__repr__(value)  # json.dumps writes an int so, and refuses past 4,300 digits
            except ValueError:
                raise ValueError(f"{where} is an integer too long to write as JSON ({_shown(value)})") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {float.__repr__(value)}: not a finite number (JSON has no NaN or Infinity)")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _checked_value(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            _checked_key(k, where)
            _checked_value(v, f"{where}[{k!r}]")
    elif isinstance(value, np.generic):
        raise ValueError(f"{where} is a {_shown(value)}, not a JSON value ({_JSON_VALUES}): convert it first (.item())")
    else:
        raise ValueError(f"{where} is a {_shown(value)}, not a JSON value ({_JSON_VALUES})")


# Flags this close outside [0, 1] are clamped into it (rounding noise); further out they are refused.
FLAG_TOLERANCE = 1e-9


def _in_unit(x):
    """Whether x is in [0, 1] (NaN is not): a float, or per element of a float array (the batch)."""
    return (x >= 0.0) & (x <= 1.0)


def _checked_flag(value, name: str) -> float:
    """value as a float when it is a real number in [0, 1] (int, float, or a numpy integer or floating
    held exactly by a float); bool, NaN, infinities, strings and anything else are refused."""
    if value.__class__ is float and _in_unit(value):  # the common case
        return value
    if value.__class__ is bool or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number (int or float) in [0, 1], got {_shown(value)}")
    try:
        x = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be in [0, 1], got {_shown(value)}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number in [0, 1], got {x!r}")
    if isinstance(value, np.floating) and x != value:
        raise ValueError(f"{name} is a {_shown(value)}, which a float does not hold exactly: convert it first")
    if not _in_unit(x):
        # Rounding noise of the bot's own arithmetic (1.0000000000000002) is clamped, not refused:
        # a trade must not fail over an ulp. Anything further out is a bug upstream.
        if -FLAG_TOLERANCE <= x < 0.0:
            return 0.0
        if 1.0 < x <= 1.0 + FLAG_TOLERANCE:
            return 1.0
        raise ValueError(
            f"{name} must be in [0, 1], got {_shown(value)} (within {FLAG_TOLERANCE:g} of it, it is clamped)"
        )
    return x


def _checked_pattern_key(pattern_key) -> str:
    """pattern_key as the plain str it is sent as, when it is a non-empty str text can store."""
    if pattern_key.__class__ is not str:
        if not isinstance(pattern_key, str):
            raise ValueError(f"pattern_key must be a non-empty str, got {_shown(pattern_key)}")
        pattern_key = str.__str__(pattern_key)
    if not pattern_key:
        raise ValueError("pattern_key must be a non-empty str, got ''")
    if not _valid_text(pattern_key):
        raise ValueError(f"pattern_key {_NOT_TEXT}")
    return pattern_key


def _checked_request(pattern_key, scope, a_flags, e_flags) -> tuple[str, dict, float, float]:
    """One request's inputs checked (ValueError naming the field) and as the calls use them:
    pattern_key a plain str, scope a dict (None is {}, another Mapping copied into one; a dict
    subclass kept as it is, read and never written), the flags floats."""
    pattern_key = _checked_pattern_key(pattern_key)
    if scope is None:
        scope = {}
    elif not isinstance(scope, dict):
        if not isinstance(scope, Mapping):
            hint = " (JSON text? pass json.loads() of it)" if isinstance(scope, (str, bytes)) else ""
            raise ValueError(f"scope must be a dict (or another Mapping, or None), got {_shown(scope)}{hint}")
        scope = dict(scope)
    for k, v in scope.items():
        _checked_key(k, "scope")
        if v.__class__ is not str or not _valid_text(v):  # a plain valid str, the common case, is fine
            try:
                _checked_value(v, f"scope[{k!r}]")
            except RecursionError:
                raise ValueError(f"scope[{k!r}] is nested too deeply (or contains itself)") from None
    return pattern_key, scope, _checked_flag(a_flags, "a_flags"), _checked_flag(e_flags, "e_flags")


# The cache (one per connection; design §13): the overrides as read under one generation of
# pm_overrides (the sum of learning.pm_overrides_changes' weights: it grows with every committed
# transaction that changed pm_overrides), per pattern for the single call and per set of patterns
# for the batch; all of it dropped when the generation moves. Every call reads the generation and
# the tunables in its own snapshot, in one round trip; the overrides come along in the same
# statement only when the generation is not the cached one, so a hit reads a few small values and a
# miss is one indexed scan. In a transaction that changed pm_overrides itself (its row is there, not
# yet committed) the cache is neither read nor filled. The tunables are not kept: reading them in
# the same statement costs no measurable time. Without the cache, the single call's containment
# scan (~1,250 rows per pattern) made it ~2.4x slower at the median and ~1.5x at p99, and the batch
# (reading and indexing 5,000 overrides) ~1.4x (same-run A/B, 9 pairs).
_GENERATION = """
SELECT
    t.*,
    g.generation,
    EXISTS (
        SELECT FROM learning.pm_overrides_changes AS c
        WHERE c.xact = pg_catalog.pg_current_xact_id_if_assigned()
    ) AS written_here,
    o.*
FROM {tunables}
CROSS JOIN (SELECT pg_catalog.sum(c.weight)::bigint AS generation FROM learning.pm_overrides_changes AS c) AS g
LEFT JOIN LATERAL (
    SELECT{arrays}
    FROM public.pm_overrides AS o
    WHERE (g.generation IS NULL OR g.generation IS DISTINCT FROM %(cached)s::bigint)
        AND {patterns}
        AND pg_catalog.jsonb_typeof(o.scope_subset) = 'object'
        AND {steering}
) AS o ON true
"""
# One pattern's (the single call: `= ANY` of one pattern cost ~0.2 ms more per call) or many.
STRENGTH_GENERATION = _GENERATION.format(
    tunables=_TUNABLES, arrays=_OVERRIDE_ARRAYS, patterns="o.pattern_key = %(pattern_key)s::text", steering=_STEERING
)
STRENGTH_GENERATION_OF_PATTERNS = _GENERATION.format(
    tunables=_TUNABLES,
    arrays=_OVERRIDE_ARRAYS + ",\n    pg_catalog.array_agg(o.pattern_key) AS pattern_keys",
    patterns="o.pattern_key = ANY(%(patterns)s::text [])",
    steering=_STEERING,
)

_CACHE_PATTERNS = 10_000  # patterns kept per connection; past it they start again empty
_CACHE_PATTERN_SETS = 16  # a batch's index is larger: sets of patterns kept per connection


@dataclass
class _Cache:
    """One connection's cache: the overrides as read under `generation` and prepared for matching
    (_MatchIndex), per pattern_key for the single call and per tuple of pattern_keys for the batch,
    each stored with its generation (so one read gives both, whatever another thread does)."""

    generation: int | None = None
    patterns: dict = field(default_factory=dict)
    pattern_sets: dict = field(default_factory=dict)

    def get(self, key) -> tuple[int | None, object]:
        """(generation, entry) under key; (None, None) when there is none."""
        return (self.pattern_sets if isinstance(key, tuple) else self.patterns).get(key, (None, None))

    def keep(self, generation: int, key, entry) -> None:
        if generation != self.generation:  # every entry is as old: all dropped
            self.generation, self.patterns, self.pattern_sets = generation, {}, {}
        store, limit = (
            (self.pattern_sets, _CACHE_PATTERN_SETS) if isinstance(key, tuple) else (self.patterns, _CACHE_PATTERNS)
        )
        if len(store) >= limit:
            store.clear()
        store[key] = (generation, entry)


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _generation_row(conn, query: str, params: dict) -> tuple[dict, SteeringTunables]:
    """A _GENERATION query's row and the tunables it carries."""
    row = _one_row(conn, query, params)
    return row, SteeringTunables.from_row(row)


def _cached(conn, query: str, key, params: dict, build) -> tuple[SteeringTunables, object]:
    """The tunables and the cache's entry under key, made by build(row) from the _GENERATION row when
    the cache does not hold it under the current generation; None for the entry when the cache may
    not be used (the transaction changed pm_overrides, or the changes table was emptied by hand)."""
    cache = _CACHES.get(conn)
    if cache is None:
        cache = _CACHES.setdefault(conn, _Cache())
    sent, entry = cache.get(key)  # taken before the query: another thread may change the cache
    row, tunables = _generation_row(conn, query, {**params, "cached": sent})
    if row["written_here"] or row["generation"] is None:
        return tunables, None
    if entry is None or row["generation"] != sent:  # the row carries the overrides
        with _gc_paused():  # ~1,000s of small objects, none cyclic: no collection while built
            entry = build(row)
        cache.keep(row["generation"], key, entry)
    return tunables, entry


# An index PostgreSQL must answer for: an override's scope_subset nested deeper than Python's json reads.
_UNPARSED = object()


def _pattern_index(pattern_key: str, row: dict):
    """The single call's cache entry: the pattern's overrides (a STRENGTH_GENERATION row) prepared
    for matching; _UNPARSED when Python cannot read one of them (the indexed query answers then)."""
    row["pattern_keys"] = [pattern_key] * len(row["ids"] or ())
    try:
        return _MatchIndex.build(_Overrides.from_row(row))
    except RecursionError:
        return _UNPARSED


def _utf8(conn) -> bool:
    """Whether the connection reads text as UTF-8: the cache reads every override of a pattern, and
    in another client encoding one it cannot represent would fail calls the indexed query answers."""
    return conn.info.encoding == "utf-8"


def _valid_text(s: str) -> bool:
    """True when jsonb accepts s as a string: no NUL, no lone surrogate."""
    if s.isascii():
        return "\x00" not in s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in s


@dataclass(frozen=True)
class _MatchColumns:
    """Override index, kept and weight of every match of a call, requests' matches contiguous."""

    overrides: _Overrides
    rows: Sequence
    kept: Sequence
    weight: Sequence


class _LazyMatches(Sequence):
    """The matches of one request (columns[lo:hi]), made into StrengthMatch objects only when read."""

    __slots__ = ("_columns", "_lo", "_hi")

    def __init__(self, columns: _MatchColumns, lo: int, hi: int):
        self._columns, self._lo, self._hi = columns, lo, hi

    def __len__(self) -> int:
        return self._hi - self._lo

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if not -len(self) <= k < len(self):
            raise IndexError("match index out of range")
        j, c = self._lo + (k % len(self)), self._columns
        return c.overrides.match(int(c.rows[j]), bool(c.kept[j]), float(c.weight[j]))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return list(self) == list(other)

    def __repr__(self) -> str:
        return repr(list(self))


_ABSENT = object()
_DENSE_KEYS = 1 << 22  # lookup tables up to this size (16 MiB of int32), when not much larger than the data
_MATCH_MATRIX_CELLS = 1 << 22  # requests x key sets matrix up to this size (16 MiB of int32, twice while sorted)


def _value_key(value):
    """A hashable key equal exactly when the jsonb values are equal (true is not 1; 1 is 1.0; 1e30
    is 10**30).

    A str is its own key (no other kind of key is a str), the common case kept cheap; a str subclass
    (np.str_, a StrEnum member) is the plain str it is sent to PostgreSQL as. A number is the numeric
    PostgreSQL reads: an int itself, a float the Decimal of the text json writes for it (a float and
    an int compare exactly in Python, so 1e30 != 10**30 there, but not in jsonb)."""
    if value.__class__ is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (dict, list)):
        return ("j", json.dumps(value, sort_keys=True))
    if value.__class__ is bool or value is None:
        return (value.__class__ is bool, value)
    if isinstance(value, float):
        return (False, Decimal(float.__repr__(value)))
    return (False, int.__int__(value))


def _code(known: dict, value) -> int:
    """value's code in one key's vocabulary: 0 when absent or unknown to every override."""
    if value.__class__ is str:
        return known.get(value, 0)
    return 0 if value is _ABSENT else known.get(_value_key(value), 0)


class _InexactNumber(float):
    """A JSON number a Python float does not hold exactly (0.10000000000000000001, 1e400), or an
    integer past the digits Python's int() reads: two such numbers that jsonb tells apart can parse
    to one float, so overrides with one are matched by PostgreSQL, as those with nested values are."""


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isfinite(value) and Decimal(repr(value)) == Decimal(text):
        return value
    return _InexactNumber(value)


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # past sys.get_int_max_str_digits()
        return _InexactNumber(float(text))


_BY_POSTGRESQL = (dict, list, _InexactNumber)


def _nested_overrides(scope_subsets: list[dict]) -> list[int]:
    """Indexes of the overrides PostgreSQL must match: an object or array value (containment is not
    equality there) or a number Python does not hold exactly (one C-speed pass when there are none)."""
    types = {type(v) for subset in scope_subsets for v in subset.values()}
    if not any(issubclass(t, _BY_POSTGRESQL) for t in types):
        return []
    return [j for j, subset in enumerate(scope_subsets) if any(isinstance(v, _BY_POSTGRESQL) for v in subset.values())]


def _match_nested(conn, overrides: _Overrides, nested: list[int], patterns: list, scopes: list) -> tuple[list, list]:
    """The (request, override) pairs of the overrides `nested`, by PostgreSQL's own containment of
    their stored scope_subset (a copy through Python floats could differ from it)."""
    nested_patterns = {overrides.pattern_keys[j] for j in nested}
    asked = [i for i, pattern in enumerate(patterns) if pattern in nested_patterns]
    index_of = {overrides.ids[j]: j for j in nested}
    pairs = conn.execute(
        """
        SELECT r.i, o.id
        FROM unnest(%(req_patterns)s::text [], %(req_scopes)s::jsonb [], %(req_index)s::bigint [])
            AS r (pattern_key, scope, i)
        INNER JOIN public.pm_overrides AS o
            ON o.id = ANY(%(ids)s::bigint []) AND o.pattern_key = r.pattern_key AND o.scope_subset <@ r.scope
        """,
        {
            "req_patterns": [patterns[i] for i in asked],
            "req_scopes": [json.dumps(scopes[i]) for i in asked],
            "req_index": asked,
            "ids": list(index_of),
        },
    ).fetchall()
    return [np.array([p[0] for p in pairs], dtype=np.int64)], [
        np.array([index_of[p[1]] for p in pairs], dtype=np.int64)
    ]


def _columns(scopes: list[dict], keys: list[str]) -> list:
    """Per key, its value in each scope (_ABSENT when missing); C-speed when every scope has every key."""
    if keys and scopes and set(map(type, scopes)) == {dict}:  # plain dicts: no __missing__ to run
        try:
            if len(keys) == 1:
                return [list(map(itemgetter(keys[0]), scopes))]
            return [list(col) for col in zip(*map(itemgetter(*keys), scopes), strict=True)]
        except (KeyError, TypeError):
            pass
    return [[scope.get(k, _ABSENT) for scope in scopes] for k in keys]


def _codes(scopes: list[dict], keys: list[str], vocab: list[dict], grow: bool) -> np.ndarray:
    """Row c-1 = the vocabulary code of key c's value in each scope; 0 when absent (or, unless grow,
    unknown). str values (the common case) are their own vocabulary key; others go through _value_key."""
    codes = np.zeros((len(keys), len(scopes)), dtype=np.int64)
    for c, values in enumerate(_columns(scopes, keys)):
        known = vocab[c]
        if not grow and set(map(type, values)) == {str}:  # all strings: one C-speed lookup pass
            codes[c] = list(map(known.get, values, repeat(0, len(values))))
        elif grow:
            codes[c] = [
                0 if v is _ABSENT else known.setdefault(v if v.__class__ is str else _value_key(v), len(known) + 1)
                for v in values
            ]
        else:
            codes[c] = [_code(known, v) for v in values]
    return codes


@dataclass(frozen=True)
class _KeySet:
    """One key set's overrides prepared for matching: `cols` are the code rows of its keys (0 is the
    pattern), `members` its override indexes. A request's mixed-radix key over `cols` is looked up in
    `table` (dense: key -> override index, -1 for none; a slice of _MatchIndex.table) or among
    `sorted_keys` (with `sorted_members`); with neither, the keys would overflow int64 and are ranked
    per call (_MatchIndex._ranked)."""

    cols: list
    members: np.ndarray
    table: np.ndarray | None = None
    sorted_keys: np.ndarray | None = None
    sorted_members: np.ndarray | None = None


def _key_set_groups(ovr_codes: np.ndarray, nested: list) -> list[tuple[list, np.ndarray]]:
    """(cols, members) per key set of the overrides not in `nested`: the code rows of its keys (row 0,
    the pattern, in each) and its override indexes."""
    n_keys = ovr_codes.shape[0] - 1
    present = ovr_codes[1:].T > 0  # overrides x keys
    if n_keys <= 62:  # each key set as one integer bit mask: a 1-D unique (far cheaper than rows)
        masks, group_of = np.unique(present @ (1 << np.arange(n_keys, dtype=np.int64)), return_inverse=True)
        sets = (masks[:, None] >> np.arange(n_keys, dtype=np.int64)) & 1 == 1
    else:
        sets, group_of = np.unique(present, axis=0, return_inverse=True)
    group_of = group_of.reshape(-1)
    group_of[nested] = -1
    groups = []
    for g, key_set in enumerate(sets):
        members = np.flatnonzero(group_of == g)
        if members.size:  # else only nested overrides had this key set
            groups.append(([0, *(np.flatnonzero(key_set) + 1).tolist()], members))
    return groups


def _tables(tabled: list, radix: list, ovr_codes: np.ndarray) -> tuple:
    """One table for the (cols, members, space) key sets of `tabled`, each at its offset: the table,
    the place value of each code row in each key set's key (code rows x key sets), the offsets and
    the key sets (_KeySet, each with its slice of the table). Every override's position is one
    product of its codes by its key set's place values."""
    places = np.zeros((len(radix), len(tabled)), dtype=np.int64)
    offsets = np.zeros(len(tabled), dtype=np.int64)
    size = 0
    for g, (cols, _, space) in enumerate(tabled):
        offsets[g] = size
        size += space
        for c in cols:
            space //= radix[c]
            places[c, g] = space
    table = np.full(size, -1, dtype=np.int32)
    if tabled:
        members = np.concatenate([t[1] for t in tabled])
        group = np.repeat(np.arange(len(tabled)), [t[1].size for t in tabled])
        positions = np.einsum("cj,cj->j", ovr_codes[:, members], places[:, group]) + offsets[group]
        table[positions] = members
    key_sets = [
        _KeySet(cols, members, table=table[offset : offset + space])
        for (cols, members, space), offset in zip(tabled, offsets.tolist(), strict=True)
    ]
    return table, places, offsets, key_sets


@dataclass(frozen=True)
class _MatchIndex:
    """Overrides prepared for matching, kept in the connection's cache: one pattern's for the single
    call (a batch of one), a set of patterns' for the batch. For an override whose values are all
    scalars, containment in a scope is equality of the scope's values at the override's keys, so
    requests and overrides become code matrices (row 0 the pattern, then one row per scope key; 0 =
    absent, or unknown to every override) and within a key set a request matches by equal codes,
    through mixed-radix keys. The key sets with a lookup table (nearly all) share one concatenated
    table, so one gather looks up every request in all of them; a single request's keys are one
    product of its codes by the key sets' place values, so it costs a few numpy calls whatever the
    number of key sets (~15 us on 57 key sets), while many requests' keys are built per key set
    (cheaper than the product when the key sets have few keys each). PostgreSQL runs the same
    containment row by row (the uncached call's `<@`): as one `unnest ... JOIN` over 10,000
    requests and 5,000 overrides it takes seconds, this tens of milliseconds (design §13's batch
    budget).

    Containment of an object or array value is not equality ({"k": [1]} <@ {"k": [1, 2]}): the rare
    overrides with such values (learned ones never have them) are matched by PostgreSQL itself in
    match() (tests/test_runtime_batch.py holds both calls equal to PostgreSQL's containment)."""

    overrides: _Overrides
    nested: list
    keys: list
    pattern_code: dict
    vocab: list
    radix: list
    ovr_codes: np.ndarray
    key_sets: tuple  # the tabled ones first, in the order of `places`' columns
    table: np.ndarray  # every tabled key set's table, concatenated
    places: np.ndarray  # code rows x tabled key sets: the place value of each code in the key
    offsets: np.ndarray  # per tabled key set, where its table starts in `table`

    @classmethod
    def build(cls, overrides: _Overrides) -> _MatchIndex:
        nested = _nested_overrides(overrides.scope_subsets)
        keys = sorted({k for subset in overrides.scope_subsets for k in subset})
        pattern_code = {p: i for i, p in enumerate(sorted(set(overrides.pattern_keys)), start=1)}
        vocab: list[dict] = [{} for _ in keys]
        ovr_codes = np.vstack(
            [
                np.array([pattern_code[p] for p in overrides.pattern_keys], dtype=np.int64).reshape(1, -1),
                _codes(overrides.scope_subsets, keys, vocab, grow=True),
            ]
        )
        radix = [len(pattern_code) + 1] + [len(v) + 1 for v in vocab]
        tabled, others = [], []
        for cols, members in _key_set_groups(ovr_codes, nested):
            space = math.prod(radix[c] for c in cols)
            # A lookup table when it is not much larger than the key set: kept in the cache, so
            # bounded by the overrides, not by any one call.
            if space <= min(_DENSE_KEYS, 16 * members.size + 4096):
                tabled.append((cols, members, space))
            elif space >= 2**62:  # keys past int64: ranked per call
                others.append(_KeySet(cols, members))
            else:
                ovr_key = np.zeros(members.size, dtype=np.int64)
                for c in cols:  # mixed-radix keys (Horner)
                    ovr_key = ovr_key * radix[c] + ovr_codes[c, members]
                order = np.argsort(ovr_key)
                others.append(_KeySet(cols, members, sorted_keys=ovr_key[order], sorted_members=members[order]))
        table, places, offsets, key_sets = _tables(tabled, radix, ovr_codes)
        key_sets = (*key_sets, *others)
        return cls(overrides, nested, keys, pattern_code, vocab, radix, ovr_codes, key_sets, table, places, offsets)

    def match(self, patterns: list, scopes: list[dict], conn=None) -> tuple[np.ndarray, np.ndarray]:
        """(request index, override index) of every override whose scope_subset is contained in the
        request's scope (request i: patterns[i], scopes[i]), for the same pattern; requests in order,
        each one's matches in override (id) order."""
        if self.nested and conn is None:
            raise ValueError("overrides with object or array values need a connection to match")
        codes = self._request_codes(patterns, scopes)
        # Each key set matches a request at most once (scope_subset is unique per pattern, and
        # numbers that two jsonb values could share as one float go to PostgreSQL below), so the
        # matches of a run of requests fit a requests x key sets matrix; runs keep it bounded.
        step = max(1, _MATCH_MATRIX_CELLS // max(1, len(self.key_sets)))
        parts = [self._matched(codes[:, lo : lo + step], lo) for lo in range(0, len(patterns), step)]
        if len(parts) == 1 and not self.nested:
            return parts[0]
        req = [p[0] for p in parts]
        ovr = [p[1] for p in parts]
        if not self.nested:
            return np.concatenate(req), np.concatenate(ovr)
        nested_req, nested_ovr = _match_nested(conn, self.overrides, self.nested, patterns, scopes)
        # Per request in override id order (overrides are sorted by id): one sort of
        # request * len(overrides) + override (an order of magnitude faster than a lexsort).
        n = len(self.overrides)
        pair = np.concatenate([*req, *nested_req]) * n + np.concatenate([*ovr, *nested_ovr])
        pair.sort()
        return pair // n, pair % n

    def _request_codes(self, patterns: list, scopes: list) -> np.ndarray:
        """The requests' code matrix (row 0 the pattern, then one row per key)."""
        if len(scopes) == 1:  # the single call: one column, no numpy row per key
            get = scopes[0].get  # never __missing__: a defaultdict is read, not written
            column = [self.pattern_code.get(patterns[0], 0)]
            column += [_code(known, get(k, _ABSENT)) for k, known in zip(self.keys, self.vocab, strict=True)]
            return np.array(column, dtype=np.int64).reshape(-1, 1)
        pattern_codes = np.array(list(map(self.pattern_code.get, patterns, repeat(0, len(patterns)))), dtype=np.int64)
        return np.vstack([pattern_codes.reshape(1, -1), _codes(scopes, self.keys, self.vocab, grow=False)])

    def _matched(self, codes: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
        """match() for the requests first, first + 1, ... whose codes are the columns of `codes`."""
        n_tabled = len(self.offsets)
        found = [self.table[self._positions(codes)]] if n_tabled else []
        found += [self._looked_up(ks, codes).astype(np.int32).reshape(-1, 1) for ks in self.key_sets[n_tabled:]]
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        # Sorting each request's row puts its matches in override order (-1, none, is the largest
        # uint32 and sorts last): cheaper than sorting every pair.
        by_request = found[0] if len(found) == 1 else np.hstack(found)
        ranked = np.sort(by_request.view(np.uint32), axis=1)
        matched = ranked != np.uint32(0xFFFFFFFF)
        # Row-major: each request's matches in order, requests in order (a repeat by the per-row
        # counts is cheaper than the row indexes of a 2-D nonzero).
        counts = np.count_nonzero(matched, axis=1)
        req = np.repeat(np.arange(first, first + codes.shape[1], dtype=np.int64), counts)
        return req, ranked[matched].astype(np.int64)

    def _positions(self, codes: np.ndarray) -> np.ndarray:
        """Requests x tabled key sets: each request's key in each key set, as a position in `table`.
        A key with a 0 digit equals no override's key (theirs are all >= 1): no validity mask."""
        if codes.shape[1] == 1:  # one request: one product, whatever the number of key sets
            return codes.T @ self.places + self.offsets
        positions = np.empty((codes.shape[1], len(self.offsets)), dtype=np.int64)
        for g, ks in enumerate(self.key_sets[: len(self.offsets)]):
            key = codes[ks.cols[0]]
            for c in ks.cols[1:]:  # mixed-radix keys (Horner)
                key = key * self.radix[c] + codes[c]
            positions[:, g] = key
        positions += self.offsets
        return positions

    def _looked_up(self, ks: _KeySet, codes: np.ndarray) -> np.ndarray:
        """Per request, its override in a key set without a table, or -1."""
        if ks.sorted_keys is None:
            return self._ranked(ks, codes)
        req_key = np.zeros(codes.shape[1], dtype=np.int64)
        for c in ks.cols:
            req_key = req_key * self.radix[c] + codes[c]
        pos = np.minimum(np.searchsorted(ks.sorted_keys, req_key), len(ks.sorted_keys) - 1)
        return np.where(ks.sorted_keys[pos] == req_key, ks.sorted_members[pos], -1)

    def _ranked(self, ks: _KeySet, codes: np.ndarray) -> np.ndarray:
        """A key set whose mixed-radix keys would overflow int64: when the next digit would, the
        keys so far (overrides' and requests' together) are replaced by their ranks among all of
        them (equal stays equal, distinct stays distinct). Per request, its override or -1."""
        members = ks.members
        req_key = np.zeros(codes.shape[1], dtype=np.int64)
        ovr_key = np.zeros(members.size, dtype=np.int64)
        space = 1
        for c in ks.cols:
            if space * self.radix[c] >= 2**62:
                ranks, inverse = np.unique(np.concatenate([ovr_key, req_key]), return_inverse=True)
                inverse = inverse.reshape(-1)
                ovr_key, req_key, space = inverse[: members.size], inverse[members.size :], len(ranks)
            ovr_key = ovr_key * self.radix[c] + self.ovr_codes[c, members]
            req_key = req_key * self.radix[c] + codes[c]
            space *= self.radix[c]
        order = np.argsort(ovr_key)
        sorted_keys = ovr_key[order]
        pos = np.minimum(np.searchsorted(sorted_keys, req_key), len(order) - 1)
        return np.where(sorted_keys[pos] == req_key, members[order][pos], -1)


def apply_strength_overrides_batch(conn, rows) -> list[StrengthResult]:
    """apply_strength_overrides for many (pattern_key, scope, a_flags, e_flags) rows, same results.

    The tunables and the active overrides of the requested patterns are read in one round trip (the
    overrides only when the connection's cache does not hold them under the current generation; a
    second round trip only for overrides with an object or array value) and matched in numpy
    (_MatchIndex, the single call's matcher); the steering maths is the same vectorised function the
    single call uses. Every row is checked first, as the
    single call checks its arguments: the first bad one raises ValueError("row i: ...").
    """
    with _gc_paused():
        checked = _checked_rows(rows)
        return _batch(conn, *checked) if checked[0] else []


_ROW = itemgetter(0, 1, 2, 3)


def _checked_rows(rows) -> tuple[list, list, list, list]:
    """patterns, scopes, a_flags, e_flags of the rows, each row checked as the single call checks its
    arguments (_checked_request); the ValueError names the row's index. The common batch is screened
    first (_screened_rows); any other goes row by row."""
    rows = list(rows)
    try:
        columns = _screened_rows(rows)
    except (ValueError, TypeError, LookupError, ArithmeticError, RecursionError):  # the loop says which row
        columns = None
    if columns is not None:
        return columns
    patterns, scopes, a_flags, e_flags = [], [], [], []
    for i, row in enumerate(rows):
        try:
            fields = _ROW(row)
        except (LookupError, TypeError):
            raise ValueError(f"row {i}: not a (pattern_key, scope, a_flags, e_flags) row: {_shown(row)}") from None
        try:
            pattern_key, scope, a, e = _checked_request(*fields)
        except ValueError as err:
            raise ValueError(f"row {i}: {err}") from None
        patterns.append(pattern_key)
        scopes.append(scope)
        a_flags.append(a)
        e_flags.append(e)
    return patterns, scopes, a_flags, e_flags


def _screened_rows(rows: list) -> tuple[list, list, list, list] | None:
    """_checked_rows' columns for the common batch (str patterns, plain dict scopes of str keys and
    scalar values, float or int flags), with each distinct pattern, key, value (of one type) and
    flag checked once by the same functions as each row (~5 ms per 10,000 rows; row by row ~16 ms).
    None, or an error, sends the batch row by row: another shape, or a refused row to find."""
    patterns = list(map(itemgetter(0), rows))
    scopes = list(map(itemgetter(1), rows))
    if set(map(type, patterns)) != {str} or set(map(type, scopes)) != {dict}:
        return None
    for pattern_key in set(patterns):
        _checked_pattern_key(pattern_key)
    for key in set().union(*scopes):
        _checked_key(key, "scope")
    values = list(chain.from_iterable(map(dict.values, scopes)))
    value_types = set(map(type, values))
    if value_types - {str}:
        if any(issubclass(t, (list, dict)) for t in value_types):  # nested values: row by row
            return None
        values = [v for _, v in set(zip(map(type, values), values, strict=True))]  # 1 is not 1.0 here
    for value in set(values) if value_types == {str} else values:
        _checked_value(value, "scope")
    flags = []
    for column in (list(map(itemgetter(2), rows)), list(map(itemgetter(3), rows))):
        types = set(map(type, column))  # float or int (not bool): _checked_flag's float() is exact here
        if not types <= {float, int}:
            return None
        as_floats = np.array(column, dtype=float)
        if not _in_unit(as_floats).all():
            return None
        flags.append(column if types == {float} else as_floats.tolist())
    return patterns, scopes, flags[0], flags[1]


@contextmanager
def _gc_paused():
    """Cyclic GC off while a batch builds its ~30,000 objects (none of them cyclic): the collections
    they trigger cost ~10 ms per 10,000 rows and most of the batch's variance. Re-enabled after, and
    left alone if the caller had it off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _batch_index(row: dict) -> _MatchIndex:
    return _MatchIndex.build(_Overrides.from_row(row))


def _batch(conn, patterns: list[str], scopes: list[dict], a_flags: list[float], e_flags: list[float]):
    """The checked rows' results (_checked_rows: plain str patterns, dict scopes, float flags)."""
    asked = sorted(set(patterns))
    tunables, index = _cached(conn, STRENGTH_GENERATION_OF_PATTERNS, tuple(asked), {"patterns": asked}, _batch_index)
    if index is None:  # a transaction that changed pm_overrides: its own overrides, not kept
        tunables, overrides = _fetch(conn, STRENGTH_OVERRIDES_OF_PATTERNS, {"patterns": asked})
        index = _MatchIndex.build(overrides)
    req, rows = index.match(patterns, scopes, conn)
    return _steer_requests(index.overrides, req, rows, a_flags, e_flags, tunables)


# ---------------------------------------------------------------------------------------------
# Execution part (design §12): the most specific tuning override per category, applied exactly.

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
