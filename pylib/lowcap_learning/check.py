"""`lowcap-learning check`: recompute the learning state from its inputs and report any divergence.

The stored state (learning.allocation_state) must be a function of `closed_trades` (design §4, §15): the
EWMAs, second moments, effective counts and n are recomputed in closed form
(learning.recomputed_roi_state); the allocation path is replayed step by step from
`learning.allocation_history` with learning.allocation_step, using each step's recorded limit and
(evidence rule) split, so a later change of max_step or min_trades_full is not mistaken for
corruption; the steps must chain (after[k] = before[k+1]), every trade must have exactly one step,
Σ allocation = 1, positions must be finite and non-negative, and the tunables in effect
(learning.effective_tunables) must be the merge of the learning row and the defaults (design §3).
Positions off the current split and a decision_maker row that differs from the state are warnings
only: the bot may have written them since the last step, and the next step rewrites them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import psycopg

# Absolute tolerances. The replay runs the same float8 code as the trigger, so steps agree to the
# last bit; the EWMA closed form sums in another order, so it agrees to ~1e-15 relative.
EWMA_TOLERANCE = 1e-9
STEP_TOLERANCE = 1e-12
SUM_TOLERANCE = 1e-12
LIST_LIMIT = 20

STORED_STATE = """
SELECT s.name AS series, s.ord::integer AS ord,
    CASE WHEN st.n > 0 THEN st.short_sum_w_roi / st.short_sum_w END AS roi_short,
    CASE WHEN st.n > 0 THEN st.long_sum_w_roi / st.long_sum_w END AS roi_long,
    coalesce(st.n, 0) AS n,
    CASE WHEN st.n > 0 THEN st.short_sum_w_roi2 / st.short_sum_w END AS m2_short,
    CASE WHEN st.n > 0 THEN st.long_sum_w_roi2 / st.long_sum_w END AS m2_long,
    CASE WHEN st.n > 0 THEN st.short_sum_w * st.short_sum_w / st.short_sum_w2 END AS neff_short,
    CASE WHEN st.n > 0 THEN st.long_sum_w * st.long_sum_w / st.long_sum_w2 END AS neff_long,
    CASE WHEN s.name = 'global' THEN (c.config_data -> 'global_roi' ->> 'roi_short')::float8
        ELSE (c.config_data -> 'timeframe_allocation' -> s.name ->> 'roi_short')::float8 END AS shown_short,
    CASE WHEN s.name = 'global' THEN (c.config_data -> 'global_roi' ->> 'n')::integer
        ELSE (c.config_data -> 'timeframe_allocation' -> s.name ->> 'n')::integer END AS shown_n
FROM unnest(learning.tracked_timeframes() || 'global'::text) WITH ORDINALITY AS s (name, ord)
LEFT JOIN learning.allocation_state AS st ON st.series = s.name
LEFT JOIN public.learning_configs AS c ON c.module_id = 'decision_maker'
    AND jsonb_typeof(c.config_data -> 'timeframe_allocation') = 'object'
ORDER BY s.ord
"""

RECOMPUTED_STATE = """
SELECT r.series, learning.ewma_short(r.state) AS roi_short, learning.ewma_long(r.state) AS roi_long, r.n,
    r.state[6] / r.state[3] AS m2_short, r.state[8] / r.state[5] AS m2_long,
    r.state[3] * r.state[3] / r.state[7] AS neff_short, r.state[5] * r.state[5] / r.state[9] AS neff_long
FROM learning.recomputed_roi_state() AS r
"""

# One row per history step: the replayed step (with the recorded limit), the chain and the counts.
REPLAY = """
WITH h AS (
    SELECT
        h.seq, h.trade_id, h.timeframe, h.reason, h.allocation_before, h.allocation_after,
        h.roi_short, h.trade_counts, h.step_limit, h.split,
        lag(h.allocation_after) OVER w AS previous_after,
        lag(h.trade_counts) OVER w AS previous_counts
    FROM learning.allocation_history AS h
    WINDOW w AS (ORDER BY h.seq)
),
replayed AS (
    SELECT h.*,
        CASE WHEN h.reason NOT IN ('step', 'reached_desired') THEN h.allocation_before
            -- a row a damaged state wrote (NULL or NaN inputs) is reported, not replayed (it would raise)
            WHEN array_ndims(h.allocation_before) = 1 AND array_ndims(h.roi_short) = 1
                AND array_position(h.allocation_before, NULL) IS NULL AND NOT 'NaN' = ANY (h.allocation_before)
                AND NOT EXISTS (
                    SELECT FROM unnest(h.roi_short, h.trade_counts) AS m (r, c)
                    WHERE c >= 1 AND (r IS NULL OR r = 'NaN')
                )
            THEN (learning.allocation_step(
                h.allocation_before, h.roi_short, h.trade_counts, h.step_limit, 1,
                (learning.tunables() ->> 'min_allocation')::float8, h.split
            )).new_allocation
        END AS expected_after
    FROM h
)
SELECT
    r.seq, r.trade_id, r.reason, r.allocation_before, r.allocation_after, r.expected_after,
    r.previous_after,
    (SELECT max(abs(a - b)) FROM unnest(r.allocation_after, r.expected_after) AS d (a, b)) AS step_error,
    (SELECT max(abs(a - b)) FROM unnest(r.allocation_before, r.previous_after) AS d (a, b)) AS chain_error,
    abs((SELECT sum(a) FROM unnest(r.allocation_after) AS x (a)) - 1) AS sum_error,
    (SELECT sum(c) FROM unnest(r.trade_counts) AS x (c))
        - coalesce((SELECT sum(c) FROM unnest(r.previous_counts) AS x (c)), 0) AS count_increment,
    r.previous_counts IS NULL AS first
