"""Concurrent writers (design §4): 8 connections insert 250 trades each at the same time. They serialize
on the decision_maker row: no error reaches a caller, no update is lost, and the recorded path chains."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from conftest import reset_learning
from reliability_support import wait_until_blocked

WRITERS, PER_WRITER = 8, 250
TRACKED = ("15m", "1h", "4h")
EPOCH0 = datetime(2026, 5, 1, tzinfo=UTC)

INSERT_MANY = """
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
SELECT t.trade_id, t.timeframe, t.rpnl_pct, t.closed_at,
    '[{"pattern_key": "pm.uptrend.S1.entry", "action_category": "entry", "scope": {"chain": "solana"}}]'::jsonb
FROM unnest(%(ids)s::text[], %(tfs)s::text[], %(pcts)s::float8[], %(ats)s::timestamptz[])
    AS t (trade_id, timeframe, rpnl_pct, closed_at)
"""


def writer(url: str, k: int, barrier: threading.Barrier, errors: list) -> None:
    rng = random.Random(k)
    trades = [
        (
            f"w{k}-{j:03d}",
            rng.choice(TRACKED),
            rng.uniform(-40, 60),
            EPOCH0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 90)),  # random order: late trades
        )
        for j in range(PER_WRITER)
    ]
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            # Commits still serialize on the config row; not waiting for the WAL flush keeps this fast.
            conn.execute("SET synchronous_commit = off")
            barrier.wait(timeout=30)
            j = 0
            while j < len(trades):
                size = rng.choice((1, 1, 2, 5, 8))  # single- and multi-row INSERTs
                chunk = trades[j : j + size]
                conn.execute(
                    INSERT_MANY,
                    {
                        "ids": [t[0] for t in chunk],
                        "tfs": [t[1] for t in chunk],
                        "pcts": [t[2] for t in chunk],
                        "ats": [t[3] for t in chunk],
                    },
                )
                j += size
    except Exception as err:  # any error reaching a caller fails the test
        errors.append(f"writer {k}: {err!r}")


def test_eight_concurrent_writers(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        reset_learning(conn)
        conn.execute(
            """
            INSERT INTO public.lowcap_positions (token_contract, token_chain, timeframe, status, total_allocation_pct)
            SELECT 'tok' || k, 'solana', tf, 'active', 10 * split
            FROM generate_series(1, 10) AS k,
                unnest(ARRAY['15m', '1h', '4h'], ARRAY[0.2, 0.5, 0.3]) AS s (tf, split)
            """
        )

    barrier = threading.Barrier(WRITERS)
    errors: list[str] = []
    threads = [threading.Thread(target=writer, args=(db_url, k, barrier, errors)) for k in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    with psycopg.connect(db_url, autocommit=True) as conn:
        total = WRITERS * PER_WRITER
        assert conn.execute("SELECT count(*) FROM public.closed_trades").fetchone()[0] == total
        allocation = conn.execute("SELECT timeframe, current_allocation, n FROM learning.timeframe_allocation()")
        rows = allocation.fetchall()
        assert sum(r[2] for r in rows) == total  # no lost update: n totals 2,000
        assert conn.execute("SELECT n FROM learning.global_roi()").fetchone()[0] == total
        assert abs(sum(r[1] for r in rows) - 1) <= 1e-12

        # The stored EWMAs equal the closed form over closed_trades: no trade was folded twice or lost.
        stored = conn.execute("SELECT roi_short, roi_long FROM learning.timeframe_allocation()").fetchall()
        stored.append(conn.execute("SELECT roi_short, roi_long FROM learning.global_roi()").fetchone())
        recomputed = conn.execute(
            "SELECT learning.ewma_short(state), learning.ewma_long(state) FROM learning.recomputed_roi_state()"
        ).fetchall()
        assert stored == [pytest.approx(r, abs=1e-12) for r in recomputed]

        # The path: one row per trade, each step starting where the previous one ended.
        path = conn.execute(
            """
            SELECT allocation_before, allocation_after, step_limit, trade_counts
            FROM learning.allocation_history ORDER BY seq
            """
        ).fetchall()
        assert len(path) == total
        assert path[0][0] == [0.15, 0.50, 0.35]
        for k in range(1, len(path)):
            assert path[k][0] == path[k - 1][1], f"the path breaks at step {k}"
        assert path[-1][1] == [r[1] for r in rows]
        for before, after, limit, _counts in path:
            assert abs(sum(after) - 1) <= 1e-12
            if limit is not None:
                assert max(abs(a - b) for a, b in zip(after, before, strict=True)) <= limit + 1e-12
        # n grows by one per step in seq order (each step saw every earlier trade).
        assert [sum(p[3]) for p in path] == list(range(1, total + 1))

        # Positions: per-token totals kept, each row = total * alloc[tf] (the token has all three).
        alloc = {r[0]: r[1] for r in rows}
        positions = conn.execute(
            "SELECT token_contract, timeframe, total_allocation_pct FROM public.lowcap_positions"
        ).fetchall()
        for token, tf, pct in positions:
            assert pct == pytest.approx(10 * alloc[tf], rel=1e-12), (token, tf)
        assert (
            conn.execute("SELECT count(*) FROM public.pattern_trade_events WHERE trade_id LIKE 'w%'").fetchone()[0]
            == total
        )


TAU_CHANGES = {
    "set_tunable": "SELECT learning.set_tunable('tau_short_days', '3'::jsonb)",
    # The bot's own write of the row: the validate-on-write and recompute triggers take the locks in
    # set_tunable's order (learning row, then the decision_maker row in the recompute).
    "direct upsert": """
        INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"tau_short_days": 3}')
        ON CONFLICT (module_id) DO UPDATE SET config_data = learning_configs.config_data || excluded.config_data
    """,
}


@pytest.mark.parametrize("tau_change", TAU_CHANGES.values(), ids=TAU_CHANGES.keys())
def test_trade_waiting_on_a_tau_change_folds_with_the_new_tau(db_url, tau_change):
    """A trade whose INSERT waits for a concurrent tau change (set_tunable, or a direct write of the
    learning row) must fold with the tau that built the state it reads (the tunables are read after
    the lock, not before)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        reset_learning(conn)
        conn.execute(
            """
            INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
            VALUES ('c1', '15m', 5, '2026-01-01'), ('c2', '1h', -2, '2026-01-03'), ('c3', '1h', 4, '2026-01-05')
            """
        )
    errors: list[str] = []
    with psycopg.connect(db_url) as admin:
        admin.execute(tau_change)  # holds the config row locks until commit

        def late_writer():
            try:
                with psycopg.connect(db_url, autocommit=True) as writer_conn:
                    writer_conn.execute(
                        """
                        INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
                        VALUES ('c4', '1h', 9, '2026-01-20')
                        """
                    )
            except Exception as err:
                errors.append(repr(err))

        thread = threading.Thread(target=late_writer)
        thread.start()
        assert wait_until_blocked(db_url, "'c4'") == 1  # the writer waits on the lock
        admin.commit()
        thread.join(timeout=30)
    assert errors == []
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT learning.tunables() ->> 'tau_short_days'").fetchone()[0] == "3"
        stored = conn.execute("SELECT roi_short, roi_long FROM learning.timeframe_allocation()").fetchall()
        stored.append(conn.execute("SELECT roi_short, roi_long FROM learning.global_roi()").fetchone())
        recomputed = conn.execute(
            "SELECT learning.ewma_short(state), learning.ewma_long(state) FROM learning.recomputed_roi_state()"
        ).fetchall()
        stored = [s for s in stored if s[0] is not None]
        assert len(stored) == 3
        assert stored == [pytest.approx(r, abs=1e-12) for r in recomputed]
        # The state is not the one tau 14 would give: the test sees which tau the trade folded with.
        at_14 = conn.execute(
            "SELECT learning.ewma_short(state) FROM learning.recomputed_roi_state(14, 90) WHERE series = 'global'"
        ).fetchone()[0]
        assert abs(stored[-1][0] - at_14) > 1e-6
        conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")


