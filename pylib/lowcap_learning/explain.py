"""`explain allocation`: the last allocation steps from learning.allocation_history, readably."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

TIMEFRAMES_SQL = "SELECT learning.tracked_timeframes()"
LAST_STEPS = """
SELECT seq, trade_id, timeframe, closed_at, trade_roi, reason, allocation_before, allocation_after,
    desired, scores, roi_short, trade_counts, step_limit
FROM (
    SELECT * FROM learning.allocation_history ORDER BY seq DESC LIMIT %(last)s::integer
) AS h
ORDER BY seq
"""


@dataclass(frozen=True)
class AllocationStep:
    seq: int
    trade_id: str
    timeframe: str
    closed_at: datetime
    trade_roi: float
    reason: str
    allocation_before: list[float]
    allocation_after: list[float]
    desired: list[float] | None
    scores: list[float] | None
    roi_short: list[float | None]
    trade_counts: list[int]
    step_limit: float | None

    def as_dict(self, timeframes: list[str]) -> dict:
        def by_tf(values):
            return None if values is None else dict(zip(timeframes, values, strict=False))

        return {
            "seq": self.seq,
            "trade_id": self.trade_id,
            "timeframe": self.timeframe,
            "closed_at": self.closed_at.isoformat(),
            "trade_roi": self.trade_roi,
            "reason": self.reason,
            "before": by_tf(self.allocation_before),
            "after": by_tf(self.allocation_after),
            "desired": by_tf(self.desired),
            "scores": by_tf(self.scores),
            "roi_short": by_tf(self.roi_short),
            "n": by_tf(self.trade_counts),
            "limit": self.step_limit,
        }


REASONS = {
    "step": "moved one capped step toward desired",
    "reached_desired": "reached desired (within the step limit)",
    "skip_one_timeframe": "no change: fewer than 2 timeframes have trades",
    "skip_untracked": "no change: not a learning timeframe",
}


def tracked_timeframes(conn: psycopg.Connection) -> list[str]:
    return list(conn.execute(TIMEFRAMES_SQL).fetchone()[0])


def last_steps(conn: psycopg.Connection, last: int = 10) -> list[AllocationStep]:
    return [AllocationStep(*row) for row in conn.execute(LAST_STEPS, {"last": last}).fetchall()]


def _vec(timeframes: list[str], values, digits: int = 4) -> str:
    if values is None:
        return "-"
    return "{" + ", ".join(
        f"{tf}: {'-' if v is None else f'{v:.{digits}f}'}" for tf, v in zip(timeframes, values, strict=False)
    ) + "}"


def render(steps: list[AllocationStep], timeframes: list[str]) -> list[str]:
    """Human lines: per step the trade, its ROI, scores, desired, limit and before -> after."""
    lines = []
    for s in steps:
        lines.append(
            f"#{s.seq} trade {s.trade_id} ({s.timeframe}, roi {s.trade_roi:+.4f}, closed {s.closed_at:%Y-%m-%d %H:%M}):"
            f" {REASONS.get(s.reason, s.reason)}"
        )
        lines.append(f"    roi_short {_vec(timeframes, s.roi_short, 6)}  n {_vec(timeframes, s.trade_counts, 0)}")
        if s.scores is not None:
            lines.append(f"    scores    {_vec(timeframes, s.scores, 6)}")
            lines.append(f"    desired   {_vec(timeframes, s.desired)}  limit {s.step_limit:.6f}")
        lines.append(f"    {_vec(timeframes, s.allocation_before)} -> {_vec(timeframes, s.allocation_after)}")
    return lines