FROM replayed AS r
ORDER BY r.seq
"""

COVERAGE = """
SELECT t.trade_id, count(h.seq)::integer AS steps
FROM public.closed_trades AS t
LEFT JOIN learning.allocation_history AS h ON h.trade_id = t.trade_id
GROUP BY t.trade_id
HAVING count(h.seq) <> 1
ORDER BY t.trade_id
LIMIT %(limit)s::integer
"""

ORPHANS = """
SELECT h.seq, h.trade_id
FROM learning.allocation_history AS h
WHERE NOT EXISTS (SELECT FROM public.closed_trades AS t WHERE t.trade_id = h.trade_id)
ORDER BY h.seq
LIMIT %(limit)s::integer
"""

CURRENT_ALLOCATION = "SELECT timeframe, current_allocation FROM learning.timeframe_allocation()"

TUNABLES_IN_EFFECT = """
SELECT (SELECT t.tunables FROM learning.effective_tunables AS t), learning._effective_tunables()
"""

POSITIONS = """
WITH alloc AS (
    SELECT timeframe, current_allocation AS alloc FROM learning.timeframe_allocation()
),
tracked AS (
    SELECT p.id, p.token_contract, p.token_chain, p.timeframe, p.total_allocation_pct AS pct, a.alloc,
        -- Only rows the redistribution would touch (a percent in [0, 1e9]) are summed: two 1e308 rows
        -- would overflow, and a token holding such a row is left as it is (design §6).
        sum(p.total_allocation_pct) FILTER (WHERE p.total_allocation_pct BETWEEN 0 AND 1e9) OVER token
            AS token_total,
        bool_and(p.total_allocation_pct BETWEEN 0 AND 1e9) OVER token AS token_sane,
        sum(a.alloc) OVER token AS alloc_sum
    FROM public.lowcap_positions AS p
    JOIN alloc AS a ON a.timeframe = p.timeframe
    WHERE p.status IN ('watchlist', 'active', 'dormant') AND p.total_allocation_pct IS NOT NULL
    WINDOW token AS (PARTITION BY p.token_contract, p.token_chain)
)
SELECT
    t.token_contract, t.token_chain, t.timeframe, t.pct, t.token_total,
    CASE WHEN t.token_sane AND t.token_total <> 0 AND t.alloc_sum <> 0
        THEN t.token_total * t.alloc / t.alloc_sum END AS expected,
    (SELECT count(DISTINCT (token_contract, token_chain)) FROM tracked)::integer AS tokens
FROM tracked AS t
ORDER BY t.token_contract, t.token_chain, t.timeframe
"""


@dataclass
class SeriesCheck:
    series: str
    n_stored: int
    n_recomputed: int
    roi_short_stored: float | None
    roi_short_recomputed: float | None
    roi_long_stored: float | None
    roi_long_recomputed: float | None
    ok: bool


@dataclass
class CheckReport:
    ok: bool = True
    trades: int = 0
    history_rows: int = 0
    steps_replayed: int = 0
    tokens: int = 0
    series: list[SeriesCheck] = field(default_factory=list)
    allocation: dict[str, float] = field(default_factory=dict)
    divergences: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def diverge(self, message: str) -> None:
        self.ok = False
        if len(self.divergences) < 10 * LIST_LIMIT:
            self.divergences.append(message)

    def as_dict(self) -> dict:
        return asdict(self)


def _close(a: float | None, b: float | None, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def _check_ewma(cur: psycopg.Cursor, report: CheckReport) -> None:
    """The typed state against closed_trades (means, second moments, effective counts, n); the
    decision_maker row is the bot's copy, rewritten by the next trade: a difference there is a warning."""
    recomputed = {row[0]: row[1:] for row in cur.execute(RECOMPUTED_STATE).fetchall()}
    for series, _ord, short, long_, n, *moments, shown_short, shown_n in cur.execute(STORED_STATE).fetchall():
        r_short, r_long, r_n, *r_moments = recomputed.get(series, (None, None, 0, None, None, None, None))
        ok = (
            n == r_n
            and _close(short, r_short, EWMA_TOLERANCE)
            and _close(long_, r_long, EWMA_TOLERANCE)
            and all(_close(a, b, EWMA_TOLERANCE) for a, b in zip(moments, r_moments, strict=True))
        )
        if shown_n is not None and shown_n != n or not _close(shown_short, short, EWMA_TOLERANCE):
            report.warnings.append(
                f"{series}: the decision_maker row shows n={shown_n} roi_short={shown_short}, the state "
                f"n={n} roi_short={short}; the next trade rewrites the row"
            )
        report.series.append(SeriesCheck(series, n, r_n, short, r_short, long_, r_long, ok))
        if not ok:
            report.diverge(
                f"{series}: stored n={n} roi_short={short} roi_long={long_} moments={moments} but closed_trades "
                f"give n={r_n} roi_short={r_short} roi_long={r_long} moments={r_moments}"
            )


