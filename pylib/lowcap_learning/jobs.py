"""The hourly learning jobs (design §14): registry, and one recorded run of a job.

A run claims its row of learning.job_runs (unique on (job, slot_start)) before it starts, so a slot runs
at most once whoever asks; it then takes a session advisory lock on the job so two runs of one job never
overlap (a manual `run` during a scheduled one), runs the providers (each in its own transaction), and
closes the row with its counts or its error. Providers are imported lazily: a missing module or function
fails that job with a clear message and leaves the others running.

Every run is bounded on its session (JOB_BOUNDS, each overridable by an environment variable): a statement
timeout, a cap on work_mem, a temp-file limit, and a client connection check so that a killed scheduler's
backend stops within seconds instead of finishing the job for nobody. A connection passed in gets its own
settings back when the run ends.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

import psycopg

from lowcap_learning.db import connect, describe_error


@dataclass(frozen=True)
class Job:
    name: str
    minute: int  # minute of every hour at which the scheduler runs it
    providers: tuple[str, ...]  # "module:function", run in order
    description: str


JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job("lesson-builder", 8, ("lowcap_learning.strength:run_lesson_builder",), "strength lessons from trade facts"),
        Job("tuning-miner", 9, ("lowcap_learning.tuning:run_tuning_miner",), "tuning lessons from episodes"),
        Job(
            "materializer",
            10,
            ("lowcap_learning.simulate:materialize_tuning", "lowcap_learning.strength:materialize_strength"),
            "lever simulation and overrides from lessons",
        ),
    )
}

CLAIM = """
SELECT learning.claim_job_slot(
    p_job => %(job)s::text, p_slot_start => %(slot)s::timestamptz, p_as_of => %(as_of)s::timestamptz,
    p_host => %(host)s::text, p_pid => %(pid)s::integer
)
"""
FINISH = """
SELECT id, job, slot_start, as_of, started_at, finished_at, status, counts, error
FROM learning.finish_job_run(
    p_id => %(id)s::bigint, p_status => %(status)s::text, p_counts => %(counts)s::jsonb, p_error => %(error)s::text
)
"""
# (setting, environment variable, default). work_mem is a cap: a lower server or role setting stays.
# temp_file_limit is superuser-only unless granted (GRANT SET ON PARAMETER temp_file_limit TO role);
# a role that may not set it keeps the server's limit.
JOB_BOUNDS = (
    ("statement_timeout", "LOWCAP_LEARNING_JOB_STATEMENT_TIMEOUT", "15min"),
    ("work_mem", "LOWCAP_LEARNING_JOB_WORK_MEM", "64MB"),
    ("temp_file_limit", "LOWCAP_LEARNING_JOB_TEMP_FILE_LIMIT", "4GB"),
    ("client_connection_check_interval", "LOWCAP_LEARNING_JOB_CLIENT_CHECK", "2s"),
)
SETTING = "SELECT pg_catalog.current_setting(%(name)s::text)"
SET_SETTING = "SELECT pg_catalog.set_config(%(name)s::text, %(value)s::text, false)"
# The lower of the session's work_mem and the cap.
CAP_WORK_MEM = """
SELECT pg_catalog.set_config('work_mem', CASE
    WHEN pg_catalog.pg_size_bytes(pg_catalog.current_setting('work_mem')) <= pg_catalog.pg_size_bytes(%(value)s::text)
        THEN pg_catalog.current_setting('work_mem')
    ELSE %(value)s::text
END, false)
"""
# Advisory lock key: (class 'job' of this project, the job's name hashed).
TRY_XACT_LOCK = """
SELECT pg_catalog.pg_try_advisory_xact_lock(
    pg_catalog.hashtext('lowcap_learning.job'), pg_catalog.hashtext(%(job)s::text)
)
"""
SET_LOCAL = "SELECT pg_catalog.set_config(%(name)s::text, %(value)s::text, true)"
TRY_LOCK = """
SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('lowcap_learning.job'), pg_catalog.hashtext(%(job)s::text))
"""
UNLOCK = """
SELECT pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('lowcap_learning.job'), pg_catalog.hashtext(%(job)s::text))
"""
LAST_RUNS = """
SELECT id, job, slot_start, as_of, started_at, finished_at, status, counts, error
FROM learning.last_job_runs()
"""
RECENT_RUNS = """
SELECT id, job, slot_start, as_of, started_at, finished_at, status, counts, error
FROM learning.job_runs ORDER BY started_at DESC, id DESC LIMIT %(limit)s::integer
"""


class JobUnavailable(RuntimeError):
    """A job's provider module or function is not installed."""


