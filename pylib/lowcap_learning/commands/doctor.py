"""doctor: what the operator must still do (RLS, roles, pooler, adapter); exit 1 when something needs them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import click

from lowcap_learning import db, output
from lowcap_learning.pooler import detect

# The public tables the package touches, with who created them (learning.adopted_tables) and their
# row-level security; web = privileges held by Supabase's API roles (anon, authenticated).
TABLES = """
WITH names (name) AS (
    VALUES ('closed_trades'), ('pattern_episode_events'), ('pattern_trade_events'), ('learning_configs'),
        ('lowcap_positions'), ('learning_lessons'), ('pm_overrides'), ('lowcap_learning_alembic_version'),
        ('ad_strands')
),
web AS (SELECT r.rolname FROM pg_catalog.pg_roles AS r WHERE r.rolname IN ('anon', 'authenticated'))
SELECT
    n.name,
    c.oid IS NOT NULL AS present,
    CASE
        WHEN n.name = 'lowcap_learning_alembic_version' THEN false
        WHEN n.name = 'ad_strands' THEN true
        ELSE coalesce(a.existed_before, true)
    END AS bots,
    coalesce(c.relrowsecurity, false) AS rls,
    (SELECT pg_catalog.count(*) FROM pg_catalog.pg_policy AS p WHERE p.polrelid = c.oid)::integer AS policies,
    coalesce((
        SELECT pg_catalog.array_agg(DISTINCT w.rolname || ':' || x.priv ORDER BY w.rolname || ':' || x.priv)
        FROM web AS w
        CROSS JOIN (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE')) AS x (priv)
        WHERE c.oid IS NOT NULL AND pg_catalog.has_table_privilege(w.rolname, c.oid, x.priv)
    ), '{}') AS web
FROM names AS n
LEFT JOIN pg_catalog.pg_class AS c
    ON c.relname = n.name AND c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
LEFT JOIN learning.adopted_tables AS a ON a.table_name = n.name
ORDER BY n.name
"""
ROLE_MEMBERS = """
SELECT
    g.rolname,
    coalesce(pg_catalog.array_agg(m.rolname ORDER BY m.rolname) FILTER (WHERE m.rolname IS NOT NULL), '{}')
FROM pg_catalog.pg_roles AS g
LEFT JOIN pg_catalog.pg_auth_members AS am ON am.roleid = g.oid
LEFT JOIN pg_catalog.pg_roles AS m ON m.oid = am.member
WHERE g.rolname IN ('learning_writer', 'learning_reader', 'learning_admin')
GROUP BY g.rolname
ORDER BY g.rolname
"""
WEB_FUNCTIONS = """
SELECT pg_catalog.count(*)::integer
FROM pg_catalog.pg_proc AS p
CROSS JOIN pg_catalog.pg_roles AS w
WHERE p.pronamespace = 'learning'::regnamespace AND w.rolname IN ('anon', 'authenticated')
    AND pg_catalog.has_function_privilege(w.rolname, p.oid, 'EXECUTE')
"""
ADAPTER = """
SELECT
    pg_catalog.to_regclass('public.ad_strands') IS NOT NULL,
    EXISTS (
        SELECT FROM pg_catalog.pg_trigger AS t
        WHERE t.tgrelid = pg_catalog.to_regclass('public.ad_strands')
            AND t.tgname = '_500_lowcap_learning_closed_trade' AND NOT t.tgisinternal
    )
"""
SCHEMA = "SELECT pg_catalog.to_regnamespace('learning') IS NOT NULL"


@dataclass
class Finding:
    area: str
    status: str  # ok | action | info
    message: str


def diagnose(conn, url: str) -> list[Finding]:
    found: list[Finding] = []
    info = detect(conn, url)
    if info.transaction_pooling:
        found.append(Finding("connection", "info", f"transaction pooler ({info.how}): trades, status, run, "
                             "ingest and the runtime work here; scheduler, logs follow and migrate need a direct "
                             "connection or a session pooler"))
    elif info.pooler:
        found.append(Finding("connection", "ok", f"session pooler ({info.how})"))
    else:
        found.append(Finding("connection", "ok", info.how))
    if not conn.execute(SCHEMA).fetchone()[0]:
        found.append(Finding("schema", "action", "schema learning is missing: run `lowcap-learning migrate`"))
        return found
    for name, present, bots, rls, policies, web in conn.execute(TABLES).fetchall():
        area = f"table public.{name}"
        if not present:
            if name != "ad_strands":
                found.append(Finding(area, "action", "missing: run `lowcap-learning migrate`"))
            continue
        owner = "the bot's table" if bots else "created by lowcap-learning"
        state = f"{owner}; RLS {'on' if rls else 'off'}, {policies} polic{'y' if policies == 1 else 'ies'}"
        if web and not rls:
            found.append(Finding(area, "action", f"{state}; anon/authenticated hold {', '.join(web)} with RLS "
                                 "off: the API keys can reach it. Enable RLS (ALTER TABLE ... ENABLE ROW LEVEL "
                                 "SECURITY) with the bot's own policies, or REVOKE those privileges"))
        elif not bots and not rls:
            found.append(Finding(area, "action", f"{state}: run `lowcap-learning migrate` (it enables RLS)"))
        else:
            found.append(Finding(area, "ok", state + (f"; anon/authenticated hold {', '.join(web)}" if web else "")))
    web_functions = conn.execute(WEB_FUNCTIONS).fetchone()[0]
    if web_functions:
        found.append(Finding("functions", "action", f"{web_functions} function(s) of schema learning are executable "
                             "by anon/authenticated: REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA learning FROM anon, "
                             "authenticated"))
    else:
        found.append(Finding("functions", "ok", "no function of schema learning is executable by anon/authenticated"))
    roles = dict(conn.execute(ROLE_MEMBERS).fetchall())
    for role, purpose in (("learning_writer", "the bot's trade and episode writer"),
                          ("learning_reader", "the PM's runtime steering")):
        members = roles.get(role)
        if members is None:
            found.append(Finding(f"role {role}", "action", "missing: run `lowcap-learning migrate`"))
        elif not members:
            found.append(Finding(f"role {role}", "action", f"held by no role: GRANT {role} TO <{purpose} login "
                                 "role> (docs/supabase.md)"))
        else:
            found.append(Finding(f"role {role}", "ok", "held by " + ", ".join(members)))
    if roles.get("learning_admin"):
        found.append(Finding("role learning_admin", "ok", "held by " + ", ".join(roles["learning_admin"])))
    strands, adapter = conn.execute(ADAPTER).fetchone()
    if not strands:
        found.append(Finding("adapter", "info", "public.ad_strands does not exist: the bot writes closed_trades "
                             "itself (run `lowcap-learning adapter install` if it creates ad_strands later)"))
    elif adapter:
        found.append(Finding("adapter", "ok", "ad_strands adapter installed"))
    else:
        found.append(Finding("adapter", "action", "public.ad_strands exists without the adapter: run "
                             "`lowcap-learning adapter install` as its owner"))
    return found


@click.command()
@output.json_option
@click.pass_obj
def doctor(obj, as_json: bool) -> None:
    """What the operator must still do: RLS of every table we touch, who holds learning_writer and
    learning_reader, transaction pooler or not, the ad_strands adapter. Exit 1 when something needs you."""
    url = db.database_url(obj["url"])
    with db.connection(url, autocommit=True) as conn:
        found = diagnose(conn, url)
    needs = [f for f in found if f.status == "action"]
    if as_json:
        click.echo(output.dumps({"ok": not needs, "findings": [asdict(f) for f in found]}, indent=2))
    else:
        for f in found:
            click.echo(f"{f.status.upper():<7}{f.area}: {f.message}")
        click.echo("doctor: nothing to do" if not needs else f"doctor: {len(needs)} thing(s) need the operator")
    if needs:
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(doctor)
