"""`plot allocation`: a PNG of the timeframe allocation over time, trades marked (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import psycopg  # noqa: E402

HISTORY = """
SELECT seq, timeframe, closed_at, allocation_before, allocation_after, reason
FROM learning.allocation_history ORDER BY seq
"""
TIMEFRAMES_SQL = "SELECT learning.tracked_timeframes()"
COLORS = {"15m": "tab:blue", "1h": "tab:orange", "4h": "tab:green"}


def plot_allocation(conn: psycopg.Connection, out: str | Path, title: str = "Timeframe allocation") -> int:
    """Write the allocation path as a PNG to out; returns the number of steps plotted."""
    timeframes = list(conn.execute(TIMEFRAMES_SQL).fetchone()[0])
    rows = conn.execute(HISTORY).fetchall()
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    if rows:
        times = [rows[0][2]] + [r[2] for r in rows]
        for i, tf in enumerate(timeframes):
            values = [rows[0][3][i]] + [r[4][i] for r in rows]
            ax.step(times, values, where="post", label=tf, color=COLORS.get(tf))
            marks = [(r[2], r[4][i]) for r in rows if r[1] == tf]
            if marks:
                ax.scatter(
                    [m[0] for m in marks], [m[1] for m in marks], s=8, color=COLORS.get(tf), alpha=0.6,
                    label=f"{tf} trade",
                )
    else:
        ax.text(0.5, 0.5, "no trades yet", transform=ax.transAxes, ha="center")
    ax.set_title(title)
    ax.set_ylabel("allocation (fraction)")
    ax.set_xlabel("trade closed_at")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small", ncol=2)
    fig.autofmt_xdate()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return len(rows)