class JobRefused(RuntimeError):
    """A guard refused what the job did; its work is rolled back (single-transaction runs)."""


@dataclass
class JobRun:
    id: int | None
    job: str
    slot_start: datetime
    as_of: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    status: str = "skipped"  # skipped = the slot was already claimed: this process did not run it
    counts: dict | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_row(cls, row) -> JobRun:
        return cls(*row)

    def as_dict(self) -> dict:
        """Every field but `extra`, in declaration order (what `run --json` and `status` show)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}


def provider(spec: str) -> Callable:
    """Import "module:function" now; JobUnavailable names what is missing."""
    module_name, func_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise JobUnavailable(f"{spec} is not available: module {err.name} is not installed") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise JobUnavailable(f"{spec} is not available: {module_name} has no function {func_name}")
    return func


def job_names(name: str) -> list[str]:
    """'all' -> every job in schedule order; else the one job (ValueError names the known jobs)."""
    if name == "all":
        return sorted(JOBS, key=lambda n: JOBS[n].minute)
    if name not in JOBS:
        raise ValueError(f"unknown job {name!r}: known jobs are all, {', '.join(JOBS)}")
    return [name]


def job_bounds() -> list[tuple[str, str, str]]:
    """(setting, value, environment variable) for a job session, from the environment or the defaults."""
    return [(name, os.environ.get(env) or default, env) for name, env, default in JOB_BOUNDS]


def _apply_bounds(conn: psycopg.Connection, saved: dict[str, str]) -> None:
    """Set the job bounds on the session, keeping in saved the settings they replace (to restore)."""
    for name, value, env in job_bounds():
        previous = conn.execute(SETTING, {"name": name}).fetchone()[0]
        try:
            conn.execute(CAP_WORK_MEM if name == "work_mem" else SET_SETTING, {"name": name, "value": value})
        except psycopg.errors.InsufficientPrivilege:
            continue  # temp_file_limit for a role not granted it: the server's limit applies
        except psycopg.Error as err:
            raise JobUnavailable(f"{env}={value!r} is not a valid {name}: {describe_error(err)}") from None
        saved[name] = previous


def _apply_local_bounds(conn: psycopg.Connection) -> None:
    """The job bounds for the current transaction only (nothing stays on a pooled server session)."""
    for name, value, env in job_bounds():
        try:
            with conn.transaction():  # a savepoint: a refused setting leaves the run's transaction usable
                if name == "work_mem":
                    conn.execute(CAP_WORK_MEM.replace(", false)", ", true)"), {"value": value})
                else:
                    conn.execute(SET_LOCAL, {"name": name, "value": value})
        except psycopg.errors.InsufficientPrivilege:
            continue
        except psycopg.Error as err:
            raise JobUnavailable(f"{env}={value!r} is not a valid {name}: {describe_error(err)}") from None


def _restore_bounds(conn: psycopg.Connection, saved: dict[str, str]) -> None:
    for name, value in saved.items():
        conn.execute(SET_SETTING, {"name": name, "value": value})


def _run_providers(conn: psycopg.Connection, job: Job, as_of: datetime | None) -> dict:
    funcs = [(spec, provider(spec)) for spec in job.providers]  # all importable before any runs
    # Tokens a trade had to leave as they were (the bot held a position row); one EXISTS when none.
    conn.execute("SELECT learning.redistribute_pending()")
    counts: dict = {}
    for spec, func in funcs:
        result = func(conn, as_of=as_of) or {}
        if len(funcs) == 1:
            counts = dict(result)
        else:
            counts[spec.split(":")[1].removeprefix("materialize_")] = dict(result)  # {"tuning": .., "strength": ..}
    return counts


def run_job(
    conn_or_url: psycopg.Connection | str | None,
    name: str,
    as_of: datetime | None = None,
    slot_start: datetime | None = None,
    *,
    registry: dict[str, Job] | None = None,
    runner: Callable[[psycopg.Connection, Job, datetime | None], dict] | None = None,
    single_transaction: bool = False,
) -> JobRun:
    """Run one job once for slot_start (default: now, i.e. an ad-hoc run) and record it.

    Returns the JobRun; status 'skipped' when the slot was already claimed by someone else. A failing
    job is recorded as failed (its own work rolled back) and does not raise. A connection passed in is
    switched to autocommit (the claim must be visible at once; providers open their own transactions).

    single_transaction runs the providers in one transaction holding a transaction-level advisory lock,
    with the bounds set for that transaction only: nothing is left on the server session (safe behind a
    transaction pooler), and a runner that raises JobRefused after the work rolls all of it back.
    """
    registry = registry or JOBS
    if name not in registry:
        raise ValueError(f"unknown job {name!r}: known jobs are {', '.join(registry)}")
    job = registry[name]
    run_on = _run_in_transaction if single_transaction else _run_on
    if isinstance(conn_or_url, psycopg.Connection):
        return run_on(conn_or_url, None, job, as_of, slot_start, runner or _run_providers)
    with connect(conn_or_url, autocommit=True) as conn:
        return run_on(conn, conn_or_url, job, as_of, slot_start, runner or _run_providers)


def _claim(conn, job: Job, as_of, slot_start) -> tuple[int | None, datetime]:
    if not conn.autocommit:
        conn.commit()
        conn.autocommit = True
    slot = slot_start or datetime.now(UTC)
    run_id = conn.execute(
        CLAIM, {"job": job.name, "slot": slot, "as_of": as_of, "host": socket.gethostname(), "pid": os.getpid()}
    ).fetchone()[0]
    return run_id, slot


def _run_in_transaction(conn, url: str | None, job: Job, as_of, slot_start, runner) -> JobRun:
    url = url or conn.info.dsn
    run_id, slot = _claim(conn, job, as_of, slot_start)
    if run_id is None:
        return JobRun(None, job.name, slot, as_of)
    status, counts, error = "succeeded", None, None
    try:
        with conn.transaction():
            if not conn.execute(TRY_XACT_LOCK, {"job": job.name}).fetchone()[0]:
                raise JobUnavailable(f"another run of {job.name} is in progress (advisory lock held)")
            _apply_local_bounds(conn)
            counts = runner(conn, job, as_of)
    except (JobUnavailable, JobRefused) as err:
        status, error = "failed", str(err)
    except psycopg.Error as err:
        status, error = "failed", describe_error(err)
    except Exception as err:  # noqa: BLE001 - a job's failure is recorded, never lost
        status, error = "failed", f"{type(err).__name__}: {err}"
    if conn.closed:
        with connect(url, autocommit=True) as fresh:
            return _finish(fresh, run_id, status, counts, error)
    return _finish(conn, run_id, status, counts, error)


def _run_on(conn, url: str | None, job: Job, as_of, slot_start, runner) -> JobRun:
    url = url or conn.info.dsn  # where to record the outcome if this connection is lost
    if not conn.autocommit:
        conn.commit()
        conn.autocommit = True  # the claim must be visible at once; providers open their own transactions
    slot = slot_start or datetime.now(UTC)
    run_id = conn.execute(
        CLAIM, {"job": job.name, "slot": slot, "as_of": as_of, "host": socket.gethostname(), "pid": os.getpid()}
    ).fetchone()[0]
    if run_id is None:
        return JobRun(None, job.name, slot, as_of)
    locked = conn.execute(TRY_LOCK, {"job": job.name}).fetchone()[0]
    status, counts, error = "succeeded", None, None
    saved: dict[str, str] = {}
    try:
        if not locked:
            raise JobUnavailable(f"another run of {job.name} is in progress (advisory lock held)")
        _apply_bounds(conn, saved)
        counts = runner(conn, job, as_of)
    except JobUnavailable as err:
        status, error = "failed", str(err)
    except psycopg.Error as err:
        status, error = "failed", describe_error(err)
    except Exception as err:  # noqa: BLE001 - a job's failure is recorded, never lost
        status, error = "failed", f"{type(err).__name__}: {err}"
    finally:
        if not conn.closed:
            with contextlib.suppress(psycopg.OperationalError):  # lost: recorded on a fresh connection below
                _restore_bounds(conn, saved)
            if locked and not conn.closed:
                conn.execute(UNLOCK, {"job": job.name})
    if conn.closed:  # the job lost its connection: record the outcome on a fresh one
        with connect(url, autocommit=True) as fresh:
            return _finish(fresh, run_id, status, counts, error)
    return _finish(conn, run_id, status, counts, error)


def _finish(conn, run_id: int, status: str, counts, error) -> JobRun:
    row = conn.execute(
        FINISH,
        {"id": run_id, "status": status, "counts": json.dumps(counts, default=str) if counts is not None else None,
         "error": error},
    ).fetchone()
    return JobRun.from_row(row)


def last_runs(conn: psycopg.Connection) -> list[JobRun]:
    return [JobRun.from_row(r) for r in conn.execute(LAST_RUNS).fetchall()]


def recent_runs(conn: psycopg.Connection, limit: int = 20) -> list[JobRun]:
    return [JobRun.from_row(r) for r in conn.execute(RECENT_RUNS, {"limit": limit}).fetchall()]
