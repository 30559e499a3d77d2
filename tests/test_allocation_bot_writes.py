"""The bot's position writes always win over a trade's redistribution (design §6).

Two real sessions: the bot holds a position row (an uncommitted UPDATE) while a trade is inserted.
The trade must neither wait for the row nor undo the bot's change: it leaves that token as it is,
marks it pending, and the next trade (or the job's learning.redistribute_pending) redistributes it
from the rows as the bot committed them: the result of the serial order "bot's change, then trade".
Rows whose total_allocation_pct is not a sane percent are left alone with a WARNING and never make a
trade fail.
"""

from __future__ import annotations

import math
import threading
import time

import psycopg
import pytest

from conftest import reset_learning
from lowcap_learning.jobs import run_job
from reliability_support import wait_until_blocked

TRACKED = ("15m", "1h", "4h")
SEED_TRADES = """
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('s1', '15m', 5, '2026-01-01'), ('s2', '1h', -2, '2026-01-03')
"""


def reset(conn: psycopg.Connection, positions: dict[str, dict[str, float]], status: str = "active") -> None:
    """Fresh learning state, two seed trades (so the next tracked trade moves the allocation) and
    the given positions {token: {timeframe: total_allocation_pct}}."""
    reset_learning(conn)
    conn.execute("DELETE FROM learning.pending_redistribution")
    conn.execute(SEED_TRADES)
    for token, rows in positions.items():
        for tf, pct in rows.items():
            conn.execute(
                """
                INSERT INTO public.lowcap_positions
                    (token_contract, token_chain, timeframe, status, total_allocation_pct)
                VALUES (%s::text, 'solana', %s::text, %s::text, %s::float8)
                """,
                (token, tf, status, pct),
            )


