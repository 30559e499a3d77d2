"""Migrations (design §17): alembic builds exactly what sql/ builds, round-trips through `downgrade base`, and adopts
a database that already holds the bot's tables without losing a row or a legacy config key."""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from conftest import empty_db
from lowcap_learning import migrate
from lowcap_learning.db import MIGRATIONS_DIR, canonical_sql

CHECKOUT = Path(__file__).resolve().parents[1]
VERSION_TABLE = "public.lowcap_learning_alembic_version"


def schema_dump(url: str) -> str:
    """pg_dump --schema-only --no-owner, without the alembic version table and pg_dump's session noise."""
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    out = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", f"--exclude-table={VERSION_TABLE}", "--dbname", url],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    # pg_dump >= 15.14 brackets the script with \restrict <random key>.
    return "\n".join(line for line in out.splitlines() if not re.match(r"\\(un)?restrict ", line))


def assert_same_schema(expected: str, actual: str, what: str) -> None:
    if expected != actual:
        diff = "\n".join(
            difflib.unified_diff(expected.splitlines(), actual.splitlines(), "sql/", what, lineterm="", n=2)
        )
        pytest.fail(f"schema of {what} differs from sql/:\n{diff[:20000]}")


def build_from_sql(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(canonical_sql().encode())


def test_released_migrations_are_unchanged():
    result = subprocess.run(
        [sys.executable, str(CHECKOUT / "scripts" / "freeze_migration.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_upgrade_equals_sql_and_round_trips():
    with empty_db("mig_sql") as sql_url, empty_db("mig_alembic") as alembic_url:
        build_from_sql(sql_url)
        expected = schema_dump(sql_url)
        assert "CREATE SCHEMA learning" in expected and "trg_closed_trades_learn" in expected

        migrate.upgrade(alembic_url)
        assert_same_schema(expected, schema_dump(alembic_url), "alembic upgrade head")
        with psycopg.connect(alembic_url) as conn:
            assert conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone() is not None

        migrate.downgrade(alembic_url)
        with psycopg.connect(alembic_url) as conn:
            assert conn.execute("SELECT to_regnamespace('learning')").fetchone()[0] is None
            left = conn.execute(
                """
                SELECT string_agg(c.relname, ', ' ORDER BY c.relname)
                FROM pg_class AS c
                WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                    AND c.relname <> 'lowcap_learning_alembic_version'
                """
            ).fetchone()[0]
            assert left is None, f"downgrade base left objects in a fresh database: {left}"
            funcs = conn.execute("SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace").fetchone()[
                0
            ]
            assert funcs == 0

        migrate.upgrade(alembic_url)
        assert_same_schema(expected, schema_dump(alembic_url), "downgrade base -> upgrade head")


FROZEN_0001 = MIGRATIONS_DIR / "versions" / "sql" / "0001_upgrade.sql"


def test_revision_0001_is_its_frozen_script():
    with empty_db("mig_0001") as released_url, empty_db("mig_step") as url:
        with psycopg.connect(released_url, autocommit=True) as conn:
            conn.execute(FROZEN_0001.read_bytes())
        migrate.upgrade(url, "0001")
        assert_same_schema(schema_dump(released_url), schema_dump(url), "upgrade 0001")


@pytest.mark.parametrize("revision", ["0001", "0002", "0003", "0004", "0005"])
def test_downgrade_returns_the_previous_revision_and_upgrades_again(revision):
    """Each revision's downgrade returns exactly the previous revision's schema (design §17)."""
    with empty_db(f"mig_{revision}") as released_url, empty_db("mig_step") as url:
        migrate.upgrade(released_url, revision)
        released = schema_dump(released_url)
        migrate.upgrade(url)
        migrate.downgrade(url, revision)
        assert_same_schema(released, schema_dump(url), f"upgrade head -> downgrade {revision}")
        migrate.upgrade(url)
        with empty_db("mig_sql2") as sql_url:
            build_from_sql(sql_url)
            assert_same_schema(schema_dump(sql_url), schema_dump(url), f"downgrade {revision} -> upgrade head")


def test_migrations_run_whatever_the_databases_search_path():
    """A database whose search_path leaves out public upgrades, downgrades and upgrades again: every
    frozen statement names its schema (design §17)."""
    with empty_db("mig_path") as url, empty_db("mig_path_sql") as sql_url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET search_path = \"$user\"").format(sql.Identifier(conn.info.dbname))
            )
        migrate.upgrade(url)
        migrate.downgrade(url, "0005")
        migrate.upgrade(url)
        build_from_sql(sql_url)
        assert_same_schema(schema_dump(sql_url), schema_dump(url), "upgrade head under search_path \"$user\"")


def test_a_tunable_written_while_0006_upgrades_is_in_effect_after_it():
    """The upgrade that makes learning.effective_tunables locks learning_configs before it reads the merge:
    a tau written by a transaction still open when the upgrade starts is in effect after both commit."""
    import threading

    with empty_db("mig_race") as url:
        migrate.upgrade(url, "0005")
        with psycopg.connect(url) as writer:
            writer.execute("SELECT learning.set_tunable('tau_short_days', '5')")  # open, uncommitted
            upgrade = threading.Thread(target=migrate.upgrade, args=(url,))
            upgrade.start()
            upgrade.join(timeout=2)
            assert upgrade.is_alive()  # waiting for the writer
            writer.commit()
        upgrade.join(timeout=60)
        assert not upgrade.is_alive()
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT learning.tunables() ->> 'tau_short_days'").fetchone()[0] == "5"
            stored, merged = conn.execute(
                "SELECT t.tunables, learning._effective_tunables() FROM learning.effective_tunables AS t"
            ).fetchone()
            assert stored == merged


STATE_0001 = "SELECT config_data -> 'learning_state' FROM public.learning_configs WHERE module_id = 'decision_maker'"
TYPED_STATE = """
SELECT series, ref_epoch, short_sum_w_roi, short_sum_w, long_sum_w_roi, long_sum_w, short_sum_w_roi2, short_sum_w2,
    long_sum_w_roi2, long_sum_w2, n, current_allocation
FROM learning.allocation_state ORDER BY series
"""
SERIES = ("15m", "1h", "4h", "global")


def test_a_populated_0001_database_upgrades_and_keeps_learning():
    """Trades learned under 0001 stay learned: n and every EWMA sum move from the decision_maker row
    into learning.allocation_state exactly (the second moments, which 0001 did not keep, from
    closed_trades), the allocation is the same, and the next trade learns on top of them. Downgrade
    to 0001 puts the same learning_state back, and upgrading again gives the same typed state."""
    with empty_db("mig_pop") as url:
        migrate.upgrade(url, "0001")
        with psycopg.connect(url, autocommit=True) as conn:
            # Two statements, the second partly older than the first: late trades fold in, so the
            # incremental sums differ in their last bits from a closed-form recompute.
            for first, last, offset in ((1, 40, "10 days"), (41, 60, "30 days")):
                conn.execute(
                    "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)"
                    " SELECT 'p' || i, (ARRAY['15m', '1h', '4h'])[1 + i % 3], (i * 37 % 23) - 9.3,"
                    f" now() - interval '{offset}' + i * interval '97 minutes'"
                    f" FROM generate_series({first}, {last}) AS i"
                )
            before = conn.execute("SELECT * FROM learning.timeframe_allocation() ORDER BY 1").fetchall()
            before_global = conn.execute("SELECT * FROM learning.global_roi()").fetchone()
            state_0001 = conn.execute(STATE_0001).fetchone()[0]
            assert state_0001["n"] == [20, 20, 20, 60]
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT * FROM learning.timeframe_allocation() ORDER BY 1").fetchall() == before
            assert conn.execute("SELECT * FROM learning.global_roi()").fetchone() == before_global
            assert conn.execute(STATE_0001).fetchone()[0] is None  # the row is output now
            typed = conn.execute(TYPED_STATE).fetchall()
            by_series = {row[0]: row for row in typed}
            for k, series in enumerate(SERIES):
                row = by_series[series]
                assert list(row[1:6]) == state_0001[series], series  # bit for bit
                assert row[10] == state_0001["n"][k]
            closed = {
                r[0]: r[1]
                for r in conn.execute("SELECT series, state FROM learning.recomputed_roi_state()").fetchall()
            }
            for series in SERIES:
                assert list(by_series[series][6:10]) == pytest.approx(
                    [closed[series][5], closed[series][6], closed[series][7], closed[series][8]], rel=1e-12
                )
            assert [by_series[tf][11] for tf in ("15m", "1h", "4h")] == [r[1] for r in before]

        migrate.downgrade(url, "0001")
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(STATE_0001).fetchone()[0] == state_0001
            assert conn.execute("SELECT * FROM learning.timeframe_allocation() ORDER BY 1").fetchall() == before
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(TYPED_STATE).fetchall() == typed
            conn.execute(
                "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)"
                " VALUES ('p-next', '4h', 2.0, now())"
            )
            assert conn.execute("SELECT n FROM learning.global_roi()").fetchone()[0] == 61
            assert not conn.execute("SELECT FROM learning.learning_log WHERE level = 'WARNING'").fetchall()


# ---------------------------------------------------------------------------------------------
# A database that already has the bot's tables and rows (the shapes the bot writes: design §18).

BOT_SCHEMA = """
CREATE TABLE public.learning_configs (
    module_id text PRIMARY KEY, config_data jsonb NOT NULL, updated_at timestamptz DEFAULT now(),
    updated_by text, notes text
);
CREATE TABLE public.lowcap_positions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_chain text NOT NULL, token_contract text NOT NULL,
    timeframe text NOT NULL CHECK (timeframe IN ('1m', '15m', '1h', '4h', '1d')),
    status text NOT NULL DEFAULT 'watchlist' CHECK (status IN
        ('dormant', 'watchlist', 'active', 'shadow', 'paused', 'archived', 'regime_driver')),
    total_allocation_pct float, alloc_policy jsonb, current_trade_id uuid,
    completed_trades jsonb DEFAULT '[]', closed_at timestamptz, state text, rpnl_pct float,
    usd_alloc_remaining float, features jsonb, entry_context jsonb,
    created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now(),
    UNIQUE (token_contract, token_chain, timeframe)
);
CREATE FUNCTION public.bot_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER bot_positions_updated_at BEFORE UPDATE ON public.lowcap_positions
FOR EACH ROW EXECUTE FUNCTION public.bot_touch_updated_at();
CREATE TABLE public.pattern_episode_events (
    id bigserial PRIMARY KEY, scope jsonb NOT NULL, pattern_key text NOT NULL, episode_id text NOT NULL,
    trade_id text, decision text NOT NULL CHECK (decision IN ('acted', 'skipped')),
    outcome text CHECK (outcome IN ('success', 'failure', 'neutral')), factors jsonb NOT NULL,
    timestamp timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.pattern_trade_events (
    id bigserial PRIMARY KEY, pattern_key text NOT NULL, action_category text NOT NULL, scope jsonb NOT NULL,
    rr float NOT NULL, pnl_usd float, trade_id uuid NOT NULL, timestamp timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz DEFAULT now()
);
CREATE TABLE public.learning_lessons (
    id bigserial PRIMARY KEY, module text NOT NULL, pattern_key text NOT NULL, action_category text NOT NULL,
    scope_subset jsonb NOT NULL DEFAULT '{}', n integer NOT NULL DEFAULT 0, stats jsonb NOT NULL DEFAULT '{}',
    lesson_type text NOT NULL DEFAULT 'pm_strength', decay_halflife_hours float, latent_factor_id text,
    status text NOT NULL DEFAULT 'active', created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now(),
    scope_values jsonb DEFAULT '{}',
    UNIQUE (module, pattern_key, action_category, scope_subset)
);
CREATE TABLE public.pm_overrides (
    id bigserial PRIMARY KEY, pattern_key text NOT NULL, action_category text NOT NULL, scope_subset jsonb NOT NULL,
    multiplier float NOT NULL DEFAULT 1.0, tuning_params jsonb, confidence_score float, decay_state text,
    last_updated_at timestamptz NOT NULL DEFAULT now(), dira float, dire float, n integer,
    UNIQUE (pattern_key, action_category, scope_subset)
);
CREATE TABLE public.ad_strands (
    id text PRIMARY KEY, module text, kind text, symbol text, timeframe text, position_id text, trade_id uuid,
    content jsonb, regime_context jsonb, tags jsonb, target_agent text,
    created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now()
);
"""

LEGACY_DECISION_MAKER = {
    "timeframe_weights": {
        tf: {"weight": w, "rr_short": 1.2, "rr_long": 1.1, "n": 7, "updated_at": "2025-10-01T00:00:00+00:00"}
        for tf, w in (("1m", 0.1), ("15m", 0.2), ("1h", 0.4), ("4h", 0.3))
    },
    "global_rr": {"rr_short": 1.3, "rr_long": 1.2, "n": 28, "updated_at": "2025-10-01T00:00:00+00:00"},
    "global_roi": {"roi_short": 4.5, "roi_long": 3.2, "n": 28, "updated_at": "2025-10-01T00:00:00+00:00"},
}
LEGACY_PM = {
    "feature_flags": {"ae_v2_enabled": True, "learning_overrides_enabled": False},
    "N_MIN": 40,
    "LOOKBACK_DAYS": 60,
}

BOT_CONFIGS = """
INSERT INTO public.learning_configs (module_id, config_data, updated_by, notes)
VALUES ('decision_maker', %(dm)s::jsonb, 'bot', 'legacy'), ('pm', %(pm)s::jsonb, 'bot', NULL),
    ('some_other_module', '{"x": 1}', 'bot', NULL)
"""
BOT_ROWS = """
INSERT INTO public.lowcap_positions (token_chain, token_contract, timeframe, status, total_allocation_pct,
    alloc_policy, state, rpnl_pct, features)
SELECT 'solana', 'tok' || k, tf, (ARRAY['active', 'watchlist', 'dormant', 'archived', 'shadow'])[1 + k % 5],
    CASE WHEN k % 7 = 0 THEN NULL ELSE 15.0 * split END,
    jsonb_build_object('timeframe_splits', jsonb_build_object('1h', 0.5), 'total_allocation_pct', 15.0),
    'S1', k * 0.5, '{"a": 1}'
FROM generate_series(1, 30) AS k, unnest(ARRAY['1m', '15m', '1h', '4h'], ARRAY[0.1, 0.2, 0.4, 0.3]) AS s (tf, split);
INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, trade_id, decision, outcome, factors)
SELECT jsonb_build_object('chain', 'solana', 'bucket', k % 3), 'pm.uptrend.S1.entry', 'ep' || (k / 2),
    NULL, (ARRAY['acted', 'skipped'])[1 + k % 2], (ARRAY['success', 'failure', NULL])[1 + k % 3],
    '{"ts_score": {"min": 0.5, "max": 0.7, "median": 0.6}}'
FROM generate_series(1, 40) AS k;
INSERT INTO public.pattern_trade_events (pattern_key, action_category, scope, rr, pnl_usd, trade_id)
SELECT 'pm.uptrend.S1.entry', (ARRAY['entry', 'add', 'trim', 'exit'])[1 + k % 4], '{"chain": "solana"}',
    k * 0.1 - 1, k * 3.0, gen_random_uuid()
FROM generate_series(1, 50) AS k;
INSERT INTO public.learning_lessons (module, pattern_key, action_category, scope_subset, n, stats)
SELECT 'pm', 'pm.uptrend.S1.entry', 'entry', jsonb_build_object('bucket', k), k, '{"avg_rr": 1.2}'
FROM generate_series(1, 12) AS k;
INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier, confidence_score)
SELECT 'pm.uptrend.S1.entry', (ARRAY['entry', 'tuning_ts_min'])[1 + k % 2], jsonb_build_object('bucket', k),
    1 + k * 0.01, 0.5
FROM generate_series(1, 10) AS k;
INSERT INTO public.ad_strands (id, module, kind, timeframe, position_id, trade_id, content)
SELECT 'strand' || k, 'pm', 'position_closed', '1h', 'pos' || k, gen_random_uuid(),
    jsonb_build_object('token_contract', 'tok' || k, 'chain', 'solana', 'completed_trades', '[]'::jsonb)
FROM generate_series(1, 5) AS k;
"""

READ_DM = "SELECT config_data FROM learning_configs WHERE module_id = 'decision_maker'"
BOT_TABLES = (
    "learning_configs",
    "lowcap_positions",
    "pattern_episode_events",
    "pattern_trade_events",
    "learning_lessons",
    "pm_overrides",
    "ad_strands",
)


def bot_columns(conn: psycopg.Connection) -> dict[str, list[str]]:
    return {
        table: [
            r[0]
            for r in conn.execute(
                """
                SELECT attname FROM pg_attribute
                WHERE attrelid = ('public.' || %(t)s::text)::regclass AND attnum > 0 AND NOT attisdropped
                ORDER BY attnum
                """,
                {"t": table},
            ).fetchall()
        ]
        for table in BOT_TABLES
    }


def fingerprints(conn: psycopg.Connection, columns: dict[str, list[str]], exclude_modules=()) -> dict[str, tuple]:
    """(count, md5) per bot table over the bot's own columns, as text (a uuid -> text change is lossless)."""
    out = {}
    for table, cols in columns.items():
        row = sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(c)) for c in cols)
        where = sql.SQL("")
        if table == "learning_configs" and exclude_modules:
            where = sql.SQL("WHERE t.module_id <> ALL({})").format(sql.Literal(list(exclude_modules)))
        query = sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', {row}), E'\\n'"
            " ORDER BY concat_ws('|', {row})), '')) FROM public.{table} AS t {where}"
        ).format(row=row, table=sql.Identifier(table), where=where)
        out[table] = tuple(conn.execute(query).fetchone())
    return out


