"""What every figure shares: the scratch database, the child process each job runs in (its own peak
RSS), and timing and ratio helpers."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from lowcap_learning.db import canonical_sql

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "scripts" / "bench.py"
SERVER_URL = os.environ.get("DATABASE_URL") or "postgresql://root@127.0.0.1:5432/postgres"
START = datetime(2025, 1, 1, tzinfo=UTC)
SPAN_DAYS = 60.0
AS_OF = START + timedelta(days=SPAN_DAYS, seconds=1)
NOT_AVAILABLE = "not available yet"


# ---------------------------------------------------------------------------------------------
# child processes: one per measured job, so its peak RSS is its own


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_main(job: str, url: str, quick: bool, extra: dict) -> None:
    """Run `section/name` of bench.<section>.JOBS and print its result (with peak RSS) as one line."""
    section, name = job.split("/")
    module = importlib.import_module(f"bench.{section}")
    result = module.JOBS[name](url, module.SIZES[quick], **extra)
    result["peak_rss_mib"] = peak_rss_mib()
    print("RESULT " + json.dumps(result), flush=True)


@dataclass
class Runner:
    """Runs one section's jobs, each in a child process of its own, against the scratch database."""

    url: str
    quick: bool

    def __call__(self, job: str, **extra) -> dict:
        cmd = [sys.executable, str(ENTRY), "--child", job, "--db-url", self.url]
        if self.quick:
            cmd.append("--quick")
        if extra:
            cmd += ["--extra", json.dumps(extra)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        sys.stderr.write(proc.stdout + proc.stderr)
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"status": f"failed (exit {proc.returncode}): {last}"}

    def section(self, name: str):
        """run(job, **extra) for the jobs of one section."""
        return lambda job, **extra: self(f"{name}/{job}", **extra)


# ---------------------------------------------------------------------------------------------
# timing and ratios


def backend_cpu(conn: psycopg.Connection) -> float:
    """CPU seconds used so far by the connection's server process (0 when the server is not local)."""
    try:
        fields = Path(f"/proc/{conn.info.backend_pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timing:
    seconds: float = 0.0
    cpu: float = 0.0  # server CPU seconds of the connection


@contextmanager
def timed(conn: psycopg.Connection | None = None) -> Iterator[Timing]:
    """Wall seconds of the block, and with a connection its server process's CPU seconds."""
    t = Timing()
    c0 = backend_cpu(conn) if conn is not None else 0.0
    t0 = time.perf_counter()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - t0
        t.cpu = backend_cpu(conn) - c0 if conn is not None else 0.0


def alternating(n: int, block: int, names: Sequence[str]) -> Iterator[tuple[str, int]]:
    """(name, offset) for each block of n rows and each name, the order reversed every other block, so
    the compared sides meet the same table state and machine load."""
    for k, i in enumerate(range(0, n, block)):
        for name in names if k % 2 == 0 else reversed(names):
            yield name, i


def spans(n: int, chunk: int) -> Iterator[tuple[int, int, int, datetime, float]]:
    """(k, offset, size, start, span_days) of n rows loaded in chunks, spread evenly over the window."""
    for k, i in enumerate(range(0, n, chunk)):
        m = min(chunk, n - i)
        yield k, i, m, START + timedelta(days=SPAN_DAYS * i / n), SPAN_DAYS * m / n


def percentiles_ms(sorted_seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in ms of ascending seconds."""
    n = len(sorted_seconds)
    return 1000 * sorted_seconds[n // 2], 1000 * sorted_seconds[max(int(n * 0.99) - 1, 0)]


def median_ms(seconds: Sequence[float]) -> float:
    return 1000 * statistics.median(seconds)


def median_run(runs: list[dict]) -> dict:
    """The run with the median seconds, with every run's seconds alongside (a failed run is returned)."""
    failed = [r for r in runs if "seconds" not in r]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda r: r["seconds"])
    out = {
        **ordered[len(ordered) // 2],
        "runs": [r["seconds"] for r in runs],
        "peak_rss_mib": max(r.get("peak_rss_mib") or 0 for r in runs),
    }
    if all("rerun_seconds" in r for r in runs):
        out["rerun_seconds"] = statistics.median(r["rerun_seconds"] for r in runs)
    return out


def optional(module: str, name: str):
    """module.name when the package has it, else None."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------
# the scratch database and the machine


def url_for(dbname: str) -> str:
    return conninfo.make_conninfo(SERVER_URL, dbname=dbname)


# A same-run A/B against another commit builds the database from that commit's sql/ (its MANIFEST
# order) and keeps everything else, the workload and the measuring, this checkout's: only the SQL
# differs between the arms. Set by `--sql-from`, read by every child process.
SQL_FROM_ENV = "LOWCAP_BENCH_SQL_FROM"


def schema_sql() -> tuple[str, str]:
    """(the SQL the scratch database is built from, where it came from with its sha256)."""
    other = os.environ.get(SQL_FROM_ENV)
    text = canonical_sql(Path(other)) if other else canonical_sql()
    source = other or "this checkout's sql/"
    return text, f"{source} (sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]})"


def create_database() -> tuple[str, str]:
    name = f"ll_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = url_for(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(schema_sql()[0].encode())
    return name, url


def drop_database(name: str) -> None:
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


SETTINGS = """
SELECT name, setting || coalesce(unit, '') FROM pg_catalog.pg_settings
WHERE name IN ('shared_buffers', 'work_mem', 'synchronous_commit', 'fsync', 'jit')
"""


def machine(url: str) -> dict:
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(conn.execute(SETTINGS).fetchall())
    return {
        "nproc": os.cpu_count(),
        "memory": mem,
        "postgresql": version,
        "settings": settings,
        "python": platform.python_version(),
        "sql": schema_sql()[1],
        "platform": platform.platform(),
    }


OTHER_XACT = """
SELECT coalesce(extract(EPOCH FROM max(pg_catalog.now() - a.xact_start)), 0)::double precision
FROM pg_catalog.pg_stat_activity AS a
WHERE a.pid <> pg_catalog.pg_backend_pid() AND a.datname <> %(db)s::text
    AND (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL)
"""


def oldest_other_transaction(name: str) -> float:
    """Age (s) of the oldest transaction of another database: it holds back pruning here too."""
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        return conn.execute(OTHER_XACT, {"db": name}).fetchone()[0]
