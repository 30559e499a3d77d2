"""`lowcap-learning backtest FILE`: the real trigger's replay in a scratch database, nothing live written."""

from __future__ import annotations

import contextlib
import json
import random
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner

from conftest import clone_of
from lowcap_learning.cli import cli
from reliability_support import changed, snapshot

START = datetime(2026, 1, 1, tzinfo=UTC)


def trade_file(tmp_path, n: int = 400, seed: int = 3, name: str = "trades.jsonl"):
    rng = random.Random(seed)
    t = START
    rows = []
    for i in range(n):
        t += timedelta(minutes=rng.randint(5, 200))
        tf = rng.choice(["15m", "1h", "4h", "1m"])
        rows.append({"trade_id": f"bt{seed}-{i}", "timeframe": tf, "rpnl_pct": max(rng.gauss(2, 25), -99),
                     "closed_at": t.isoformat()})
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def backtest(url, *args):
    return CliRunner().invoke(cli, ["--database-url", url, "backtest", *args])


@pytest.fixture
def live(template_db):
    with clone_of(template_db, "backtest_live") as url:
        yield url


def test_backtest_equals_inserting_the_same_trades(live, template_db, tmp_path):
    path = trade_file(tmp_path)
    result = backtest(live, str(path), "--json", "--every", "1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    with clone_of(template_db, "backtest_ref") as ref:
        ingest = CliRunner().invoke(cli, ["--database-url", ref, "ingest", str(path)])
        assert ingest.exit_code == 0, ingest.output
        with psycopg.connect(ref) as conn:
            history = conn.execute("SELECT allocation_after FROM learning.allocation_history ORDER BY seq").fetchall()
            final = dict(conn.execute("SELECT timeframe, current_allocation FROM learning.timeframe_allocation()"))
    path_points = [p["allocation"] for p in data["path"][1:]]
    assert len(path_points) == len(history) == data["trades"]
    for point, (after,) in zip(path_points, history, strict=True):
        assert list(point.values()) == pytest.approx(after, abs=1e-12, rel=0)
    assert data["final_allocation"] == pytest.approx(final, abs=1e-12, rel=0)
    cw = data["capital_weighted_roi"]
    assert cw["lift"] == pytest.approx(cw["learned"] - cw["static"])
    assert set(data) >= {"final_allocation", "path", "capital_weighted_roi", "rule", "tunables"}


def test_backtest_writes_nothing_live(live, tmp_path):
    with psycopg.connect(live, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES"
            " ('live-1', '1h', 3, now() - interval '2 hours'), ('live-2', '15m', -1, now() - interval '1 hour')"
        )
        before = snapshot(conn)
        result = backtest(live, str(trade_file(tmp_path)))
        assert result.exit_code == 0, result.output
        assert changed(before, snapshot(conn)) == set()
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'lowcap_backtest_%'").fetchone()[0]
    assert left == 0, "the scratch database was not dropped"


def test_backtest_does_not_block_live_trades(live, tmp_path):
    """A live transaction holds the decision_maker row (a trade inserted, not committed) for the whole
    backtest: the backtest finishes anyway, and the live trade commits after it."""
    path = trade_file(tmp_path, n=300)
    with psycopg.connect(live) as bot:
        bot.execute(
            "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)"
            " VALUES ('held', '4h', 1, now() - interval '1 hour')"
        )
        outcome = {}
        worker = threading.Thread(target=lambda: outcome.update(r=backtest(live, str(path))))
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "backtest blocked on the live trade's lock"
        assert outcome["r"].exit_code == 0, outcome["r"].output
        bot.commit()


def test_set_and_compare(live, tmp_path):
    path = trade_file(tmp_path)
    result = backtest(live, str(path), "--set", "max_step=0", "--compare", "max_step=0.01", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["final_allocation"] == {"15m": 0.15, "1h": 0.5, "4h": 0.35}
    assert data["tunables"]["max_step"] == 0
    assert data["compare"]["tunables"]["max_step"] == 0.01
    assert data["compare"]["final_allocation"] != data["final_allocation"]


def test_bad_row_is_refused_naming_the_line(live, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"trade_id": "ok", "timeframe": "1h", "rpnl_pct": 1, "closed_at": "2026-01-01T00:00:00Z"}) + "\n"
        + json.dumps({"trade_id": "nan", "timeframe": "1h", "rpnl_pct": "NaN", "closed_at": "2026-01-02T00:00:00Z"})
        + "\n"
    )
    result = backtest(live, str(path))
    assert result.exit_code == 1
    assert "line 2" in result.output and "rpnl_pct" in result.output


def test_bad_set_and_plot_are_refused(live, tmp_path):
    path = trade_file(tmp_path, n=20)
    assert "max_step" in backtest(live, str(path), "--set", "max_step=7").output
    assert backtest(live, str(path), "--set", "nokey").exit_code == 1
    assert backtest(live, str(path), "--plot", str(tmp_path / "x.jpg")).exit_code == 1
    ok = backtest(live, str(path), "--plot", str(tmp_path / "path.png"))
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "path.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_scratch_database_is_closed_to_other_roles(live, tmp_path, monkeypatch):
    """A writer who sees lowcap_backtest_* in pg_database cannot connect and hold a trade open there."""
    from lowcap_learning import backtest as bt

    seen = {}
    real = bt.scratch_database

    def spying(server_url):
        with real(server_url) as url:
            with psycopg.connect(url) as conn:
                seen["acl"] = conn.execute(
                    "SELECT has_database_privilege('learning_writer', current_database(), 'CONNECT')"
                ).fetchone()[0]
            yield url

    monkeypatch.setattr(bt, "scratch_database", contextlib.contextmanager(spying))
    result = backtest(live, str(trade_file(tmp_path, n=10)))
    assert result.exit_code == 0, result.output
    assert seen["acl"] is False