def _check_history(cur: psycopg.Cursor, report: CheckReport) -> list[float] | None:
    last_after = None
    for row in cur.execute(REPLAY):
        (seq, trade_id, reason, _before, after, _expected, _prev, step_err, chain_err, sum_err, inc, first) = row
        report.history_rows += 1
        last_after = after
        if reason in ("step", "reached_desired"):
            report.steps_replayed += 1
        if step_err is None or step_err > STEP_TOLERANCE:
            report.diverge(f"history seq {seq} (trade {trade_id}, {reason}): replayed step differs by {step_err}")
        if not first and (chain_err is None or chain_err > STEP_TOLERANCE):
            report.diverge(
                f"history seq {seq} (trade {trade_id}): before differs from the previous after by {chain_err}"
            )
        if sum_err is None or sum_err > SUM_TOLERANCE:
            report.diverge(f"history seq {seq} (trade {trade_id}): allocation sums to 1 ± {sum_err}")
        expected_inc = 0 if reason == "skip_untracked" else 1
        if not first and inc != expected_inc:
            report.diverge(f"history seq {seq} (trade {trade_id}): trade counts grew by {inc}, not {expected_inc}")
    for trade_id, steps in cur.execute(COVERAGE, {"limit": LIST_LIMIT}).fetchall():
        report.diverge(f"trade {trade_id} has {steps} allocation_history rows (expected 1)")
    for seq, trade_id in cur.execute(ORPHANS, {"limit": LIST_LIMIT}).fetchall():
        report.diverge(f"history seq {seq} names trade {trade_id}, which is not in closed_trades")
    return last_after


def _check_allocation(cur: psycopg.Cursor, report: CheckReport, last_after: list[float] | None) -> None:
    rows = cur.execute(CURRENT_ALLOCATION).fetchall()
    report.allocation = {tf: value for tf, value in rows}
    values = [value for _, value in rows]
    if any(v is None or not math.isfinite(v) or v < 0 for v in values):
        report.diverge(f"current allocation has an invalid value: {report.allocation}")
    elif abs(sum(values) - 1) > SUM_TOLERANCE:
        report.diverge(f"current allocation sums to {sum(values)!r}, not 1")
    if last_after is not None and any(
        not _close(a, b, STEP_TOLERANCE) for a, b in zip(values, last_after, strict=False)
    ):
        report.diverge(f"current allocation {values} differs from the last history step {last_after}")


def _check_tunables(cur: psycopg.Cursor, report: CheckReport) -> None:
    stored, merged = cur.execute(TUNABLES_IN_EFFECT).fetchone()
    stored, merged = stored or {}, merged or {}
    differ = sorted(k for k in stored.keys() | merged.keys() if stored.get(k, "missing") != merged.get(k, "missing"))
    if differ:
        report.diverge(
            f"learning.effective_tunables differs from the learning row and the defaults at {differ[:LIST_LIMIT]}; "
            "`SELECT learning._refresh_tunables()` as the owner rewrites it"
        )


def _check_positions(cur: psycopg.Cursor, report: CheckReport) -> None:
    off = 0
    for contract, chain, tf, pct, _total, expected, tokens in cur.execute(POSITIONS):
        report.tokens = tokens
        if not math.isfinite(pct) or pct < 0 or pct > 1e9:
            report.diverge(f"position {contract}/{chain}/{tf}: total_allocation_pct={pct!r}")
        elif expected is not None and not _close(pct, expected, 1e-9):
            off += 1
            if off <= LIST_LIMIT:
                report.warnings.append(
                    f"position {contract}/{chain}/{tf}: {pct} is off the current split ({expected}); "
                    "it is rewritten at the next allocation step (or the next job, if the bot held the row)"
                )
    if off > LIST_LIMIT:
        report.warnings.append(f"... and {off - LIST_LIMIT} more positions off the current split")


def run_check(conn: psycopg.Connection) -> CheckReport:
    """Every check in one REPEATABLE READ snapshot (read only): a concurrent insert cannot race it."""
    report = CheckReport()
    own_snapshot = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        cur = conn.cursor()
        if own_snapshot:  # else: inside the caller's transaction, with its snapshot
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        report.trades = cur.execute("SELECT count(*)::integer FROM public.closed_trades").fetchone()[0]
        _check_ewma(cur, report)
        last_after = _check_history(cur, report)
        _check_allocation(cur, report, last_after)
        _check_positions(cur, report)
        _check_tunables(cur, report)
    return report
