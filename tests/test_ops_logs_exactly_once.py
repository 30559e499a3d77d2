"""Each learning_log row reaches the file exactly once: across SIGKILL of `logs follow` at any moment
(between the fsync and the COMMIT, in the middle of a write), and whatever a field value contains."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from lowcap_learning import logs

FORGED = "2026-01-01 00:00:00,000 - learning_system - ERROR - FORGED: allocation wiped"


@pytest.fixture(autouse=True)
def _clean(conn):
    conn.execute("TRUNCATE learning.learning_log")


def file_lines(path: Path) -> list[str]:
    """The file's lines as any reader splits them (str.splitlines: \\n, \\r, \\v, \\x1c, \\x85, \\u2028 ...)."""
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def messages(path: Path) -> list[str]:
    out = []
    for line in file_lines(path):
        parts = line.split(" - ", 3)
        assert len(parts) == 4 and parts[1] == "learning_system", f"not a whole learning_system line: {line!r}"
        out.append(parts[3])
    return out


def _follow(db_url: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=db_url, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "lowcap_learning.cli", "logs", "follow", "--log-file", str(log), "--poll", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def test_sigkilled_follow_writes_every_row_exactly_once(db_url, conn, tmp_path):
    """5 SIGKILLs of `logs follow` while 12k rows arrive in small commits: none lost, none twice, no torn line.

    Before the sidecar, a kill between the fsync and the COMMIT wrote the batch again after the restart."""
    log = tmp_path / "follow.log"
    total, chunk = 12_000, 40
    done = threading.Event()

    def writer():
        with psycopg.connect(db_url, autocommit=True) as w:
            for start in range(1, total + 1, chunk):
                w.execute(
                    "SELECT learning._log('INFO', 'EO ' || i) FROM generate_series(%s::int, %s::int) AS i",
                    (start, min(start + chunk - 1, total)),
                )
                time.sleep(0.002)
        done.set()

    rng = random.Random(15)
    follower = _follow(db_url, log)
    thread = threading.Thread(target=writer)
    thread.start()
    kills = 0
    try:
        while kills < 5:
            time.sleep(rng.uniform(0.4, 0.9))  # long enough for the restarted follower to be exporting again
            follower.send_signal(signal.SIGKILL)
            follower.wait(10)
            kills += 1
            follower = _follow(db_url, log)
        thread.join(60)
        assert done.is_set(), "the writer did not finish"
        deadline = time.monotonic() + 30
        unexported = "SELECT count(*) FROM learning.learning_log WHERE exported_at IS NULL"
        while conn.execute(unexported).fetchone()[0]:
            assert time.monotonic() < deadline, "the follower did not catch up within 30 s"
            time.sleep(0.1)
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(10)
        thread.join(60)
    got = messages(log)
    twice = {m: n for m, n in Counter(got).items() if n > 1}
    assert not twice, f"{len(twice)} rows written more than once after {kills} kills, e.g. {sorted(twice)[:5]}"
    assert len(got) == total and set(got) == {f"EO {i}" for i in range(1, total + 1)}
    assert got == sorted(got, key=lambda m: int(m.split()[1]))  # one exporter at a time: id order
    assert not (tmp_path / ("follow.log" + logs.STATE_SUFFIX)).exists()


def test_crash_between_fsync_and_commit_writes_the_batch_once(conn, tmp_path):
    log = tmp_path / "ls.log"
    conn.execute("SELECT learning._log('INFO', 'CRASH ' || i) FROM generate_series(1, 30) AS i")

    def crash(rows):
        raise RuntimeError("killed after the fsync, before the COMMIT")

    with pytest.raises(RuntimeError):
        logs.export(conn, log, batch=20, after_write=crash)
    assert conn.execute("SELECT count(*) FROM learning.learning_log WHERE exported_at IS NULL").fetchone()[0] == 30
    assert logs.export(conn, log, batch=20) == 30  # 20 found in the file, 10 claimed and written
    assert messages(log) == [f"CRASH {i}" for i in range(1, 31)]


def test_kill_in_the_middle_of_a_write_cuts_the_torn_line_and_writes_the_rest_once(conn, tmp_path):
    log = tmp_path / "ls.log"
    conn.execute("SELECT learning._log('INFO', 'TORN ' || i) FROM generate_series(1, 10) AS i")

    def torn(rows):  # as if killed while the 5th line was half written
        lines = log.read_bytes().splitlines(keepends=True)
        log.write_bytes(b"".join(lines[:4]) + lines[4][:17])
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        logs.export(conn, log, after_write=torn)
    assert logs.export(conn, log) == 10
    assert messages(log) == [f"TORN {i}" for i in range(1, 11)]


def test_a_line_written_in_between_does_not_count_as_a_row(conn, tmp_path):
    """`follow` logs 'connection lost' to the file after a failed COMMIT, before it retries."""
    log = tmp_path / "ls.log"
    conn.execute("SELECT learning._log('INFO', 'GAP ' || i) FROM generate_series(1, 6) AS i")

    def lost(rows):
        lines = log.read_bytes().splitlines(keepends=True)
        log.write_bytes(b"".join(lines[:3]))  # three of six lines made it
        raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError):
        logs.export(conn, log, after_write=lost)
    lost_line = "LOG EXPORTER: Database connection lost | retry_in=2s | error=x"
    logs.get_logger(log).warning(lost_line)
    assert logs.export(conn, log) == 6
    assert messages(log) == ["GAP 1", "GAP 2", "GAP 3", lost_line, "GAP 4", "GAP 5", "GAP 6"]


