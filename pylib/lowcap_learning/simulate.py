"""The lever simulation of SPEC section 7 and the tuning half of the override materializer.

`simulate` is a pure function of numpy arrays (no database): every event is judged under the base
thresholds and under each of the 124 lever combinations at once (events x 5 values per lever, then
one boolean tensor events x 125), flips are counted both ways, candidates are filtered (min_gain,
min_ratio, dodge guard, then the rule's own test) and ranked with SPEC's deterministic tie-breaks.

Two rules (tunable `tuning_rule`, SPEC 13):
- `plan`: SPEC 7 exactly, with the sign test of gained vs lost at `max_p_value`.
- `evidence` (default): the sign test is retired; each changed lever's own flips must beat the base
  rates by a one-sided Fisher exact test. A loosening lever's admitted events (skipped events passing
  the candidate but not the candidate with that lever back at base) must succeed more often than the
  acted events at base; a tightening lever's removed events (acted events passing the candidate with
  that lever at base but not the candidate) must succeed less often than the acted events the candidate
  keeps. Every changed lever must pass at max_false_override / tested (Bonferroni over the lesson's
  tested candidates; a candidate needs all its levers, an intersection-union test, so no further split).
`materialize_tuning` runs it for every active tuning lesson and writes the winner of each slice
as a unit (tuning_ts_min, tuning_halo, tuning_slope_min) to pm_overrides, idempotently.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Sequence
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


@dataclass(frozen=True)
class LeverEvidence:
    """One changed lever's own flips against its reference (SPEC 13, tuning_rule evidence).

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
        what, ref = ("admits", "acted at base") if self.direction == "loosen" else ("removes", "kept")
        return (
            f"{self.lever} {what} {self.flipped} succeeding {_rate_text(self.rate)} vs {ref} "
            f"{_rate_text(self.reference_rate)} of {self.reference} (p={self.p_value:.3g})"
        )

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


def _rate_text(r: float | None) -> str:
    return "-" if r is None else f"{r:.3f}"


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
        op = "<=" if self.evidence_p <= self.threshold else ">"
        return f"p={self.evidence_p:.3g} {op} alpha={self.threshold:.3g} ({self.alpha:g}/{self.tested} tested)"

    @property
    def nonzero_levers(self) -> int:
        return sum(i != MIDDLE for i in self.grid)

    @property
    def grid_steps(self) -> int:
        return sum(abs(i - MIDDLE) for i in self.grid)

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
    # Evidence rule (None under plan): per candidate x lever (ts, halo, slope) the lever's own flips and
    # their reference, the Fisher test's arguments, and per candidate its largest lever p (NaN = not
    # computed: the plan's guards refused it first; candidate() computes it on demand).
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

    def candidate(self, idx: int) -> Candidate:
        if idx not in self._cache:
            self._cache[idx] = self._candidate(idx)
        return self._cache[idx]

    def _candidate(self, idx: int) -> Candidate:
        g = int(self.misses_caught[idx] + self.failures_avoided[idx])
        fa = int(self.failures_added[idx])
        lo = fa + int(self.wins_lost[idx])
        t = self.tunables
        dodge_sim = (self.n_skipped_failures - fa) / self.n_skipped if self.n_skipped else None
        min_gain = max(int(t.min_gain), 1)
        evidence_rule = t.tuning_rule == "evidence"
        levers = self.lever_evidence(idx) if evidence_rule else ()
        ev_p = max((e.p_value for e in levers), default=1.0) if evidence_rule else None
        dodged = (
            self.dodge_rate is not None
            and self.dodge_rate >= t.dodge_high
            and fa / self.n_skipped > t.dodge_max_drop
        )
        if g < min_gain:
            reason = f"gained {g} < min_gain {min_gain}"
        elif lo > 0 and g / lo < t.min_ratio:
            reason = f"ratio {fmt_ratio(g / lo)}x < min_ratio {fmt_ratio(t.min_ratio)}x"
        elif not evidence_rule and t.max_p_value < 1.0 and sign_test_p_value(g, lo) > t.max_p_value:
            reason = f"p_value {sign_test_p_value(g, lo):.4g} > max_p_value {t.max_p_value:g}"
        elif dodged:
            reason = (
                f"dodge guard: dodge rate {self.dodge_rate:.3f} would drop to {dodge_sim:.3f} "
                f"(by more than {t.dodge_max_drop:g})"
            )
        elif evidence_rule and ev_p > self.threshold:
            worst = max(levers, key=lambda e: e.p_value)
            reason = (
                f"evidence p={ev_p:.3g} > alpha={self.threshold:.3g} ({t.max_false_override:g}/{self.tested} "
                f"tested): {worst.text()}"
            )
        else:
            reason = None
        return Candidate(
            grid=GRID[idx],
            misses_caught=int(self.misses_caught[idx]),
            failures_added=fa,
            wins_lost=int(self.wins_lost[idx]),
            failures_avoided=int(self.failures_avoided[idx]),
            dodge_rate_sim=dodge_sim,
            eligible=reason is None,
            reason=reason,
            rule=t.tuning_rule,
            evidence=levers,
            evidence_p=ev_p,
            threshold=self.threshold,
            alpha=t.max_false_override if evidence_rule else None,
            tested=self.tested,
        )

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
    """3.0, 1.33, 5.0: two decimals at most, one at least (the plan's log lines)."""
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


