"""Seeded synthetic history for the demo, the benchmarks and tests.

Every generator takes a seed and returns the same rows for the same arguments (numpy Generator,
no global state, no clock). Rows are plain dicts ready for the insert_* helpers, which send a whole
list as one multi-row INSERT ... SELECT FROM jsonb_to_recordset (one round trip, one statement, so
the closed_trades trigger sees the batch as one step sequence).

The data carries signal on purpose:
- closed trades: one timeframe (better_timeframe, 4h by default) has a clearly higher mean ROI, and
  chain/regime/mcap shift ROI, so strength lessons differ by slice; trims and S3 vary with the outcome.
- episode events: outcomes correlate with the gates, so loosening a lever pays in some slices
  (near-miss ts scores of nano/micro caps succeed, halo overshoots in high-volume slices succeed,
  slightly negative slopes in a bull regime succeed) and tightening ts pays in the bear regime.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

TIMEFRAMES = ("15m", "1h", "4h")

# Scope dimensions and their values, with skewed (realistic) frequencies.
SCOPE_DIMS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "chain": (("solana", "ethereum", "base", "bsc"), (0.45, 0.25, 0.2, 0.1)),
    "timeframe": (TIMEFRAMES, (0.4, 0.35, 0.25)),
    "mcap_bucket": (("nano", "micro", "small", "mid", "large"), (0.3, 0.3, 0.2, 0.12, 0.08)),
    "vol_bucket": (("low", "mid", "high", "extreme"), (0.3, 0.35, 0.25, 0.1)),
    "age_bucket": (("new", "young", "mature", "old"), (0.25, 0.3, 0.3, 0.15)),
    "regime": (("bull", "chop", "bear"), (0.35, 0.4, 0.25)),
}

# Base engine thresholds (BOT_SHAPES: TS 0.60, halo 1.0 ATR, slope 0.0).
TS_MIN = 0.60
HALO_MAX = 1.0
SLOPE_MIN = 0.0
DX_MIN = 0.5

EPISODE_PATTERNS = (
    "pm.uptrend.S1.entry",
    "pm.uptrend.S2.add",
    "pm.uptrend.S3.retest",
    "pm.uptrend.S1.add",
)

# Trade action templates: (pattern_key, action_category, state).
_ENTRY = (("pm.uptrend.S1.entry", "entry", "S1"), ("pm.uptrend.S2.entry", "entry", "S2"))
_ADD = (("pm.uptrend.S1.add", "add", "S1"), ("pm.uptrend.S2.add", "add", "S2"), ("pm.uptrend.S3.add", "add", "S3"))
_TRIM = (("pm.uptrend.S2.trim", "trim", "S2"), ("pm.uptrend.S3.trim", "trim", "S3"))
_EXIT = (
    ("pm.uptrend.S2.exit", "exit", "S2"),
    ("pm.uptrend.S3.exit", "exit", "S3"),
    ("pm.downtrend.exit", "exit", "S0"),
)

_CHAIN_ROI = {"solana": 3.0, "ethereum": -1.0, "base": 1.0, "bsc": -3.0}
_REGIME_ROI = {"bull": 3.0, "chop": 0.0, "bear": -4.0}
_MCAP_ROI = {"nano": 2.0, "micro": 1.0, "small": 0.0, "mid": -0.5, "large": -1.0}
_DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def _iso(t: datetime) -> str:
    return t.isoformat()


def _draw_scopes(rng: np.random.Generator, n: int, dims: Sequence[str]) -> dict[str, np.ndarray]:
    """n values per dimension (index arrays into SCOPE_DIMS[dim][0])."""
    return {d: rng.choice(len(SCOPE_DIMS[d][0]), size=n, p=SCOPE_DIMS[d][1]) for d in dims}


def _times(rng: np.random.Generator, n: int, start: datetime, span_days: float) -> list[datetime]:
    """n irregular, sorted timestamps in [start, start + span_days): bursts and gaps (exponential gaps)."""
    gaps = rng.exponential(1.0, size=n) * rng.choice([0.2, 1.0, 3.0], size=n, p=[0.3, 0.5, 0.2])
    at = np.cumsum(gaps)
    at = at / (at[-1] if n and at[-1] > 0 else 1.0) * span_days * 86400 * (1 - 1e-9)
    return [start + timedelta(seconds=round(float(s), 3)) for s in at]


# ---------------------------------------------------------------------------------------------
# positions


def positions(n_tokens: int, timeframes: Sequence[str] = TIMEFRAMES, seed: int = 0) -> list[dict]:
    """Rows for lowcap_positions: every token has one row per timeframe.

    Statuses mostly watchlist/active/dormant (tracked by the redistribution), ~4% shadow and ~2%
    NULL total_allocation_pct rows (both left alone by it). total_allocation_pct is in percent:
    the token total (5..25 %) times a split.
    """
    rng = _rng(seed, 1)
    k = len(timeframes)
    chains = rng.choice(len(SCOPE_DIMS["chain"][0]), size=n_tokens, p=SCOPE_DIMS["chain"][1])
    totals = np.round(rng.uniform(5.0, 25.0, size=n_tokens), 2)
    splits = rng.dirichlet(np.full(k, 4.0), size=n_tokens)
    statuses = rng.choice(["watchlist", "active", "dormant", "shadow"], size=(n_tokens, k), p=[0.5, 0.3, 0.16, 0.04])
    null_pct = rng.random(size=(n_tokens, k)) < 0.02
    id_bytes = rng.integers(0, 256, size=(n_tokens, k, 16), dtype=np.uint8)
    contract_bytes = rng.integers(0, 256, size=(n_tokens, 20), dtype=np.uint8)
    rows = []
    for i in range(n_tokens):
        contract = "0x" + contract_bytes[i].tobytes().hex()
        chain = SCOPE_DIMS["chain"][0][chains[i]]
        for j, tf in enumerate(timeframes):
            rows.append(
                {
                    "id": str(uuid.UUID(bytes=id_bytes[i, j].tobytes(), version=4)),
                    "token_contract": contract,
                    "token_chain": chain,
                    "timeframe": tf,
                    "status": str(statuses[i, j]),
                    "total_allocation_pct": None if null_pct[i, j] else float(totals[i] * splits[i, j]),
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------
# closed trades


def closed_trades(
    n: int,
    seed: int = 0,
    start: datetime = _DEFAULT_START,
    better_timeframe: str = "4h",
    n_patterns: int | None = None,
    dims: Sequence[str] = tuple(SCOPE_DIMS),
    actions_per_trade: float = 4.0,
    span_days: float = 60.0,
    tokens: Sequence[dict] | None = None,
    id_prefix: str = "syn",
) -> list[dict]:
    """Rows for closed_trades, sorted by closed_at (irregular gaps).

    rpnl_pct is in percent: better_timeframe has mean ~ +6 %, the others ~ -1.5 % and +0.5 %, shifted
    by chain, regime and mcap bucket, with fat tails and a floor of -100. Each trade has 1..(2*a-1)
    actions (mean actions_per_trade), each {pattern_key, action_category, scope, decision_type, state,
    ts}; n_patterns limits the distinct pattern keys (None = all 10). Winners trim and reach S3 more
    often, so strength directions differ. tokens: positions rows to draw token/position from.
    """
    # The draws happen in one fixed order (the seed's rows must never change): timeframes, scopes,
    # tokens, ROI, times, then the action plan.
    rng = _rng(seed, 2)
    tf_idx = rng.choice(3, size=n, p=[0.4, 0.35, 0.25])
    tf_names = np.array(TIMEFRAMES)[tf_idx]
    scopes = _draw_scopes(rng, n, [d for d in dims if d != "timeframe"])
    by_token: dict[tuple[str, str], dict[str, dict]] = {}
    for tok in tokens or ():
        by_token.setdefault((tok["token_contract"], tok["token_chain"]), {})[tok["timeframe"]] = tok
    token_keys = list(by_token)
    token_pick = rng.integers(0, len(token_keys), size=n) if token_keys else None
    if token_keys and "chain" in scopes:
        chain_no = {c: j for j, c in enumerate(SCOPE_DIMS["chain"][0])}
        scopes["chain"] = np.array([chain_no.get(token_keys[int(j)][1], 0) for j in token_pick], dtype=np.int64)
    roi_pct = _trade_roi_pct(rng, tf_names, scopes, better_timeframe)
    times = _times(rng, n, start, span_days)
    plan = _ActionPlan.draw(rng, roi_pct, tf_names, actions_per_trade)

    patterns = _ENTRY + _ADD + _TRIM + _EXIT
    allowed = set(p[0] for p in patterns[: n_patterns or len(patterns)])
    rows = []
    for i in range(n):
        tf = str(tf_names[i])
        scope = {d: tf if d == "timeframe" else SCOPE_DIMS[d][0][scopes[d][i]] for d in dims}
        token = token_keys[int(token_pick[i])] if token_keys else None
        if token and "chain" in scope:
            scope["chain"] = token[1]
        closed = times[i]
        opened = closed - timedelta(days=float(plan.durations[i]))
        row = {
            "trade_id": f"{id_prefix}-{seed}-{i:08d}",
            "position_id": None,
            "token_contract": None,
            "token_chain": scope.get("chain"),
            "timeframe": tf,
            "rpnl_pct": round(float(roi_pct[i]), 6),
            "closed_at": _iso(closed),
            "actions": _trade_actions(plan.sequence(i), allowed, scope, opened, closed),
            "did_trim": None,
            "reached_s3": None,
        }
        if token:
            row["position_id"] = by_token[token].get(tf, {}).get("id")
            row["token_contract"], row["token_chain"] = token
        rows.append(row)
    return rows


def _trade_roi_pct(rng: np.random.Generator, tf_names: np.ndarray, scopes: dict, better_timeframe: str) -> np.ndarray:
    """ROI in percent per trade: the timeframe's mean shifted by chain, regime and mcap, fat-tailed noise,
    ~3 % lognormal runners, clipped to [-99, 5000], ~1 % exactly flat."""
    n = len(tf_names)
    tf_mean = {tf: m for tf, m in zip([t for t in TIMEFRAMES if t != better_timeframe], (-1.5, 0.5), strict=False)}
    tf_mean[better_timeframe] = 6.0
    base = np.array([tf_mean[str(t)] for t in tf_names])
    for dim, table in (("chain", _CHAIN_ROI), ("regime", _REGIME_ROI), ("mcap_bucket", _MCAP_ROI)):
        if dim in scopes:
            values = np.array([table[v] for v in SCOPE_DIMS[dim][0]])
            base = base + values[scopes[dim]]
    noise = rng.standard_t(df=3, size=n) * 12.0
    runners = rng.random(n) < 0.03
    roi_pct = base + noise + runners * rng.lognormal(3.5, 0.6, size=n)
    roi_pct = np.clip(roi_pct, -99.0, 5000.0)
    flat = rng.random(n) < 0.01
    roi_pct[flat] = 0.0
    return roi_pct


@dataclass(frozen=True)
class _ActionPlan:
    """Per trade: how many actions, whether it trims and reaches S3, the uniform draws that pick each
    action, and how long it was open (days)."""

    n_actions: np.ndarray
    win: np.ndarray
    trims: np.ndarray
    s3: np.ndarray
    choice: np.ndarray
    durations: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, roi_pct: np.ndarray, tf_names: np.ndarray, actions_per_trade: float):
        n = len(roi_pct)
        hi = max(1, int(round(2 * actions_per_trade - 1)))
        n_actions = rng.integers(1, hi + 1, size=n)
        win = roi_pct > 0
        p_trim = np.where(roi_pct > 10, 0.7, np.where(win, 0.45, 0.2))
        p_s3 = np.where(roi_pct > 15, 0.65, np.where(win, 0.25, 0.05))
        trims = rng.random(n) < p_trim
        s3 = rng.random(n) < p_s3
        choice = rng.random((n, hi + 1))
        scale = {"15m": 0.3, "1h": 1.0, "4h": 3.0}
        durations = rng.gamma(2.0, 1.0, size=n) * np.array([scale[str(t)] for t in tf_names])
        return cls(n_actions, win, trims, s3, choice, durations)

    def sequence(self, i: int) -> list[tuple[str, str, str]]:
        """Trade i's action templates: an entry, adds or trims, an exit (winners trim, S3 trades use S3)."""
        m, trims, s3, choice = int(self.n_actions[i]), self.trims[i], self.s3[i], self.choice[i]
        sequence = [_ENTRY[0] if choice[0] < 0.7 else _ENTRY[1]]
        for j in range(max(m - 2, 0)):
            r = choice[j + 1]
            if trims and r < 0.5:
                sequence.append(_TRIM[1] if s3 else _TRIM[0])
            else:
                sequence.append(_ADD[int(r * 3) % 3] if not s3 else _ADD[2])
        if m >= 2:
            sequence.append(_EXIT[1] if s3 else (_EXIT[0] if self.win[i] else _EXIT[2]))
        if trims and not any(a[1] == "trim" for a in sequence):
            sequence.insert(len(sequence) - 1 if m >= 2 else 1, _TRIM[1] if s3 else _TRIM[0])
        return sequence


