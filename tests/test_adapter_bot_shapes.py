"""The ad_strands adapter reads the bot as it really writes (BOT_SHAPES.md): summary.time_to_s3 always
present and null, pattern keys in the long form `module=pm|pattern_key=uptrend.S3.trim`, actions without
`state`, the exit of the closing tick missing from the actions. Strength learning must still see the S3
winner: reached_s3 stays unknown in closed_trades and the S3 pattern-key rule decides per trade."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from conftest import reset_learning
from test_ops_adapter import AD_STRANDS

INSERT_STRAND = """
INSERT INTO public.ad_strands (id, module, kind, symbol, timeframe, position_id, trade_id, content, tags)
VALUES (%(id)s, 'pm', 'position_closed', %(symbol)s, %(tf)s, %(pos)s, %(trade)s::uuid, %(content)s::jsonb,
        '["position_closed"]'::jsonb)
"""
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def bot_action(n: int, state: str, category: str, at: datetime) -> dict:
    """One action as the PM's strand writer records it: long pattern key, no state key."""
    return {
        "strand_id": f"pm_{n}", "ts": at.isoformat(), "decision_type": category,
        "pattern_key": f"module=pm|pattern_key=uptrend.{state}.{category}", "action_category": category,
        "scope": {"chain": "solana", "bucket": "micro", "timeframe": "1h", "A_mode": "normal"},
        "controls": {"size_frac": 0.25},
    }


def bot_strand(trade: str, rpnl_pct: float, actions: list[dict], at: datetime) -> dict:
    return {
        "position_id": f"pos-{trade[:4]}", "token_contract": "MintS3", "chain": "solana", "ts": at.isoformat(),
        "entry_context": {}, "trade_id": trade, "trade_summary": {}, "decision_type": "emergency_exit",
        "exit_reason": "s3_to_s0",
        "completed_trades": [{
            "trade_id": trade, "actions": actions,
            "summary": {"rpnl_pct": rpnl_pct, "rr": 2.0, "exit_timestamp": at.isoformat(),
                        "entry_timestamp": (at - timedelta(days=2)).isoformat(), "time_to_s3": None,
                        "decision_type": "emergency_exit"},
        }],
    }


@pytest.fixture
def strands(conn):
    reset_learning(conn)
    conn.execute(AD_STRANDS)
    conn.execute("TRUNCATE public.ad_strands")
    assert conn.execute("SELECT learning.install_ad_strands_adapter()").fetchone()[0] is True
    return conn


def put(conn, trade: str, rpnl: float, actions: list[dict], at: datetime) -> None:
    conn.execute(INSERT_STRAND, {"id": f"strand-{trade}", "symbol": "MintS3", "tf": "1h", "pos": f"pos-{trade[:4]}",
                                 "trade": trade, "content": json.dumps(bot_strand(trade, rpnl, actions, at))})


def test_s3_winner_from_the_bot_reaches_strength_learning(strands):
    conn = strands
    winners, plain = [], []
    for i in range(4):
        at = T0 + timedelta(hours=i)
        s3 = f"00000000-0000-4000-8000-{i:012d}"
        put(conn, s3, 30.0, [bot_action(1, "S1", "entry", at - timedelta(days=1)),
                             bot_action(2, "S3", "trim", at - timedelta(hours=5)),
                             bot_action(3, "S3", "add", at - timedelta(hours=2))], at)
        winners.append(s3)
        s1 = f"00000000-0000-4000-9000-{i:012d}"
        put(conn, s1, 10.0, [bot_action(1, "S1", "entry", at - timedelta(days=1))], at)
        plain.append(s1)
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT trade_id, reached_s3, did_trim, actions FROM public.closed_trades").fetchall()}
    assert set(rows) == set(winners + plain)
    for trade in winners:
        reached, trimmed, actions = rows[trade]
        assert reached is None, "a null time_to_s3 must leave reached_s3 unknown, not false"
        assert trimmed is True
        assert [a["pattern_key"] for a in actions] == ["pm.uptrend.S1.entry", "pm.uptrend.S3.trim", "pm.uptrend.S3.add"]
        assert all("state" not in a for a in actions)
    # The strength facts: the S3 rule (a key containing .S3.) marks every action of the S3 trades.
    facts = conn.execute(
        "SELECT trade_id::text, bool_and(reached_s3), bool_or(reached_s3) FROM public.pattern_trade_events"
        " GROUP BY trade_id").fetchall()
    by_trade = {t: (all_, any_) for t, all_, any_ in facts}
    assert all(by_trade[t] == (True, True) for t in winners)
    assert all(by_trade[t] == (False, False) for t in plain)
    # A winner that reached S3 steers A up and E down (design §11: roi>0 with S3 -> (+1, -1)).
    conn.execute("SELECT learning.build_strength_lessons(%s, interval '30 days', 1)", (T0 + timedelta(days=1),))
    dira, dire = conn.execute(
        "SELECT (stats ->> 'dirA')::float8, (stats ->> 'dirE')::float8 FROM public.learning_lessons"
        " WHERE lesson_type = 'pm_strength' AND pattern_key = 'pm.uptrend.S3.trim' AND scope_subset = '{}'"
    ).fetchone()
    assert dira > 0.99 and dire < -0.99


def test_a_time_to_s3_means_s3_was_reached(strands):
    content = bot_strand("00000000-0000-4000-a000-000000000001", 5.0, [bot_action(1, "S1", "entry", T0)], T0)
    content["completed_trades"][-1]["summary"]["time_to_s3"] = 0.75
    strands.execute(INSERT_STRAND, {"id": "s-t", "symbol": "MintS3", "tf": "1h", "pos": "p",
                                    "trade": "00000000-0000-4000-a000-000000000001", "content": json.dumps(content)})
    assert strands.execute("SELECT reached_s3 FROM public.closed_trades").fetchone()[0] is True


def test_short_and_foreign_pattern_keys_are_kept(strands):
    assert strands.execute(
        "SELECT array_agg(learning._strand_pattern_key(k) ORDER BY o) FROM unnest(ARRAY["
        "'module=pm|pattern_key=uptrend.S3.trim', 'pm.uptrend.S1.entry', 'pattern_key=pm.uptrend.S2.add',"
        " 'module=pm|pattern_key=pm.uptrend.S1.entry', 'module=dm|pattern_key=x.y|extra=1', 'plain']) WITH ORDINALITY"
        " AS u (k, o)").fetchone()[0] == [
        "pm.uptrend.S3.trim", "pm.uptrend.S1.entry", "pm.uptrend.S2.add", "pm.uptrend.S1.entry", "dm.x.y", "plain"]
