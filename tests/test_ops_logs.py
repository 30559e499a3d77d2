"""The learning-system log: db_log rows reach the file once, with asctime = logged_at, across crashes
and restarts of `logs follow`."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from lowcap_learning import logs

LINE = re.compile(
    r"^(?P<asctime>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - learning_system - (?P<level>DEBUG|INFO|WARNING|ERROR)"
    r" - (?P<message>.*)$"
)


@pytest.fixture(autouse=True)
def _clean(conn):
    conn.execute("TRUNCATE learning.learning_log")


def lines_of(path: Path) -> list[re.Match]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        m = LINE.match(line)
        assert m, f"line not in the learning_system format: {line!r}"
        out.append(m)
    return out


def test_db_log_row_is_exported_once_with_its_logged_at(conn, tmp_path):
    log = tmp_path / "ls.log"
    logs.db_log(conn, "warning", "TEST: one | k=v")
    logged_at = conn.execute("SELECT logged_at FROM learning.learning_log").fetchone()[0]
    assert logs.export(conn, log) == 1
    assert logs.export(conn, log) == 0
    [m] = lines_of(log)
    assert m["level"] == "WARNING" and m["message"] == "TEST: one | k=v"
    expected = logged_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S,") + f"{logged_at.microsecond // 1000:03d}"
    assert m["asctime"] == expected
    assert conn.execute("SELECT count(*) FROM learning.learning_log WHERE exported_at IS NULL").fetchone()[0] == 0


def test_db_log_refuses_unknown_level(conn):
    with pytest.raises(ValueError, match="log level"):
        logs.db_log(conn, "LOUD", "x")


def test_log_path_from_argument_env_and_default(monkeypatch, tmp_path):
    monkeypatch.delenv(logs.LOG_ENV, raising=False)
    assert logs.log_path() == Path("logs/learning_system.log")
    monkeypatch.setenv(logs.LOG_ENV, str(tmp_path / "env.log"))
    assert logs.log_path() == tmp_path / "env.log"
    assert logs.log_path(tmp_path / "arg.log") == tmp_path / "arg.log"


def test_rows_are_written_in_id_order_across_batches(conn, tmp_path):
    log = tmp_path / "ls.log"
    conn.execute("SELECT learning._log('INFO', 'ROW ' || i) FROM generate_series(1, 25) AS i")
    assert logs.export(conn, log, batch=7) == 25
    assert [m["message"] for m in lines_of(log)] == [f"ROW {i}" for i in range(1, 26)]


def test_crash_between_write_and_commit_loses_nothing(conn, tmp_path):
    """The claim commits only after the file is written: a crash neither drops the row nor writes it twice."""
    log = tmp_path / "ls.log"
    logs.db_log(conn, "INFO", "SURVIVES: a crash")

    def crash(rows):
        raise RuntimeError("killed after the write, before the commit")

    with pytest.raises(RuntimeError):
        logs.export(conn, log, after_write=crash)
    assert conn.execute("SELECT count(*) FROM learning.learning_log WHERE exported_at IS NULL").fetchone()[0] == 1
    assert logs.export(conn, log) == 1
    assert [m["message"] for m in lines_of(log)] == ["SURVIVES: a crash"]


def test_two_exporters_at_once_write_each_row_once(db_url, conn, tmp_path):
    log = tmp_path / "ls.log"
    conn.execute("SELECT learning._log('INFO', 'PAR ' || i) FROM generate_series(1, 400) AS i")
    counts = []

    def worker():
        with psycopg.connect(db_url, autocommit=True) as c:
            counts.append(logs.export(c, log, batch=13))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    messages = [m["message"] for m in lines_of(log)]
    assert sum(counts) == 400
    assert sorted(messages) == sorted(f"PAR {i}" for i in range(1, 401))


def _follow(db_url: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=db_url, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "lowcap_learning.cli", "logs", "follow", "--log-file", str(log), "--poll", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(path: Path, messages: set[str], timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [m["message"] for m in lines_of(path)]
        if messages <= set(got):
            return got
        time.sleep(0.05)
    raise AssertionError(f"not exported within {timeout}s: {sorted(messages - set(got))}")


def _wait_for_committed(conn, like: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM learning.learning_log WHERE message LIKE %s AND exported_at IS NULL"
    while conn.execute(query, (like,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise AssertionError(f"claim of {like!r} not committed within {timeout}s")
        time.sleep(0.02)


def test_killed_follow_restarted_exports_missed_rows_once(db_url, conn, tmp_path):
    log = tmp_path / "follow.log"
    first = _follow(db_url, log)
    try:
        logs.db_log(conn, "INFO", "FOLLOW: before kill 1")
        logs.db_log(conn, "INFO", "FOLLOW: before kill 2")
        _wait_for(log, {"FOLLOW: before kill 1", "FOLLOW: before kill 2"})  # exported on NOTIFY, well before the poll
        # Killed once the claim is committed: this test is about rows written while nobody follows (a kill
        # between the fsync and the COMMIT is tests/test_ops_logs_exactly_once.py's).
        _wait_for_committed(conn, "FOLLOW: before kill %")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    # While nobody follows: these rows are missed, and must not be lost.
    missed = {f"FOLLOW: while down {i}" for i in range(5)}
    for message in sorted(missed):
        logs.db_log(conn, "INFO", message)
    second = _follow(db_url, log)
    try:
        _wait_for(log, missed)  # exported at start
        logs.db_log(conn, "ERROR", "FOLLOW: after restart")
        got = _wait_for(log, {"FOLLOW: after restart"})
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(10)
    expected = {"FOLLOW: before kill 1", "FOLLOW: before kill 2", "FOLLOW: after restart"} | missed
    assert sorted(got) == sorted(expected)  # every row once: none lost, none twice
    assert second.returncode == 0


def test_export_cli_reports_count(db_url, conn, tmp_path):
    log = tmp_path / "cli.log"
    logs.db_log(conn, "INFO", "CLI: export")
    env = dict(os.environ, DATABASE_URL=db_url)
    out = subprocess.run(
        [sys.executable, "-m", "lowcap_learning.cli", "logs", "export", "--log-file", str(log)],
        env=env, capture_output=True, text=True, check=True,
    )
    assert out.stdout.startswith("exported 1 rows")
    assert [m["message"] for m in lines_of(log)] == ["CLI: export"]


def test_logged_at_not_export_time(conn, tmp_path):
    log = tmp_path / "ls.log"
    conn.execute(
        "INSERT INTO learning.learning_log (logged_at, level, message)"
        " VALUES ('2025-01-15 10:09:00.123+00', 'INFO', 'OLD')"
    )
    logs.export(conn, log)
    [m] = lines_of(log)
    assert datetime.strptime(m["asctime"], "%Y-%m-%d %H:%M:%S,%f") == datetime(2025, 1, 15, 10, 9, 0, 123000)


def test_follow_reconnects_after_its_connections_are_killed(db_url, conn, tmp_path):
    log = tmp_path / "reconnect.log"
    follower = _follow(db_url, log)
    try:
        logs.db_log(conn, "INFO", "RECONNECT: before")
        _wait_for(log, {"RECONNECT: before"})
        # Killed only once the claim is committed: a connection lost between the file write and the COMMIT
        # is tests/test_ops_logs_exactly_once.py's, not what this tests.
        _wait_for_committed(conn, "RECONNECT: before")
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
        assert killed >= 2
        logs.db_log(conn, "INFO", "RECONNECT: after")
        got = _wait_for(log, {"RECONNECT: after"})
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(10)
    assert got.count("RECONNECT: before") == 1 and got.count("RECONNECT: after") == 1
    assert any("LOG EXPORTER: Database connection lost" in line for line in log.read_text().splitlines())


def test_get_logger_from_many_threads_adds_one_handler(tmp_path):
    """Exporters in threads of one process share the logger: each line must be written once."""
    barrier = threading.Barrier(16)
    for round_ in range(20):
        path = tmp_path / f"race{round_}.log"

        def call(path=path):
            barrier.wait()
            logs.get_logger(path)

        threads = [threading.Thread(target=call) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(logging.getLogger(logs.LOGGER_NAME).handlers) == 1