def test_bot_transactions_insert_the_trade_then_update_positions_without_deadlock(db_url):
    """The lock order of design §4: a bot transaction that inserts its closed trade first and then updates its
    positions never deadlocks with another one doing the same (the trigger rewrites positions too)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        reset_learning(conn)
        conn.execute(
            """
            INSERT INTO public.lowcap_positions (token_contract, token_chain, timeframe, status, total_allocation_pct)
            SELECT 'tok' || k, 'solana', tf, 'active', 10 * split
            FROM generate_series(1, 4) AS k,
                unnest(ARRAY['15m', '1h', '4h'], ARRAY[0.2, 0.5, 0.3]) AS s (tf, split)
            """
        )
    errors: list[str] = []
    barrier = threading.Barrier(4)

    def bot(k: int) -> None:
        rng = random.Random(100 + k)
        try:
            with psycopg.connect(db_url) as conn:
                conn.execute("SET synchronous_commit = off")
                conn.commit()
                barrier.wait(timeout=30)
                for j in range(30):
                    with conn.transaction():
                        conn.execute(
                            """
                            INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
                            VALUES (%(id)s::text, %(tf)s::text, %(pct)s::float8, now())
                            """,
                            {"id": f"bot{k}-{j}", "tf": rng.choice(TRACKED), "pct": rng.uniform(-20, 30)},
                        )
                        conn.execute(
                            """
                            UPDATE public.lowcap_positions SET closed_at = now()
                            WHERE token_contract = %(token)s::text
                            """,
                            {"token": f"tok{1 + rng.randrange(4)}"},
                        )
        except Exception as err:
            errors.append(f"bot {k}: {err!r}")

    threads = [threading.Thread(target=bot, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT n FROM learning.global_roi()").fetchone()[0] == 120
        totals = conn.execute(
            "SELECT sum(total_allocation_pct) FROM public.lowcap_positions GROUP BY token_contract"
        ).fetchall()
        assert all(abs(t[0] - 10) < 1e-12 for t in totals)
