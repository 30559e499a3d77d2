"""The lever simulation and tuning evidence (design §10), and the tuning half of the override materializer.

`simulate` is a pure function of numpy arrays (no database): every event is judged under the base
thresholds and under each of the 124 lever combinations at once (events x 5 values per lever, then
one 64-bit event set per combination), flips are counted both ways, the plan's guards refuse
candidates (`plan_guards`: min_gain, min_ratio, the sign test under the plan rule, the dodge guard),
the evidence rule tests each changed lever's own flips (`tuning_evidence`: one-sided Fisher exact at
max_false_override / tested, Bonferroni) and `ranking_keys` orders what is left (design §10).

`materialize_tuning` runs it for every active tuning lesson and writes the winner of each slice as a
unit (tuning_ts_min, tuning_halo, tuning_slope_min) to pm_overrides, idempotently. A lesson's events
are the events of its window whose scope contains its slice: PostgreSQL decides that containment
(`@>`, `LESSON_SCOPES`), as the runtime's override selection does (design §12).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property, lru_cache

import numpy as np
from scipy.stats import hypergeom

LEVERS = ("ts", "halo", "slope")
STEPS: dict[str, tuple[float, ...]] = {
    "ts": (-0.10, -0.05, 0.0, 0.05, 0.10),  # multiplier 1 + d on ts_min
    "halo": (-0.2, -0.1, 0.0, 0.1, 0.2),  # multiplier 1 + d on halo_max
    "slope": (-0.002, -0.001, 0.0, 0.001, 0.002),  # added to slope_min
}
MIDDLE = 2
# Indices of the values that loosen each lever's gate (let more events pass).
LOOSENING = {"ts": (0, 1), "halo": (3, 4), "slope": (0, 1)}
# All 124 non-zero combinations as (i_ts, i_halo, i_slope) grid indices, in lexicographic order.
GRID: tuple[tuple[int, int, int], ...] = tuple(
    c for c in itertools.product(range(5), repeat=3) if c != (MIDDLE, MIDDLE, MIDDLE)
)
N_CANDIDATES = len(GRID)  # 124
CATEGORIES = {"ts": "tuning_ts_min", "halo": "tuning_halo", "slope": "tuning_slope_min"}
DEFAULT_THRESHOLDS = (0.60, 1.0, 0.0)

# Why a candidate is refused: the first failing check, in the order design §10 applies them.
PASSED, MIN_GAIN, MIN_RATIO, SIGN_TEST, DODGE_GUARD, EVIDENCE = range(6)


@dataclass(frozen=True)
class Tunables:
    min_gain: int = 3
    min_ratio: float = 2.0
    max_p_value: float = 1.0
    dodge_high: float = 0.85
    dodge_max_drop: float = 0.05
    tuning_rule: str = "evidence"
    max_false_override: float = 0.05

    def __post_init__(self) -> None:
        if self.tuning_rule not in ("evidence", "plan"):
            raise ValueError(f"tuning_rule must be 'evidence' or 'plan', not {self.tuning_rule!r}")

    @classmethod
    def from_json(cls, tun: dict) -> Tunables:
        # learning.tunables() carries every key; the dataclass defaults are the fallback for pure use.
        defaults = cls()
        return cls(
            **{f.name: type(getattr(defaults, f.name))(tun.get(f.name, getattr(defaults, f.name))) for f in fields(cls)}
        )

    @property
    def evidence_rule(self) -> bool:
        return self.tuning_rule == "evidence"


@dataclass
class EventArrays:
    """One lesson's events (success/failure only). Values are NaN when missing; a missing flag is False.

    ts_min, halo_max, slope_min are each event's base thresholds with defaults already applied
    (learning.gate_thresholds: missing or non-positive ts_min/halo_max -> 0.60/1.0, slope_min -> 0.0).
    """

    acted: np.ndarray
    success: np.ndarray
    ts_score: np.ndarray
    halo_distance: np.ndarray
    ema60_slope: np.ndarray
    ema144_slope: np.ndarray
    ts_ok: np.ndarray
    slope_ok: np.ndarray
    entry_zone_ok: np.ndarray
    ts_min: np.ndarray
    halo_max: np.ndarray
    slope_min: np.ndarray

    def __post_init__(self) -> None:
        for name in ("acted", "success", "ts_ok", "slope_ok", "entry_zone_ok"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=bool))
        for name in ("ts_score", "halo_distance", "ema60_slope", "ema144_slope", "ts_min", "halo_max", "slope_min"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        n = self.acted.shape[0]
        for name in self.__dataclass_fields__:
            if getattr(self, name).shape != (n,):
                raise ValueError(f"EventArrays.{name} must have shape ({n},)")

    def __len__(self) -> int:
        return int(self.acted.shape[0])

    def take(self, idx: np.ndarray) -> EventArrays:
        """The events at positions idx (all of them: self, not a copy)."""
        if idx.size == len(self):
            return self
        return EventArrays(*(getattr(self, name)[idx] for name in self.__dataclass_fields__))


# Per lever, the sign of the deltas that loosen its gate (ts -, halo +, slope -).
_LOOSENING_SIGN = {lever: math.copysign(1.0, STEPS[lever][LOOSENING[lever][0]]) for lever in LEVERS}


def lever_direction(lever: str, delta: float) -> str | None:
    """'loosen' or 'tighten' for a lever's delta (its gate lets more or fewer events pass), None for 0."""
    if delta == 0:
        return None
    return "loosen" if math.copysign(1.0, delta) == _LOOSENING_SIGN[lever] else "tighten"


def lever_flips_text(e: dict, lever_width: int = 0) -> str:
    """'ts admits 20 succeeding 0.800 vs acted at base 0.150 of 60': one lever's flips and reference."""
    what, ref = ("admits", "acted at base") if e["direction"] == "loosen" else ("removes", "kept")
    return (
        f"{e['lever']:<{lever_width}} {what} {e['flipped']} succeeding {rate_text(e['rate'])} vs {ref} "
        f"{rate_text(e['reference_rate'])} of {e['reference']}"
    )


def rate_text(r: float | None) -> str:
    return "-" if r is None else f"{r:.3f}"


@dataclass(frozen=True)
class LeverEvidence:
    """One changed lever's own flips against its reference (design §10, evidence rule).

    loosen: flipped = the skipped events this lever alone admits, reference = the acted events at base;
    tighten: flipped = the acted events this lever alone removes, reference = the acted events kept.
    p_value: one-sided Fisher exact (hypergeometric) test that flipped succeed more (loosen) or less
    (tighten) often than the reference.
    """

    lever: str
    direction: str
    flipped: int
    flipped_success: int
    reference: int
    reference_success: int
    p_value: float

    @property
    def rate(self) -> float | None:
        return self.flipped_success / self.flipped if self.flipped else None

    @property
    def reference_rate(self) -> float | None:
        return self.reference_success / self.reference if self.reference else None

    def text(self) -> str:
        return f"{lever_flips_text(self.as_dict())} (p={self.p_value:.3g})"

    def as_dict(self) -> dict:
        return {
            "lever": self.lever,
            "direction": self.direction,
            "flipped": self.flipped,
            "flipped_success": self.flipped_success,
            "rate": self.rate,
            "reference": self.reference,
            "reference_success": self.reference_success,
            "reference_rate": self.reference_rate,
            "p_value": self.p_value,
        }


