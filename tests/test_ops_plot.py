"""The allocation plot marks every trade (a tick per trade in its timeframe's row, in that timeframe's
colour, below the lines) and draws the allocation floor (min_allocation from learning.tunables())."""

from __future__ import annotations

import struct
from collections import Counter

from matplotlib.collections import EventCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from conftest import reset_learning
from lowcap_learning import plot, synthetic


def _floor_lines(ax, floor):
    return [line for line in ax.get_lines()
            if line.get_linestyle() == "--" and len(set(line.get_ydata())) == 1 and line.get_ydata()[0] == floor]


def _drawn(conn, out, monkeypatch) -> tuple[Figure, int]:
    """plot_allocation's figure, as it was saved to out, and the steps it reports."""
    saved: list[Figure] = []
    real_savefig = Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    steps = plot.plot_allocation(conn, out)
    monkeypatch.undo()
    assert len(saved) == 1 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return saved[0], steps


def test_plot_marks_each_trade_and_draws_the_floor(conn, tmp_path, monkeypatch):
    reset_learning(conn)
    conn.execute("SELECT learning.set_tunable('min_allocation', '0.08'::jsonb)")
    empty, steps = _drawn(conn, tmp_path / "empty.png", monkeypatch)
    assert steps == 0 and len(_floor_lines(empty.axes[0], 0.08)) == 1
    assert not any(isinstance(c, EventCollection) and len(c.get_positions()) for a in empty.axes
                   for c in a.collections)

    positions = synthetic.positions(6, seed=5)
    synthetic.insert_positions(conn, positions)
    synthetic.insert_closed_trades(conn, synthetic.closed_trades(300, seed=5, span_days=10, tokens=positions))
    per_tf = Counter(tf for (tf,) in conn.execute("SELECT timeframe FROM learning.allocation_history").fetchall())
    timeframes = list(conn.execute("SELECT learning.tracked_timeframes()").fetchone()[0])
    out = tmp_path / "alloc.png"
    fig, steps = _drawn(conn, out, monkeypatch)
    assert struct.unpack(">II", out.read_bytes()[16:24]) == (1000, 500)
    assert steps == 300
    main = fig.axes[0]
    lines = {line.get_label(): line for line in main.get_lines() if line.get_label() in timeframes}
    assert set(lines) == set(timeframes)
    rugs = [(a, c) for a in fig.axes for c in a.collections if isinstance(c, EventCollection)]
    assert len(rugs) == len(timeframes)
    offsets = set()
    for tf, (rug_ax, ticks) in zip(timeframes, rugs, strict=True):
        assert len(ticks.get_positions()) == per_tf[tf] > 0  # one tick per trade of that timeframe
        assert tuple(ticks.get_edgecolor()[0][:3]) == to_rgb(lines[tf].get_color())  # colour-matched
        assert ticks.get_linewidth() <= 1.0 and ticks.get_alpha() < 1  # thin, translucent
        assert rug_ax is not main and rug_ax.get_position().y1 <= main.get_position().y0  # along the bottom
        offsets.add(ticks.get_lineoffset())
    assert len(offsets) == len(timeframes)  # a row per timeframe
    floor = _floor_lines(main, 0.08)
    assert len(floor) == 1 and isinstance(floor[0], Line2D)
    labels = [t.get_text() for t in main.texts]
    assert any(label.startswith("floor") and "0.08" in label for label in labels), labels
    assert main.get_ylim()[0] <= 0.0  # the floor is drawn with the space beneath it
    assert plot._tick_alpha(2400) < 0.3 < plot._tick_alpha(60)  # ticks fade as they crowd (6,000 trades)