def test_batch_is_found_after_the_file_rolled_over(conn, tmp_path, monkeypatch):
    log = tmp_path / "ls.log"
    conn.execute("SELECT learning._log('INFO', 'ROLL ' || i) FROM generate_series(1, 5) AS i")

    def crash(rows):
        handler = logs._file_handler(logs.get_logger(log))
        handler.doRollover()  # e.g. a direct warning rolled the file over before the retry
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        logs.export(conn, log, after_write=crash)
    assert logs.export(conn, log) == 5
    assert messages(Path(f"{log}.1")) == [f"ROLL {i}" for i in range(1, 6)] and messages(log) == []


def test_a_trade_id_cannot_forge_a_line(conn, tmp_path):
    """A trade_id holding a newline and a whole fake line stays inside its own line, escaped."""
    log = tmp_path / "ls.log"
    trade_id = f"t1\n{FORGED}\r\n{FORGED}\x85\u2028\x1e\x0b\x0c\x00"
    conn.execute(
        "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)"
        " VALUES (%s, '1h', 4.2, now(), '[]')",
        (trade_id.replace("\x00", ""),),  # text cannot hold NUL; the direct-write test below covers it
    )
    rows = conn.execute("SELECT count(*) FROM learning.learning_log").fetchone()[0]
    assert rows >= 1
    assert logs.export(conn, log) == rows
    lines = file_lines(log)
    assert len(lines) == rows  # one line per row, however a reader splits lines
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert any("trade_id=t1\\n2026-01-01 00:00:00,000 - learning_system - ERROR - FORGED" in line for line in lines)
    logs.get_logger(log).error("SCHEDULER: x | error=%s", f"boom\n{FORGED}\x00")  # a direct write too
    assert len(file_lines(log)) == rows + 1 and file_lines(log)[-1].endswith("boom\\n" + FORGED + "\\x00")


def test_escape_keeps_printable_text_and_escapes_every_line_break():
    assert logs.escape("scope={chain: solana} | trade_id=a-b_c ü ✓") == "scope={chain: solana} | trade_id=a-b_c ü ✓"
    breaks = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
    escaped = logs.escape(f"a{breaks}b")
    assert escaped.splitlines() == [escaped] and escaped == "a\\n\\r\\x0b\\x0c\\x1c\\x1d\\x1e\\x85\\u2028\\u2029b"
