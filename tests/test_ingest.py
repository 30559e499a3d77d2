"""The CLI: `migrate` (design §17), `status` (table and --json), `ingest` of CSV and JSONL files.

A bad row is reported with its line number and nothing of its transaction is written; `--batch N`
commits every N rows, so batches before the bad one stay.
"""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from conftest import SERVER_URL, empty_db, reset_learning, url_for
from lowcap_learning.cli import cli

ACTIONS = [{"pattern_key": "pm.uptrend.S1.entry", "action_category": "entry", "scope": {"chain": "solana"}}]


def run(url: str, *args: str):
    return CliRunner().invoke(cli, ["--database-url", url, *args], catch_exceptions=False)


def trades(n: int, start: int = 0) -> list[dict]:
    tfs = ("15m", "1h", "4h", "1m")
    return [
        {
            "trade_id": f"i{k:03d}",
            "timeframe": tfs[k % 4],
            "rpnl_pct": round((k * 7.3) % 23 - 9, 3),
            "closed_at": f"2026-01-{1 + k % 28:02d}T{k % 24:02d}:00:00+00:00",
            "actions": ACTIONS if k % 2 else [],
            "token_contract": f"tok{k % 3}",
            "token_chain": "solana",
        }
        for k in range(start, start + n)
    ]


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM public.closed_trades").fetchone()[0]


def test_migrate_creates_and_migrates_a_database():
    name = f"ll_ingest_create_{uuid.uuid4().hex[:8]}"
    url = url_for(name)
    try:
        result = run(url, "migrate")
        assert result.exit_code == 0, result.output
        assert "created database" in result.output and "migrated to head" in result.output
        again = run(url, "migrate")  # idempotent
        assert again.exit_code == 0, again.output
        assert "created database" not in again.output
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM learning.timeframe_allocation()").fetchone()[0] == 3
    finally:
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_migrate_through_database_url_env():
    with empty_db("ingest_env") as url:
        result = CliRunner(env={"DATABASE_URL": url}).invoke(cli, ["migrate", "--no-create-db"])
        assert result.exit_code == 0, result.output
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regproc('learning.trg_closed_trades_learn')").fetchone()[0]