def _trade_actions(sequence, allowed: set[str], scope: dict, opened: datetime, closed: datetime) -> list[dict]:
    """The allowed actions of a sequence, evenly spaced from opened to closed."""
    k = len(sequence)
    actions = []
    for j, (key, category, state) in enumerate(sequence):
        if key not in allowed:
            continue
        ts = opened + (closed - opened) * (j / max(k - 1, 1))
        actions.append(
            {
                "pattern_key": key,
                "action_category": category,
                "scope": scope,
                "decision_type": category,
                "state": state,
                "ts": _iso(ts),
            }
        )
    return actions


# ---------------------------------------------------------------------------------------------
# episode events


def _success_probability(ts, halo, e60, e144, scope_idx) -> np.ndarray:
    """P(success) of a window from its decision sample and scope: the gates matter, by slice."""
    mcap = scope_idx.get("mcap_bucket")
    vol = scope_idx.get("vol_bucket")
    regime = scope_idx.get("regime")
    passes = (ts >= TS_MIN) & (halo <= HALO_MAX) & ((e60 > SLOPE_MIN) | (e144 >= SLOPE_MIN))
    p = np.where(passes, 0.5, 0.15)
    small_cap = np.isin(mcap, [0, 1]) if mcap is not None else np.zeros(ts.shape, bool)
    high_vol = np.isin(vol, [2, 3]) if vol is not None else np.zeros(ts.shape, bool)
    bull = regime == 0 if regime is not None else np.zeros(ts.shape, bool)
    bear = regime == 2 if regime is not None else np.zeros(ts.shape, bool)
    halo_ok = halo <= HALO_MAX
    slope_ok = (e60 > SLOPE_MIN) | (e144 >= SLOPE_MIN)
    ts_ok = ts >= TS_MIN
    # Near-miss TS scores of small caps are good entries: loosening ts_min pays there.
    near_ts = (ts >= TS_MIN * 0.88) & ~ts_ok & halo_ok & slope_ok
    p = np.where(near_ts & small_cap, 0.8, p)
    # Overshooting the halo in high-volume slices still works: loosening halo_max pays.
    near_halo = (halo > HALO_MAX) & (halo <= HALO_MAX * 1.2) & ts_ok & slope_ok
    p = np.where(near_halo & high_vol, 0.8, p)
    # Slightly negative slopes in a bull regime recover: loosening slope_min pays.
    near_slope = (e60 > SLOPE_MIN - 0.002) & ~slope_ok & ts_ok & halo_ok
    p = np.where(near_slope & bull, 0.8, p)
    # Marginal TS passes in a bear regime fail: tightening ts_min pays there.
    marginal = ts_ok & (ts < TS_MIN * 1.1) & halo_ok & slope_ok
    p = np.where(marginal & bear, 0.1, p)
    return p


