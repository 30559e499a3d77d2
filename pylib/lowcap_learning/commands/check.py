"""check: recompute the learning state from closed_trades and allocation_history."""

from __future__ import annotations

import sys

import click

from lowcap_learning import db, output
from lowcap_learning.check import run_check


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.9f}" if isinstance(value, float) else str(value)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Columns as wide as their widest cell, two spaces apart: no value runs into the next."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    first, *rest = range(len(header))
    return [
        "  ".join([line[first].ljust(widths[first])] + [line[i].rjust(widths[i]) for i in rest]).rstrip()
        for line in (header, *rows)
    ]


@click.command()
@output.json_option
@click.pass_obj
def check(obj, as_json: bool) -> None:
    """Recompute EWMAs, n and the allocation path; exit 1 on any divergence."""
    with db.connection(obj["url"]) as conn:
        report = run_check(conn)
    if as_json:
        click.echo(output.dumps(report.as_dict(), indent=2))
    else:
        click.echo(
            f"trades={report.trades} history_rows={report.history_rows} "
            f"steps_replayed={report.steps_replayed} tokens={report.tokens}"
        )
        header = ("series", "n", "n (re)", "roi_short", "recomputed", "ok")
        rows = [
            (s.series, str(s.n_stored), str(s.n_recomputed), _fmt(s.roi_short_stored),
             _fmt(s.roi_short_recomputed), "yes" if s.ok else "NO")
            for s in report.series
        ]
        for line in _table(header, rows):
            click.echo(line)
        for line in report.warnings:
            click.echo(f"warning: {line}")
        for line in report.divergences:
            click.echo(f"DIVERGENCE: {line}")
        click.echo("check: ok" if report.ok else f"check: {len(report.divergences)} divergence(s)")
    if not report.ok:
        sys.exit(1)


def register(cli: click.Group) -> None:
    cli.add_command(check)