def test_ingest_csv_then_status(db_url, conn, tmp_path):
    reset_learning(conn)
    rows = trades(40)
    result = run(db_url, "ingest", str(write_csv(tmp_path / "trades.csv", rows)))
    assert result.exit_code == 0, result.output
    assert "ingested 40 trades in 1 transaction(s)" in result.output
    assert count(conn) == 40
    # One multi-row INSERT: every trade is a step, in (closed_at, trade_id) order.
    order = [r[0] for r in conn.execute("SELECT trade_id FROM learning.allocation_history ORDER BY seq")]
    assert order == [r["trade_id"] for r in sorted(rows, key=lambda r: (r["closed_at"], r["trade_id"]))]
    facts = conn.execute("SELECT count(*) FROM public.pattern_trade_events").fetchone()[0]
    assert facts == 20  # odd trades carry one action each

    table = run(db_url, "status")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    alloc = conn.execute("SELECT timeframe, current_allocation, n FROM learning.timeframe_allocation()").fetchall()
    for tf, current, n in alloc:
        line = next(ln for ln in lines if ln.startswith(tf + " "))
        assert f"{current:.6f}" in line and f" {n} " in f"{line} "
    g_short, g_n = conn.execute("SELECT roi_short, n FROM learning.global_roi()").fetchone()
    global_line = next(ln for ln in lines if ln.startswith("global"))
    assert f"{g_short:.6f}" in global_line and str(g_n) in global_line

    as_json = run(db_url, "status", "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert [(a["timeframe"], a["current_allocation"], a["n"]) for a in data["allocation"]] == alloc
    assert data["global_roi"]["n"] == g_n == 30  # 1m trades are not counted
    assert data["global_roi"]["roi_short"] == g_short


def test_ingest_jsonl(db_url, conn, tmp_path):
    reset_learning(conn)
    rows = trades(25)
    rows[3]["did_trim"] = True
    rows[5]["reached_s3"] = False
    result = run(db_url, "ingest", str(write_jsonl(tmp_path / "trades.jsonl", rows)))
    assert result.exit_code == 0, result.output
    assert count(conn) == 25
    stored = conn.execute(
        "SELECT rpnl_pct, closed_at, did_trim, reached_s3, actions FROM public.closed_trades WHERE trade_id = 'i003'"
    ).fetchone()
    assert stored[0] == rows[3]["rpnl_pct"] and stored[2] is True and stored[4] == ACTIONS
    assert stored[1].isoformat() == rows[3]["closed_at"]


@pytest.mark.parametrize(
    ("fmt", "bad", "field"),
    [
        ("csv", {"rpnl_pct": "NaN"}, "rpnl_pct"),
        ("jsonl", {"rpnl_pct": float("nan")}, "rpnl_pct"),
        ("jsonl", {"timeframe": "5m"}, "timeframe"),
        ("csv", {"closed_at": ""}, "closed_at"),
        ("jsonl", {"rpnl_pct": -150}, "rpnl_pct"),
        ("jsonl", {"actions": [{"pattern_key": 3}]}, "actions"),
        ("jsonl", {"trade_id": "i001"}, "trade_id"),  # a duplicate inside the file
    ],
)
def test_a_bad_row_is_reported_by_line_and_nothing_is_written(db_url, conn, tmp_path, fmt, bad, field):
    reset_learning(conn)
    rows = trades(12)
    rows[6].update(bad)
    path = write_csv(tmp_path / "t.csv", rows) if fmt == "csv" else write_jsonl(tmp_path / "t.jsonl", rows)
    before = conn.execute("SELECT config_data FROM public.learning_configs WHERE module_id = 'decision_maker'")
    before = before.fetchone()[0]
    result = run(db_url, "ingest", str(path))
    assert result.exit_code != 0
    line = 8 if fmt == "csv" else 7  # the header is line 1 of a CSV file
    assert f"line {line}:" in result.output, result.output
    assert field in result.output, result.output
    assert count(conn) == 0
    assert conn.execute("SELECT count(*) FROM learning.allocation_history").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM public.pattern_trade_events").fetchone()[0] == 0
    after = conn.execute("SELECT config_data FROM public.learning_configs WHERE module_id = 'decision_maker'")
    assert after.fetchone()[0] == before


def test_invalid_json_line_is_reported(db_url, conn, tmp_path):
    reset_learning(conn)
    path = write_jsonl(tmp_path / "t.jsonl", trades(3))
    path.write_text(path.read_text() + "{not json\n")
    result = run(db_url, "ingest", str(path))
    assert result.exit_code != 0 and "line 4:" in result.output
    assert count(conn) == 0


def test_batches_before_the_bad_one_are_committed(db_url, conn, tmp_path):
    reset_learning(conn)
    rows = trades(10)
    rows[7]["timeframe"] = "2h"  # line 8 of the JSONL file, in the third batch of 3
    result = run(db_url, "ingest", "--batch", "3", str(write_jsonl(tmp_path / "t.jsonl", rows)))
    assert result.exit_code != 0
    assert "line 8:" in result.output and "timeframe" in result.output
    ids = [r[0] for r in conn.execute("SELECT trade_id FROM public.closed_trades ORDER BY trade_id")]
    assert ids == [r["trade_id"] for r in rows[:6]]
    # The learning state is that of the six committed trades exactly.
    assert conn.execute("SELECT count(*) FROM learning.allocation_history").fetchone()[0] == 6

    # Fixing the row and re-running the rest finishes the file.
    rows[7]["timeframe"] = "4h"
    rest = run(db_url, "ingest", "--batch", "3", str(write_jsonl(tmp_path / "rest.jsonl", rows[6:])))
    assert rest.exit_code == 0, rest.output
    assert "ingested 4 trades in 2 transaction(s)" in rest.output
    assert count(conn) == 10


def test_unknown_column_and_file_type_are_refused(db_url, conn, tmp_path):
    reset_learning(conn)
    rows = trades(2)
    rows[0]["pnl"] = 3
    result = run(db_url, "ingest", str(write_jsonl(tmp_path / "t.jsonl", rows)))
    assert result.exit_code != 0 and "unknown field" in result.output and "pnl" in result.output
    other = tmp_path / "t.txt"
    other.write_text("x")
    result = run(db_url, "ingest", str(other))
    assert result.exit_code != 0 and "csv" in result.output
    assert count(conn) == 0


def test_csv_with_a_byte_order_mark(db_url, conn, tmp_path):
    """Spreadsheet exports start with a UTF-8 BOM; the first column is still trade_id."""
    reset_learning(conn)
    path = write_csv(tmp_path / "bom.csv", trades(3))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    result = run(db_url, "ingest", str(path))
    assert result.exit_code == 0, result.output
    assert count(conn) == 3


def test_closed_at_without_time_zone_is_utc_whatever_the_session_says(db_url, conn, tmp_path):
    from lowcap_learning.ingest import ingest_file

    reset_learning(conn)
    rows = trades(2)
    rows[0]["closed_at"] = "2026-03-01T12:00:00"  # no zone
    path = write_jsonl(tmp_path / "naive.jsonl", rows)
    with psycopg.connect(db_url) as session:
        session.execute("SET TIME ZONE 'Asia/Tokyo'")
        session.commit()
        ingest_file(session, path)
    stored = conn.execute(
        "SELECT to_char(closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM public.closed_trades"
        " WHERE trade_id = %(id)s",
        {"id": rows[0]["trade_id"]},
    ).fetchone()[0]
    assert stored == "2026-03-01 12:00"
