"""The demo shows where it is while it replays: a line per phase on stderr, and a replay progress line per
job round (a bar redrawn in place on a terminal), all before the report is written; stdout keeps only the
seeded figures."""

from __future__ import annotations

import io
import re
import sys

from click.testing import CliRunner

from conftest import RUN_ID, url_for
from lowcap_learning import demo
from lowcap_learning.cli import cli

STAMP = re.compile(r"^\[\s*\d+\.\ds\] ")
REPLAYED = re.compile(r"replayed ([\d,]+) / ([\d,]+) trades, ([\d,]+) / ([\d,]+) episode windows \(day (\d+)/(\d+)")


def _count(text: str) -> int:
    return int(text.replace(",", ""))


def test_demo_small_prints_progress_before_the_report(tmp_path):
    url = url_for(f"ll_progress_demo_{RUN_ID}")
    out = tmp_path / "out"
    try:
        res = CliRunner().invoke(cli, ["--database-url", url, "demo", "--small", "--seed", "3", "--out", str(out)],
                                 catch_exceptions=False)
    finally:
        demo.drop_database(url)
    assert res.exit_code == 0, res.output
    err = res.stderr.splitlines()
    assert err and all(STAMP.match(line) for line in err), err
    assert not any(STAMP.match(line) for line in res.stdout.splitlines()), "progress must not reach stdout"
    for phase in ("recreating database", "migrat", "seeding 24 positions", "replaying 20 simulated days",
                  "plotting", "wrote"):
        assert any(phase in line for line in err), f"no {phase!r} line in {err}"
    # One replay line per job round (every 5 of 20 simulated days), counts rising to every trade and window.
    replayed = [REPLAYED.search(line).groups() for line in err if REPLAYED.search(line)]
    assert [int(r[4]) for r in replayed] == [5, 10, 15, 20] and {r[5] for r in replayed} == {"20"}
    trades = [_count(r[0]) for r in replayed]
    assert trades == sorted(trades) and 0 < trades[0] < trades[-1] == _count(replayed[-1][1]) == 120
    assert _count(replayed[-1][2]) == _count(replayed[-1][3]) == 600
    # In the terminal's order (stdout and stderr interleaved): every replay line comes before the figures
    # computed after the replay, and the report is written last.
    lines = res.output.splitlines()
    first_figure = next(i for i, line in enumerate(lines) if line.startswith("allocation path"))
    replay_at = [i for i, line in enumerate(lines) if REPLAYED.search(line)]
    assert len(replay_at) == 4 and replay_at[-1] < first_figure
    assert "wrote" in lines[-1] and "report.md" in lines[-1]
    assert (out / "report.md").is_file()


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal and notes, per write, whether the report exists yet."""

    def __init__(self, report) -> None:
        super().__init__()
        self.report = report
        self.writes: list[tuple[str, bool]] = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.writes.append((text, self.report.exists()))
        return super().write(text)


def test_demo_on_a_terminal_redraws_a_bar_while_replaying(template_db, tmp_path, monkeypatch, capsys):
    url = url_for(f"ll_progress_tty_demo_{RUN_ID}")
    term = _Terminal(tmp_path / "report.md")
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setenv("COLUMNS", "80")
    try:
        rep = demo.main(url=url, small=True, out_dir=tmp_path, seed=3, template=template_db)
    finally:
        demo.drop_database(url)
    assert capsys.readouterr().out == "\n".join(rep.stdout) + "\n"  # stdout: the figures only
    bars = [text for text, _ in term.writes if text.startswith("\r")]
    # Redrawn after each of the 20 days and again after each of the 4 job rounds, none after the report.
    assert len(bars) == 24 and not any(exists for text, exists in term.writes if text.startswith("\r"))
    fills = [re.search(r"\[(#*)\.*\]", bar).group(1) for bar in bars]
    assert [len(f) for f in fills] == sorted(len(f) for f in fills) and len(fills[-1]) == demo.Progress.BAR
    assert sum("running jobs" in bar for bar in bars) == 4
    assert re.search(r"\] [1-9]\d*/120 trades, day 1/20$", bars[0]) and "120/120 trades, day 20/20" in bars[-1]
    # Fits an 80-column terminal (a wrapped line could not be redrawn in place).
    assert all(len(bar.removeprefix("\r\x1b[K")) <= 79 for bar in bars)
    # The bar line is ended before the next phase line, so no phase is written over it.
    text = term.getvalue()
    assert re.search(r"day 20/20\n\[\s*\d+\.\ds\] replayed 20 days, 12 job runs\n", text)
    assert (tmp_path / "report.md").is_file() and term.writes[-1][1]
