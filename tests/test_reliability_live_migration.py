"""Migrations on a live database (design §17): the bot's tables and rows (BOT_SHAPES.md, shared with
tests/test_migrations.py) while the bot keeps writing. The upgrade must keep every row (its own and
those written during the upgrade), never make the bot wait longer than a lock_timeout probe allows,
downgrade without touching the bot's data, and upgrade again with the same result and grants.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg
from psycopg import sql

from conftest import empty_db
from lowcap_learning import migrate
from lowcap_learning.check import run_check
from test_migrations import BOT_CONFIGS, BOT_ROWS, BOT_SCHEMA, LEGACY_DECISION_MAKER, LEGACY_PM

LOCK_TIMEOUT_S = 3.0
WRITER_KEY = "live.writer"
BOT_TABLES = ("lowcap_positions", "pattern_episode_events", "pattern_trade_events", "learning_lessons", "pm_overrides")
EXTRA_FACTS = """
INSERT INTO public.pattern_trade_events (pattern_key, action_category, scope, rr, pnl_usd, trade_id)
SELECT 'pm.bulk.' || (k % 40), 'entry', jsonb_build_object('chain', 'solana', 'k', k % 17), k * 0.001, k,
    gen_random_uuid()
FROM generate_series(1, 100000) AS k
"""
WRITER_STATEMENTS = (
    # The bot's own writes, in its own shapes (uuid trade_id, rr required before the upgrade).
    """
    INSERT INTO public.pattern_trade_events (pattern_key, action_category, scope, rr, pnl_usd, trade_id)
    VALUES ('live.writer', 'entry', '{"chain": "solana"}', 1.5, 10, gen_random_uuid())
    """,
    """
    INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, factors)
    VALUES ('{"chain": "solana"}', 'live.writer', 'live-ep', 'acted', '{"ts_score": {"min": 0.5}}')
    """,
    "SELECT config_data FROM public.learning_configs WHERE module_id = 'decision_maker'",
    "SELECT count(*) FROM public.lowcap_positions WHERE status = 'active'",
)


def _fingerprint(conn: psycopg.Connection, table: str, columns: list[str]) -> tuple:
    """(count, md5) of the bot's rows of table over its own columns as text, writer rows excluded."""
    row = sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(c)) for c in columns)
    where = (
        sql.SQL("WHERE t.pattern_key <> {}").format(sql.Literal(WRITER_KEY))
        if "pattern_key" in columns
        else sql.SQL("")
    )
    query = sql.SQL(
        "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', {row}), E'\\n' ORDER BY concat_ws('|', {row})), ''))"
        " FROM public.{table} AS t {where}"
    ).format(row=row, table=sql.Identifier(table), where=where)
    return tuple(conn.execute(query).fetchone())


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            """
            SELECT attname FROM pg_attribute
            WHERE attrelid = ('public.' || %(t)s::text)::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum
            """,
            {"t": table},
        ).fetchall()
    ]


