"""The size limits at insert measure the JSON a value holds, not its stored size: a writer who
inserts from a table of its own (`INSERT … SELECT`) passes values that are still compressed, and a
15 MB scope of one repeated letter stores in 58 kB."""

from __future__ import annotations

import psycopg
import pytest

from reliability_support import changed, snapshot

EPISODES = """
INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, outcome, factors)
SELECT s.scope, 'pm.big', 'ep-big-' || s.g, 'skipped', 'success', s.factors FROM pg_temp.src AS s
"""
TRADES = """
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
SELECT 'big-' || s.g, '1h', 1, now() - interval '1 hour', s.actions FROM pg_temp.src AS s
"""


@pytest.fixture
def writer(db_url):
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("SET ROLE learning_writer")
        c.execute("SET default_toast_compression = lz4")
        yield c
        c.execute("DROP TABLE IF EXISTS pg_temp.src")


@pytest.fixture
def admin(db_url):
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def _source(writer, scope_pad: int, factors_pad: int, actions_pad: int) -> None:
    writer.execute(
        """
        CREATE TEMP TABLE src AS
        SELECT g,
            jsonb_build_object('chain', 'sol', 'pad', repeat('A', %(s)s)) AS scope,
            jsonb_build_object('ts_min', 0.6, 'samples', jsonb_build_array(jsonb_build_object('ts_score', 0.5)),
                'pad', repeat('B', %(f)s)) AS factors,
            jsonb_build_array(jsonb_build_object('pattern_key', 'pm.x', 'action_category', 'entry',
                'scope', jsonb_build_object('pad', repeat('C', %(a)s)))) AS actions
        FROM generate_series(1, 2) AS g
        """,
        {"s": scope_pad, "f": factors_pad, "a": actions_pad},
    )
    stored = writer.execute("SELECT max(pg_column_size(scope)), max(pg_column_size(actions)) FROM src").fetchone()
    assert all(size < 65536 for size in stored), stored  # compressed far below every limit


@pytest.mark.parametrize(
    ("what", "pads", "statement", "field"),
    [
        ("episode scope", (2_000_000, 10, 10), EPISODES, "scope"),
        ("episode factors", (10, 10_000_000, 10), EPISODES, "factors"),
        ("trade actions", (10, 10, 2_000_000), TRADES, "actions"),
    ],
)
def test_a_compressed_value_is_measured_as_it_is(admin, writer, what, pads, statement, field):
    _source(writer, *pads)
    before = snapshot(admin)
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as err:
        writer.execute(statement)
    assert err.value.diag.column_name == field, what
    assert changed(before, snapshot(admin)) == set()
