"""design §3 "validate on write" for direct writes of the learning row, where Python is needed: an
upgrade over a learning row that is already invalid (refused, naming the key, until the operator
repairs it: design §3, adopted tunables), the downgrade removing the new triggers, and a
trade that waits on a direct tau change in another session. The single-session cases are in
tests/sql/ops/test_tunables_validate_on_write.sql."""

from __future__ import annotations

import json

import psycopg
import pytest

from conftest import empty_db
from lowcap_learning import migrate

BOT_LEARNING_CONFIGS = """
CREATE TABLE public.learning_configs (
    module_id text PRIMARY KEY, config_data jsonb NOT NULL, updated_at timestamptz DEFAULT now(),
    updated_by text, notes text
)
"""
# Written before this system validated the row: bad values and a key no version knows any more.
OLD_LEARNING_ROW = {"tau_short_days": 0, "steer_gain": "abc", "retired_knob": {"v": 1}, "max_step": 0.003}

OUR_TRIGGERS = """
SELECT string_agg(t.tgname, ',' ORDER BY t.tgname) FROM pg_trigger AS t
WHERE t.tgrelid = 'public.learning_configs'::regclass AND NOT t.tgisinternal
"""


def _learning_row(conn: psycopg.Connection):
    return conn.execute("SELECT config_data FROM public.learning_configs WHERE module_id = 'learning'").fetchone()[0]


def test_upgrade_over_an_invalid_learning_row_then_validate_on_write_then_downgrade():
    with empty_db("tun_vow") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(BOT_LEARNING_CONFIGS)
            conn.execute(
                "INSERT INTO public.learning_configs (module_id, config_data, updated_by) VALUES"
                " ('learning', %(row)s::jsonb, 'bot'), ('pm', '{\"feature_flags\": {}}', 'bot')",
                {"row": json.dumps(OLD_LEARNING_ROW)},
            )

        # The upgrade refuses the row, naming its first bad tunable (key order), and changes nothing.
        for bad_key, repair in [("steer_gain", {"steer_gain": 0.2}), ("tau_short_days", {"tau_short_days": 14})]:
            with pytest.raises(Exception, match=f"unusable tunable: tunable {bad_key} must be"):
                migrate.upgrade(url)
            with psycopg.connect(url, autocommit=True) as conn:
                assert conn.execute("SELECT to_regnamespace('learning')").fetchone()[0] is None
                conn.execute(
                    "UPDATE public.learning_configs SET config_data = config_data || %(fix)s::jsonb"
                    " WHERE module_id = 'learning'",
                    {"fix": json.dumps(repair)},
                )
        migrate.upgrade(url)

        with psycopg.connect(url, autocommit=True) as conn:
            repaired = dict(OLD_LEARNING_ROW, steer_gain=0.2, tau_short_days=14)
            assert _learning_row(conn) == repaired  # the retired key is kept
            assert conn.execute(OUR_TRIGGERS).fetchone()[0] == (
                "_100_validate_tunables,_900_refresh_tunables_delete,_900_refresh_tunables_insert,"
                "_900_refresh_tunables_truncate,_900_refresh_tunables_update"
            )
            # From now on a direct write is validated.
            with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
                conn.execute(
                    "UPDATE public.learning_configs SET config_data = config_data || '{\"tau_short_days\": 0}'"
                    " WHERE module_id = 'learning'"
                )
            assert info.value.diag.message_primary == "tunable tau_short_days must be a number in [0.01, 36500], got 0"
            assert conn.execute("SELECT learning.set_tunable('max_step', '0.004')").fetchone()[0] == 0.004
            assert _learning_row(conn) == dict(OLD_LEARNING_ROW, steer_gain=0.2, tau_short_days=14, max_step=0.004)
            conn.execute(
                "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)"
                " VALUES ('u1', '15m', 5, now()), ('u2', '1h', -2, now())"
            )
            assert conn.execute("SELECT n FROM learning.global_roi()").fetchone()[0] == 2

        migrate.downgrade(url)

        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(OUR_TRIGGERS).fetchone()[0] is None, "downgrade left a trigger on learning_configs"
            assert _learning_row(conn) == dict(OLD_LEARNING_ROW, steer_gain=0.2, tau_short_days=14, max_step=0.004)
            # The bot's table takes any row again.
            conn.execute(
                "UPDATE public.learning_configs SET config_data = config_data || '{\"tau_short_days\": 0}'"
                " WHERE module_id = 'learning'"
            )