def simulate(ev: EventArrays, tunables: Tunables = Tunables(), prune: bool = True) -> SimulationResult:  # noqa: B008
    """Evaluate the 124-candidate lever grid on one lesson's events (SPEC section 7)."""
    ts_pass, halo_pass, slope_pass = lever_passes(ev)
    base = ts_pass[:, MIDDLE] & halo_pass[:, MIDDLE] & slope_pass[:, MIDDLE]

    acted, success = ev.acted, ev.success
    consistent = acted == base
    missed = ~acted & consistent & success
    dodged = ~acted & consistent & ~success
    won = acted & consistent & success
    false_pos = acted & consistent & ~success
    # Per lever combination (base included), the passing events of each of the four groups.
    combo = _combo_pass_counts(np.stack([missed, dodged, won, false_pos]), ts_pass, halo_pass, slope_pass)
    counts = combo[:, _COLS]
    n_won, n_false_pos = int(np.count_nonzero(won)), int(np.count_nonzero(false_pos))
    misses_caught = counts[0]
    failures_added = counts[1]
    wins_lost = n_won - counts[2]
    failures_avoided = n_false_pos - counts[3]

    # Pruning: a lever's loosening values are tested only if some missed event fails its gate at base
    # (the judgement that fills blocked_by). Loosening an unblocked lever can only add failures.
    loosening_tested = {
        "ts": bool(np.any(~ts_pass[missed, MIDDLE])),
        "halo": bool(np.any(~halo_pass[missed, MIDDLE])),
        "slope": bool(np.any(~slope_pass[missed, MIDDLE])),
    }
    tested_mask = np.ones(N_CANDIDATES, dtype=bool)
    if prune:
        for col, lever in enumerate(LEVERS):
            if not loosening_tested[lever]:
                tested_mask &= ~np.isin(_GRID[:, col], LOOSENING[lever])

    n_skipped = int(np.count_nonzero(~acted))
    n_skipped_failures = int(np.count_nonzero(~acted & ~success))
    dodge_rate = n_skipped_failures / n_skipped if n_skipped else None

    gained = misses_caught + failures_avoided
    lost = failures_added + wins_lost
    eligible = tested_mask & (gained >= max(int(tunables.min_gain), 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        eligible &= (lost == 0) | (gained / np.where(lost == 0, 1, lost) >= tunables.min_ratio)
    evidence_rule = tunables.tuning_rule == "evidence"
    if not evidence_rule and tunables.max_p_value < 1.0:
        for idx in np.flatnonzero(eligible):
            if sign_test_p_value(int(gained[idx]), int(lost[idx])) > tunables.max_p_value:
                eligible[idx] = False
    if dodge_rate is not None and dodge_rate >= tunables.dodge_high:
        eligible &= failures_added / n_skipped <= tunables.dodge_max_drop
    tested = int(np.count_nonzero(tested_mask))

    evidence_counts = evidence_p = threshold = None
    if evidence_rule:
        # A lever's own flips are set differences of pass counts: loosening only adds passing events
        # and tightening only removes them, so (candidate) - (candidate with the lever at base) counts
        # exactly the events that lever admits, and the reverse the acted events it removes.
        here = combo[:, _COLS][:, :, None]  # groups x 124 x 1
        without = combo[:, _DROP]  # groups x 124 x 3
        loosen = _DIR > 0
        flip_s = np.where(loosen, here[0] - without[0], without[2] - here[2])
        flip_f = np.where(loosen, here[1] - without[1], without[3] - here[3])
        ref_s = np.where(loosen, n_won, here[2])
        ref_f = np.where(loosen, n_false_pos, here[3])
        changed = _DIR != 0
        zero = np.zeros_like(flip_s)
        evidence_counts = np.stack(
            [np.where(changed, flip_s + flip_f, zero), np.where(changed, flip_s, zero),
             np.where(changed, ref_s + ref_f, zero), np.where(changed, ref_s, zero)],
            axis=-1,
        )
        threshold = tunables.max_false_override / tested if tested else 0.0
        evidence_p = np.full(N_CANDIDATES, np.nan)
        need = np.flatnonzero(eligible)
        if need.size:
            sel = evidence_counts[need]
            p = _lever_p_values(sel[..., 0], sel[..., 1], sel[..., 2], sel[..., 3], _DIR[need])
            evidence_p[need] = np.where(changed[need], p, 0.0).max(axis=1)
            eligible[need] &= evidence_p[need] <= threshold

    smoothed = (gained + 1) / (lost + 1)
    # lexsort: the last key is the primary one.
    order = np.lexsort((_GRID[:, 2], _GRID[:, 1], _GRID[:, 0], _STEPS, _NONZERO, -gained, -smoothed))
    order = order[tested_mask[order]]
    return SimulationResult(
        n_events=len(ev),
        n_inconsistent=int(np.count_nonzero(~consistent)),
        n_skipped=n_skipped,
        n_skipped_failures=n_skipped_failures,
        dodge_rate=dodge_rate,
        tested=tested,
        skipped=N_CANDIDATES - tested,
        loosening_tested=loosening_tested,
        tunables=tunables,
        order=order,
        misses_caught=misses_caught,
        failures_added=failures_added,
        wins_lost=wins_lost,
        failures_avoided=failures_avoided,
        eligible=eligible,
        evidence_counts=evidence_counts,
        evidence_p=evidence_p,
        threshold=threshold,
    )


# ---------------------------------------------------------------------------------------------
# The materializer (contract 2): database in, pm_overrides out.

TUNABLES = "SELECT learning.tunables()"

# Each lesson is simulated on the window it was mined on (learning.tuning_lesson_window).
ACTIVE_LESSONS = """
SELECT
    l.id,
    l.pattern_key,
    l.scope_subset,
    l.n,
    l.stats,
    w.window_start AS w_start,
    w.window_end AS w_end
FROM public.learning_lessons AS l
CROSS JOIN LATERAL learning.tuning_lesson_window(l.stats, %(as_of)s::timestamptz) AS w
WHERE l.module = 'pm' AND l.lesson_type = 'tuning_rates' AND l.action_category = 'tuning'
    AND l.status = 'active'
    AND (%(lesson_id)s::bigint IS NULL OR l.id = %(lesson_id)s::bigint)
ORDER BY l.pattern_key, l.scope_subset::text
"""

# One round trip for every lesson: the events of each (pattern_key, window) once, in id order;
# each lesson's events are the ones whose scope contains its slice (matched in numpy).
WINDOW_EVENTS = """
SELECT
    w.pattern_key,
    w.w_start,
    w.w_end,
    e.scope,
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


def fmt_scope(scope: dict) -> str:
    """{timeframe: 15m, chain: solana}, keys sorted (as learning._fmt_slice prints it)."""
    inner = ", ".join(f"{k}: {_scalar(v)}" for k, v in sorted(scope.items()))
    return "{" + inner + "}"


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _tag(v):
    """A scope value as jsonb compares it: booleans, numbers (1 == 1.0) and strings apart."""
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, int | float):
        return ("n", float(v))
    if isinstance(v, str):
        return ("s", v)
    return None


def _empty_events() -> EventArrays:
    z = np.zeros(0)
    return EventArrays(*(z for _ in range(12)))


class _WindowEvents:
    """The events of one (pattern_key, window) and a scope index to cut each lesson's subset."""

    def __init__(self, rows: list) -> None:
        self.scopes = [r[3] if isinstance(r[3], dict) else {} for r in rows]
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
        self._codes: dict[str, tuple[dict, np.ndarray]] = {}

    def _column(self, key: str) -> tuple[dict, np.ndarray]:
        if key not in self._codes:
            table: dict = {}
            codes = np.array(
                [table.setdefault(_tag(s.get(key, None)), len(table)) if key in s else -1 for s in self.scopes],
                dtype=np.int64,
            )
            self._codes[key] = (table, codes)
        return self._codes[key]

    def subset(self, scope_subset: dict) -> EventArrays:
        mask = np.ones(len(self.events), dtype=bool)
        for key, value in scope_subset.items():
            table, codes = self._column(key)
            tag = _tag(value)
            mask &= codes == table[tag] if tag is not None and tag in table else False
        ev = self.events
        return EventArrays(*(getattr(ev, name)[mask] for name in ev.__dataclass_fields__))


def load_lessons(conn, as_of=None, lesson_id=None) -> list[Lesson]:
    params = {"as_of": as_of or _now(conn), "lesson_id": lesson_id}
    return [Lesson(*row) for row in conn.execute(ACTIVE_LESSONS, params).fetchall()]


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


def _window(lesson: Lesson) -> tuple:
    return (lesson.pattern_key, lesson.w_start, lesson.w_end)


def load_events(conn, lessons: Sequence[Lesson]) -> dict[int, EventArrays]:
    """Every lesson's events, from one query over the distinct (pattern_key, window) pairs."""
    if not lessons:
        return {}
    built = _load_windows(conn, [_window(lesson) for lesson in lessons])
    out = {}
    for lesson in lessons:
        we = built.get((lesson.pattern_key, lesson.w_start, lesson.w_end))
        out[lesson.id] = we.subset(lesson.scope_subset or {}) if we is not None else _empty_events()
    return out


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


def _key(pattern_key: str, category: str, scope: dict) -> tuple[str, str, str]:
    return (pattern_key, category, json.dumps(scope, sort_keys=True))


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


def materialize_tuning(conn, as_of=None, chunk_lessons: int = CHUNK_LESSONS) -> dict:
    """Simulate every active tuning lesson and write each slice's winner (contract 2). Idempotent.

    The lessons are read through a cursor and handled chunk_lessons at a time (their events loaded,
    simulated, their overrides compared and written, their log lines written, then freed), so memory
    is bounded by a chunk and one window of events, not by the number of lessons. Overrides of no
    active lesson are deactivated at the end, a chunk at a time.
    """
    started = time.perf_counter()
    n_lessons = eligible = tested = skipped = written = unchanged = deactivated = 0
    with conn.transaction():
        tunables = Tunables.from_json(conn.execute(TUNABLES).fetchone()[0])
        params = {"as_of": as_of or _now(conn), "lesson_id": None}
        with conn.cursor(name="lowcap_tuning_lessons", scrollable=True) as cur:
            cur.execute(ACTIVE_LESSONS, params)
            n_lessons = conn.execute('MOVE FORWARD ALL IN "lowcap_tuning_lessons"').rowcount
            cur.scroll(0, mode="absolute")
            _log_many(conn, [("INFO", f"Override Materializer starting | lessons={n_lessons}")])
            cache: dict[tuple, _WindowEvents] = {}  # the last window of the previous chunk
            while rows := cur.fetchmany(chunk_lessons):
                lessons = [Lesson(*row) for row in rows]
                del rows
                c = _materialize_chunk(conn, lessons, tunables, cache)
                eligible += c["eligible"]
                tested += c["tested"]
                skipped += c["skipped"]
                written += c["written"]
                unchanged += c["unchanged"]
                deactivated += c["deactivated"]
                del lessons
        with conn.cursor(name="lowcap_tuning_orphans") as cur:
            cur.execute(ORPHAN_TUNING)
            while rows := cur.fetchmany(chunk_lessons):
                deactivated += conn.execute(DEACTIVATE, {"ids": [r[0] for r in rows]}).rowcount
                _log_many(conn, [("INFO", _existing_row_line(r)) for r in rows])
        duration = time.perf_counter() - started
        _log_many(
            conn,
            [
                (
                    "INFO",
                    f"Override Materializer completed | overrides_created={written} | unchanged={unchanged} | "
                    f"deactivated={deactivated} | duration={duration:.3f}s",
                )
            ],
        )
    return {
        "lessons": n_lessons,
        "eligible": eligible,
        "overrides_written": written,
        "unchanged": unchanged,
        "deactivated": deactivated,
        "tested": tested,
        "skipped": skipped,
    }


def _log_many(conn, logs: list[tuple[str, str]]) -> None:
    if logs:
        conn.execute(LOG_MANY, {"levels": [lv for lv, _ in logs], "messages": [m for _, m in logs]})


def _materialize_chunk(conn, lessons: list[Lesson], tunables: Tunables, cache: dict[tuple, _WindowEvents]) -> dict:
    """One chunk of the materializer: simulate, compare with the chunk's stored overrides, write, log.

    cache holds the previous chunk's last window on entry (lessons come in pattern_key order, so a
    window cut by a chunk boundary is read once) and this chunk's last window on return."""
    windows = list(dict.fromkeys(_window(lesson) for lesson in lessons))
    built = {w: cache[w] for w in windows if w in cache}
    built.update(_load_windows(conn, [w for w in windows if w not in built]))
    cache.clear()

    logs: list[tuple[str, str]] = []
    desired: dict[tuple[str, str, str], dict] = {}
    eligible = tested = skipped = 0
    for lesson in lessons:
        we = built.get(_window(lesson))
        ev = we.subset(lesson.scope_subset or {}) if we is not None else _empty_events()
        result = simulate(ev, tunables)
        del ev
        tested += result.tested
        skipped += result.skipped
        logs.append(("INFO", simulation_line(lesson, result)))
        if result.best is None:
            logs.append(("WARNING", no_override_line(lesson, result)))
        else:
            eligible += 1
        for row in desired_rows(lesson, result):
            desired[_key(row["pattern_key"], row["action_category"], row["scope_subset"])] = row
    last = windows[-1]
    if last in built:
        cache[last] = built[last]
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
    stale = {r[0] for key, r in existing.items() if r[7] == "active" and key not in desired}

    if to_write:
        conn.execute(UPSERT_OVERRIDES, {"rows": json.dumps(to_write)})
        for row in to_write:
            p = row["tuning_params"]
            ratio = "inf" if p["ratio"] is None else f"{fmt_ratio(p['ratio'])}x"
            logs.append(
                (
                    "INFO",
                    f"OVERRIDE CREATED: pattern={row['pattern_key']} | action={row['action_category']} | "
                    f"multiplier={row['multiplier']:g} | delta={p['delta']:g} | "
                    f"scope={fmt_scope(row['scope_subset'])} | ratio={ratio}",
                )
            )
    deactivated = 0
    if stale:
        deactivated = conn.execute(DEACTIVATE, {"ids": sorted(stale)}).rowcount
        logs.extend(("INFO", _existing_row_line(r)) for r in existing.values() if r[0] in stale)
    _log_many(conn, logs)
    return {
        "eligible": eligible,
        "tested": tested,
        "skipped": skipped,
        "written": len(to_write),
        "unchanged": unchanged,
        "deactivated": deactivated,
    }
