"""The roles are enough for their jobs (least privilege that works): the bot ingests as
learning_writer, operators run every job as learning_admin, `status` and `check` run as
learning_reader; and each is refused what belongs to another."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import conninfo

from lowcap_learning import jobs, synthetic
from lowcap_learning.cli import cli
from lowcap_learning.ingest import COLUMNS

START = datetime.now(UTC) - timedelta(days=70)


def as_role(url: str, role: str) -> str:
    return conninfo.make_conninfo(url, options=f"-c role={role}")


@pytest.fixture(scope="module")
def data(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        synthetic.insert_positions(conn, synthetic.positions(8, seed=2))
        synthetic.insert_episode_events(conn, synthetic.episode_events(2500, seed=2, start=START))
    return db_url


def test_the_bot_ingests_as_writer(data, tmp_path):
    rows = synthetic.closed_trades(1200, seed=2, start=START, id_prefix="role")
    path = tmp_path / "trades.jsonl"
    path.write_text("\n".join(json.dumps({k: r[k] for k in COLUMNS if k in r}) for r in rows) + "\n")
    result = CliRunner().invoke(cli, ["--database-url", as_role(data, "learning_writer"), "ingest", str(path)])
    assert result.exit_code == 0, result.output
    with psycopg.connect(data) as conn:
        assert conn.execute("SELECT count(*) FROM public.closed_trades").fetchone()[0] == 1200
        assert conn.execute("SELECT n FROM learning.global_roi()").fetchone()[0] == 1200


@pytest.mark.parametrize("name", list(jobs.JOBS))
def test_every_job_runs_as_admin(data, name):
    run = jobs.run_job(as_role(data, "learning_admin"), name, slot_start=datetime(2034, 1, 1, tzinfo=UTC))
    available = True
    try:
        for spec in jobs.JOBS[name].providers:
            jobs.provider(spec)
    except jobs.JobUnavailable:
        available = False
    if available:
        assert run.status == "succeeded", run.error
    else:
        assert run.status == "failed" and "is not available" in run.error


@pytest.mark.parametrize("name", list(jobs.JOBS))
def test_no_job_runs_as_writer_or_reader(data, name):
    for role in ("learning_writer", "learning_reader"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            jobs.run_job(as_role(data, role), name, slot_start=datetime(2035, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("args", [["status", "--json"], ["check", "--json"]])
def test_readers_commands_run_as_reader(data, args):
    result = CliRunner().invoke(cli, ["--database-url", as_role(data, "learning_reader"), *args])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)


@pytest.mark.parametrize(
    ("role", "args"),
    [
        ("learning_writer", ["config", "set", "max_step", "0.004"]),
        ("learning_reader", ["config", "set", "max_step", "0.004"]),
        ("learning_writer", ["flags", "enable", "ae_v2_enabled"]),
        ("learning_reader", ["flags", "enable", "ae_v2_enabled"]),
        ("learning_reader", ["ingest", "{file}"]),
    ],
)
def test_commands_of_another_role_are_refused_clearly(data, tmp_path, role, args):
    path = tmp_path / "one.csv"
    path.write_text("trade_id,timeframe,rpnl_pct,closed_at\nrefused-1,1h,1,2026-01-01\n")
    argv = [a.replace("{file}", str(path)) for a in args]
    result = CliRunner().invoke(cli, ["--database-url", as_role(data, role), *argv])
    assert result.exit_code == 1, result.output
    assert "permission denied" in result.output
    assert "Traceback" not in result.output


def test_the_retry_idiom_works_for_the_writer(data):
    """The README's idempotent retry, `ON CONFLICT (trade_id) DO NOTHING`, as learning_writer: the
    first insert learns, the retry is a no-op, and the writer still reads no other column."""
    insert = (
        "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions) "
        "VALUES ('retry-1', '1h', 2.5, now() - interval '1 hour', '[]') ON CONFLICT (trade_id) DO NOTHING"
    )
    with psycopg.connect(as_role(data, "learning_writer"), autocommit=True) as writer:
        assert writer.execute(insert).rowcount == 1
        assert writer.execute(insert).rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            writer.execute("SELECT rpnl_pct FROM public.closed_trades LIMIT 1")
    with psycopg.connect(data) as conn:
        learned = conn.execute("SELECT count(*) FROM learning.allocation_history WHERE trade_id = 'retry-1'")
        assert learned.fetchone()[0] == 1
