"""`lowcap-learning check`: clean history passes; every kind of tampering is reported (exit 1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner

from conftest import clone_of
from lowcap_learning import synthetic
from lowcap_learning.check import run_check
from lowcap_learning.cli import cli

START = datetime.now(UTC) - timedelta(days=70)
DISABLE = "ALTER TABLE public.closed_trades DISABLE TRIGGER _100_append_only"
ENABLE = "ALTER TABLE public.closed_trades ENABLE TRIGGER _100_append_only"


@pytest.fixture(scope="module")
def history(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        synthetic.insert_positions(conn, synthetic.positions(12, seed=8))
        trades = synthetic.closed_trades(600, seed=8, start=START, id_prefix="chk")
        for i, row in enumerate(trades):
            if i % 9 == 0:
                row["timeframe"] = "1m"  # skip rows in the history too
        # Several statements, out of closed_at order: late trades fold in exactly.
        for part in (trades[300:], trades[:150], trades[150:300]):
            synthetic.insert_closed_trades(conn, part)
    return db_url


def _check(url: str, *args: str):
    return CliRunner().invoke(cli, ["--database-url", url, "check", *args])


def test_clean_history_passes(history):
    result = _check(history)
    assert result.exit_code == 0, result.output
    assert "check: ok" in result.output
    data = json.loads(_check(history, "--json").output)
    assert data["ok"] is True and data["trades"] == 600 and data["history_rows"] == 600
    assert data["steps_replayed"] > 400
    assert {s["series"]: s["n_stored"] for s in data["series"]}["global"] == 600 - len(range(0, 600, 9))


# (label, tampering SQL, fragment of the reported divergence)
TAMPERING = [
    (
        "allocation moved by hand",
        "UPDATE learning.allocation_state SET current_allocation = 0.6 WHERE series = '1h'",
        "current allocation",
    ),
    (
        "n changed by hand",
        "UPDATE learning.allocation_state SET n = 1 WHERE series = '4h'",
        "4h: stored n=1",
    ),
    (
        "EWMA sums changed by hand",
        "UPDATE learning.allocation_state SET short_sum_w_roi = short_sum_w_roi + 0.5 WHERE series = '15m'",
        "15m: stored",
    ),
    (
        "a second moment changed by hand",
        "UPDATE learning.allocation_state SET long_sum_w_roi2 = long_sum_w_roi2 * 1.01 WHERE series = '1h'",
        "1h: stored",
    ),
    (
        "a history step rewritten",
        """UPDATE learning.allocation_history SET allocation_after[2] = allocation_after[2] + 1e-6,
           allocation_after[3] = allocation_after[3] - 1e-6
           WHERE seq = (SELECT min(seq) + 200 FROM learning.allocation_history)""",
        "replayed step differs",
    ),
    (
        # What a damaged decision_maker row made older versions write: reported, not a crash (review).
        "a history step with NULL allocations",
        """UPDATE learning.allocation_history SET allocation_before[3] = NULL, allocation_after = '{NULL,NULL,NULL}'
           WHERE seq = (SELECT seq FROM learning.allocation_history WHERE reason = 'step' ORDER BY seq
                        OFFSET 150 LIMIT 1)""",
        "replayed step differs by None",
    ),
    (
        "a history row deleted",
        "DELETE FROM learning.allocation_history WHERE seq = (SELECT min(seq) + 100 FROM learning.allocation_history)",
        "allocation_history rows (expected 1)",
    ),
    (
        "a history row duplicated",
        """INSERT INTO learning.allocation_history (trade_id, timeframe, closed_at, trade_roi, reason,
           allocation_before, allocation_after, roi_short, trade_counts)
           SELECT trade_id, timeframe, closed_at, trade_roi, reason, allocation_after, allocation_after, roi_short,
               trade_counts
           FROM learning.allocation_history ORDER BY seq DESC LIMIT 1""",
        "expected 1",
    ),
    (
        "a trade deleted behind the trigger's back",
        f"{DISABLE}; DELETE FROM public.closed_trades WHERE trade_id = (SELECT min(trade_id) FROM public.closed_trades"
        f" WHERE timeframe = '1h'); {ENABLE}",
        "not in closed_trades",
    ),
    (
        "a trade's rpnl changed behind the trigger's back",
        f"{DISABLE}; UPDATE public.closed_trades SET rpnl_pct = rpnl_pct + 50 WHERE trade_id = "
        f"(SELECT max(trade_id) FROM public.closed_trades WHERE timeframe = '4h'); {ENABLE}",
        "4h: stored",
    ),
    (
        "the tunables in effect written by hand",
        """UPDATE learning.effective_tunables SET tunables = tunables || '{"max_step": 0.009}'""",
        "effective_tunables differs from the learning row and the defaults at ['max_step']",
    ),
    (
        "a position set to NaN",
        """UPDATE public.lowcap_positions SET total_allocation_pct = 'NaN'
           WHERE id = (SELECT id FROM public.lowcap_positions WHERE status = 'active'
                       AND total_allocation_pct IS NOT NULL AND timeframe = '1h' LIMIT 1)""",
        "total_allocation_pct=nan",
    ),
]


@pytest.mark.parametrize(("label", "tamper", "fragment"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampering_is_reported(history, label, tamper, fragment):
    from conftest import clone_of

    # Each case on its own copy of the clean history.
    with psycopg.connect(history, autocommit=True) as conn:
        dbname = conn.info.dbname
    with clone_of(dbname, "chk_tamper") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(tamper.encode())
        result = _check(url)
        assert result.exit_code == 1, result.output
        assert fragment.lower() in result.output.lower(), result.output
        data = json.loads(_check(url, "--json").output)
        assert data["ok"] is False and data["divergences"]


def test_a_decision_maker_row_the_bot_changed_is_a_warning_not_a_divergence(history):
    """The decision_maker row is output (the next trade rewrites it): check warns, the state is ok."""
    from conftest import clone_of

    with psycopg.connect(history, autocommit=True) as conn:
        dbname = conn.info.dbname
    with clone_of(dbname, "chk_dm") as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE public.learning_configs SET config_data = jsonb_set(config_data,"
            " '{timeframe_allocation,4h,n}', '1') WHERE module_id = 'decision_maker'"
        )
        report = run_check(conn)
    assert report.ok, report.divergences
    assert any("4h: the decision_maker row shows n=1" in w for w in report.warnings), report.warnings


def test_positions_off_split_are_warnings_not_divergences(history):
    with psycopg.connect(history, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO public.lowcap_positions (token_contract, token_chain, timeframe, status, total_allocation_pct)
            VALUES ('0xnew', 'base', '15m', 'active', 5), ('0xnew', 'base', '1h', 'active', 5)
            """
        )
        report = run_check(conn)
        conn.execute("DELETE FROM public.lowcap_positions WHERE token_contract = '0xnew'")
    assert report.ok
    assert any("0xnew" in w for w in report.warnings)


