"""A learning row the bot wrote before our validation existed is held to it at migration: an
unusable tunable (tau_short_days 0 would divide by zero on the second tracked trade) refuses the
migration with one line naming the key, and leaves the database as it was."""

from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner

from conftest import empty_db
from lowcap_learning.cli import cli

BOT_CONFIGS = """
CREATE TABLE public.learning_configs (
    module_id text PRIMARY KEY, config_data jsonb NOT NULL, updated_at timestamptz DEFAULT now(),
    updated_by text, notes text
);
INSERT INTO public.learning_configs (module_id, config_data, updated_by)
VALUES ('learning', %s::jsonb, 'bot'), ('decision_maker', '{"global_roi": 0.1}', 'bot');
"""


@pytest.mark.parametrize(
    ("row", "key"),
    [
        ('{"tau_short_days": 0}', "tau_short_days"),
        ('{"max_step": 5, "n_min": 33}', "max_step"),
        ('{"min_trades_full": 2.5}', "min_trades_full"),
        ('{"scope_dims": "chain"}', "scope_dims"),
    ],
)
def test_an_unusable_adopted_tunable_refuses_the_migration(row, key):
    with empty_db("adopt_tun") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(BOT_CONFIGS.replace("%s", f"'{row}'"))
        result = CliRunner().invoke(cli, ["--database-url", url, "migrate"])
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and key in lines[0], result.output
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regnamespace('learning')").fetchone()[0] is None
            assert conn.execute("SELECT to_regclass('public.closed_trades')").fetchone()[0] is None
            kept = conn.execute("SELECT config_data FROM public.learning_configs WHERE module_id = 'learning'")
            assert kept.fetchone()[0] == json.loads(row)


def test_a_usable_adopted_row_is_kept_and_trades_learn():
    with empty_db("adopt_ok") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(BOT_CONFIGS.replace("%s", "'{\"tau_short_days\": 7, \"bot_only_key\": 1}'"))
        result = CliRunner().invoke(cli, ["--database-url", url, "migrate"])
        assert result.exit_code == 0, result.output
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES"
                " ('a1', '1h', 2, now() - interval '2 hours'), ('a2', '15m', -1, now() - interval '1 hour')"
            )
            assert conn.execute("SELECT n FROM learning.global_roi()").fetchone()[0] == 2
            cfg = conn.execute("SELECT config_data FROM public.learning_configs WHERE module_id = 'learning'")
            assert cfg.fetchone()[0] == {"tau_short_days": 7, "bot_only_key": 1}
