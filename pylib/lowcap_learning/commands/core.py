"""migrate, status, ingest."""

from __future__ import annotations

import json
import sys
from datetime import UTC
from pathlib import Path

import click

from lowcap_learning import db, output
from lowcap_learning.ingest import IngestError, ingest_file, read_rows

STATUS_ALLOCATION = """
SELECT timeframe, current_allocation, roi_short, roi_long, n, updated_at
FROM learning.timeframe_allocation()
"""
STATUS_GLOBAL = "SELECT roi_short, roi_long, n, updated_at FROM learning.global_roi()"


def _fmt(value, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ts(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def status_data(conn) -> dict:
    cur = conn.cursor()
    allocation = [
        dict(zip(("timeframe", "current_allocation", "roi_short", "roi_long", "n", "updated_at"), row, strict=False))
        for row in cur.execute(STATUS_ALLOCATION).fetchall()
    ]
    g = cur.execute(STATUS_GLOBAL).fetchone()
    from lowcap_learning.jobs import last_runs  # ops: the newest run of each job

    return {
        "allocation": allocation,
        "global_roi": dict(zip(("roi_short", "roi_long", "n", "updated_at"), g, strict=False)),
        "jobs": [r.as_dict() for r in last_runs(conn)],
    }


@click.command()
@click.option("--create-db/--no-create-db", default=True, help="Create the database if missing.")
@click.pass_obj
def migrate(obj, create_db: bool) -> None:
    """Create or adopt the learning schema (alembic upgrade head)."""
    from lowcap_learning import migrate as migrations  # alembic is slow to import: only here

    try:
        created = migrations.migrate(obj["url"], create_db=create_db)
    except migrations.MigrateError as err:
        raise click.ClickException(str(err)) from None
    if created:
        click.echo("created database")
    click.echo("migrated to head")


@click.command()
@output.json_option
@click.pass_obj
def status(obj, as_json: bool) -> None:
    """Allocation, ROI EWMAs, trade counts and global ROI."""
    with db.connection(obj["url"]) as conn:
        data = status_data(conn)
    if as_json:
        click.echo(output.dumps(data, indent=2))
        return
    for line in _status_lines(data):
        click.echo(line)


def _status_lines(data: dict) -> list[str]:
    """The status table: allocation and ROI per timeframe, the global ROI, the newest run of each job."""
    lines = [f"{'timeframe':<10}{'allocation':>12}{'roi_short':>12}{'roi_long':>12}{'n':>7}  updated_at"]
    for row in data["allocation"]:
        lines.append(
            f"{row['timeframe']:<10}{_fmt(row['current_allocation']):>12}{_fmt(row['roi_short']):>12}"
            f"{_fmt(row['roi_long']):>12}{row['n']:>7}  {_fmt(row['updated_at'])}"
        )
    g = data["global_roi"]
    lines.append(
        f"{'global':<10}{'':>12}{_fmt(g['roi_short']):>12}{_fmt(g['roi_long']):>12}{g['n']:>7}"
        f"  {_fmt(g['updated_at'])}"
    )
    lines.append(f"\n{'job':<16}{'status':<11}{'slot (UTC)':<21}{'finished_at (UTC)':<21}counts / error")
    for run in data["jobs"] or [{"job": "(no runs yet)", "status": "", "slot_start": "", "finished_at": ""}]:
        detail = run.get("error") or (json.dumps(run["counts"]) if run.get("counts") is not None else "")
        lines.append(
            f"{run['job']:<16}{run['status']:<11}{_ts(run['slot_start']):<21}{_ts(run['finished_at']):<21}{detail}"
        )
    return lines


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--batch",
    "batch_size",
    type=click.IntRange(min=1),
    default=None,
    help="Commit every N rows (default: one transaction per file).",
)
@click.option(
    "--skip-existing", is_flag=True,
    help="Skip rows whose trade_id is already recorded (to resume an ingest that stopped), and count them.",
)
@click.pass_obj
def ingest(obj, file: Path, batch_size: int | None, skip_existing: bool) -> None:
    """Insert closed trades from a CSV or JSONL file (through the learning trigger).

    \b
    Columns (CSV header / JSONL keys; others are refused):
      trade_id        text, required, unique (a closed trade counts once)
      timeframe       required: one of 1m, 15m, 1h, 4h, 1d
      rpnl_pct        required, realised PnL in PERCENT (4.2 = +4.2%), finite, in [-100, 1000000]
      closed_at       required, ISO-8601 timestamp (no offset = UTC), at most 1 day ahead
      actions         JSON array of {pattern_key, action_category, scope, decision_type,
                      state, ts}; default []
      position_id, token_contract, token_chain   text, optional
      did_trim, reached_s3   true/false, optional (derived from actions when empty)
    \b
    A bad row is reported by line; its batch is written not at all. Batches before it stay
    committed: re-run with --skip-existing to resume.
    """
    try:
        total = sum(1 for _ in read_rows(file))
        with (
            db.connection(obj["url"]) as conn,
            click.progressbar(
                length=total, label=f"ingesting {file.name}", file=sys.stderr
            ) as bar,
        ):
            result = ingest_file(conn, file, batch_size, progress=bar.update, skip_existing=skip_existing)
    except IngestError as err:
        committed = (
            f"{err.committed} row(s) in {err.committed_batches} earlier batch(es) were committed; "
            "re-run with --skip-existing to resume"
            if err.committed
            else "nothing was committed"
        )
        raise click.ClickException(
            f"{file.name}: {err} (nothing from this batch was written; {committed})"
        ) from None
    skipped = f", skipped {result.skipped} already recorded" if skip_existing else ""
    click.echo(f"ingested {result.inserted} trades in {result.batches} transaction(s){skipped}")


def register(cli: click.Group) -> None:
    for command in (migrate, status, ingest):
        cli.add_command(command)
