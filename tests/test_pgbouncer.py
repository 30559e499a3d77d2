"""Behind a transaction pooler (PgBouncer, pool_mode = transaction, started here on a free local port):
trade inserts, `status`, `run all` and the runtime steering work; `scheduler` and `logs follow` refuse
with a clear message. A session pooler is not mistaken for one. Needs Debian's `pgbouncer` package."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import conninfo

from conftest import reset_learning
from lowcap_learning import db
from lowcap_learning.cli import cli
from lowcap_learning.pooler import detect
from lowcap_learning.runtime import apply_strength_overrides, apply_strength_overrides_batch

PGBOUNCER = "/usr/sbin/pgbouncer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def pgbouncer(server_url: str, mode: str) -> Iterator[str]:
    if not Path(PGBOUNCER).exists():
        pytest.fail(f"{PGBOUNCER} is missing: apt-get install -y pgbouncer (the Makefile's test prerequisites)")
    server = conninfo.conninfo_to_dict(server_url)
    user = server.get("user") or "root"
    port = free_port()
    # Its own directory under /tmp: started as root, pgbouncer drops to user postgres, which must reach it.
    tmp = Path(tempfile.mkdtemp(prefix="ll_pgbouncer_"))
    tmp.chmod(0o777)
    (tmp / "users.txt").write_text(f'"{user}" ""\n')
    ini = tmp / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={server.get('host') or '127.0.0.1'} port={server.get('port') or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {tmp / 'users.txt'}\npool_mode = {mode}\n"
        "default_pool_size = 4\nmax_client_conn = 50\nignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {tmp / 'pgbouncer.log'}\npidfile = {tmp / 'pgbouncer.pid'}\n"
        + ("user = postgres\n" if os.geteuid() == 0 else "")
    )
    for f in tmp.iterdir():
        f.chmod(0o666)
    proc = subprocess.Popen([PGBOUNCER, str(ini)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = conninfo.make_conninfo(**dict(server, host="127.0.0.1", port=str(port)))
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(url, prepare_threshold=None, connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (tmp / "pgbouncer.log").read_text() if (tmp / "pgbouncer.log").exists() else ""
                    pytest.fail(f"pgbouncer did not start: {proc.stdout.read().decode() if proc.stdout else ''}{log}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def pooled(db_url) -> Iterator[str]:
    with pgbouncer(db_url, "transaction") as url:
        yield url


def call(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


TRADE = """
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
VALUES (%s, '1h', %s, %s::timestamptz, %s::jsonb)
"""


def test_transaction_pooler_is_detected_and_direct_is_not(pooled, db_url):
    with db.connect(pooled, autocommit=True) as conn:
        info = detect(conn, pooled)
    assert info.pooler and info.transaction_pooling, info
    with db.connect(db_url, autocommit=True) as conn:
        info = detect(conn, db_url)
    assert not info.pooler and not info.transaction_pooling, info


def test_session_pooler_is_not_a_transaction_pooler(db_url):
    with pgbouncer(db_url, "session") as url, db.connect(url, autocommit=True) as conn:
        info = detect(conn, url)
    assert info.pooler and not info.transaction_pooling, info


def test_work_behind_the_transaction_pooler(pooled, conn):
    reset_learning(conn)
    conn.execute("TRUNCATE learning.job_runs, public.learning_lessons, public.pm_overrides")
    conn.execute("SELECT learning.set_tunable('n_min', '2')")
    actions = json.dumps([{"pattern_key": "pm.uptrend.S1.entry", "action_category": "entry",
                           "scope": {"chain": "solana"}, "decision_type": "entry"}])
    # Two clients interleaved so server sessions change hands; each statement repeated past psycopg's
    # default prepare threshold (5): a prepared statement would be missing on the other session.
    with db.connect(pooled, autocommit=True) as bot, db.connect(pooled, autocommit=True) as other:
        for i in range(12):
            with other.transaction():
                other.execute("SELECT 1")
                bot.execute(TRADE, (f"pool-{i}", 5.0 if i % 3 else -2.0, f"2025-01-10T{i:02d}:00:00Z", actions))
    assert conn.execute("SELECT count(*) FROM public.closed_trades").fetchone()[0] == 12
    status = call("status", "--json", "--database-url", pooled)
    assert status.exit_code == 0, status.output
    assert {r["timeframe"]: r["n"] for r in json.loads(status.output)["allocation"]}["1h"] == 12
    run = call("run", "all", "--as-of", "2025-01-11T00:00:00Z", "--json", "--database-url", pooled)
    assert run.exit_code == 0, run.output
    assert [r["status"] for r in json.loads(run.output)] == ["succeeded"] * 3
    # No job left a lock or a setting on a pooled server session: a direct run right after succeeds.
    again = call("run", "lesson-builder", "--as-of", "2025-01-11T00:00:00Z", "--database-url", pooled)
    assert again.exit_code == 0, again.output
    locks = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                         " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    assert locks.fetchone()[0] == 0
    n_overrides = conn.execute("SELECT count(*) FROM public.pm_overrides WHERE status = 'active'").fetchone()[0]
    assert n_overrides > 0
    scope = {"chain": "solana"}
    with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as pm, \
            db.connect(pooled, autocommit=True) as other:
        for _ in range(8):
            with other.transaction():
                other.execute("SELECT 1")
                single = apply_strength_overrides(pm, "pm.uptrend.S1.entry", scope, 0.5, 0.5)
                batch = apply_strength_overrides_batch(pm, [("pm.uptrend.S1.entry", scope, 0.5, 0.5)] * 3)
            assert single.matches and all(b.a_final == single.a_final for b in batch)


@pytest.mark.parametrize("args", [["scheduler"], ["logs", "follow", "--poll", "0.1"]])
def test_session_commands_refuse_behind_a_transaction_pooler(pooled, args, tmp_path):
    started = time.monotonic()
    result = call(*args, "--log-file", str(tmp_path / "l.log"), "--database-url", pooled)
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"error: {args[0] if args[0] == 'scheduler' else 'logs follow'} needs a session of its own")
    assert "transaction pooler" in last and "direct connection" in last
    assert time.monotonic() - started < 10


def test_pgbouncer_binary_is_the_debian_one():
    assert shutil.which(PGBOUNCER) or Path(PGBOUNCER).exists(), f"{PGBOUNCER} missing: apt-get install -y pgbouncer"