def episode_events(
    n: int,
    seed: int = 0,
    start: datetime = _DEFAULT_START,
    n_patterns: int = 2,
    dims: Sequence[str] = tuple(SCOPE_DIMS),
    windows_per_episode: int = 3,
    samples_per_window: int = 3,
    span_days: float = 60.0,
    neutral_share: float = 0.08,
    missing_thresholds_share: float = 0.002,
    id_prefix: str = "ep",
) -> list[dict]:
    """Rows for pattern_episode_events (about n; episodes of 1..windows_per_episode windows).

    factors = {samples: [{ts_score, ts_ok, slope_ok, entry_zone_ok, halo_distance, ema60_slope,
    ema144_slope}, ...], ts_min 0.60, halo_max 1.0, slope_min 0.0, dx_min 0.5}; a window is acted
    when its last sample passes the base gates, else skipped. Every window of an episode shares its
    scope, pattern_key and outcome (success/failure, neutral_share neutral), and the outcome
    correlates with the gates by slice (see the module docstring).
    """
    rng = _rng(seed, 3)
    windows = rng.integers(1, windows_per_episode + 1, size=n)
    episode_of = np.repeat(np.arange(n), windows)[:n]
    n_ep = int(episode_of[-1]) + 1 if n else 0
    ep_pattern = rng.choice(n_patterns, size=n_ep, p=_zipf(n_patterns))
    ep_scope = _draw_scopes(rng, n_ep, dims)
    scope_idx = {d: v[episode_of] for d, v in ep_scope.items()}
    ts, halo, e60, e144 = _episode_samples(rng, episode_of, n_ep, samples_per_window)
    last = (ts[:, -1], halo[:, -1], e60[:, -1], e144[:, -1])
    p = _success_probability(*last, scope_idx)
    # The episode's outcome follows its last window.
    ep_last = np.zeros(n_ep, dtype=np.int64)
    ep_last[episode_of] = np.arange(n)
    ep_u = rng.random(n_ep)
    decided = np.where(ep_u < p[ep_last], "success", "failure")
    ep_outcome = np.where(rng.random(n_ep) < neutral_share, "neutral", decided)
    passes = (last[0] >= TS_MIN) & (last[1] <= HALO_MAX) & ((last[2] > SLOPE_MIN) | (last[3] >= SLOPE_MIN))
    missing = rng.random(n) < missing_thresholds_share
    times = _times(rng, n, start, span_days)
    ep_ids = rng.integers(0, 2**48, size=n_ep)

    rows = []
    for i in range(n):
        e = int(episode_of[i])
        factors: dict = {"samples": _decision_samples(ts[i], halo[i], e60[i], e144[i])}
        if not missing[i]:
            factors.update(ts_min=TS_MIN, halo_max=HALO_MAX, slope_min=SLOPE_MIN, dx_min=DX_MIN)
        rows.append(
            {
                "scope": {d: SCOPE_DIMS[d][0][ep_scope[d][e]] for d in dims},
                "pattern_key": EPISODE_PATTERNS[int(ep_pattern[e]) % len(EPISODE_PATTERNS)],
                "episode_id": f"{id_prefix}_{seed}_{int(ep_ids[e]):012x}_{e}",
                "trade_id": None,
                "decision": "acted" if passes[i] else "skipped",
                "outcome": str(ep_outcome[e]),
                "factors": factors,
                "timestamp": _iso(times[i]),
            }
        )
    return rows