@dataclass(frozen=True)
class Candidate:
    grid: tuple[int, int, int]
    misses_caught: int
    failures_added: int
    wins_lost: int
    failures_avoided: int
    dodge_rate_sim: float | None
    eligible: bool
    reason: str | None
    rule: str = "plan"
    evidence: tuple[LeverEvidence, ...] = ()
    evidence_p: float | None = None  # the largest p of the changed levers (evidence rule)
    threshold: float | None = None  # max_false_override / tested (evidence rule)
    alpha: float | None = None
    tested: int | None = None

    @property
    def deltas(self) -> tuple[float, float, float]:
        return tuple(STEPS[lever][i] for lever, i in zip(LEVERS, self.grid, strict=True))  # type: ignore[return-value]

    @property
    def gained(self) -> int:
        return self.misses_caught + self.failures_avoided

    @property
    def lost(self) -> int:
        return self.failures_added + self.wins_lost

    @property
    def ratio(self) -> float | None:
        """gained / lost; None when lost = 0 (infinite)."""
        return None if self.lost == 0 else self.gained / self.lost

    @property
    def smoothed_ratio(self) -> float:
        return (self.gained + 1) / (self.lost + 1)

    @property
    def p_value(self) -> float:
        """The rule's p-value: the evidence figure (largest lever p) or the plan's sign test."""
        if self.rule == "evidence" and self.evidence_p is not None:
            return self.evidence_p
        return sign_test_p_value(self.gained, self.lost)

    def evidence_text(self) -> str:
        """evidence p=… <= alpha=… (max_false_override / tested), or '' under the plan rule."""
        if self.rule != "evidence" or self.evidence_p is None:
            return ""
        op = "<=" if within_alpha(self.evidence_p, self.threshold) else ">"
        return f"p={self.evidence_p:.3g} {op} alpha={self.threshold:.3g} ({self.alpha:g}/{self.tested} tested)"

    @property
    def index(self) -> int:
        """Position in GRID (and in SimulationResult's per-candidate arrays)."""
        return _GRID_INDEX[self.grid]

    @property
    def nonzero_levers(self) -> int:
        return int(_NONZERO[self.index])

    @property
    def grid_steps(self) -> int:
        return int(_STEPS[self.index])

    @property
    def label(self) -> str:
        return "+".join(f"{lever}{d:+g}" for lever, d in zip(LEVERS, self.deltas, strict=True) if d != 0)

    def ratio_text(self) -> str:
        return "inf" if self.ratio is None else f"{fmt_ratio(self.ratio)}x"

    def counts(self) -> dict:
        return {
            "gained": self.gained,
            "misses_caught": self.misses_caught,
            "failures_avoided": self.failures_avoided,
            "lost": self.lost,
            "failures_added": self.failures_added,
            "wins_lost": self.wins_lost,
        }

    def as_dict(self) -> dict:
        return {
            "levers": dict(zip(LEVERS, self.deltas, strict=True)),
            "label": self.label,
            **self.counts(),
            "ratio": self.ratio,
            "ratio_infinite": self.ratio is None,
            "smoothed_ratio": self.smoothed_ratio,
            "p_value": self.p_value,
            "dodge_rate_sim": self.dodge_rate_sim,
            "eligible": self.eligible,
            "reason": self.reason,
            "rule": self.rule,
            **(
                {"evidence": [e.as_dict() for e in self.evidence], "threshold": self.threshold}
                if self.rule == "evidence"
                else {}
            ),
        }


@dataclass
class SimulationResult:
    """Counts of every candidate (arrays over GRID) and the ranking of the tested ones."""

    n_events: int
    n_inconsistent: int
    n_skipped: int
    n_skipped_failures: int
    dodge_rate: float | None
    tested: int
    skipped: int
    loosening_tested: dict[str, bool]
    tunables: Tunables
    order: np.ndarray  # indices into GRID of the tested candidates, best first
    misses_caught: np.ndarray
    failures_added: np.ndarray
    wins_lost: np.ndarray
    failures_avoided: np.ndarray
    eligible: np.ndarray
    # Per candidate, the first check refusing it (PASSED, MIN_GAIN, ... EVIDENCE); the evidence test is
    # run on the tested candidates the plan's guards pass (refusal() runs it for any other on demand).
    refusals: np.ndarray
    # Evidence rule (None under plan): per candidate x lever (ts, halo, slope) the lever's own flips and
    # their reference, the Fisher test's arguments, and per candidate its largest lever p (NaN = not
    # computed: the plan's guards refused it first, or it was not tested).
    evidence_counts: np.ndarray | None = None  # (124, 3, 4): flipped, flipped_success, reference, ref_success
    evidence_p: np.ndarray | None = None
    threshold: float | None = None

    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def lever_evidence(self, idx: int) -> tuple[LeverEvidence, ...]:
        if self.evidence_counts is None:
            return ()
        cols = np.flatnonzero(_DIR[idx] != 0)
        c = self.evidence_counts[idx, cols]
        p = _lever_p_values(c[:, 0], c[:, 1], c[:, 2], c[:, 3], _DIR[idx, cols])
        return tuple(
            LeverEvidence(
                LEVERS[col], "loosen" if _DIR[idx, col] > 0 else "tighten", *(int(x) for x in c[k]), float(p[k])
            )
            for k, col in enumerate(cols)
        )

    def refusal(self, idx: int, levers: tuple[LeverEvidence, ...] = ()) -> int:
        """The first check refusing candidate idx (PASSED when none does), tested or not."""
        code = int(self.refusals[idx])
        if code == PASSED and self.tunables.evidence_rule and np.isnan(self.evidence_p[idx]):
            p = max((e.p_value for e in levers or self.lever_evidence(idx)), default=1.0)
            code = PASSED if within_alpha(p, self.threshold) else EVIDENCE
        return code

    def candidate(self, idx: int) -> Candidate:
        if idx not in self._cache:
            self._cache[idx] = self._candidate(idx)
        return self._cache[idx]

    def _candidate(self, idx: int) -> Candidate:
        t = self.tunables
        fa = int(self.failures_added[idx])
        levers = self.lever_evidence(idx) if t.evidence_rule else ()
        reason = self._reason(idx, self.refusal(idx, levers), levers)
        return Candidate(
            grid=GRID[idx],
            misses_caught=int(self.misses_caught[idx]),
            failures_added=fa,
            wins_lost=int(self.wins_lost[idx]),
            failures_avoided=int(self.failures_avoided[idx]),
            dodge_rate_sim=(self.n_skipped_failures - fa) / self.n_skipped if self.n_skipped else None,
            eligible=reason is None,
            reason=reason,
            rule=t.tuning_rule,
            evidence=levers,
            evidence_p=max((e.p_value for e in levers), default=1.0) if t.evidence_rule else None,
            threshold=self.threshold,
            alpha=t.max_false_override if t.evidence_rule else None,
            tested=self.tested,
        )

    def _reason(self, idx: int, code: int, levers: tuple[LeverEvidence, ...]) -> str | None:
        """The refusal as the log lines and `explain tuning` print it (None: eligible)."""
        t = self.tunables
        g = int(self.misses_caught[idx] + self.failures_avoided[idx])
        fa = int(self.failures_added[idx])
        lo = fa + int(self.wins_lost[idx])
        if code == MIN_GAIN:
            return f"gained {g} < min_gain {max(int(t.min_gain), 1)}"
        if code == MIN_RATIO:
            return f"ratio {fmt_ratio(g / lo)}x < min_ratio {fmt_ratio(t.min_ratio)}x"
        if code == SIGN_TEST:
            return f"p_value {sign_test_p_value(g, lo):.4g} > max_p_value {t.max_p_value:g}"
        if code == DODGE_GUARD:
            dodge_sim = (self.n_skipped_failures - fa) / self.n_skipped
            return (
                f"dodge guard: dodge rate {self.dodge_rate:.3f} would drop to {dodge_sim:.3f} "
                f"(by more than {t.dodge_max_drop:g})"
            )
        if code == EVIDENCE:
            worst = max(levers, key=lambda e: e.p_value)
            return (
                f"evidence p={worst.p_value:.3g} > alpha={self.threshold:.3g} ({t.max_false_override:g}/{self.tested} "
                f"tested): {worst.text()}"
            )
        return None

    @property
    def candidates(self) -> list[Candidate]:
        """Every tested candidate, best first."""
        return [self.candidate(int(i)) for i in self.order]

    def top(self, k: int) -> list[Candidate]:
        return [self.candidate(int(i)) for i in self.order[:k]]

    @cached_property
    def best(self) -> Candidate | None:
        hits = np.flatnonzero(self.eligible[self.order])
        return self.candidate(int(self.order[hits[0]])) if hits.size else None

    @property
    def no_override_reason(self) -> str | None:
        """Why nothing is applied (None when a candidate is eligible)."""
        if self.best is not None:
            return None
        if self.n_events == 0:
            return "no events"
        if self.order.size == 0:
            return "no candidate tested"
        top = self.candidate(int(self.order[0]))
        return f"best candidate {top.label} refused: {top.reason}"