def insert_trade(url: str, trade_id: str, timeframe: str = "4h", pct: float = 3.0) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
            VALUES (%s::text, %s::text, %s::float8, '2026-01-05')
            """,
            (trade_id, timeframe, pct),
        )


def allocation(conn: psycopg.Connection) -> dict[str, float]:
    return dict(conn.execute("SELECT timeframe, current_allocation FROM learning.timeframe_allocation()").fetchall())


def positions(conn: psycopg.Connection, token: str, statuses=("watchlist", "active", "dormant")) -> dict[str, float]:
    return dict(
        conn.execute(
            """
            SELECT timeframe, total_allocation_pct FROM public.lowcap_positions
            WHERE token_contract = %s::text AND status = ANY(%s::text[])
            """,
            (token, list(statuses)),
        ).fetchall()
    )


def split(total: float, alloc: dict[str, float], tfs) -> dict[str, float]:
    share = sum(alloc[tf] for tf in tfs)
    return {tf: total * alloc[tf] / share for tf in tfs}


def trade_while_bot_holds(url: str, bot: psycopg.Connection, trade_id: str, then=None) -> tuple[bool, list[str]]:
    """Insert a trade in another session while bot's transaction is open; then(bot) runs before the
    bot commits. Returns (whether the trade finished before the bot committed, errors of the trade)."""
    errors: list[str] = []

    def run():
        try:
            insert_trade(url, trade_id)
        except Exception as err:  # an error reaching the trade's caller fails the test
            errors.append(repr(err))

    thread = threading.Thread(target=run)
    thread.start()
    try:
        thread.join(timeout=5)
        finished_first = not thread.is_alive()
        if then is not None:
            then(bot)
    finally:
        bot.commit()
        thread.join(timeout=30)
    assert not thread.is_alive()
    return finished_first, errors


def run_pending_job(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT learning.redistribute_pending()")


# The bot's change to token T (15m 3, 1h 5, 4h 2), and the token total the serial order gives.
BOT_CHANGES = {
    "1h 5 to 0": (
        "UPDATE public.lowcap_positions SET total_allocation_pct = 0 WHERE token_contract = 'T' AND timeframe = '1h'",
        {"15m": 3, "1h": 5, "4h": 2},
        5.0,
    ),
    "1h 5 to 20": (
        "UPDATE public.lowcap_positions SET total_allocation_pct = 20 WHERE token_contract = 'T' AND timeframe = '1h'",
        {"15m": 3, "1h": 5, "4h": 2},
        25.0,
    ),
    "pause 1h holding 90 of 100": (
        "UPDATE public.lowcap_positions SET status = 'paused' WHERE token_contract = 'T' AND timeframe = '1h'",
        {"15m": 4, "1h": 90, "4h": 6},
        10.0,
    ),
}
HANDLERS = {
    "next trade": lambda url: insert_trade(url, "next", timeframe="1m"),  # untracked: the allocation stays
    "next moving trade": lambda url: insert_trade(url, "next", timeframe="15m", pct=-4),
    "job": lambda url: run_pending_job(url),
    "hourly job": lambda url: run_job(url, "lesson-builder"),
}


@pytest.mark.parametrize("handler", HANDLERS.values(), ids=HANDLERS.keys())
@pytest.mark.parametrize("change", BOT_CHANGES.values(), ids=BOT_CHANGES.keys())
def test_a_trade_never_undoes_the_bots_position_change(db_url, change, handler):
    statement, start, serial_total = change
    with psycopg.connect(db_url, autocommit=True) as conn:
        reset(conn, {"T": start, "U": {"15m": 2, "1h": 2, "4h": 6}})
        with psycopg.connect(db_url) as bot:
            bot.execute(statement)
            finished_first, errors = trade_while_bot_holds(db_url, bot, "t1")
        assert errors == []
        assert finished_first, "the trade waited for the bot's position row"
        alloc = allocation(conn)
        # Token U (no row held) was redistributed by the trade; T was left for later, marked.
        assert positions(conn, "U") == pytest.approx(split(10, alloc, TRACKED), rel=1e-12)
        assert conn.execute("SELECT token_contract FROM learning.pending_redistribution").fetchall() == [("T",)]

        handler(db_url)
        alloc = allocation(conn)
        rows = positions(conn, "T")
        assert sum(rows.values()) == pytest.approx(serial_total, rel=1e-12)
        assert rows == pytest.approx(split(serial_total, alloc, rows), rel=1e-12)
        assert conn.execute("SELECT count(*) FROM learning.pending_redistribution").fetchone()[0] == 0
        if "pause" in statement:
            assert positions(conn, "T", ("paused",)) == {"1h": 90}


@pytest.mark.parametrize("order", [("15m", "4h"), ("4h", "15m")], ids=["15m then 4h", "4h then 15m"])
def test_bot_updating_two_rows_of_a_token_during_a_trade_never_deadlocks(db_url, order):
    """The bot updates one row, a trade runs, the bot updates a second row of the same token: in
    either order no session is aborted (before, the trade held the second row and waited on the first)."""
    first, second = order
    with psycopg.connect(db_url, autocommit=True) as conn:
        reset(conn, {"T": {"15m": 3, "1h": 5, "4h": 2}})
        with psycopg.connect(db_url) as bot:
            bot.execute("SET statement_timeout = '20s'")
            bot.execute(
                "UPDATE public.lowcap_positions SET total_allocation_pct = total_allocation_pct + 1"
                " WHERE token_contract = 'T' AND timeframe = %s::text",
                (first,),
            )

            def second_update(b: psycopg.Connection) -> None:
                wait_until_blocked(db_url, "'t1'", tries=10)  # the old code's trade waits here
                b.execute(
                    "UPDATE public.lowcap_positions SET total_allocation_pct = total_allocation_pct + 1"
                    " WHERE token_contract = 'T' AND timeframe = %s::text",
                    (second,),
                )

            _, errors = trade_while_bot_holds(db_url, bot, "t1", then=second_update)
        assert errors == []
        HANDLERS["job"](db_url)
        rows = positions(conn, "T")
        assert sum(rows.values()) == pytest.approx(12, rel=1e-12)  # both of the bot's +1 kept
        assert rows == pytest.approx(split(12, allocation(conn), TRACKED), rel=1e-12)


def test_bot_updating_positions_then_inserting_its_trade_during_another_trade_never_deadlocks(db_url):
    """The bot updates a position, another session's trade runs, then the bot inserts its own trade
    (against the README's old order): neither trade is aborted and both are learned."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        reset(conn, {"T": {"15m": 3, "1h": 5, "4h": 2}})
        with psycopg.connect(db_url) as bot:
            bot.execute("SET statement_timeout = '20s'")
            bot.execute(
                "UPDATE public.lowcap_positions SET total_allocation_pct = 9"
                " WHERE token_contract = 'T' AND timeframe = '1h'"
            )

            def bot_trade(b: psycopg.Connection) -> None:
                wait_until_blocked(db_url, "'t1'", tries=10)  # the old code's trade waits here
                b.execute(
                    "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)"
                    " VALUES ('bot', '15m', 7, '2026-01-06')"
                )

            _, errors = trade_while_bot_holds(db_url, bot, "t1", then=bot_trade)
        assert errors == []
        assert conn.execute("SELECT count(*) FROM public.closed_trades").fetchone()[0] == 4
        assert conn.execute("SELECT n FROM learning.global_roi()").fetchone()[0] == 4
        # The bot's own trade redistributed the token it held: nothing is left pending.
        assert conn.execute("SELECT count(*) FROM learning.pending_redistribution").fetchone()[0] == 0
        rows = positions(conn, "T")
        assert rows == pytest.approx(split(14, allocation(conn), TRACKED), rel=1e-12)


POISON = {
    "nan": {"15m": float("nan"), "1h": 5, "4h": 2},
    "inf": {"15m": 1, "1h": float("inf"), "4h": 2},
    "ninf": {"15m": 1, "1h": 5, "4h": float("-inf")},
    "neg": {"15m": -1, "1h": 5, "4h": 2},
    "huge": {"15m": 1e308, "1h": 1e308, "4h": 2},
    "absurd": {"15m": 2e9, "1h": 1, "4h": 1},
}


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


SLEEP_ONCE = """
CREATE FUNCTION public.test_sleep_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('lowcap_test.sleep_once', true) = 'on' THEN
        PERFORM set_config('lowcap_test.sleep_once', 'done', false);
        PERFORM set_config('application_name', 'racing:' || OLD.timeframe, false);
        PERFORM pg_sleep(2);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER zz_test_sleep_once BEFORE UPDATE ON public.lowcap_positions
FOR EACH ROW EXECUTE FUNCTION public.test_sleep_once();
"""


def test_a_bot_write_committed_while_the_trade_rewrites_the_token_is_kept(db_url):
    """The optimistic pass (design §6) takes no lock before its UPDATE: a row the bot changes and
    commits after the trade summed the token, but before the trade reaches that row, keeps the bot's
    value (PostgreSQL re-checks the row against the value the token was summed with), as if the bot
    had written it right after the trade; the trade's other row gets its share of the token as summed."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        reset(conn, {"T": {"15m": 3, "1h": 5}})
        conn.execute(SLEEP_ONCE)
        errors: list[str] = []

        def trade() -> None:
            try:
                with psycopg.connect(db_url, autocommit=True) as t:
                    t.execute("SET lowcap_test.sleep_once = 'on'")
                    t.execute(
                        "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)"
                        " VALUES ('t1', '4h', 3, '2026-01-05')"
                    )
            except Exception as err:  # an error reaching the trade's caller fails the test
                errors.append(repr(err))

        thread = threading.Thread(target=trade)
        thread.start()
        try:
            sleeping = None
            for _ in range(200):
                sleeping = conn.execute(
                    "SELECT substr(application_name, 8) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name LIKE 'racing:%'"
                ).fetchone()
                if sleeping:
                    break
                time.sleep(0.02)
            assert sleeping, "the trade never rewrote a row"
            first = sleeping[0]
            other = "1h" if first == "15m" else "15m"
            conn.execute(
                "UPDATE public.lowcap_positions SET total_allocation_pct = 40"
                " WHERE token_contract = 'T' AND timeframe = %s::text",
                (other,),
            )
        finally:
            thread.join(timeout=30)
            conn.execute("DROP TRIGGER zz_test_sleep_once ON public.lowcap_positions")
            conn.execute("DROP FUNCTION public.test_sleep_once()")
        assert errors == []
        alloc = allocation(conn)
        rows = positions(conn, "T")
        assert rows[other] == 40
        assert rows[first] == pytest.approx(split(8, alloc, ("15m", "1h"))[first], rel=1e-12)
        assert conn.execute("SELECT count(*) FROM learning.pending_redistribution").fetchone()[0] == 0


def test_rows_that_are_not_a_percent_are_left_alone_and_never_fail_a_trade(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        reset(conn, {**POISON, "ok": {"15m": 3, "1h": 5, "4h": 2}})
        ids = dict(
            conn.execute("SELECT token_contract || '/' || timeframe, id::text FROM public.lowcap_positions").fetchall()
        )
        conn.execute("TRUNCATE learning.learning_log")
        for k in range(3):  # every trade succeeds (two 1e308 rows made every INSERT overflow)
            insert_trade(db_url, f"t{k}", timeframe=TRACKED[k], pct=3 + k)
        for token, start in POISON.items():
            rows = positions(conn, token)
            assert all(same(rows[tf], start[tf]) for tf in TRACKED), token  # bit for bit, NaN stays NaN
        assert positions(conn, "ok") == pytest.approx(split(10, allocation(conn), TRACKED), rel=1e-12)
        warnings = [
            r[0]
            for r in conn.execute(
                "SELECT message FROM learning.learning_log WHERE level = 'WARNING' ORDER BY id"
            ).fetchall()
        ]
        assert len(warnings) == 3  # one line per trade, naming every bad row
        bad = [f"{t}/{tf}" for t, rows in POISON.items() for tf, v in rows.items() if not 0 <= v <= 1e9]
        assert len(bad) == 7
        for key in bad:
            assert f"id={ids[key]}" in warnings[0], key
        assert "\n" not in warnings[0]
        assert conn.execute("SELECT count(*) FROM learning.pending_redistribution").fetchone()[0] == 0


def test_tiny_allocations_and_totals_never_underflow(conn):
    """A product of float8 values that rounds to 0 raises in PostgreSQL: a share of 1e-300 of a
    1e-30 total must not make the redistribution (and with it the trade) fail."""
    reset(conn, {"tiny": {"15m": 1e-30, "1h": 1e-30}, "sub": {"15m": 5e-324, "1h": 1e-300, "4h": 3}})
    written = conn.execute("SELECT learning.redistribute_positions(ARRAY[1e-300, 0.5, 0.5]::float8[])").fetchone()[0]
    assert written >= 2
    tiny = positions(conn, "tiny")
    assert tiny["1h"] == pytest.approx(2e-30, rel=1e-12)
    assert tiny["15m"] < 1e-300
    sub = positions(conn, "sub")
    assert sum(sub.values()) == pytest.approx(3, rel=1e-12)
    conn.execute("SELECT learning.redistribute_positions(ARRAY[5e-324, 0.5, 0.5]::float8[])")
    assert sum(positions(conn, "sub").values()) == pytest.approx(3, rel=1e-12)


def test_the_job_never_waits_long_for_a_trade_left_open(db_url):
    """redistribute_pending takes the decision_maker row like a trade; a bot transaction that
    inserted a trade and stays open makes it return within its lock_timeout, the marks kept."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        reset(conn, {"T": {"15m": 3, "1h": 5, "4h": 2}})
        conn.execute("INSERT INTO learning.pending_redistribution (token_contract, token_chain) VALUES ('T', 'solana')")
        with psycopg.connect(db_url) as bot:
            bot.execute(
                "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)"
                " VALUES ('open', '1m', 1, now())"
            )
            t0 = time.perf_counter()
            assert conn.execute("SELECT learning.redistribute_pending()").fetchone()[0] == 0
            assert time.perf_counter() - t0 < 5
            assert conn.execute("SELECT count(*) FROM learning.pending_redistribution").fetchone()[0] == 1
            bot.commit()  # the bot's own trade takes the mark
        assert conn.execute("SELECT count(*) FROM learning.pending_redistribution").fetchone()[0] == 0
        assert positions(conn, "T") == pytest.approx(split(10, allocation(conn), TRACKED), rel=1e-12)
