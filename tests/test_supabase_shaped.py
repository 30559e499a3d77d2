"""A database set up the way Supabase sets one up, then `migrate`: the API roles (anon, authenticated)
reach none of our tables or functions; the bot's role holding learning_writer writes trades and
episodes (and learning happens), with the README's retry idiom; the lint table of docs/supabase.md
holds the figures these queries compute."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from conftest import empty_db
from lowcap_learning import migrate
from test_functions_search_path import QUALIFIED_PLPGSQL_EXCEPTIONS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "supabase.md"
OUR_TABLES = (
    "closed_trades", "learning_configs", "learning_lessons", "lowcap_learning_alembic_version", "lowcap_positions",
    "pattern_episode_events", "pattern_trade_events", "pm_overrides",
)
WEB = ("anon", "authenticated")
TAG = uuid.uuid4().hex[:6]
BOT_WRITER = f"bot_writer_{TAG}"
BOT_READER = f"bot_reader_{TAG}"

# What Supabase does to a new project before any migration of ours (roles are cluster-wide: created
# when missing and left in place, as on Supabase).
SUPABASE = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN NOINHERIT; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS; END IF;
END $$;
CREATE SCHEMA IF NOT EXISTS auth;
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
"""


@pytest.fixture(scope="module")
def supa():
    with empty_db("supabase") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SUPABASE)
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            for role, granted in ((BOT_WRITER, "learning_writer"), (BOT_READER, "learning_reader")):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(granted), sql.Identifier(role)))
        try:
            yield url
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                for role in (BOT_WRITER, BOT_READER):
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def as_role(url: str, role: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return conn


def trade(trade_id: str, hours: int, pattern: str = "pm.uptrend.S1.entry") -> dict:
    return {"trade_id": trade_id, "tf": "1h", "rpnl": 4.2, "at": f"2025-01-10T{hours:02d}:00:00Z",
            "actions": json.dumps([{"pattern_key": pattern, "action_category": "entry",
                                    "scope": {"chain": "solana"}, "decision_type": "entry"}])}


INSERT = """
INSERT INTO closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
VALUES (%(trade_id)s, %(tf)s, %(rpnl)s, %(at)s, %(actions)s::jsonb)
"""


@pytest.mark.parametrize("role", WEB)
def test_api_roles_reach_no_table(supa, role):
    with psycopg.connect(supa, autocommit=True) as conn:
        held = conn.execute(
            "SELECT c.relname, p.priv FROM pg_class AS c"
            " CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'])"
            " AS p (priv) WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
            " AND has_table_privilege(%s, c.oid, p.priv)", (role,)).fetchall()
        assert held == []
        tables = {r[0]: r[1] for r in conn.execute(
            "SELECT relname, relrowsecurity FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind = 'r'").fetchall()}
        assert set(tables) == set(OUR_TABLES) and all(tables.values())
        sequences = conn.execute(
            "SELECT count(*) FROM pg_class AS c WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace"
            " AND (has_sequence_privilege(%s, c.oid, 'USAGE') OR has_sequence_privilege(%s, c.oid, 'SELECT'))",
            (role, role)).fetchone()[0]
        assert sequences == 0
        first_column = dict(conn.execute(
            "SELECT c.relname, a.attname FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum = 1").fetchall())
    with as_role(supa, role) as conn:
        for table in OUR_TABLES:
            column = first_column[table]
            for statement in (f"SELECT * FROM public.{table}", f"DELETE FROM public.{table}",
                              f"TRUNCATE public.{table}", f"UPDATE public.{table} SET {column} = {column}"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(INSERT, trade("anon-1", 1))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO learning_configs VALUES ('pm', '{}')")


@pytest.mark.parametrize("role", WEB)
def test_api_roles_call_no_function(supa, role):
    with psycopg.connect(supa, autocommit=True) as conn:
        callable_ = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc AS p WHERE p.pronamespace = 'learning'::regnamespace"
            " AND has_function_privilege(%s, p.oid, 'EXECUTE')", (role,)).fetchall()
        assert callable_ == []
        assert conn.execute("SELECT has_schema_privilege(%s, 'learning', 'USAGE')", (role,)).fetchone()[0] is False
    with as_role(supa, role) as conn:
        for call in ("SELECT learning.tunables()", "SELECT learning.set_tunable('max_step', '0.5')",
                     "SELECT learning.set_episode_outcome('ep', 'success')", "SELECT learning.timeframe_allocation()",
                     "SELECT learning.set_feature_flag('pm', 'ae_v2_enabled', true)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(call)


def test_the_bots_writer_role_writes_and_learning_happens(supa):
    with as_role(supa, BOT_WRITER) as bot:
        for i in range(3):
            bot.execute(INSERT, trade(f"bot-{i}", i + 1))
        # The README's retry idiom: a retried trade is a no-op, not an error, for the writer.
        retried = bot.execute(INSERT + " ON CONFLICT (trade_id) DO NOTHING", trade("bot-1", 2))
        assert retried.rowcount == 0
        bot.execute(
            "INSERT INTO pattern_episode_events (scope, pattern_key, episode_id, decision, factors) VALUES"
            " ('{\"chain\": \"solana\"}', 'pm.uptrend.S1.entry', 'ep-1', 'skipped',"
            " '{\"ts_min\": 0.6, \"halo_max\": 1.0, \"slope_min\": 0.0, \"samples\": [{\"ts_score\": 0.55,"
            " \"ts_ok\": false, \"halo_distance\": 0.7, \"entry_zone_ok\": true, \"ema60_slope\": 0.001,"
            " \"ema144_slope\": -0.002, \"slope_ok\": true}]}')")
        bot.execute("SELECT learning.set_episode_outcome('ep-1', 'success')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bot.execute("UPDATE learning_configs SET config_data = '{}'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bot.execute("SELECT * FROM pm_overrides")
    with as_role(supa, BOT_READER) as reader:
        n = reader.execute("SELECT n FROM learning.timeframe_allocation() WHERE timeframe = '1h'").fetchone()[0]
        assert n == 3
        assert reader.execute("SELECT count(*) FROM closed_trades").fetchone()[0] == 3
        assert reader.execute("SELECT count(*) FROM pattern_trade_events").fetchone()[0] == 3
        assert reader.execute("SELECT outcome FROM pattern_episode_events").fetchone()[0] == "success"
        assert reader.execute("SELECT count(*) FROM learning.allocation_history").fetchone()[0] == 3


def doc_table() -> dict[str, str]:
    """The lint table of docs/supabase.md: lint name -> our result (first number in the cell)."""
    text = DOCS.read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \|[^|]*\|[^|]*\| ([^|]+) \|", text, flags=re.M)
    return {name: result.strip() for name, result in rows}


LINTS = {
    # Tables in public without row-level security (Supabase: ERROR).
    "rls_disabled_in_public": """
        SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')
            AND NOT relrowsecurity""",
    # Tables in public with RLS but no policy (INFO): only the alembic version table, on purpose.
    "rls_enabled_no_policy": """
        SELECT count(*) FROM pg_class AS c WHERE c.relnamespace = 'public'::regnamespace AND c.relrowsecurity
            AND NOT EXISTS (SELECT FROM pg_policy AS p WHERE p.polrelid = c.oid)""",
    # SECURITY DEFINER functions the API roles may execute (WARN).
    "security_definer_function_executable": """
        SELECT count(*) FROM pg_proc AS p CROSS JOIN (VALUES ('anon'), ('authenticated')) AS r (name)
        WHERE p.prosecdef AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace,
            'auth'::regnamespace) AND has_function_privilege(r.name, p.oid, 'EXECUTE')""",
    # Functions of ours without a pinned search_path (WARN): the SQL-standard-body helpers only.
    "function_search_path_mutable": """
        SELECT count(*) FROM pg_proc AS p WHERE p.pronamespace = 'learning'::regnamespace
            AND NOT EXISTS (SELECT FROM unnest(p.proconfig) AS c WHERE c LIKE 'search_path=%')""",
    # Views owned by us running with the owner's rights (ERROR).
    "security_definer_view": """
        SELECT count(*) FROM pg_class AS c WHERE c.relkind = 'v'
            AND c.relnamespace IN ('public'::regnamespace, 'learning'::regnamespace)
            AND NOT coalesce('security_invoker=true' = ANY(c.reloptions), false)""",
    # Extensions installed into public (WARN).
    "extension_in_public": """
        SELECT count(*) FROM pg_extension WHERE extnamespace = 'public'::regnamespace""",
}


def test_lint_table_in_the_docs_matches_the_database(supa):
    documented = doc_table()
    assert set(LINTS) <= set(documented), f"docs/supabase.md lacks {set(LINTS) - set(documented)}"
    with psycopg.connect(supa, autocommit=True) as conn:
        for name, query in LINTS.items():
            count = conn.execute(query).fetchone()[0]
            assert documented[name].split()[0] == str(count), (name, count, documented[name])
        # The mutable-search_path ones are the helpers whose SQL-standard body is bound at creation, and
        # the two rule functions that qualify every type (tests/test_functions_search_path.py).
        unbound = conn.execute(
            "SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc AS p"
            " WHERE p.pronamespace = 'learning'::regnamespace"
            " AND p.prosqlbody IS NULL AND NOT EXISTS"
            " (SELECT FROM unnest(p.proconfig) AS c WHERE c LIKE 'search_path=%')").fetchone()[0]
        assert unbound == sorted(QUALIFIED_PLPGSQL_EXCEPTIONS)


def test_documented_episode_wrapper_is_for_service_role_only(supa):
    """The public wrapper docs/supabase.md offers for set_episode_outcome over HTTP."""
    text = DOCS.read_text()
    block = re.search(r"<!-- wrapper -->\s*```sql\n(.*?)```", text, flags=re.S).group(1)
    with psycopg.connect(supa, autocommit=True) as conn:
        conn.execute(block.encode())
        conn.execute("INSERT INTO pattern_episode_events (scope, pattern_key, episode_id, decision, factors)"
                     " VALUES ('{}', 'pm.uptrend.S1.entry', 'ep-http', 'acted', '{}')")
    with as_role(supa, "service_role") as service:
        assert service.execute("SELECT public.lowcap_set_episode_outcome('ep-http', 'failure')").fetchone()[0] == 1
    for role in WEB:
        with as_role(supa, role) as web, pytest.raises(psycopg.errors.InsufficientPrivilege):
            web.execute("SELECT public.lowcap_set_episode_outcome('ep-http', 'success')")
    with psycopg.connect(supa, autocommit=True) as conn:
        assert conn.execute("SELECT outcome FROM pattern_episode_events WHERE episode_id = 'ep-http'"
                            ).fetchone()[0] == "failure"