def fmt_ratio(r: float) -> str:
    """3.0, 1.33, 5.0: two decimals at most, one at least (the log lines)."""
    text = f"{r:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


@lru_cache(maxsize=65536)
def sign_test_p_value(gained: int, lost: int) -> float:
    """One-sided exact binomial tail P(X >= gained | n = gained + lost, p = 1/2), correctly rounded."""
    n = gained + lost
    if gained <= 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(gained, n + 1))
    return tail / (1 << n)


def lever_passes(ev: EventArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event and lever value, whether each gate passes: three (events x 5) boolean matrices.

    A gate whose sample value is missing uses its flag (False when missing too) and so never flips.
    """
    ts_d = np.array(STEPS["ts"])
    halo_d = np.array(STEPS["halo"])
    slope_d = np.array(STEPS["slope"])
    with np.errstate(invalid="ignore"):
        ts_thr = ev.ts_min[:, None] * (1 + ts_d[None, :])
        ts_pass = np.where(np.isnan(ev.ts_score)[:, None], ev.ts_ok[:, None], ev.ts_score[:, None] >= ts_thr)
        halo_thr = ev.halo_max[:, None] * (1 + halo_d[None, :])
        halo_pass = np.where(
            np.isnan(ev.halo_distance)[:, None], ev.entry_zone_ok[:, None], ev.halo_distance[:, None] <= halo_thr
        )
        slope_thr = ev.slope_min[:, None] + slope_d[None, :]
        has60 = ~np.isnan(ev.ema60_slope)
        has144 = ~np.isnan(ev.ema144_slope)
        by_value = (has60[:, None] & (ev.ema60_slope[:, None] > slope_thr)) | (
            has144[:, None] & (ev.ema144_slope[:, None] >= slope_thr)
        )
        slope_pass = np.where((~has60 & ~has144)[:, None], ev.slope_ok[:, None], by_value)
    return ts_pass, halo_pass, slope_pass


def blocked_by(ev: EventArrays) -> list[list[str]]:
    """The gates failing at base per event (ts, slope, halo order): what the capture trigger stores."""
    ts_pass, halo_pass, slope_pass = lever_passes(ev)
    out = []
    for t, s, h in zip(ts_pass[:, MIDDLE], slope_pass[:, MIDDLE], halo_pass[:, MIDDLE], strict=True):
        out.append([g for g, ok in (("ts", t), ("slope", s), ("halo", h)) if not ok])
    return out


_GRID = np.array(GRID)
_GRID_INDEX = {g: i for i, g in enumerate(GRID)}
_COLS = np.array([i * 25 + j * 5 + k for i, j, k in GRID])
_NONZERO = np.count_nonzero(_GRID != MIDDLE, axis=1)
_STEPS = np.abs(_GRID - MIDDLE).sum(axis=1)
# Per candidate and lever: +1 loosening, -1 tightening, 0 unchanged; and the combination (0..124,
# i*25 + j*5 + k) of the candidate with that lever put back at base.
_DIR = np.zeros((N_CANDIDATES, 3), dtype=np.int8)
for _col, _lever in enumerate(LEVERS):
    _changed = _GRID[:, _col] != MIDDLE
    _loose = np.isin(_GRID[:, _col], LOOSENING[_lever])
    _DIR[:, _col] = np.where(_loose, 1, np.where(_changed, -1, 0))
_WEIGHT = np.array([25, 5, 1])
_DROP = _COLS[:, None] - (_GRID - MIDDLE) * _WEIGHT[None, :]


def hypergeom_upper_tail(y, good, draws, total) -> np.ndarray:
    """P(Y >= y) for Y ~ Hypergeometric(total, good, draws), elementwise and exact; 1 where y <= 0."""
    y, good, draws, total = np.broadcast_arrays(*(np.asarray(a, dtype=np.int64) for a in (y, good, draws, total)))
    out = np.ones(y.shape, dtype=np.float64)
    need = (y > 0) & (draws > 0)
    if need.any():
        out[need] = hypergeom.sf(y[need] - 1, total[need], good[need], draws[need])
    return np.clip(out, 0.0, 1.0)


def _lever_p_values(flip_n, flip_s, ref_n, ref_s, direction) -> np.ndarray:
    """One-sided Fisher exact p of each lever's flips vs its reference (arrays of one shape).

    Loosening: the successes among the admitted are large (P(X >= admitted successes)); tightening:
    the failures among the removed are large (P(Y >= removed failures)), the same upper tail.
    """
    loosen = direction > 0
    flip_f, ref_f = flip_n - flip_s, ref_n - ref_s
    y = np.where(loosen, flip_s, flip_f)
    good = np.where(loosen, flip_s + ref_s, flip_f + ref_f)
    return hypergeom_upper_tail(y, good, flip_n, flip_n + ref_n)


def within_alpha(p, threshold: float):
    """The evidence rule's verdict: a candidate's p (its largest lever p) <= max_false_override / tested."""
    return p <= threshold


def _bit_words(mask: np.ndarray) -> np.ndarray:
    """(..., events) booleans as (..., words) uint64 bit sets (event e = bit e % 64 of word e // 64)."""
    pad = (-mask.shape[-1]) % 64
    if pad:
        mask = np.concatenate([mask, np.zeros((*mask.shape[:-1], pad), dtype=bool)], axis=-1)
    return np.ascontiguousarray(np.packbits(mask, axis=-1, bitorder="little")).view(np.uint64)


def group_pass_counts(groups: np.ndarray, ts_pass, halo_pass, slope_pass) -> np.ndarray:
    """counts[g, c] = events of group g (groups x events booleans) passing all three gates under
    candidate c (_GRID order), each event set a row of 64-bit words: the 125 lever combinations are
    ANDs of the three gates' bit sets, and a count is a popcount (exact; ~7x a float matrix product)."""
    return _combo_pass_counts(groups, ts_pass, halo_pass, slope_pass)[:, _COLS]


def _combo_pass_counts(groups: np.ndarray, ts_pass, halo_pass, slope_pass) -> np.ndarray:
    """counts[g, i*25 + j*5 + k]: group g's events passing (ts i, halo j, slope k), base included (62)."""
    ts_bits, halo_bits, slope_bits = _bit_words(ts_pass.T), _bit_words(halo_pass.T), _bit_words(slope_pass.T)
    # 5 x 5 x 5 x words -> 125 x words; row i*25 + j*5 + k is (ts i, halo j, slope k), row 62 the base.
    combos = (ts_bits[:, None, None, :] & halo_bits[None, :, None, :] & slope_bits[None, None, :, :]).reshape(
        125, -1
    )
    per_group = combos[None, :, :] & _bit_words(groups)[:, None, :]
    return np.bitwise_count(per_group).sum(axis=2, dtype=np.int64)


@dataclass(frozen=True)
class _Groups:
    """The outcome groups of one lesson's events. An event whose recorded decision disagrees with the
    base gates is inconsistent and in no group, so it never flips (design §10, Flips)."""

    consistent: np.ndarray
    missed: np.ndarray  # skipped, would have succeeded
    dodged: np.ndarray  # skipped, would have failed
    won: np.ndarray  # acted, succeeded
    false_pos: np.ndarray  # acted, failed

    @classmethod
    def of(cls, ev: EventArrays, passes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> _Groups:
        ts_pass, halo_pass, slope_pass = passes
        base = ts_pass[:, MIDDLE] & halo_pass[:, MIDDLE] & slope_pass[:, MIDDLE]
        acted, success = ev.acted, ev.success
        consistent = acted == base
        return cls(
            consistent=consistent,
            missed=~acted & consistent & success,
            dodged=~acted & consistent & ~success,
            won=acted & consistent & success,
            false_pos=acted & consistent & ~success,
        )


@dataclass(frozen=True)
class _Flips:
    """Per candidate the four flip counts, and per lever combination (base included) the passing events
    of each group (combo: groups missed, dodged, won, false_pos x 125 combinations)."""

    combo: np.ndarray
    n_won: int
    n_false_pos: int
    misses_caught: np.ndarray
    failures_added: np.ndarray
    wins_lost: np.ndarray
    failures_avoided: np.ndarray

    @property
    def gained(self) -> np.ndarray:
        return self.misses_caught + self.failures_avoided

    @property
    def lost(self) -> np.ndarray:
        return self.failures_added + self.wins_lost


def flip_counts(groups: _Groups, passes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> _Flips:
    """The flips of every candidate (design §10): skipped -> pass counts misses_caught (success) or
    failures_added (failure); acted -> fail counts wins_lost (success) or failures_avoided (failure)."""
    combo = _combo_pass_counts(np.stack([groups.missed, groups.dodged, groups.won, groups.false_pos]), *passes)
    counts = combo[:, _COLS]
    n_won, n_false_pos = int(np.count_nonzero(groups.won)), int(np.count_nonzero(groups.false_pos))
    return _Flips(
        combo=combo,
        n_won=n_won,
        n_false_pos=n_false_pos,
        misses_caught=counts[0],
        failures_added=counts[1],
        wins_lost=n_won - counts[2],
        failures_avoided=n_false_pos - counts[3],
    )


def tested_candidates(passes, missed: np.ndarray, prune: bool) -> tuple[np.ndarray, dict[str, bool]]:
    """Pruning (design §10): a lever's loosening values are tested only if some missed event fails its
    gate at base (the judgement that fills blocked_by); loosening an unblocked lever can only add
    failures. Returns the tested mask over GRID and, per lever, whether its loosenings are tested."""
    loosening_tested = {lever: bool(np.any(~p[missed, MIDDLE])) for lever, p in zip(LEVERS, passes, strict=True)}
    tested_mask = np.ones(N_CANDIDATES, dtype=bool)
    if prune:
        for col, lever in enumerate(LEVERS):
            if not loosening_tested[lever]:
                tested_mask &= ~np.isin(_GRID[:, col], LOOSENING[lever])
    return tested_mask, loosening_tested


def plan_guards(flips: _Flips, n_skipped: int, dodge_rate: float | None, t: Tunables) -> np.ndarray:
    """The plan's guards (design §10, both rules), per candidate the first one refusing it: gained >=
    min_gain; ratio >= min_ratio; under the plan rule the sign test P(X >= gained | gained + lost, 1/2)
    <= max_p_value (1 = off); when the base dodge rate >= dodge_high, failures_added / skipped <=
    dodge_max_drop. Returns the refusal codes (PASSED, MIN_GAIN, MIN_RATIO, SIGN_TEST, DODGE_GUARD)."""
    gained, lost = flips.gained, flips.lost
    refusals = np.full(N_CANDIDATES, PASSED, dtype=np.int8)
    with np.errstate(divide="ignore", invalid="ignore"):
        low_ratio = (lost > 0) & (gained / np.where(lost == 0, 1, lost) < t.min_ratio)
    refusals[low_ratio] = MIN_RATIO
    refusals[gained < max(int(t.min_gain), 1)] = MIN_GAIN
    if not t.evidence_rule and t.max_p_value < 1.0:
        for idx in np.flatnonzero(refusals == PASSED):
            if sign_test_p_value(int(gained[idx]), int(lost[idx])) > t.max_p_value:
                refusals[idx] = SIGN_TEST
    if dodge_guard_armed(dodge_rate, t):
        refusals[(refusals == PASSED) & (flips.failures_added / n_skipped > t.dodge_max_drop)] = DODGE_GUARD
    return refusals


def dodge_guard_armed(dodge_rate: float | None, t: Tunables) -> bool:
    """The dodge guard applies when the base dodge rate (skipped failures / skipped) >= dodge_high."""
    return dodge_rate is not None and dodge_rate >= t.dodge_high


def tuning_evidence(
    flips: _Flips, refusals: np.ndarray, tested_mask: np.ndarray, t: Tunables
) -> tuple[np.ndarray, np.ndarray, float]:
    """The tuning evidence (design §10, evidence rule): each changed lever's own flips against its
    reference by a one-sided Fisher exact test, a candidate's p the largest of its levers', at the
    Bonferroni threshold max_false_override / tested. Marks EVIDENCE in refusals for the tested
    candidates the guards passed and that fail it; returns (evidence_counts, evidence_p, threshold)."""
    # A lever's own flips are set differences of pass counts: loosening only adds passing events
    # and tightening only removes them, so (candidate) - (candidate with the lever at base) counts
    # exactly the events that lever admits, and the reverse the acted events it removes.
    combo = flips.combo
    here = combo[:, _COLS][:, :, None]  # groups x 124 x 1
    without = combo[:, _DROP]  # groups x 124 x 3
    loosen = _DIR > 0
    flip_s = np.where(loosen, here[0] - without[0], without[2] - here[2])
    flip_f = np.where(loosen, here[1] - without[1], without[3] - here[3])
    ref_s = np.where(loosen, flips.n_won, here[2])
    ref_f = np.where(loosen, flips.n_false_pos, here[3])
    changed = _DIR != 0
    zero = np.zeros_like(flip_s)
    evidence_counts = np.stack(
        [np.where(changed, flip_s + flip_f, zero), np.where(changed, flip_s, zero),
         np.where(changed, ref_s + ref_f, zero), np.where(changed, ref_s, zero)],
        axis=-1,
    )
    tested = int(np.count_nonzero(tested_mask))
    threshold = t.max_false_override / tested if tested else 0.0
    evidence_p = np.full(N_CANDIDATES, np.nan)
    need = np.flatnonzero(tested_mask & (refusals == PASSED))
    if need.size:
        sel = evidence_counts[need]
        p = _lever_p_values(sel[..., 0], sel[..., 1], sel[..., 2], sel[..., 3], _DIR[need])
        evidence_p[need] = np.where(changed[need], p, 0.0).max(axis=1)
        refusals[need[~within_alpha(evidence_p[need], threshold)]] = EVIDENCE
    return evidence_counts, evidence_p, threshold


def ranking_keys(gained: np.ndarray, lost: np.ndarray, idx=slice(None)) -> list[tuple[str, np.ndarray]]:
    """The ranking (design §10), most significant key first, smaller ranks first: highest smoothed
    ratio (gained + 1) / (lost + 1), then most gained, fewest non-zero levers, fewest grid steps, the
    smallest (d_ts, d_halo, d_slope). idx: the GRID positions of gained and lost (all by default)."""
    return [
        ("smoothed ratio", -((gained + 1) / (lost + 1))),
        ("gained", -gained),
        ("levers", _NONZERO[idx]),
        ("grid steps", _STEPS[idx]),
        ("d_ts", _GRID[idx, 0]),
        ("d_halo", _GRID[idx, 1]),
        ("d_slope", _GRID[idx, 2]),
    ]


def deciding_key(a: Candidate, b: Candidate) -> str:
    """The name of the first ranking key on which a and b differ (ranking_keys' names)."""
    keys = ranking_keys(np.array([a.gained, b.gained]), np.array([a.lost, b.lost]), np.array([a.index, b.index]))
    return next((name for name, k in keys if k[0] != k[1]), "d_slope")


def simulate(ev: EventArrays, tunables: Tunables = Tunables(), prune: bool = True) -> SimulationResult:  # noqa: B008
    """The lever simulation of design §10 on one lesson's events: flips of the 124 candidates, the
    pruning, the plan's guards, the evidence rule (when tuning_rule is evidence) and the ranking."""
    passes = lever_passes(ev)
    groups = _Groups.of(ev, passes)
    flips = flip_counts(groups, passes)
    tested_mask, loosening_tested = tested_candidates(passes, groups.missed, prune)
    n_skipped = int(np.count_nonzero(~ev.acted))
    n_skipped_failures = int(np.count_nonzero(~ev.acted & ~ev.success))
    dodge_rate = n_skipped_failures / n_skipped if n_skipped else None
    refusals = plan_guards(flips, n_skipped, dodge_rate, tunables)
    evidence_counts = evidence_p = threshold = None
    if tunables.evidence_rule:
        evidence_counts, evidence_p, threshold = tuning_evidence(flips, refusals, tested_mask, tunables)
    # lexsort: the last key is the primary one.
    order = np.lexsort(tuple(k for _, k in reversed(ranking_keys(flips.gained, flips.lost))))
    order = order[tested_mask[order]]
    tested = int(np.count_nonzero(tested_mask))
    return SimulationResult(
        n_events=len(ev),
        n_inconsistent=int(np.count_nonzero(~groups.consistent)),
        n_skipped=n_skipped,
        n_skipped_failures=n_skipped_failures,
        dodge_rate=dodge_rate,
        tested=tested,
        skipped=N_CANDIDATES - tested,
        loosening_tested=loosening_tested,
        tunables=tunables,
        order=order,
        misses_caught=flips.misses_caught,
        failures_added=flips.failures_added,
        wins_lost=flips.wins_lost,
        failures_avoided=flips.failures_avoided,
        eligible=tested_mask & (refusals == PASSED),
        refusals=refusals,
        evidence_counts=evidence_counts,
        evidence_p=evidence_p,
        threshold=threshold,
    )


# ---------------------------------------------------------------------------------------------
# The materializer (design §10, Overrides as a unit): database in, pm_overrides out.

TUNABLES = "SELECT learning.tunables()"

# The tuning lessons, each with the window it was mined on (learning.tuning_lesson_window): the active
# ones for the materializer, one slice (any status) for `explain tuning`.
TUNING_LESSONS = """
SELECT
    l.id,
    l.pattern_key,
    l.scope_subset,
    l.n,
    l.stats,
    w.window_start AS w_start,
    w.window_end AS w_end,
    l.status
FROM public.learning_lessons AS l
CROSS JOIN LATERAL learning.tuning_lesson_window(l.stats, %(as_of)s::timestamptz) AS w
WHERE l.module = 'pm' AND l.lesson_type = 'tuning_rates' AND l.action_category = 'tuning'
    AND (NOT %(active_only)s::boolean OR l.status = 'active')
    AND (%(pattern_key)s::text IS NULL OR l.pattern_key = %(pattern_key)s::text)
    AND (%(scope)s::jsonb IS NULL OR l.scope_subset = %(scope)s::jsonb)
ORDER BY l.pattern_key, l.scope_subset::text
"""

# One round trip for every window of a chunk: the events of each (pattern_key, window), in id order,
# each with its scope as text (a non-object scope counts as {}, as in design §12). Which lessons an
# event belongs to is LESSON_SCOPES' containment over these same scopes (one snapshot: no event
# inserted meanwhile can shift the match).
WINDOW_EVENTS = """
SELECT
    w.pattern_key,
    w.w_start,
    w.w_end,
    (CASE WHEN pg_catalog.jsonb_typeof(e.scope) = 'object' THEN e.scope ELSE '{}'::jsonb END)::text,
    e.decision = 'acted',
    e.outcome = 'success',
    learning._num(e.factors -> 'decision_sample' -> 'ts_score'),
    learning._num(e.factors -> 'decision_sample' -> 'halo_distance'),
    learning._num(e.factors -> 'decision_sample' -> 'ema60_slope'),
    learning._num(e.factors -> 'decision_sample' -> 'ema144_slope'),
    coalesce(learning._flag(e.factors -> 'decision_sample' -> 'ts_ok'), false),
    coalesce(learning._flag(e.factors -> 'decision_sample' -> 'slope_ok'), false),
    coalesce(learning._flag(e.factors -> 'decision_sample' -> 'entry_zone_ok'), false),
    learning.gate_thresholds(e.factors)
FROM unnest(%(patterns)s::text[], %(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS w (pattern_key, w_start, w_end)
INNER JOIN public.pattern_episode_events AS e
    ON e.pattern_key = w.pattern_key
    AND e.timestamp > w.w_start
    AND e.timestamp <= w.w_end
    AND e.outcome IN ('success', 'failure')
ORDER BY w.pattern_key, w.w_start, w.w_end, e.id
"""

# Per lesson (its position in the chunk) the numbers of its window's distinct scopes that contain its
# slice: the one place a slice is matched to episodes, by jsonb containment `@>` (design §10, §12).
# The equality join on the slice's first scalar pair only narrows the pairs `@>` is tested on (a scope
# containing the slice holds that pair: ~4x fewer tests); a slice without one is tested on every scope.
LESSON_SCOPES = """
WITH scope AS MATERIALIZED (
    SELECT s.window_no, s.scope_no, s.scope::jsonb AS scope
    FROM unnest(%(scope_windows)s::integer[], %(scope_nos)s::integer[], %(scopes)s::text[])
        AS s (window_no, scope_no, scope)
),

scope_pair AS MATERIALIZED (
    SELECT s.window_no, s.scope_no, s.scope, p.key, p.value
    FROM scope AS s
    CROSS JOIN LATERAL pg_catalog.jsonb_each(s.scope) AS p (key, value)
),

lesson AS MATERIALIZED (
    SELECT
        l.ord,
        l.window_no,
        l.scope_subset::jsonb AS scope_subset,
        (
            SELECT pg_catalog.min(p.key)
            FROM pg_catalog.jsonb_each(l.scope_subset::jsonb) AS p (key, value)
            WHERE pg_catalog.jsonb_typeof(p.value) IN ('string', 'number', 'boolean')
        ) AS key
    FROM unnest(%(lesson_windows)s::integer[], %(slices)s::text[]) WITH ORDINALITY AS l (window_no, scope_subset, ord)
)

SELECT m.ord::integer, pg_catalog.array_agg(m.scope_no ORDER BY m.scope_no)
FROM (
    SELECT lesson.ord, sp.scope_no
    FROM lesson
    INNER JOIN scope_pair AS sp
        ON lesson.window_no = sp.window_no AND lesson.key = sp.key AND lesson.scope_subset -> lesson.key = sp.value
    WHERE sp.scope @> lesson.scope_subset
    UNION ALL
    SELECT lesson.ord, scope.scope_no
    FROM lesson
    INNER JOIN scope ON lesson.window_no = scope.window_no
    WHERE lesson.key IS NULL AND scope.scope @> lesson.scope_subset
) AS m
GROUP BY m.ord
"""

# The tuning overrides of one chunk's lessons (same pattern_key and scope_subset).
EXISTING_FOR_LESSONS = """
SELECT o.id, o.pattern_key, o.action_category, o.scope_subset, o.multiplier, o.tuning_params, o.n, o.status
FROM unnest(%(patterns)s::text[], %(scopes)s::text[]) AS k (pattern_key, scope_subset)
INNER JOIN public.pm_overrides AS o
    ON o.pattern_key = k.pattern_key AND o.scope_subset = k.scope_subset::jsonb
WHERE o.action_category LIKE 'tuning\\_%%'
ORDER BY o.id
"""

# Active tuning overrides of no active tuning lesson: stale, whatever the lessons' simulation says.
ORPHAN_TUNING = """
SELECT o.id, o.pattern_key, o.action_category, o.scope_subset, o.multiplier, o.tuning_params, o.n, o.status
FROM public.pm_overrides AS o
WHERE o.action_category LIKE 'tuning\\_%' AND o.status = 'active'
    AND NOT EXISTS (
        SELECT FROM public.learning_lessons AS l
        WHERE l.module = 'pm' AND l.lesson_type = 'tuning_rates' AND l.action_category = 'tuning'
            AND l.status = 'active' AND l.pattern_key = o.pattern_key AND l.scope_subset = o.scope_subset
    )
ORDER BY o.id
"""

UPSERT_OVERRIDES = """
INSERT INTO public.pm_overrides AS o (
    pattern_key, action_category, scope_subset, multiplier, tuning_params, n, status, last_updated_at
)
SELECT r.pattern_key, r.action_category, r.scope_subset, r.multiplier, r.tuning_params, r.n, 'active',
    pg_catalog.now()
FROM pg_catalog.jsonb_to_recordset(%(rows)s::jsonb) AS r (
    pattern_key text, action_category text, scope_subset jsonb, multiplier float8, tuning_params jsonb, n integer
)
ON CONFLICT (pattern_key, action_category, scope_subset) DO UPDATE
SET
    multiplier = excluded.multiplier,
    tuning_params = excluded.tuning_params,
    n = excluded.n,
    status = 'active',
    last_updated_at = pg_catalog.now()
"""

DEACTIVATE = """
UPDATE public.pm_overrides AS o
SET status = 'inactive', last_updated_at = pg_catalog.now()
WHERE o.id = ANY(%(ids)s::bigint[]) AND o.status = 'active'
"""

# Lessons the materializer holds at once: their events, simulations, overrides and log lines.
CHUNK_LESSONS = 1000

LOG_MANY = """
SELECT learning._log(x.level, x.message)
FROM unnest(%(levels)s::text[], %(messages)s::text[]) WITH ORDINALITY AS x (level, message, ord)
ORDER BY x.ord
"""


@dataclass(frozen=True)
class Lesson:
    id: int
    pattern_key: str
    scope_subset: dict
    n: int
    stats: dict
    w_start: object
    w_end: object
    status: str = "active"

    @property
    def window(self) -> tuple:
        return (self.pattern_key, self.w_start, self.w_end)


def fmt_scope(scope: dict) -> str:
    """{timeframe: 15m, chain: solana}, keys sorted (as learning._fmt_slice prints it)."""
    inner = ", ".join(f"{k}: {_scalar(v)}" for k, v in sorted(scope.items()))
    return "{" + inner + "}"


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _empty_events() -> EventArrays:
    z = np.zeros(0)
    return EventArrays(*(z for _ in range(12)))


class _WindowEvents:
    """The events of one (pattern_key, window) and, per event, the number of its scope among the
    window's distinct scope texts (`scopes`); LESSON_SCOPES says which of those contain a slice."""

    def __init__(self, rows: list) -> None:
        numbers: dict[str, int] = {}
        self.scope_no = np.array([numbers.setdefault(r[3], len(numbers)) for r in rows], dtype=np.int64)
        self.scopes = list(numbers)
        th = np.array([r[13] for r in rows], dtype=np.float64).reshape(-1, 3)

        def f(col):
            return np.array([np.nan if r[col] is None else r[col] for r in rows], dtype=np.float64)

        def b(col):
            return np.array([bool(r[col]) for r in rows], dtype=bool)

        self.events = EventArrays(
            acted=b(4),
            success=b(5),
            ts_score=f(6),
            halo_distance=f(7),
            ema60_slope=f(8),
            ema144_slope=f(9),
            ts_ok=b(10),
            slope_ok=b(11),
            entry_zone_ok=b(12),
            ts_min=th[:, 0],
            halo_max=th[:, 1],
            slope_min=th[:, 2],
        )

    def subset(self, scope_nos: Sequence[int]) -> EventArrays:
        """The events whose scope is one of scope_nos."""
        member = np.zeros(len(self.scopes), dtype=bool)
        member[list(scope_nos)] = True
        return self.events.take(np.flatnonzero(member[self.scope_no]))


def _load_windows(conn, windows: Sequence[tuple]) -> dict[tuple, _WindowEvents]:
    """The events of each (pattern_key, w_start, w_end), from one query; a window without events has none."""
    if not windows:
        return {}
    windows = sorted(set(windows))
    rows = conn.execute(
        WINDOW_EVENTS,
        {
            "patterns": [w[0] for w in windows],
            "starts": [w[1] for w in windows],
            "ends": [w[2] for w in windows],
        },
    ).fetchall()
    grouped: dict[tuple, list] = {}
    for row in rows:
        grouped.setdefault((row[0], row[1], row[2]), []).append(row)
    del rows
    return {key: _WindowEvents(group) for key, group in grouped.items()}


def _lesson_scopes(conn, lessons: Sequence[Lesson], built: dict[tuple, _WindowEvents]) -> list[list[int]]:
    """Per lesson, the numbers of its window's scopes that contain its slice (PostgreSQL's `@>`)."""
    windows = list(built)
    number = {w: i for i, w in enumerate(windows)}
    known = [(i, lesson) for i, lesson in enumerate(lessons) if lesson.window in number]
    out: list[list[int]] = [[] for _ in lessons]
    if not known:
        return out
    params = {
        "scope_windows": [number[w] for w in windows for _ in built[w].scopes],
        "scope_nos": [k for w in windows for k in range(len(built[w].scopes))],
        "scopes": [s for w in windows for s in built[w].scopes],
        "lesson_windows": [number[lesson.window] for _, lesson in known],
        "slices": [json.dumps(lesson.scope_subset or {}) for _, lesson in known],
    }
    for ord_, nos in conn.execute(LESSON_SCOPES, params).fetchall():
        out[known[ord_ - 1][0]] = nos
    return out


def _lesson_events(conn, lessons: Sequence[Lesson], built: dict[tuple, _WindowEvents]) -> Iterator[EventArrays]:
    """Each lesson's events, one lesson at a time: those of its window whose scope contains its slice."""
    scopes = _lesson_scopes(conn, lessons, built)
    for lesson, nos in zip(lessons, scopes, strict=True):
        yield built[lesson.window].subset(nos) if lesson.window in built else _empty_events()


def load_lessons(conn, as_of=None, pattern_key: str | None = None, scope: dict | None = None) -> list[Lesson]:
    """The active tuning lessons (or, given pattern_key and scope, that slice's lesson of any status)."""
    params = {
        "as_of": as_of or _now(conn),
        "active_only": pattern_key is None,
        "pattern_key": pattern_key,
        "scope": None if scope is None else json.dumps(scope),
    }
    return [Lesson(*row) for row in conn.execute(TUNING_LESSONS, params).fetchall()]


def load_events(conn, lessons: Sequence[Lesson]) -> dict[int, EventArrays]:
    """Every lesson's events, from one query over the distinct (pattern_key, window) pairs."""
    if not lessons:
        return {}
    built = _load_windows(conn, [lesson.window for lesson in lessons])
    return {lesson.id: ev for lesson, ev in zip(lessons, _lesson_events(conn, lessons, built), strict=True)}


def _now(conn):
    return conn.execute("SELECT pg_catalog.now()").fetchone()[0]


def tuning_params(result: SimulationResult, best: Candidate, lever: str, lesson: Lesson) -> dict:
    """Everything the winner stands on, as stored in pm_overrides.tuning_params."""
    d = dict(zip(LEVERS, best.deltas, strict=True))
    return {
        "lever": lever,
        "delta": d[lever],
        "levers": d,
        "best": best.label,
        **best.counts(),
        "ratio": best.ratio,
        "ratio_infinite": best.ratio is None,
        "smoothed_ratio": best.smoothed_ratio,
        "p_value": best.p_value,
        "tested": result.tested,
        "skipped": result.skipped,
        "n_events": result.n_events,
        "n_inconsistent": result.n_inconsistent,
        "dodge_rate": result.dodge_rate,
        "dodge_rate_sim": best.dodge_rate_sim,
        "lesson_id": lesson.id,
        "rule": best.rule,
        **(evidence_params(best) if best.rule == "evidence" else {}),
    }


def evidence_params(c: Candidate) -> dict:
    """The evidence behind a candidate: per changed lever its flips, their rate, the reference rate and
    p; the candidate's p (the largest) against alpha = max_false_override / tested."""
    return {
        "evidence": {e.lever: e.as_dict() for e in c.evidence},
        "alpha": c.alpha,
        "threshold": c.threshold,
    }


def desired_rows(lesson: Lesson, result: SimulationResult) -> list[dict]:
    """The three pm_overrides rows of a slice's winner (zeros included), or none."""
    best = result.best
    if best is None:
        return []
    d = dict(zip(LEVERS, best.deltas, strict=True))
    rows = []
    for lever in LEVERS:
        multiplier = 1.0 if lever == "slope" else 1 + d[lever]
        rows.append(
            {
                "pattern_key": lesson.pattern_key,
                "action_category": CATEGORIES[lever],
                "scope_subset": lesson.scope_subset,
                "multiplier": multiplier,
                "tuning_params": tuning_params(result, best, lever, lesson),
                "n": lesson.n,
            }
        )
    return rows


def same_value(a, b, rel: float = 1e-12) -> bool:
    """Equal JSON-like values, numbers compared with a relative tolerance (bools strictly)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y, rel) for x, y in zip(a, b, strict=True))
    return a == b


def simulation_line(lesson: Lesson, result: SimulationResult) -> str:
    head = f"SIMULATION: pattern={lesson.pattern_key} scope={fmt_scope(lesson.scope_subset)} | "
    head += f"tested={result.tested} skipped={result.skipped} | "
    best = result.best
    if best is None:
        return head + f"best=none | events={result.n_events}"
    c = best.counts()
    line = head + (
        f"best={best.label} ratio={best.ratio_text()} (gained={c['gained']} misses_caught={c['misses_caught']} "
        f"failures_avoided={c['failures_avoided']} lost={c['lost']} failures_added={c['failures_added']} "
        f"wins_lost={c['wins_lost']})"
    )
    if best.rule == "evidence":
        line += f" | evidence={best.evidence_text()}; " + "; ".join(e.text() for e in best.evidence)
    return line


def no_override_line(lesson: Lesson, result: SimulationResult) -> str:
    line = (
        f"NO OVERRIDE: pattern={lesson.pattern_key} | scope={fmt_scope(lesson.scope_subset)} | "
        f"reason={result.no_override_reason}"
    )
    if result.order.size:
        top = result.candidate(int(result.order[0]))
        line += f" | top={top.label} ratio={top.ratio_text()} gained={top.gained} lost={top.lost}"
        if top.rule == "evidence":
            line += f" | evidence={top.evidence_text()}"
    return line


def _existing_row_line(r) -> str:
    return (
        f"OVERRIDE DEACTIVATED: pattern={r[1]} | action={r[2]} | scope={fmt_scope(r[3])} | "
        "reason=no eligible candidate or no active lesson for this slice"
    )


def _key(pattern_key: str, category: str, scope: dict) -> tuple[str, str, str]:
    return (pattern_key, category, json.dumps(scope, sort_keys=True))


def _created_line(row: dict) -> str:
    p = row["tuning_params"]
    ratio = "inf" if p["ratio"] is None else f"{fmt_ratio(p['ratio'])}x"
    return (
        f"OVERRIDE CREATED: pattern={row['pattern_key']} | action={row['action_category']} | "
        f"multiplier={row['multiplier']:g} | delta={p['delta']:g} | scope={fmt_scope(row['scope_subset'])} | "
        f"ratio={ratio}"
    )


_COUNTS = ("eligible", "tested", "skipped", "written", "unchanged", "deactivated")


def materialize_tuning(conn, as_of=None, chunk_lessons: int = CHUNK_LESSONS) -> dict:
    """Simulate every active tuning lesson and write each slice's winner (design §10). Idempotent.

    The lessons are read through a cursor and handled chunk_lessons at a time (their events loaded,
    simulated, their overrides compared and written, their log lines written, then freed), so memory
    is bounded by a chunk and one window of events, not by the number of lessons. Overrides of no
    active lesson are deactivated at the end, a chunk at a time.
    """
    started = time.perf_counter()
    totals = dict.fromkeys(_COUNTS, 0)
    with conn.transaction():
        tunables = Tunables.from_json(conn.execute(TUNABLES).fetchone()[0])
        params = {"as_of": as_of or _now(conn), "active_only": True, "pattern_key": None, "scope": None}
        with conn.cursor(name="lowcap_tuning_lessons", scrollable=True) as cur:
            cur.execute(TUNING_LESSONS, params)
            n_lessons = conn.execute('MOVE FORWARD ALL IN "lowcap_tuning_lessons"').rowcount
            cur.scroll(0, mode="absolute")
            _log_many(conn, [("INFO", f"Override Materializer starting | lessons={n_lessons}")])
            cache: dict[tuple, _WindowEvents] = {}  # the last window of the previous chunk
            while rows := cur.fetchmany(chunk_lessons):
                lessons = [Lesson(*row) for row in rows]
                del rows
                for key, value in _materialize_chunk(conn, lessons, tunables, cache).items():
                    totals[key] += value
                del lessons
        totals["deactivated"] += _deactivate_orphans(conn, chunk_lessons)
        duration = time.perf_counter() - started
        _log_many(
            conn,
            [
                (
                    "INFO",
                    f"Override Materializer completed | overrides_created={totals['written']} | "
                    f"unchanged={totals['unchanged']} | deactivated={totals['deactivated']} | duration={duration:.3f}s",
                )
            ],
        )
    return {
        "lessons": n_lessons,
        "eligible": totals["eligible"],
        "overrides_written": totals["written"],
        "unchanged": totals["unchanged"],
        "deactivated": totals["deactivated"],
        "tested": totals["tested"],
        "skipped": totals["skipped"],
    }


def _log_many(conn, logs: list[tuple[str, str]]) -> None:
    if logs:
        conn.execute(LOG_MANY, {"levels": [lv for lv, _ in logs], "messages": [m for _, m in logs]})


def _deactivate_orphans(conn, chunk_lessons: int) -> int:
    """Deactivate the active tuning overrides of no active lesson, a chunk at a time; logs each."""
    deactivated = 0
    with conn.cursor(name="lowcap_tuning_orphans") as cur:
        cur.execute(ORPHAN_TUNING)
        while rows := cur.fetchmany(chunk_lessons):
            deactivated += conn.execute(DEACTIVATE, {"ids": [r[0] for r in rows]}).rowcount
            _log_many(conn, [("INFO", _existing_row_line(r)) for r in rows])
    return deactivated


def _materialize_chunk(conn, lessons: list[Lesson], tunables: Tunables, cache: dict[tuple, _WindowEvents]) -> dict:
    """One chunk of the materializer: simulate, compare with the chunk's stored overrides, write, log."""
    built = _chunk_windows(conn, lessons, cache)
    logs, desired, counts = _simulate_chunk(conn, lessons, built, tunables)
    del built
    existing = {
        _key(r[1], r[2], r[3]): r
        for r in conn.execute(
            EXISTING_FOR_LESSONS,
            {
                "patterns": [lesson.pattern_key for lesson in lessons],
                "scopes": [json.dumps(lesson.scope_subset or {}) for lesson in lessons],
            },
        ).fetchall()
    }
    to_write, counts["unchanged"] = _changed_rows(desired, existing)
    stale = {r[0] for key, r in existing.items() if r[7] == "active" and key not in desired}
    counts["written"] = len(to_write)
    if to_write:
        conn.execute(UPSERT_OVERRIDES, {"rows": json.dumps(to_write)})
        logs.extend(("INFO", _created_line(row)) for row in to_write)
    counts["deactivated"] = 0
    if stale:
        counts["deactivated"] = conn.execute(DEACTIVATE, {"ids": sorted(stale)}).rowcount
        logs.extend(("INFO", _existing_row_line(r)) for r in existing.values() if r[0] in stale)
    _log_many(conn, logs)
    return counts


def _chunk_windows(conn, lessons: list[Lesson], cache: dict[tuple, _WindowEvents]) -> dict[tuple, _WindowEvents]:
    """The events of the chunk's windows. cache holds the previous chunk's last window on entry
    (lessons come in pattern_key order, so a window cut by a chunk boundary is read once) and this
    chunk's last window on return."""
    windows = list(dict.fromkeys(lesson.window for lesson in lessons))
    built = {w: cache[w] for w in windows if w in cache}
    built.update(_load_windows(conn, [w for w in windows if w not in built]))
    cache.clear()
    if windows[-1] in built:
        cache[windows[-1]] = built[windows[-1]]
    return built


def _simulate_chunk(
    conn, lessons: list[Lesson], built: dict[tuple, _WindowEvents], tunables: Tunables
) -> tuple[list[tuple[str, str]], dict[tuple[str, str, str], dict], dict]:
    """Each lesson's simulation (one lesson's events in memory at a time): its log lines, the rows its
    winner wants in pm_overrides (by key) and the eligible / tested / skipped counts."""
    logs: list[tuple[str, str]] = []
    desired: dict[tuple[str, str, str], dict] = {}
    counts = dict.fromkeys(("eligible", "tested", "skipped"), 0)
    for lesson, ev in zip(lessons, _lesson_events(conn, lessons, built), strict=True):
        result = simulate(ev, tunables)
        del ev
        counts["tested"] += result.tested
        counts["skipped"] += result.skipped
        logs.append(("INFO", simulation_line(lesson, result)))
        if result.best is None:
            logs.append(("WARNING", no_override_line(lesson, result)))
        else:
            counts["eligible"] += 1
        for row in desired_rows(lesson, result):
            desired[_key(row["pattern_key"], row["action_category"], row["scope_subset"])] = row
    return logs, desired, counts


def _changed_rows(desired: dict[tuple, dict], existing: dict[tuple, tuple]) -> tuple[list[dict], int]:
    """The desired rows that differ from the stored ones (relative 1e-12), and how many do not."""
    to_write, unchanged = [], 0
    for key, row in desired.items():
        old = existing.get(key)
        if (
            old is not None
            and old[7] == "active"
            and old[6] == row["n"]
            and same_value(old[4], row["multiplier"])
            and same_value(old[5], row["tuning_params"])
        ):
            unchanged += 1
            continue
        to_write.append(row)
    return to_write, unchanged