def _episode_samples(
    rng: np.random.Generator, episode_of: np.ndarray, n_ep: int, s: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ts, halo distance, ema60 and ema144 slopes, (windows x s samples) each. Windows of one episode are
    one setup seen again: the episode's values, jittered a little per window (last sample) and more for
    the earlier samples of a window."""
    n = len(episode_of)
    jitter = np.concatenate([np.full(s - 1, 4.0), [1.0]])

    def around(center, spread, scale):
        per_window = center[episode_of][:, None] + rng.normal(0.0, scale, size=(n, 1)) * jitter
        return per_window + rng.normal(0.0, spread * 0.1, size=(n, s)) * (jitter > 1)

    ts = np.clip(around(rng.normal(0.6, 0.1, size=n_ep), 0.1, 0.008), 0.0, 1.0)
    halo = np.abs(around(rng.normal(0.85, 0.45, size=n_ep), 0.45, 0.02))
    e60 = around(rng.normal(0.0008, 0.0025, size=n_ep), 0.0025, 0.0001)
    e144 = around(rng.normal(0.0004, 0.0015, size=n_ep), 0.0015, 0.0001)
    return ts, halo, e60, e144


def _decision_samples(ts, halo, e60, e144) -> list[dict]:
    """One window's decision samples as the bot writes them in factors.samples."""
    return [
        {
            "ts_score": round(float(ts[j]), 4),
            "ts_ok": bool(ts[j] >= TS_MIN),
            "slope_ok": bool(e60[j] > SLOPE_MIN or e144[j] >= SLOPE_MIN),
            "entry_zone_ok": bool(halo[j] <= HALO_MAX),
            "halo_distance": round(float(halo[j]), 4),
            "ema60_slope": round(float(e60[j]), 6),
            "ema144_slope": round(float(e144[j]), 6),
        }
        for j in range(len(ts))
    ]


def _zipf(k: int) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1)
    return w / w.sum()


