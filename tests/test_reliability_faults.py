"""Faults: a backend killed (pg_terminate_backend) in the middle of a bulk ingest and in the
middle of each job leaves no partial state, and the work re-runs cleanly; a scheduler whose
connections all drop (what a PostgreSQL restart looks like to a client) records the failed run and
runs the next slot. (The shared test server itself is never restarted: other suites run on it.)
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from conftest import clone_of
from lowcap_learning import jobs, synthetic
from lowcap_learning.check import run_check
from lowcap_learning.ingest import COLUMNS, IngestError, ingest_file
from reliability_support import changed, snapshot

N_TRADES = 6_000
START = datetime.now(UTC) - timedelta(days=61)
FAULTS: list[str] = []

BACKEND = """
SELECT pid, state, wait_event_type, left(query, 60)
FROM pg_catalog.pg_stat_activity
WHERE application_name = %(app)s::text AND datname = current_database()
"""
TERMINATE = "SELECT pg_catalog.pg_terminate_backend(%(pid)s::integer)"


def _wait_for(conn: psycopg.Connection, app: str, predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in conn.execute(BACKEND, {"app": app}).fetchall():
            if predicate(row):
                return row
        time.sleep(0.02)
    raise AssertionError(f"backend {app} never reached the expected state")


def _lost_connection(err) -> bool:
    """The kill reached the caller as a lost connection (ingest wraps it in an IngestError)."""
    return isinstance(err, psycopg.OperationalError) or (isinstance(err, IngestError) and "connection" in str(err))


def _trades_file(tmp: Path, prefix: str) -> Path:
    rows = synthetic.closed_trades(N_TRADES, seed=11, start=START, actions_per_trade=2, id_prefix=prefix)
    path = tmp / f"{prefix}.jsonl"
    path.write_text("\n".join(json.dumps({k: r[k] for k in COLUMNS if k in r}) for r in rows) + "\n")
    return path


def _ingest_in_thread(url: str, path: Path, app: str, batch: int | None, outcome: dict) -> threading.Thread:
    def target():
        try:
            with psycopg.connect(url, application_name=app) as conn:
                outcome["result"] = ingest_file(conn, path, batch)
        except Exception as err:  # noqa: BLE001 - the kill is expected to surface here
            outcome["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def admin(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        synthetic.insert_positions(conn, synthetic.positions(30, seed=3))
        synthetic.insert_closed_trades(conn, synthetic.closed_trades(300, seed=4, start=START, id_prefix="base"))
        synthetic.insert_episode_events(conn, synthetic.episode_events(3000, seed=4, start=START))
        yield conn


def test_kill_mid_ingest_leaves_nothing_and_reruns(admin, db_url, tmp_path):
    path = _trades_file(tmp_path, "kill1")
    before = snapshot(admin)
    outcome: dict = {}
    thread = _ingest_in_thread(db_url, path, "fault-ingest", None, outcome)
    pid = _wait_for(admin, "fault-ingest", lambda r: r[1] == "active" and "INSERT INTO public.closed_trades" in r[3])[0]
    time.sleep(0.3)  # well inside the statement (~2 s for 6k trades with the trigger)
    admin.execute(TERMINATE, {"pid": pid})
    FAULTS.append("ingest (one transaction)")
    thread.join(60)
    assert _lost_connection(outcome.get("error")), outcome
    assert changed(before, snapshot(admin)) == set(), "a killed ingest left rows behind"

    with psycopg.connect(db_url) as conn:
        assert ingest_file(conn, path).inserted == N_TRADES
        report = run_check(conn)
    assert report.ok, report.divergences


def test_kill_mid_batched_ingest_keeps_whole_batches_only(admin, db_url, tmp_path):
    path = _trades_file(tmp_path, "kill2")
    batch = 1000
    count = "SELECT count(*) FROM public.closed_trades WHERE trade_id LIKE 'kill2%'"
    outcome: dict = {}
    thread = _ingest_in_thread(db_url, path, "fault-batched", batch, outcome)
    _wait_for(admin, "fault-batched", lambda r: r[1] == "active" and "INSERT INTO public.closed_trades" in r[3])
    deadline = time.monotonic() + 30
    while admin.execute(count).fetchone()[0] < 2 * batch and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = _wait_for(admin, "fault-batched", lambda r: r[1] == "active" and "INSERT" in r[3])[0]
    admin.execute(TERMINATE, {"pid": pid})
    FAULTS.append("ingest (--batch)")
    thread.join(60)
    assert _lost_connection(outcome.get("error")), outcome
    kept = admin.execute(count).fetchone()[0]
    assert kept % batch == 0 and 0 < kept < N_TRADES, kept
    # The kept trades are exactly the file's first batches, with their facts and history steps.
    first = [json.loads(line)["trade_id"] for line in path.read_text().splitlines()[:kept]]
    stored = {r[0] for r in admin.execute("SELECT trade_id FROM public.closed_trades WHERE trade_id LIKE 'kill2%'")}
    assert stored == set(first)
    with psycopg.connect(db_url) as conn:
        report = run_check(conn)
    assert report.ok, report.divergences


def _job_available(name: str) -> bool:
    try:
        for spec in jobs.JOBS[name].providers:
            jobs.provider(spec)
    except jobs.JobUnavailable:
        return False
    return True


@pytest.fixture(scope="module")
def jobs_db(template_db):
    """A small database of its own for the job faults (the lesson builder's cost grows with the facts)."""
    with clone_of(template_db, "faultjobs") as url, psycopg.connect(url, autocommit=True) as conn:
        synthetic.insert_positions(conn, synthetic.positions(10, seed=6))
        synthetic.insert_closed_trades(conn, synthetic.closed_trades(1500, seed=6, start=START, id_prefix="j"))
        synthetic.insert_episode_events(conn, synthetic.episode_events(3000, seed=6, start=START))
        yield url, conn


OUTPUT_FINGERPRINT = """
SELECT
    (SELECT md5(coalesce(string_agg(concat_ws('|', module, pattern_key, action_category, scope_subset::text, n,
        status, lesson_type), E'\n' ORDER BY module, pattern_key, action_category, scope_subset::text), ''))
     FROM public.learning_lessons),
    (SELECT md5(coalesce(string_agg(concat_ws('|', pattern_key, action_category, scope_subset::text, n, status,
        multiplier, dira, dire), E'\n' ORDER BY pattern_key, action_category, scope_subset::text), ''))
     FROM public.pm_overrides)
"""

OUTPUTS = ("public.learning_lessons", "public.pm_overrides", "public.pattern_episode_events", "public.closed_trades")


@pytest.mark.parametrize("name", list(jobs.JOBS))
def test_kill_mid_job_leaves_no_partial_state_and_reruns(jobs_db, name):
    db_url, admin = jobs_db
    as_of = datetime.now(UTC)
    slot = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(days=list(jobs.JOBS).index(name))
    if not _job_available(name):
        # Whatever exists at the end: a job whose provider is missing fails cleanly and changes nothing.
        before = snapshot(admin)
        run = jobs.run_job(db_url, name, as_of=as_of, slot_start=slot)
        assert run.status == "failed" and "is not available" in run.error
        assert changed(before, snapshot(admin)) <= {"learning.job_runs", "learning.learning_log"}
        return
    before = snapshot(admin)
    outcome: dict = {}

    url = conninfo.make_conninfo(db_url, application_name=f"fault-job-{name}")

    def target():
        try:
            outcome["run"] = jobs.run_job(url, name, as_of=as_of, slot_start=slot)
        except Exception as err:  # noqa: BLE001
            outcome["error"] = err

    # Hold the job's output tables so it blocks on its first write, in the middle of its transaction.
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE public.learning_lessons, public.pm_overrides IN EXCLUSIVE MODE")
        thread = threading.Thread(target=target)
        thread.start()
        pid = _wait_for(admin, f"fault-job-{name}", lambda r: r[2] == "Lock")[0]
        admin.execute(TERMINATE, {"pid": pid})
        FAULTS.append(f"job {name}")
        blocker.rollback()
    thread.join(60)
    run = outcome.get("run")
    assert run is not None, outcome
    assert run.status == "failed", run
    diff = changed(before, snapshot(admin))
    assert diff <= {"learning.job_runs", "learning.learning_log"}, diff
    assert not diff & set(OUTPUTS)
    assert admin.execute("SELECT count(*) FROM learning.job_runs WHERE status = 'running'").fetchone()[0] == 0

    rerun = jobs.run_job(db_url, name, as_of=as_of, slot_start=slot + timedelta(hours=1))
    assert rerun.status == "succeeded", rerun.error
    outputs = admin.execute(OUTPUT_FINGERPRINT).fetchone()
    again = jobs.run_job(db_url, name, as_of=as_of, slot_start=slot + timedelta(hours=2))
    assert again.status == "succeeded", again.error
    assert admin.execute(OUTPUT_FINGERPRINT).fetchone() == outputs, "a clean re-run on the same data is stable"


def test_scheduler_survives_dropped_connections(jobs_db):
    """Every connection to the database is terminated mid-run (a restart, seen from a client)."""
    from lowcap_learning.scheduler import HourlyScheduler

    db_url, admin = jobs_db

    name = "tuning-miner" if _job_available("tuning-miner") else next(iter(jobs.JOBS))
    moment = datetime(2032, 1, 1, 0, 9, tzinfo=UTC)
    scheduler = HourlyScheduler(db_url, [name], export_logs=False, retries=3, backoff=0.1)
    outcome: dict = {}

    def target():
        outcome["run"] = scheduler.fire(name, moment)

    blocker = psycopg.connect(db_url, application_name="fault-blocker")
    blocker.execute("LOCK TABLE public.learning_lessons, public.pm_overrides IN EXCLUSIVE MODE")
    thread = threading.Thread(target=target)
    thread.start()
    if _job_available(name):
        _wait_for(admin, "", lambda r: r[2] == "Lock", timeout=30)
    else:
        time.sleep(0.2)
    admin.execute(
        """
        SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_catalog.pg_backend_pid()
        """
    )
    FAULTS.append("scheduler: every connection dropped")
    blocker.close()
    thread.join(60)
    first = outcome.get("run")
    assert first is not None and first.status in ("failed", "succeeded")
    assert admin.execute("SELECT count(*) FROM learning.job_runs WHERE status = 'running'").fetchone()[0] == 0
    nxt = scheduler.fire(name, moment + timedelta(hours=1))
    assert nxt is not None and nxt.status == ("succeeded" if _job_available(name) else "failed")


def test_adapter_does_not_swallow_a_transient_failure(jobs_db):
    db_url, admin = jobs_db
    admin.execute(
        """
        CREATE TABLE IF NOT EXISTS public.ad_strands (
            id text PRIMARY KEY, module text, kind text, symbol text, timeframe text, position_id text,
            trade_id uuid, content jsonb, regime_context jsonb, tags jsonb, target_agent text,
            created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now())
        """
    )
    assert admin.execute("SELECT learning.install_ad_strands_adapter()").fetchone()[0]
    content = {
        "position_id": "p1",
        "token_contract": "0xabc",
        "chain": "solana",
        "ts": "2026-02-01T00:00:00Z",
        "completed_trades": [{"trade_id": "adapter-lock-1", "actions": [], "summary": {"rpnl_pct": 3.0}}],
    }
    with psycopg.connect(db_url) as holder, psycopg.connect(db_url, autocommit=True) as bot:
        holder.execute("SELECT 1 FROM public.learning_configs WHERE module_id = 'decision_maker' FOR UPDATE")
        bot.execute("SET lock_timeout = '200ms'")
        FAULTS.append("adapter: lock timeout while learning")
        try:
            bot.execute(
                "INSERT INTO public.ad_strands (id, kind, timeframe, content) VALUES ('lock1', 'position_closed', '1h',"
                " %(c)s::jsonb)",
                {"c": json.dumps(content)},
            )
            failed = False
        except psycopg.errors.LockNotAvailable:
            failed = True  # the bot sees the failure and retries: nothing is lost
        holder.rollback()
    strand = admin.execute("SELECT count(*) FROM public.ad_strands WHERE id = 'lock1'").fetchone()[0]
    trade = admin.execute("SELECT count(*) FROM public.closed_trades WHERE trade_id = 'adapter-lock-1'").fetchone()[0]
    assert failed or strand == trade, "the strand was kept without its trade"


def test_a_far_future_closed_at_cannot_freeze_the_ewma(template_db):
    with (
        clone_of(template_db, "future") as url,
        psycopg.connect(url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute(
            """
                INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
                VALUES ('future', '1h', 90, '3000-01-01T00:00:00Z')
                """
        )


def test_zz_report_faults_injected():
    print(f"\nfaults injected: {len(FAULTS)} {FAULTS}")
    assert len(FAULTS) >= 7
