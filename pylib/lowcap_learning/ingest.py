"""Closed trades from CSV or JSONL into closed_trades, through the learning trigger.

Each batch is one INSERT ... SELECT, so the trigger takes its trades in (closed_at, trade_id) order
and redistributes positions once. Validation lives in the database (constraints and trigger); when
a batch fails, its rows are retried one by one under savepoints to name the line that failed, and
the batch is rolled back: nothing after the last committed batch is half-written.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from lowcap_learning.db import describe_error

COLUMNS = (
    "trade_id",
    "position_id",
    "token_contract",
    "token_chain",
    "timeframe",
    "rpnl_pct",
    "closed_at",
    "actions",
    "did_trim",
    "reached_s3",
)

INSERT_TRADES = """
INSERT INTO public.closed_trades (
    trade_id, position_id, token_contract, token_chain, timeframe, rpnl_pct, closed_at, actions,
    did_trim, reached_s3
)
SELECT
    r.trade_id, r.position_id, r.token_contract, r.token_chain, r.timeframe,
    r.rpnl_pct::double precision, r.closed_at::timestamptz, coalesce(r.actions, '[]'::jsonb),
    r.did_trim::boolean, r.reached_s3::boolean
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r (
    trade_id text, position_id text, token_contract text, token_chain text, timeframe text,
    rpnl_pct text, closed_at text, actions jsonb, did_trim text, reached_s3 text
)
"""
# --skip-existing: rows whose trade_id is recorded are left out (the writer may read that one column).
SKIP_EXISTING = """
WHERE NOT EXISTS (SELECT FROM public.closed_trades AS c WHERE c.trade_id = r.trade_id)
"""


class IngestError(Exception):
    """A row could not be ingested; carries the file's line number."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.committed = 0  # rows committed by earlier batches of this run
        self.committed_batches = 0


@dataclass
class IngestResult:
    inserted: int
    batches: int
    skipped: int = 0


def _clean(value):
    return None if value == "" else value


def read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) pairs from a .csv or .jsonl/.json-lines file."""
    suffix = path.suffix.lower()
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheet CSVs start with a BOM
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            unknown = set(reader.fieldnames or ()) - set(COLUMNS)
            if unknown:
                raise IngestError(1, f"unknown column(s): {', '.join(sorted(unknown))}")
            for row in reader:
                line = reader.line_num
                clean = {k: _clean(v) for k, v in row.items() if k in COLUMNS}
                if clean.get("actions") is not None:
                    try:
                        clean["actions"] = json.loads(clean["actions"])
                    except json.JSONDecodeError as err:
                        raise IngestError(line, f"actions is not valid JSON ({err.msg})") from None
                    except RecursionError:
                        raise IngestError(line, "actions is nested too deeply") from None
                yield line, clean
        elif suffix in (".jsonl", ".ndjson", ".json"):
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text, parse_constant=str)  # NaN/Infinity reach the database as text
                except json.JSONDecodeError as err:
                    raise IngestError(line, f"not valid JSON ({err.msg})") from None
                except RecursionError:
                    raise IngestError(line, "JSON nested too deeply") from None
                if not isinstance(row, dict):
                    raise IngestError(line, "each line must be a JSON object")
                unknown = set(row) - set(COLUMNS)
                if unknown:
                    raise IngestError(line, f"unknown field(s): {', '.join(sorted(unknown))}")
                yield line, {k: (str(v) if isinstance(v, float) else v) for k, v in row.items()}
        else:
            raise IngestError(0, f"unsupported file type {suffix!r}: use .csv or .jsonl")


def _insert(conn: psycopg.Connection, rows: list[dict], skip_existing: bool = False) -> int:
    """Insert rows; returns how many were inserted (fewer than given only when skipping existing)."""
    query = INSERT_TRADES + SKIP_EXISTING if skip_existing else INSERT_TRADES
    return conn.execute(query, {"rows": json.dumps(rows)}).rowcount


def _locate_failure(
    conn: psycopg.Connection, batch: list[tuple[int, dict]], skip_existing: bool = False
) -> IngestError:
    """Re-run a failed batch row by row (inside the caller's transaction) to find the bad line."""
    for line, row in batch:
        try:
            with conn.transaction():
                _insert(conn, [row], skip_existing)
        except psycopg.Error as err:
            return IngestError(line, describe_error(err))
    return IngestError(batch[-1][0], "the batch failed as a whole (duplicate trade_id inside the file?)")


def ingest_file(
    conn: psycopg.Connection,
    path: Path,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    skip_existing: bool = False,
) -> IngestResult:
    """Insert every row of path. One transaction per file, or one per batch_size rows.

    A closed_at without a time zone is read as UTC, whatever the session's TimeZone is. With
    skip_existing, rows whose trade_id is already in closed_trades are skipped and counted. An
    IngestError carries how many rows earlier batches committed.
    """
    rows = list(read_rows(path))
    size = batch_size or max(len(rows), 1)
    inserted = batches = skipped = 0
    for start in range(0, len(rows), size):
        batch = rows[start : start + size]
        try:
            with conn.transaction():
                conn.execute("SET LOCAL TIME ZONE 'UTC'")
                try:
                    with conn.transaction():
                        count = _insert(conn, [row for _, row in batch], skip_existing)
                except psycopg.Error:
                    raise _locate_failure(conn, batch, skip_existing) from None
        except IngestError as err:
            err.committed, err.committed_batches = inserted, batches
            raise
        inserted += count
        skipped += len(batch) - count
        batches += 1
        if progress:
            progress(len(batch))
    return IngestResult(inserted=inserted, batches=batches, skipped=skipped)
