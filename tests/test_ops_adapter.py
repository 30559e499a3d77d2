"""The ad_strands adapter: the bot's position_closed strands become closed trades (BOT_SHAPES.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from conftest import reset_learning
from lowcap_learning.db import SQL_DIR

AD_STRANDS = """
CREATE TABLE IF NOT EXISTS public.ad_strands (
    id text PRIMARY KEY, module text, kind text, symbol text, timeframe text, position_id text,
    trade_id uuid, content jsonb, regime_context jsonb, tags jsonb, target_agent text,
    created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now()
)
"""
INSERT_STRAND = """
INSERT INTO public.ad_strands (id, module, kind, timeframe, position_id, trade_id, content)
VALUES (%(id)s, 'pm', %(kind)s, %(tf)s, %(pos)s, %(trade)s, %(content)s::jsonb)
"""

TRADE_UUID = "6f1c2b1e-0000-4000-8000-000000000001"


def real_strand(trade_id: str = "7a6e0f0c-1111-4222-8333-444455556666", rpnl_pct=12.5, time_to_s3=2.25) -> dict:
    """A position_closed strand as the bot writes it: the newest trade is completed_trades[-1]."""
    return {
        "position_id": "pos-1",
        "token_contract": "So1anaMint111",
        "chain": "solana",
        "ts": "2025-01-15T10:31:00+00:00",
        "entry_context": {"a_value": 0.5},
        "trade_id": TRADE_UUID,
        "trade_summary": {"rpnl_pct": 99.0},
        "completed_trades": [
            {
                "trade_id": "older-trade",
                "actions": [],
                "summary": {"rpnl_pct": -50.0, "exit_timestamp": "2025-01-01T00:00:00Z"},
            },
            {
                "trade_id": trade_id,
                "actions": [
                    {"strand_id": "s-a", "ts": "2025-01-14T08:00:00Z", "decision_type": "entry",
                     "pattern_key": "pm.uptrend.S1.entry", "action_category": "entry",
                     "scope": {"chain": "solana", "mcap_bucket": "micro"}, "controls": {"size": 0.2}},
                    {"strand_id": "s-b", "ts": "2025-01-15T09:00:00Z", "decision_type": "trim",
                     "pattern_key": "pm.uptrend.S3.trim", "action_category": "trim",
                     "scope": {"chain": "solana", "mcap_bucket": "micro"}, "controls": {}},
                ],
                "summary": {"rpnl_pct": rpnl_pct, "rr": 1.8, "exit_timestamp": "2025-01-15T10:30:00+00:00",
                            "entry_timestamp": "2025-01-14T08:00:00+00:00", "time_to_s3": time_to_s3,
                            "decision_type": "exit"},
            },
        ],
        "decision_type": "exit",
        "exit_reason": "trail",
    }


@pytest.fixture
def strands(conn):
    reset_learning(conn)
    conn.execute(AD_STRANDS)
    conn.execute("TRUNCATE public.ad_strands")
    assert conn.execute("SELECT learning.install_ad_strands_adapter()").fetchone()[0] is True
    return conn


def insert(conn, sid, content, kind="position_closed", tf="1h", trade=TRADE_UUID):
    conn.execute(INSERT_STRAND, {"id": sid, "kind": kind, "tf": tf, "pos": "pos-1", "trade": trade,
                                 "content": json.dumps(content)})


def closed(conn):
    return conn.execute(
        "SELECT trade_id, position_id, token_contract, token_chain, timeframe, rpnl_pct, closed_at, actions,"
        " did_trim, reached_s3 FROM public.closed_trades ORDER BY trade_id"
    ).fetchall()


def warnings(conn):
    return [r[0] for r in conn.execute(
        "SELECT message FROM learning.learning_log WHERE level = 'WARNING' ORDER BY id"
    ).fetchall()]


def test_real_shaped_strand_becomes_the_right_closed_trade(strands):
    insert(strands, "strand-1", real_strand())
    [row] = closed(strands)
    trade_id, position_id, contract, chain, tf, rpnl, closed_at, actions, did_trim, reached_s3 = row
    assert (trade_id, position_id, contract, chain, tf) == (
        "7a6e0f0c-1111-4222-8333-444455556666", "pos-1", "So1anaMint111", "solana", "1h"
    )
    assert rpnl == 12.5  # from completed_trades[-1].summary, not trade_summary nor the older trade
    assert closed_at == datetime(2025, 1, 15, 10, 30, tzinfo=UTC)  # summary.exit_timestamp, not content.ts
    assert [a["pattern_key"] for a in actions] == ["pm.uptrend.S1.entry", "pm.uptrend.S3.trim"]
    assert actions[0]["scope"] == {"chain": "solana", "mcap_bucket": "micro"} and "controls" not in actions[0]
    assert did_trim is True and reached_s3 is True
    # ...and it went through the learning trigger: ROI EWMA and strength facts.
    assert strands.execute("SELECT n FROM learning.timeframe_allocation() WHERE timeframe = '1h'").fetchone()[0] == 1
    assert strands.execute("SELECT count(*) FROM public.pattern_trade_events").fetchone()[0] == 2
    assert warnings(strands) == []


def test_zero_rpnl_is_real_and_no_s3_no_trim(strands):
    content = real_strand(trade_id="t-zero", rpnl_pct=0.0, time_to_s3=None)
    content["completed_trades"][-1]["actions"] = content["completed_trades"][-1]["actions"][:1]
    insert(strands, "strand-zero", content, tf="4h")
    [row] = closed(strands)
    # A null time_to_s3 says nothing: reached_s3 stays unknown (NULL) and the S3 pattern-key rule decides.
    assert row[0] == "t-zero" and row[5] == 0.0 and row[8] is False and row[9] is None


def test_fallbacks_row_trade_id_and_content_ts(strands):
    content = real_strand()
    last = content["completed_trades"][-1]
    del last["trade_id"]
    del last["summary"]["exit_timestamp"]
    insert(strands, "strand-fb", content)
    [row] = closed(strands)
    assert row[0] == TRADE_UUID and row[6] == datetime(2025, 1, 15, 10, 31, tzinfo=UTC)


def test_duplicate_strands_count_once(strands):
    insert(strands, "strand-1", real_strand())
    insert(strands, "strand-1-again", real_strand())
    assert len(closed(strands)) == 1
    assert strands.execute("SELECT count(*) FROM public.ad_strands").fetchone()[0] == 2
    assert strands.execute("SELECT n FROM learning.timeframe_allocation() WHERE timeframe = '1h'").fetchone()[0] == 1
    assert strands.execute(
        "SELECT count(*) FROM learning.learning_log WHERE message LIKE 'STRAND ADAPTER: Trade already recorded%%'"
        " AND message LIKE '%%strand_id=strand-1-again%%'"
    ).fetchone()[0] == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ({"completed_trades": []}, "content.completed_trades is missing or empty"),
        ({"completed_trades": [{"trade_id": "x", "summary": {"rr": 1.2}}]}, "summary.rpnl_pct is missing"),
        ({"completed_trades": [{"trade_id": "x", "summary": {"rpnl_pct": "5"}}]}, "not a number"),
        ({"completed_trades": [{"trade_id": "x", "summary": {"rpnl_pct": -150.0, "exit_timestamp": "2025-01-15"}}]},
         "rpnl_pct"),
        ({"completed_trades": [{"trade_id": "x", "summary": {"rpnl_pct": 1, "exit_timestamp": "not a time"}}]},
         "invalid input syntax for type timestamp"),
        ("just a string", "content is not a JSON object"),
    ],
)
def test_malformed_strand_still_inserts_and_is_logged(strands, content, reason):
    insert(strands, "bad-strand", content)
    assert strands.execute("SELECT id FROM public.ad_strands").fetchall() == [("bad-strand",)]
    assert closed(strands) == []
    [warning] = warnings(strands)
    assert warning.startswith("STRAND ADAPTER: Cannot read position_closed strand | strand_id=bad-strand | reason=")
    assert reason in warning


def test_bad_timeframe_strand_is_logged_not_lost(strands):
    insert(strands, "tf-strand", real_strand(), tf="5m")
    assert strands.execute("SELECT count(*) FROM public.ad_strands").fetchone()[0] == 1
    [warning] = warnings(strands)
    assert "strand_id=tf-strand" in warning and "timeframe" in warning


def test_other_kinds_are_ignored(strands):
    insert(strands, "note", real_strand(), kind="position_opened")
    assert closed(strands) == [] and warnings(strands) == []


def test_install_without_table_creates_nothing(conn):
    conn.execute("DROP TABLE IF EXISTS public.ad_strands")
    assert conn.execute("SELECT learning.install_ad_strands_adapter()").fetchone()[0] is False
    assert conn.execute("SELECT to_regclass('public.ad_strands')").fetchone()[0] is None


def test_loading_the_adapters_file_installs_the_trigger_when_ad_strands_exists(conn):
    """sql/080_adapters.sql (as the migration runs it) adopts a table the bot already has."""
    reset_learning(conn)
    conn.execute("DROP TABLE IF EXISTS public.ad_strands")
    conn.execute(AD_STRANDS)
    triggers = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.ad_strands'::regclass"
    assert conn.execute(triggers).fetchone()[0] == 0
    conn.execute((SQL_DIR / "080_adapters.sql").read_bytes())
    assert conn.execute(triggers).fetchone()[0] == 1
    insert(conn, "s", real_strand())
    assert conn.execute("SELECT count(*) FROM public.closed_trades").fetchone()[0] == 1


def test_the_bots_own_role_inserting_a_strand_gets_its_trade_learned(strands):
    """The trigger function is SECURITY DEFINER: a writer that may only insert strands still gets the trade."""
    strands.execute("GRANT INSERT ON public.ad_strands TO learning_writer")
    with strands.transaction():
        strands.execute("SET LOCAL ROLE learning_writer")
        insert(strands, "writer-strand", real_strand(trade_id="t-writer"))
    assert [r[0] for r in closed(strands)] == ["t-writer"]


def test_install_by_a_role_that_does_not_own_ad_strands_warns_instead_of_failing(strands):
    with strands.transaction():
        strands.execute("SET LOCAL ROLE learning_admin")
        assert strands.execute("SELECT learning.install_ad_strands_adapter()").fetchone()[0] is False
    triggers = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.ad_strands'::regclass"
    assert strands.execute(triggers).fetchone()[0] == 1  # the owner's trigger is untouched
