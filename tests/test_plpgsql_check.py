"""plpgsql_check over every PL/pgSQL function in schema learning (STYLE 7): no errors, no warnings.

Temp tables created at run time are invisible to a static check and are the one tolerated error.
Trigger functions are checked against the table they are attached to (with their transition
tables). The bot's ad_strands table is created first (its shape from BOT_SHAPES.md) and the adapter
installed, so the adapter is checked against a real table too.
"""

import psycopg

FUNCTIONS = """
SELECT p.oid::regprocedure::text AS name, p.oid, p.prorettype = 'trigger'::regtype AS is_trigger,
       t.tgrelid::regclass::text AS relid, t.tgoldtable AS oldtable, t.tgnewtable AS newtable
FROM pg_proc AS p
JOIN pg_language AS l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
LEFT JOIN LATERAL (
    SELECT tg.tgrelid, tg.tgoldtable, tg.tgnewtable FROM pg_trigger AS tg
    WHERE tg.tgfoid = p.oid AND NOT tg.tgisinternal ORDER BY tg.tgname LIMIT 1
) AS t ON true
WHERE p.pronamespace = 'learning'::regnamespace
ORDER BY 1
"""

AD_STRANDS = """
CREATE TABLE IF NOT EXISTS public.ad_strands (
    id text PRIMARY KEY, module text, kind text, symbol text, timeframe text, position_id text,
    trade_id uuid, content jsonb, regime_context jsonb, tags jsonb, target_agent text,
    created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now()
)
"""

CHECK = r"""
SELECT level, message, lineno, coalesce(detail, '') AS detail
FROM plpgsql_check_function_tb(
    %(oid)s::oid, relid => %(relid)s::regclass, oldtable => %(oldtable)s::name,
    newtable => %(newtable)s::name, fatal_errors => false
)
WHERE level IN ('error', 'warning')
    -- Temp tables a function creates at run time (the slice miner's work tables) are invisible to a
    -- static check; every other missing relation is a real error.
    AND NOT (sqlstate = '42P01' AND message LIKE 'relation "pg\_temp.%%')
"""


def test_plpgsql_check_finds_nothing(db_url):
    problems, unattached, checked = [], [], 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS plpgsql_check")
        conn.execute(AD_STRANDS)
        conn.execute("SELECT learning.install_ad_strands_adapter()")
        for name, oid, is_trigger, relid, oldtable, newtable in conn.execute(FUNCTIONS).fetchall():
            if is_trigger and relid is None:
                unattached.append(name)
                continue
            params = {"oid": oid, "relid": relid or 0, "oldtable": oldtable, "newtable": newtable}
            for level, message, lineno, detail in conn.execute(CHECK, params).fetchall():
                problems.append(f"{name}:{lineno}: {level}: {message} {detail}".strip())
            checked += 1
    assert checked >= 3, "plpgsql_check saw almost no functions: is the schema loaded?"
    assert problems == [], "\n".join(problems)
    assert unattached == [], f"trigger functions attached to no table: {unattached}"
