"""Jobs and the scheduler: one run per (job, hour slot) whoever asks, every run recorded."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from lowcap_learning import jobs
from lowcap_learning.scheduler import HourlyScheduler, hour_slot

SLOT = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clean(conn):
    conn.execute("TRUNCATE learning.job_runs, learning.learning_log")


def counting_runner(calls: Counter, pause: float = 0.0, fail: set[str] | None = None):
    lock = threading.Lock()

    def runner(conn, job, as_of):
        with lock:
            calls[job.name] += 1
        time.sleep(pause)
        if fail and job.name in fail:
            raise RuntimeError(f"{job.name} broke")
        # a real statement on the job's connection, in its own transaction like the providers
        with conn.transaction():
            n = conn.execute("SELECT count(*) FROM public.closed_trades").fetchone()[0]
        return {"trades": n, "as_of": as_of.isoformat() if as_of else None}

    return runner


def test_claim_job_slot_admits_one_claim_per_slot(conn):
    first = conn.execute("SELECT learning.claim_job_slot('x', %(s)s)", {"s": SLOT}).fetchone()[0]
    second = conn.execute("SELECT learning.claim_job_slot('x', %(s)s)", {"s": SLOT}).fetchone()[0]
    other = conn.execute("SELECT learning.claim_job_slot('y', %(s)s)", {"s": SLOT}).fetchone()[0]
    assert first is not None and second is None and other is not None


def test_finish_refuses_a_run_that_is_not_running(conn):
    run_id = conn.execute("SELECT learning.claim_job_slot('x', %(s)s)", {"s": SLOT}).fetchone()[0]
    conn.execute("SELECT learning.finish_job_run(%(id)s, 'succeeded', '{}')", {"id": run_id})
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is not running"):
        conn.execute("SELECT learning.finish_job_run(%(id)s, 'failed')", {"id": run_id})


def test_run_job_records_counts_and_logs(db_url, conn):
    calls = Counter()
    run = jobs.run_job(db_url, "tuning-miner", as_of=SLOT, slot_start=SLOT, runner=counting_runner(calls))
    assert run.status == "succeeded" and run.counts == {"trades": 0, "as_of": SLOT.isoformat()}
    row = conn.execute(
        "SELECT status, counts, error, finished_at >= started_at, host IS NOT NULL, pid FROM learning.job_runs"
    ).fetchone()
    assert row[:5] == ("succeeded", {"trades": 0, "as_of": SLOT.isoformat()}, None, True, True)
    again = jobs.run_job(db_url, "tuning-miner", slot_start=SLOT, runner=counting_runner(calls))
    assert again.status == "skipped" and calls["tuning-miner"] == 1
    message = conn.execute("SELECT message FROM learning.learning_log").fetchone()[0]
    assert message.startswith(
        "JOB SUCCEEDED: job=tuning-miner | slot=2025-01-15T10:00:00Z | as_of=2025-01-15T10:00:00Z"
    )


def test_failing_job_is_recorded_failed_with_its_error(db_url, conn):
    runner = counting_runner(Counter(), fail={"materializer"})
    run = jobs.run_job(db_url, "materializer", slot_start=SLOT, runner=runner)
    assert run.status == "failed" and run.error == "RuntimeError: materializer broke"
    level, message = conn.execute("SELECT level, message FROM learning.learning_log").fetchone()
    assert level == "ERROR" and "error=RuntimeError: materializer broke" in message


def test_missing_provider_fails_with_a_clear_message(db_url):
    registry = {"ghost": jobs.Job("ghost", 8, ("lowcap_learning.no_such_module:run",), "test")}
    run = jobs.run_job(db_url, "ghost", slot_start=SLOT, registry=registry)
    assert run.status == "failed"
    assert run.error == (
        "lowcap_learning.no_such_module:run is not available: module lowcap_learning.no_such_module is not installed"
    )
    registry = {"ghost": jobs.Job("ghost", 8, ("lowcap_learning.jobs:no_such_function",), "test")}
    run = jobs.run_job(db_url, "ghost", slot_start=SLOT + timedelta(hours=1), registry=registry)
    assert run.error == (
        "lowcap_learning.jobs:no_such_function is not available: lowcap_learning.jobs has no function no_such_function"
    )


def test_advisory_lock_prevents_overlapping_runs(db_url, conn):
    conn.execute(
        "SELECT pg_advisory_lock(hashtext('lowcap_learning.job'), hashtext('lesson-builder'))"
    )
    try:
        calls = Counter()
        run = jobs.run_job(db_url, "lesson-builder", slot_start=SLOT, runner=counting_runner(calls))
    finally:
        conn.execute("SELECT pg_advisory_unlock_all()")
    assert run.status == "failed" and "in progress" in run.error and calls["lesson-builder"] == 0


def test_unknown_job_names_the_known_ones():
    with pytest.raises(ValueError, match="known jobs are all, lesson-builder, tuning-miner, materializer"):
        jobs.job_names("nope")
    assert jobs.job_names("all") == ["lesson-builder", "tuning-miner", "materializer"]


def test_two_schedulers_started_at_once_run_each_job_once_per_slot(db_url, conn):
    """Two schedulers on a fast (simulated) clock over 6 hours: 18 runs in all, none twice."""
    calls = Counter()
    start = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
    end = start + timedelta(hours=6)
    barrier = threading.Barrier(2)

    def lockstep(_t):
        barrier.wait(timeout=10)  # both schedulers reach every cron time together

    schedulers = [
        HourlyScheduler(db_url, runner=counting_runner(calls, pause=0.01), export_logs=False, simulated_as_of=True)
        for _ in range(2)
    ]
    threads = [threading.Thread(target=s.run_between, args=(start, end, lockstep)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(calls.values()) == 18 and set(calls.values()) == {6}
    rows = conn.execute(
        "SELECT job, slot_start, status, as_of FROM learning.job_runs ORDER BY slot_start, job"
    ).fetchall()
    assert len(rows) == 18 and {r[2] for r in rows} == {"succeeded"}
    assert Counter((r[0], r[1]) for r in rows).most_common(1)[0][1] == 1
    minutes = {r[0]: r[3].minute for r in rows}
    assert minutes == {"lesson-builder": 8, "tuning-miner": 9, "materializer": 10}
    ran = [r for s in schedulers for r in s.results]
    assert Counter(r.status for r in ran) == {"succeeded": 18, "skipped": 18}


def test_apscheduler_is_built_with_the_cron_minutes():
    sched = HourlyScheduler(None).build()
    fields = {job.id: str(job.trigger) for job in sched.get_jobs()}
    assert fields == {
        "lesson-builder": "cron[minute='8']",
        "tuning-miner": "cron[minute='9']",
        "materializer": "cron[minute='10']",
    }
    trigger = HourlyScheduler(None).trigger("tuning-miner")
    assert trigger.get_next_fire_time(None, datetime(2025, 1, 15, 10, 9, 1, tzinfo=UTC)) == datetime(
        2025, 1, 15, 11, 9, tzinfo=UTC
    )


def test_hour_slot():
    assert hour_slot(datetime(2025, 1, 15, 10, 9, 59, 5, tzinfo=UTC)) == SLOT


def test_unreachable_database_is_retried_then_logged(tmp_path):
    log = tmp_path / "sched.log"
    sched = HourlyScheduler(
        "postgresql://root@127.0.0.1:1/nowhere?connect_timeout=1", retries=2, backoff=0.01, log_file=str(log)
    )
    assert sched.fire("lesson-builder", SLOT + timedelta(minutes=8)) is None
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    assert " - learning_system - WARNING - SCHEDULER: Database unreachable | job=lesson-builder" in lines[0]
    assert " - learning_system - ERROR - SCHEDULER: Database unreachable | job=lesson-builder" in lines[2]
    assert "attempt=3" in lines[2]


def test_scheduler_command_starts_and_stops_on_sigterm(db_url):
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "lowcap_learning.cli", "scheduler", "--no-export-logs"],
        env=dict(os.environ, DATABASE_URL=db_url, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert first == "scheduler started: lesson-builder at :08, tuning-miner at :09, materializer at :10\n"
    assert proc.returncode == 0 and out == "scheduler stopped\n", err