class Writer(threading.Thread):
    """The bot, writing all along; every statement runs under lock_timeout, and its latency is kept."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.written = {"pattern_trade_events": 0, "pattern_episode_events": 0}

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="live-writer") as conn:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(LOCK_TIMEOUT_S * 1000)}ms")))
            i = 0
            while not self.stop.is_set():
                statement = WRITER_STATEMENTS[i % len(WRITER_STATEMENTS)]
                started = time.monotonic()
                try:
                    conn.execute(statement)
                    if i % len(WRITER_STATEMENTS) == 0:
                        self.written["pattern_trade_events"] += 1
                    elif i % len(WRITER_STATEMENTS) == 1:
                        self.written["pattern_episode_events"] += 1
                except psycopg.Error as err:
                    self.errors.append(f"{type(err).__name__}: {err}")
                self.latencies.append(time.monotonic() - started)
                i += 1
                time.sleep(0.002)


def _upgrade_under_load(url: str) -> tuple[float, Writer]:
    writer = Writer(url)
    writer.start()
    time.sleep(0.3)
    started = time.monotonic()
    migrate.upgrade(url)
    took = time.monotonic() - started
    time.sleep(0.3)
    writer.stop.set()
    writer.join(30)
    return took, writer


def _writer_rows(conn: psycopg.Connection) -> dict[str, int]:
    return {
        t: conn.execute(
            sql.SQL("SELECT count(*) FROM public.{} WHERE pattern_key = {}").format(
                sql.Identifier(t), sql.Literal(WRITER_KEY)
            )
        ).fetchone()[0]
        for t in ("pattern_trade_events", "pattern_episode_events")
    }


def test_live_upgrade_downgrade_upgrade_with_the_bot_writing(capsys):
    with empty_db("live_mig") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(BOT_SCHEMA)
            conn.execute(BOT_CONFIGS, {"dm": json.dumps(LEGACY_DECISION_MAKER), "pm": json.dumps(LEGACY_PM)})
            conn.execute(BOT_ROWS.encode())
            conn.execute(EXTRA_FACTS)
            columns = {t: _columns(conn, t) for t in BOT_TABLES}
            before = {t: _fingerprint(conn, t, columns[t]) for t in BOT_TABLES}
            other_configs = conn.execute(OTHER_CONFIGS).fetchone()[0]

        # 1. Upgrade while the bot writes: no statement of the bot waits past the lock_timeout probe.
        took, writer = _upgrade_under_load(url)
        assert writer.errors == [], writer.errors[:3]
        assert writer.written["pattern_trade_events"] > 0
        worst = max(writer.latencies)
        assert worst < LOCK_TIMEOUT_S
        _after_first_upgrade(url, columns, before, writer)

        # 2. Downgrade: the bot's rows (including those written during the upgrade) are untouched.
        migrate.downgrade(url)
        _after_downgrade(url, columns, before, writer, other_configs)

        # 3. Upgrade again, the bot still writing: same rows, legacy percent ROI not moved twice, grants back.
        took_again, writer2 = _upgrade_under_load(url)
        assert writer2.errors == [], writer2.errors[:3]
        counts = _after_second_upgrade(url, columns, before, writer, writer2)

        with capsys.disabled():
            print(
                f"\nlive migration: upgrade {took:.2f} s and {took_again:.2f} s with the bot writing; "
                f"bot statements {len(writer.latencies) + len(writer2.latencies)}, worst wait {worst:.2f} s "
                f"(lock_timeout {LOCK_TIMEOUT_S:.0f} s), errors 0; rows lost 0 "
                f"({sum(before[t][0] for t in BOT_TABLES)} bot rows + {sum(counts.values())} written during upgrades)"
            )


OTHER_CONFIGS = "SELECT config_data FROM public.learning_configs WHERE module_id = 'some_other_module'"
PUBLIC_EXECUTE = """
SELECT count(*) FROM pg_proc AS p
CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
WHERE p.pronamespace = 'learning'::regnamespace AND a.grantee = 0
"""


def _after_first_upgrade(url: str, columns: dict, before: dict, writer) -> None:
    """The bot's rows unchanged, every row it wrote meanwhile kept, trade_id widened, the trigger live."""
    with psycopg.connect(url, autocommit=True) as conn:
        assert {t: _fingerprint(conn, t, columns[t]) for t in BOT_TABLES} == before
        assert _writer_rows(conn) == writer.written, "a row the bot wrote during the upgrade was lost"
        assert (
            conn.execute(
                "SELECT data_type FROM information_schema.columns WHERE table_name = 'pattern_trade_events'"
                " AND column_name = 'trade_id'"
            ).fetchone()[0]
            == "text"
        )
        conn.execute(
            "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)"
            " VALUES ('live1', '1h', 3, now())"
        )
        assert conn.execute("SELECT n FROM learning.global_roi()").fetchone()[0] == 1


def _after_downgrade(url: str, columns: dict, before: dict, writer, other_configs) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('learning')").fetchone()[0] is None
        assert {t: _fingerprint(conn, t, columns[t]) for t in BOT_TABLES} == before
        assert _writer_rows(conn) == writer.written
        assert conn.execute(OTHER_CONFIGS).fetchone()[0] == other_configs
        roles = conn.execute(
            "SELECT count(*) FROM pg_roles"
            " WHERE rolname IN ('learning_writer', 'learning_reader', 'learning_admin')"
        ).fetchone()[0]
        assert roles == 3, "roles are cluster-wide and survive a downgrade"


def _after_second_upgrade(url: str, columns: dict, before: dict, writer, writer2) -> dict:
    """Returns the rows the bot wrote during both upgrades, per table."""
    with psycopg.connect(url, autocommit=True) as conn:
        assert {t: _fingerprint(conn, t, columns[t]) for t in BOT_TABLES} == before
        counts = _writer_rows(conn)
        assert counts == {k: writer.written[k] + writer2.written[k] for k in counts}
        dm = conn.execute(
            "SELECT config_data FROM public.learning_configs WHERE module_id = 'decision_maker'"
        ).fetchone()[0]
        assert dm["global_roi_legacy_pct"] == LEGACY_DECISION_MAKER["global_roi"]
        assert dm["timeframe_weights"] == LEGACY_DECISION_MAKER["timeframe_weights"]
        assert conn.execute(PUBLIC_EXECUTE).fetchone()[0] == 0
        with conn.transaction():
            conn.execute("SET LOCAL ROLE learning_writer")
            conn.execute(
                "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)"
                " VALUES ('live2', '4h', -1, now())"
            )
        assert conn.execute("SELECT count(*) FROM public.closed_trades").fetchone()[0] == 1  # live1 went
        # The learning state agrees with closed_trades after the round trip (downgrade dropped the trades).
        report = run_check(conn)
        assert report.ok, report.divergences
    return counts