# ---------------------------------------------------------------------------------------------
# inserts: one statement each

INSERT_POSITIONS = """
INSERT INTO public.lowcap_positions (id, token_contract, token_chain, timeframe, status, total_allocation_pct)
SELECT
    coalesce(r.id, gen_random_uuid()), r.token_contract, r.token_chain, r.timeframe,
    coalesce(r.status, 'watchlist'), r.total_allocation_pct
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r (
    id uuid, token_contract text, token_chain text, timeframe text, status text,
    total_allocation_pct double precision
)
"""

INSERT_CLOSED_TRADES = """
INSERT INTO public.closed_trades (
    trade_id, position_id, token_contract, token_chain, timeframe, rpnl_pct, closed_at, actions,
    did_trim, reached_s3
)
SELECT
    r.trade_id, r.position_id, r.token_contract, r.token_chain, r.timeframe, r.rpnl_pct,
    r.closed_at, coalesce(r.actions, '[]'::jsonb), r.did_trim, r.reached_s3
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r (
    trade_id text, position_id text, token_contract text, token_chain text, timeframe text,
    rpnl_pct double precision, closed_at timestamptz, actions jsonb, did_trim boolean, reached_s3 boolean
)
"""

INSERT_EPISODE_EVENTS = """
INSERT INTO public.pattern_episode_events (
    scope, pattern_key, episode_id, trade_id, decision, outcome, factors, timestamp
)
SELECT r.scope, r.pattern_key, r.episode_id, r.trade_id, r.decision, r.outcome, r.factors, r.timestamp
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r (
    scope jsonb, pattern_key text, episode_id text, trade_id text, decision text, outcome text,
    factors jsonb, timestamp timestamptz
)
"""


