"""Every job session is bounded: statement timeout, work_mem cap, temp-file limit, and a client
connection check so a killed scheduler's backend stops within seconds."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from lowcap_learning import jobs

SLOT = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
NAMES = [name for name, _, _ in jobs.JOB_BOUNDS]


@pytest.fixture(autouse=True)
def _clean(conn, monkeypatch):
    conn.execute("TRUNCATE learning.job_runs, learning.learning_log")
    for _, env, _ in jobs.JOB_BOUNDS:
        monkeypatch.delenv(env, raising=False)


def settings_runner(seen: dict):
    def runner(conn, job, as_of):
        for name in NAMES:
            seen[name] = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
        return {}

    return runner


def test_job_session_is_bounded_and_the_callers_settings_come_back(conn):
    conn.execute("SET work_mem = '1GB'")  # a generous role/database setting is capped for the job
    before = {name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] for name in NAMES}
    seen: dict = {}
    run = jobs.run_job(conn, "lesson-builder", slot_start=SLOT, runner=settings_runner(seen))
    assert run.status == "succeeded"
    assert seen == {"statement_timeout": "15min", "work_mem": "64MB", "temp_file_limit": "4GB",
                    "client_connection_check_interval": "2s"}
    after = {name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] for name in NAMES}
    assert after == before and after["work_mem"] == "1GB"


def test_work_mem_is_a_cap_and_bounds_come_from_the_environment(db_url, monkeypatch):
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=2MB")  # a lower server/role setting stays
    monkeypatch.setenv("LOWCAP_LEARNING_JOB_STATEMENT_TIMEOUT", "90s")
    monkeypatch.setenv("LOWCAP_LEARNING_JOB_CLIENT_CHECK", "1s")
    seen: dict = {}
    assert jobs.run_job(db_url, "tuning-miner", slot_start=SLOT, runner=settings_runner(seen)).status == "succeeded"
    assert seen["work_mem"] == "2MB" and seen["statement_timeout"] == "90s"
    assert seen["client_connection_check_interval"] == "1s"


def test_statement_timeout_stops_a_long_job_statement(db_url, monkeypatch):
    monkeypatch.setenv("LOWCAP_LEARNING_JOB_STATEMENT_TIMEOUT", "500ms")

    def slow(conn, job, as_of):
        with conn.transaction():
            conn.execute("SELECT pg_sleep(30)")
        return {}

    started = time.monotonic()
    run = jobs.run_job(db_url, "materializer", slot_start=SLOT, runner=slow)
    assert time.monotonic() - started < 5
    assert run.status == "failed" and "statement timeout" in run.error


def test_an_invalid_bound_fails_the_job_naming_the_variable(db_url, monkeypatch):
    monkeypatch.setenv("LOWCAP_LEARNING_JOB_STATEMENT_TIMEOUT", "soon")
    run = jobs.run_job(db_url, "materializer", slot_start=SLOT, runner=settings_runner({}))
    assert run.status == "failed"
    assert run.error.startswith("LOWCAP_LEARNING_JOB_STATEMENT_TIMEOUT='soon' is not a valid statement_timeout")


KILLED_JOB = """
import sys
from lowcap_learning import jobs

def slow(conn, job, as_of):
    with conn.transaction():
        conn.execute("SELECT pg_sleep(120)")
    return {}

jobs.run_job(sys.argv[1], "lesson-builder", runner=slow)
"""


def test_sigkilled_client_stops_its_job_backend_within_seconds(db_url, conn):
    """Without the client connection check the backend sleeps (works) on for minutes after the kill."""
    app = "ll_killed_job_client"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_JOB, f"{db_url} application_name={app}"])
    query = "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'SELECT pg_sleep(120)%%'"
    try:
        deadline = time.monotonic() + 15
        while not (row := conn.execute(query, (app,)).fetchone()):
            assert time.monotonic() < deadline and proc.poll() is None, "the job never started its statement"
            time.sleep(0.05)
        pid = row[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed = time.monotonic()
        alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        while conn.execute(alive, (pid,)).fetchone()[0]:
            assert time.monotonic() - killed < 10, "the job's backend still runs 10 s after its client died"
            time.sleep(0.1)
        assert time.monotonic() - killed < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,))