def test_upgrade_adopts_the_bots_tables_and_keeps_every_row():
    with empty_db("mig_bot") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(BOT_SCHEMA)
            conn.execute(BOT_CONFIGS, {"dm": json.dumps(LEGACY_DECISION_MAKER), "pm": json.dumps(LEGACY_PM)})
            conn.execute(BOT_ROWS.encode())
            columns = bot_columns(conn)
            # learning_configs rows we may extend (decision_maker, pm) are checked key by key below.
            before = fingerprints(conn, columns, exclude_modules=("decision_maker", "pm"))
            counts = {
                t: conn.execute(sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(t))).fetchone()[0]
                for t in BOT_TABLES
            }

        migrate.upgrade(url)

        with psycopg.connect(url, autocommit=True) as conn:
            assert fingerprints(conn, columns, exclude_modules=("decision_maker", "pm")) == before
            for t in BOT_TABLES:
                now = conn.execute(sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(t))).fetchone()[0]
                if t == "learning_configs":
                    assert now >= counts[t]  # our own module rows may be added
                else:
                    assert now == counts[t], t
            dm = conn.execute("SELECT config_data FROM learning_configs WHERE module_id = 'decision_maker'").fetchone()[
                0
            ]
            assert dm["timeframe_weights"] == LEGACY_DECISION_MAKER["timeframe_weights"]
            assert dm["global_rr"] == LEGACY_DECISION_MAKER["global_rr"]
            # The bot's global_roi is in percent: it is kept under global_roi_legacy_pct (design §4).
            assert dm["global_roi_legacy_pct"] == LEGACY_DECISION_MAKER["global_roi"]
            assert set(dm["timeframe_allocation"]) == {"15m", "1h", "4h"}
            pm = conn.execute("SELECT config_data FROM learning_configs WHERE module_id = 'pm'").fetchone()[0]
            for key, value in LEGACY_PM.items():
                if key == "feature_flags":
                    assert value.items() <= pm[key].items()
                else:
                    assert pm[key] == value
            # The adopted tables work: a closed trade learns and writes a strength fact on the bot's table.
            conn.execute(
                """
                INSERT INTO closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
                VALUES ('adopt1', '1h', 5, now(), '[{"pattern_key": "pm.x", "action_category": "entry"}]'),
                       ('adopt2', '4h', -3, now(), '[]')
                """
            )
            assert conn.execute("SELECT n FROM learning.global_roi()").fetchone()[0] == 2
            assert (
                conn.execute(
                    "SELECT count(*) FROM pattern_trade_events WHERE trade_id = 'adopt1' AND rr IS NULL"
                ).fetchone()[0]
                == 1
            )
            # The bot's rows still validate nothing new: NOT VALID constraints, no rewrite of their values.
            after_use = fingerprints(conn, columns, exclude_modules=("decision_maker", "pm"))
            for t in ("pattern_episode_events", "learning_lessons", "pm_overrides", "ad_strands"):
                assert after_use[t] == before[t], t

        migrate.downgrade(url)

        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT to_regnamespace('learning')").fetchone()[0] is None
            assert conn.execute("SELECT to_regclass('public.closed_trades')").fetchone()[0] is None
            after = fingerprints(conn, columns, exclude_modules=("decision_maker", "pm"))
            for t in ("learning_configs", "pattern_episode_events", "learning_lessons", "pm_overrides", "ad_strands"):
                assert after[t] == before[t], f"downgrade changed the bot's {t}"
            assert after["pattern_trade_events"][0] == before["pattern_trade_events"][0] + 1  # our fact stays
            trigger = conn.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'bot_positions_updated_at'"
            ).fetchone()[0]
            assert trigger == 1, "downgrade dropped the bot's own trigger"
            dm = conn.execute("SELECT config_data FROM learning_configs WHERE module_id = 'decision_maker'").fetchone()[
                0
            ]
            assert dm["timeframe_weights"] == LEGACY_DECISION_MAKER["timeframe_weights"]