def test_check_runs_as_reader(history):
    """The check only reads: learning_reader can run it."""
    with psycopg.connect(history) as conn:
        conn.execute("SET ROLE learning_reader")
        conn.commit()
        report = run_check(conn)
    assert report.ok, report.divergences


def test_check_keeps_its_columns_apart_for_huge_rois(template_db):
    """A ROI above 1,000 (100,000 %) is wider than the column: every cell still stands apart."""
    with clone_of(template_db, "check_huge") as url:
        _check_huge(url)


def _check_huge(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES"
            " ('huge-1', '1h', 999999, now() - interval '2 hours'),"
            " ('huge-2', '15m', 250000, now() - interval '1 hour')"
        )
    result = _check(db_url)
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("series"))
    rows = [line for line in lines if line.split()[:1] and line.split()[0] in ("15m", "1h", "4h", "global")]
    assert len(rows) == 4
    assert header.split("  ")[0] == "series"
    for line in rows:
        assert len(line.split()) == 6, line  # series, n, n (re), roi_short, recomputed, ok
    assert any(float(line.split()[3]) > 1000 for line in rows)


def test_check_reports_absurd_positions_without_overflowing(template_db):
    """Two 1e308 rows on a token would overflow a plain sum: check reports them and runs on."""
    with clone_of(template_db, "check_absurd") as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO public.lowcap_positions (token_contract, token_chain, timeframe, status,"
            " total_allocation_pct) VALUES ('0xbig', 'base', '15m', 'active', 1e308),"
            " ('0xbig', 'base', '1h', 'active', 1e308), ('0xok', 'base', '1h', 'active', 5)"
        )
        report = run_check(conn)
    assert not report.ok
    assert sum("0xbig" in d for d in report.divergences) == 2
