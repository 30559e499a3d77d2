"""`plot allocation`: a PNG of the timeframe allocation over time (matplotlib, Agg).

Top panel: one step line per tracked timeframe and the allocation floor (min_allocation, dashed).
Bottom strip: every trade as a short vertical tick in its timeframe's row, in that timeframe's colour
(thin and translucent, so a dense period reads as a darker band rather than a solid block).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import psycopg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

HISTORY = """
SELECT seq, timeframe, closed_at, allocation_before, allocation_after, reason
FROM learning.allocation_history ORDER BY seq
"""
SETTINGS_SQL = "SELECT learning.tracked_timeframes(), (learning.tunables() ->> 'min_allocation')::float8"
COLORS = {"15m": "tab:blue", "1h": "tab:orange", "4h": "tab:green"}
FALLBACK_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
FLOOR_COLOR = "0.35"


def _color(tf: str, i: int) -> str:
    return COLORS.get(tf) or FALLBACK_COLORS[i % len(FALLBACK_COLORS)]


def _tick_alpha(n: int) -> float:
    """Nearly opaque for a few trades, fading as they crowd (about 0.25 for 2,400 trades in one row)."""
    return max(0.12, min(0.9, 12.0 / max(n, 1) ** 0.5))


def allocation_figure(conn: psycopg.Connection, title: str = "Timeframe allocation") -> tuple[Figure, int]:
    """The allocation figure (not saved) and the number of steps it shows."""
    timeframes, floor = conn.execute(SETTINGS_SQL).fetchone()
    timeframes = list(timeframes)
    rows = conn.execute(HISTORY).fetchall()
    fig, (ax, rug) = plt.subplots(
        2, 1, figsize=(10, 5), dpi=100, sharex=True,
        gridspec_kw={"height_ratios": [5, 1], "hspace": 0.06},
    )
    top = 1.0
    if rows:
        times = [rows[0][2]] + [r[2] for r in rows]
        top = 0.0
        for i, tf in enumerate(timeframes):
            values = [rows[0][3][i]] + [r[4][i] for r in rows]
            top = max(top, *values)
            ax.step(times, values, where="post", label=tf, color=_color(tf, i), linewidth=1.3)
        ticks = [mdates.date2num([r[2] for r in rows if r[1] == tf]) for tf in timeframes]
        rug.eventplot(
            ticks, orientation="horizontal", lineoffsets=range(len(timeframes)), linelengths=0.75,
            linewidths=0.5, colors=[_color(tf, i) for i, tf in enumerate(timeframes)],
            alpha=_tick_alpha(max((len(t) for t in ticks), default=0)),
        )
    else:
        ax.text(0.5, 0.5, "no trades yet", transform=ax.transAxes, ha="center")
    if floor is not None and floor > 0:  # no allocation goes below it, so its label sits under the line
        ax.axhline(floor, color=FLOOR_COLOR, linestyle="--", linewidth=1.0, label="_floor", zorder=1)
        ax.text(
            0.005, floor, f"floor {floor:g}", transform=blended_transform_factory(ax.transAxes, ax.transData),
            va="top", ha="left", fontsize="small", color=FLOOR_COLOR,
        )
    ax.set_ylim(0, min(1.0, top + 0.05) if rows else 1.0)
    ax.set_title(title)
    ax.set_ylabel("allocation (fraction)")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(loc="upper left", fontsize="small", ncol=len(timeframes), frameon=False)
    rug.set_ylim(-0.6, len(timeframes) - 0.4)
    rug.set_yticks(range(len(timeframes)), timeframes, fontsize="x-small")
    for label, (i, tf) in zip(rug.get_yticklabels(), enumerate(timeframes), strict=True):
        label.set_color(_color(tf, i))
    rug.set_ylabel("trades", fontsize="small")
    rug.tick_params(axis="y", length=0)
    rug.grid(axis="x", alpha=0.3)
    rug.set_xlabel("trade closed_at")
    locator = mdates.AutoDateLocator()
    rug.xaxis.set_major_locator(locator)
    rug.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    fig.subplots_adjust(left=0.08, right=0.97, top=0.92, bottom=0.12)
    return fig, len(rows)


def plot_allocation(conn: psycopg.Connection, out: str | Path, title: str = "Timeframe allocation") -> int:
    """Write the allocation path as a PNG to out; returns the number of steps plotted."""
    fig, steps = allocation_figure(conn, title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return steps