def _insert(conn, statement: str, rows: Sequence[dict]) -> int:
    if not rows:
        return 0
    cur = conn.execute(statement, {"rows": json.dumps(list(rows))})
    return cur.rowcount


def insert_positions(conn, rows: Sequence[dict]) -> int:
    """Insert positions rows (one statement); returns the row count."""
    return _insert(conn, INSERT_POSITIONS, rows)


def insert_closed_trades(conn, rows: Sequence[dict]) -> int:
    """Insert closed_trades rows (one statement, so the trigger takes them as one ordered batch)."""
    return _insert(conn, INSERT_CLOSED_TRADES, rows)


def insert_episode_events(conn, rows: Sequence[dict]) -> int:
    """Insert pattern_episode_events rows (one statement); returns the row count."""
    return _insert(conn, INSERT_EPISODE_EVENTS, rows)


# ---------------------------------------------------------------------------------------------
# tuning scenarios (design §16): seeded slices of episode windows with a known truth

# The null cells: windows per slice x base success rate, SCENARIO_REPEATS slices each (24 per seed).
NULL_WINDOWS = (100, 250, 500, 1000)
NULL_BASE_RATES = (0.1, 0.3, 0.5)
SCENARIO_REPEATS = 2
# Planted slices: windows per slice, PLANTED_REPEATS slices each (8 per seed and signal).
PLANTED_WINDOWS = (100, 250, 500, 1000)
PLANTED_REPEATS = 2
# loosen-ts: skipped windows whose only failing gate is ts, within the largest loosening (ts_min x 0.90),
# succeed 80 %, every other window 15 %. tighten-ts: acted windows within the largest tightening
# (ts_min x 1.10) succeed 5 %, every other window 30 %.
LOOSEN_NEAR, LOOSEN_BASE = 0.80, 0.15
TIGHTEN_NEAR, TIGHTEN_BASE = 0.05, 0.30
TUNING_SCENARIOS = ("null", "loosen_ts", "tighten_ts")


def _window_samples(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """One decision sample per window: ts, halo distance, ema60 and ema144 slopes around the gates."""
    ts = np.clip(rng.normal(0.62, 0.08, size=n), 0.0, 1.0)
    halo = np.abs(rng.normal(0.8, 0.35, size=n))
    e60 = rng.normal(0.0008, 0.002, size=n)
    e144 = rng.normal(0.0004, 0.0015, size=n)
    return ts, halo, e60, e144


def scenario_slice(
    scenario: str,
    n: int,
    seed: int,
    slice_no: int,
    base: float | None = None,
    pattern_key: str | None = None,
    end: datetime = _DEFAULT_START + timedelta(days=60),
    span_days: float = 30.0,
) -> list[dict]:
    """The n windows of one slice of a tuning scenario (one pattern_key, scope {}), ending before `end`.

    Every window is its own episode with its outcome, one decision sample and the base thresholds
    (0.60 / 1.0 / 0.0); decision = acted exactly when the base gates pass. null: success with
    probability `base` (default 0.3) whatever the gates; loosen_ts / tighten_ts: see LOOSEN_* / TIGHTEN_*
    (`base` replaces the rate of the other windows).
    """
    if scenario not in TUNING_SCENARIOS:
        raise ValueError(f"scenario must be one of {TUNING_SCENARIOS}, not {scenario!r}")
    rng = _rng(seed, 100_000 + slice_no)
    ts, halo, e60, e144 = _window_samples(rng, n)
    ts_ok = ts >= TS_MIN
    halo_ok = halo <= HALO_MAX
    slope_ok = (e60 > SLOPE_MIN) | (e144 >= SLOPE_MIN)
    acted = ts_ok & halo_ok & slope_ok
    if scenario == "null":
        p = np.full(n, 0.3 if base is None else base)
    elif scenario == "loosen_ts":
        near = ~ts_ok & (ts >= TS_MIN * 0.90) & halo_ok & slope_ok
        p = np.where(near, LOOSEN_NEAR, LOOSEN_BASE if base is None else base)
    else:
        near = acted & (ts < TS_MIN * 1.10)
        p = np.where(near, TIGHTEN_NEAR, TIGHTEN_BASE if base is None else base)
    success = rng.random(n) < p
    at = np.sort(rng.uniform(0.0, span_days * 86400, size=n))
    start = end - timedelta(days=span_days)
    key = pattern_key or f"eval.{scenario}.{slice_no}"
    return [
        {
            "scope": {},
            "pattern_key": key,
            "episode_id": f"{key}.{seed}.{i}",
            "trade_id": None,
            "decision": "acted" if acted[i] else "skipped",
            "outcome": "success" if success[i] else "failure",
            "factors": {
                "ts_min": TS_MIN,
                "halo_max": HALO_MAX,
                "slope_min": SLOPE_MIN,
                "samples": [
                    {
                        "ts_score": round(float(ts[i]), 6),
                        "halo_distance": round(float(halo[i]), 6),
                        "ema60_slope": round(float(e60[i]), 7),
                        "ema144_slope": round(float(e144[i]), 7),
                    }
                ],
            },
            "timestamp": _iso(start + timedelta(seconds=float(at[i]))),
        }
        for i in range(n)
    ]


def tuning_scenario(
    seed: int,
    end: datetime = _DEFAULT_START + timedelta(days=60),
    null_windows: Sequence[int] = NULL_WINDOWS,
    null_base_rates: Sequence[float] = NULL_BASE_RATES,
    repeats: int = SCENARIO_REPEATS,
    planted_windows: Sequence[int] = PLANTED_WINDOWS,
    planted_repeats: int = PLANTED_REPEATS,
) -> tuple[list[dict], dict[str, dict]]:
    """Every slice of one seed: null cells (windows x base rate x repeats) and planted loosen-ts and
    tighten-ts slices. Returns (rows, truth) with truth[pattern_key] = {scenario, windows, base}."""
    rows: list[dict] = []
    truth: dict[str, dict] = {}
    plan = [("null", w, b) for w in null_windows for b in null_base_rates for _ in range(repeats)]
    plan += [(s, w, None) for s in ("loosen_ts", "tighten_ts") for w in planted_windows for _ in range(planted_repeats)]
    for slice_no, (scenario, windows, base) in enumerate(plan):
        key = f"eval.{scenario}.w{windows}.{slice_no}"
        rows += scenario_slice(scenario, windows, seed, slice_no, base=base, pattern_key=key, end=end)
        truth[key] = {
            "scenario": scenario,
            "windows": windows,
            "base": base if base is not None else (LOOSEN_BASE if scenario == "loosen_ts" else TIGHTEN_BASE),
        }
    return rows, truth


# allocation scenarios (design §16)

ALLOCATION_SCENARIOS = {
    # kind: (trades, {timeframe: extra mean ROI before the switch}, {after}, switch trade)
    "null": (3000, {}, {}, None),
    "edge": (1000, {"4h": 0.05}, {}, None),
    "shift": (3000, {"4h": 0.05}, {"15m": 0.05}, 1500),
}


def allocation_scenario(
    kind: str,
    seed: int,
    n_trades: int | None = None,
    trades_per_day: float = 20.0,
    sigma: float = 0.25,
    start: datetime = _DEFAULT_START,
) -> list[dict]:
    """The allocation scenarios of design §16: closed trades in closed_at order, each on 15m, 1h or 4h
    (uniformly), trades_per_day on average (exponential gaps), ROI ~ N(mean, sigma) per trade as a
    fraction (rpnl_pct is its percent, at least -99.99). null: one mean (0) everywhere; edge: 4h earns
    +5 points; shift: 4h earns +5 points until trade 1,500, then 15m does.
    """
    total, before, after, switch = ALLOCATION_SCENARIOS[kind]
    n = total if n_trades is None else n_trades
    rng = _rng(seed, 7)
    gaps = rng.exponential(86400.0 / trades_per_day, size=n)
    tf = rng.integers(0, 3, size=n)
    noise = rng.normal(0.0, sigma, size=n)
    at = np.cumsum(gaps)
    rows = []
    for k in range(n):
        timeframe = TIMEFRAMES[tf[k]]
        edge = (before if switch is None or k < switch else after).get(timeframe, 0.0)
        rows.append(
            {
                "trade_id": f"{kind}-{seed}-{k:05d}",
                "timeframe": timeframe,
                "rpnl_pct": max(-99.99, 100.0 * (edge + float(noise[k]))),
                "closed_at": start + timedelta(seconds=float(at[k])),
            }
        )
    return rows
