"""design §2: nothing a caller plants in its temporary schema runs as the functions' owner.

A session's temporary schema is searched for relation and type names even when search_path leaves it
out, and *first* unless it is named; so a definer function pinned to `''` resolved `jsonb` to a
caller's temp domain whose CHECK ran as the owner. The functions now pin `pg_catalog, pg_temp`
(design §2, search_path). For every role that reaches a SECURITY DEFINER function — the
writer, the reader, the admin and a role that inserts into the bot's ad_strands — these tests plant
temp domains under every type name our functions use and temp tables (with triggers, forced
row-level security and defaults) or temp views under every relation name they use, call every entry
point of that role, and prove that nothing planted ran as anyone but the caller, that the caller did
not become a superuser, and that every entry point still did its work.
"""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest
from psycopg import conninfo, sql

from conftest import reset_learning
from lowcap_learning.db import SQL_DIR

# Every built-in type name an attacker could shadow, by the names our SQL spells them with.
TYPE_NAMES = [
    "jsonb", "json", "text", "tid", "float8", "float4", "numeric", "int2", "int4", "int8", "bool",
    "timestamptz", "timestamp", "interval", "uuid", "name", "oid", "regclass", "regtype", "bytea",
    "varchar", "date", "xid", "xid8", "regnamespace", "regprocedure", "regrole", "bpchar",
]

EVIL = """
CREATE FUNCTION pg_temp.evil() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE WARNING 'PLANTED ran as % in a session of %', current_user, session_user;
    IF current_user <> session_user THEN
        BEGIN
            EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', session_user);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END IF;
    RETURN true;
END $$;
CREATE FUNCTION pg_temp.evil_any(anyelement) RETURNS boolean LANGUAGE sql AS 'SELECT pg_temp.evil()';
CREATE FUNCTION pg_temp.evil_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.evil();
    RETURN NULL;
END $$;
"""


def relation_names(conn) -> list[str]:
    """Every relation name our functions could reach: the tables of public and learning, and the temp
    tables the functions create themselves."""
    names = {
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class AS c WHERE c.relkind IN ('r', 'v', 'p', 'm', 'S')"
            " AND c.relnamespace IN ('public'::regnamespace, 'learning'::regnamespace)"
        )
    }
    for path in SQL_DIR.glob("*.sql"):
        made = re.findall(r"CREATE TEMP(?:ORARY)? TABLE (?:IF NOT EXISTS )?(\w+)", path.read_text())
        names |= {m.lower() for m in made}
    names |= {"ad_strands", "slice_cells"}
    return sorted(names)


def plant(conn, relations: list[str], as_views: bool) -> None:
    conn.execute(EVIL)
    for t in TYPE_NAMES:
        conn.execute(
            sql.SQL("CREATE DOMAIN pg_temp.{} AS pg_catalog.{} CHECK (pg_temp.evil_any(VALUE))").format(
                sql.Identifier(t), sql.Identifier(t)
            )
        )
    for r in relations:
        ident = sql.Identifier(r)
        if as_views:
            conn.execute(sql.SQL("CREATE TEMP VIEW {} AS SELECT pg_temp.evil() AS planted").format(ident))
            continue
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (planted pg_catalog.bool DEFAULT pg_temp.evil())").format(ident)
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER planted_row BEFORE INSERT OR UPDATE OR DELETE ON pg_temp.{} "
                "FOR EACH ROW EXECUTE FUNCTION pg_temp.evil_trigger()"
            ).format(ident)
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER planted_statement BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON pg_temp.{} "
                "FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.evil_trigger()"
            ).format(ident)
        )
        conn.execute(sql.SQL("ALTER TABLE pg_temp.{} ENABLE ROW LEVEL SECURITY").format(ident))
        conn.execute(sql.SQL("ALTER TABLE pg_temp.{} FORCE ROW LEVEL SECURITY").format(ident))
        conn.execute(
            sql.SQL("CREATE POLICY planted ON pg_temp.{} USING (pg_temp.evil()) WITH CHECK (pg_temp.evil())").format(
                ident
            )
        )
        conn.execute(sql.SQL("INSERT INTO pg_temp.{} DEFAULT VALUES").format(ident))


AD_STRANDS = """
CREATE TABLE IF NOT EXISTS public.ad_strands (
    id text PRIMARY KEY, module text, kind text, symbol text, timeframe text, position_id text,
    trade_id uuid, content jsonb, regime_context jsonb, tags jsonb, target_agent text,
    created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now()
)
"""


def _strand(n: int) -> str:
    import json

    trade = f"00000000-0000-4000-8000-{n:012d}"
    return json.dumps(
        {
            "trade_id": trade,
            "completed_trades": [
                {
                    "trade_id": trade,
                    "actions": [
                        {"ts": "2026-01-01T00:00:00Z", "decision_type": "entry", "pattern_key": "pm.hj.S1.entry",
                         "action_category": "entry", "scope": {"chain": "solana"}}
                    ],
                    "summary": {"rpnl_pct": 3.0, "exit_timestamp": "2026-01-02T00:00:00Z"},
                }
            ],
        }
    )


# Each role's entry points: statements run one transaction each, in the attacker's session, with the
# attacker's own types kept out of the way by spelling pg_catalog in the statement itself.
# The per-trade rule functions carry no SET clause (design §2): called first here, they are compiled
# in the attacker's session, with its temp types first on the path, before its trades reach them as
# the owner.
RULE_CALLS = [
    "SELECT (learning.allocation_step('{{0.15,0.5,0.35}}', '{{0.01,-0.02,0.03}}', '{{5,5,5}}', 0.003, 5, 0.05,"
    " '{{0.2,0.5,0.3}}')).reason",
    "SELECT (learning.allocation_step('{{0.15,0.5,0.35}}', '{{0.01,-0.02,0.03}}', '{{0,0,1}}')).reason",
    "SELECT learning.evidence_split(pg_catalog.array_fill(1.5::pg_catalog.float8, ARRAY[36]), '{{5,5,5,15}}')",
    "SELECT learning.ewma_fold('{{0,0.1,1,0.1,1,0.01,1,0.01,1}}', 0.2, 1000, 86400, 864000)",
]
ENTRY_POINTS = {
    "learning_writer": RULE_CALLS + [
        "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions) VALUES "
        "('hj-{n}-a', '15m', 5, '2026-01-01T00:00:00Z', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object("
        "'pattern_key', 'pm.hj.S1.entry', 'action_category', 'entry', 'scope', "
        "pg_catalog.jsonb_build_object('chain', 'solana'))))",
        "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions) VALUES "
        "('hj-{n}-b', '1h', -2, '2026-01-02T00:00:00Z', pg_catalog.jsonb_build_array())",
        "INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, factors) VALUES "
        "(pg_catalog.jsonb_build_object('chain', 'solana'), 'pm.hj.S1.entry', 'hj-ep-{n}', 'skipped', "
        "pg_catalog.jsonb_build_object('ts_min', 0.6, 'halo_max', 1.0, 'slope_min', 0.0, 'samples', "
        "pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('ts_score', 0.55, 'ts_ok', false, "
        "'halo_distance', 0.7, 'entry_zone_ok', true, 'ema60_slope', 0.001, 'ema144_slope', -0.002, "
        "'slope_ok', true))))",
        "SELECT learning.set_episode_outcome('hj-ep-{n}', 'success')",
    ],
    "learning_reader": [
        "SELECT * FROM learning.timeframe_allocation()",
        "SELECT learning.global_roi()",
        "SELECT learning.tunables()",
        "SELECT learning.feature_flag('pm', 'ae_v2_enabled')",
        "SELECT * FROM learning.select_execution_overrides('pm.hj.S1.entry', '{{\"chain\": \"solana\"}}')",
        "SELECT * FROM learning.last_job_runs()",
        "SELECT * FROM learning.recomputed_roi_state()",
    ],
    "learning_admin": [
        "SELECT learning.set_tunable('max_step', '0.004')",
        "UPDATE public.learning_configs SET config_data = config_data "
        "|| pg_catalog.jsonb_build_object('tau_short_days', 15) WHERE module_id = 'learning'",
        "SELECT learning.set_feature_flag('pm', 'ae_v2_enabled', true)",
        "SELECT learning.recompute_roi_state()",
        "SELECT learning.mine_tuning_lessons('2026-01-03T00:00:00Z')",
        "SELECT learning.build_strength_lessons('2026-01-03T00:00:00Z')",
        "SELECT learning.materialize_strength_overrides()",
        "SELECT learning.install_ad_strands_adapter()",
        "SELECT learning.ensure_decision_maker_config()",
        "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions) VALUES "
        "('hj-{n}-c', '4h', 1, '2026-01-02T12:00:00Z', pg_catalog.jsonb_build_array())",
    ],
    "ad_strands_inserter": [
        "INSERT INTO public.ad_strands (id, module, kind, content) VALUES "
        "('hj-strand-{n}', 'pm', 'position_closed', '{strand}')",
    ],
}


@pytest.fixture(scope="module")
def attacker_db(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        reset_learning(conn)
        conn.execute(AD_STRANDS)
        assert conn.execute("SELECT learning.install_ad_strands_adapter()").fetchone()[0] is True
        conn.execute(
            "INSERT INTO public.lowcap_positions (token_contract, token_chain, timeframe, status, total_allocation_pct)"
            " VALUES ('0xhj', 'solana', '15m', 'active', 3.0), ('0xhj', 'solana', '1h', 'active', 10.0),"
            " ('0xhj', 'solana', '4h', 'active', 7.0)"
        )
        relations = relation_names(conn)
    return db_url, relations


@pytest.fixture
def attacker(db_url):
    """A LOGIN role made for one test; dropped after it."""
    name = f"hj_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def grant_role(db_url: str, attacker: str, role: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        if role == "ad_strands_inserter":
            conn.execute(sql.SQL("GRANT INSERT ON public.ad_strands TO {}").format(sql.Identifier(attacker)))
        else:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(attacker)))


@pytest.mark.parametrize("as_views", [False, True], ids=["temp-tables", "temp-views"])
@pytest.mark.parametrize("role", sorted(ENTRY_POINTS))
def test_nothing_planted_runs_as_the_owner(attacker_db, attacker, role, as_views):
    db_url, relations = attacker_db
    grant_role(db_url, attacker, role)
    url = conninfo.make_conninfo(db_url, user=attacker)
    warnings: list[str] = []
    failures: list[str] = []
    n = uuid.uuid4().int % 10**9
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: warnings.append(d.message_primary or ""))
        plant(conn, relations, as_views)
        planted_at_plant_time = len(warnings)
        # The caller's own path puts its temp schema first, as an attacker would.
        conn.execute("SET search_path = pg_temp, public, learning, pg_catalog")
        for statement in ENTRY_POINTS[role]:
            text = statement.replace("{n}", str(n)).replace("{{", "{").replace("}}", "}")
            text = text.replace("{strand}", _strand(n))
            try:
                conn.execute(text.encode())
            except psycopg.Error as err:
                failures.append(f"{statement[:60]}…: {err.diag.message_primary}")
        superuser = conn.execute(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
        ).fetchone()[0]
    mine = f"PLANTED ran as {attacker} "
    as_someone_else = [w for w in warnings if w.startswith("PLANTED") and not w.startswith(mine)]
    assert as_someone_else == [], f"planted code ran as another role: {as_someone_else[:5]}"
    assert superuser is False, "the caller made itself a superuser"
    # Our functions never even touched a planted object (the caller's own planting is not counted).
    assert [w for w in warnings[planted_at_plant_time:] if w.startswith("PLANTED")] == []
    if as_views:
        # A job that finds a caller's view where it makes its own temp table refuses to drop it: the
        # caller has only stopped its own call (self-inflicted, harmless).
        failures = [f for f in failures if not f.endswith("is not a table")]
    assert failures == [], f"entry points failed with the planted objects present: {failures}"


def test_the_entry_points_did_their_work(attacker_db, attacker):
    """The writer's trades under planted objects were learned from: the statements above are not
    vacuous (a trade that silently did nothing would also run nothing planted)."""
    db_url, relations = attacker_db
    grant_role(db_url, attacker, "learning_writer")
    url = conninfo.make_conninfo(db_url, user=attacker)
    with psycopg.connect(url, autocommit=True) as conn:
        plant(conn, relations, as_views=False)
        n = uuid.uuid4().int % 10**9
        for statement in RULE_CALLS + ENTRY_POINTS["learning_writer"][len(RULE_CALLS):][:2]:
            conn.execute(statement.replace("{n}", str(n)).replace("{{", "{").replace("}}", "}").encode())
    with psycopg.connect(db_url) as conn:
        learned = conn.execute(
            "SELECT count(*) FROM learning.allocation_history WHERE trade_id LIKE %s", (f"hj-{n}-%",)
        ).fetchone()[0]
        positions = conn.execute(
            "SELECT sum(total_allocation_pct) FROM public.lowcap_positions WHERE token_contract = '0xhj'"
        ).fetchone()[0]
    assert learned == 2
    assert positions == pytest.approx(20.0, rel=1e-12)


NO_TRIGGER_PRIVILEGE = """
SELECT c.oid::regclass::text, r.rolname, a.privilege_type
FROM pg_catalog.pg_class AS c
CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) AS a
INNER JOIN pg_catalog.pg_roles AS r ON r.oid = a.grantee
WHERE c.relnamespace IN ('learning'::regnamespace, 'public'::regnamespace) AND c.relkind IN ('r', 'p', 'v')
    AND r.rolname LIKE 'learning\\_%' AND a.privilege_type IN ('TRIGGER', 'REFERENCES')
ORDER BY 1, 2, 3
"""


def test_no_learning_role_may_put_a_trigger_on_our_tables(conn):
    """ALL on a table includes TRIGGER: a trigger on a table our definer functions write (learning_log,
    job_runs, ...) runs as their owner. No role of ours holds TRIGGER (or REFERENCES) anywhere."""
    assert conn.execute(NO_TRIGGER_PRIVILEGE).fetchall() == []
    defaults = conn.execute(
        "SELECT d.defaclacl::text FROM pg_catalog.pg_default_acl AS d"
        " WHERE d.defaclnamespace = 'learning'::regnamespace AND d.defaclobjtype = 'r'"
    ).fetchall()
    assert defaults and all("learning_admin=arwd/" in acl[0] for acl in defaults), defaults


def test_the_admin_cannot_plant_a_trigger_that_runs_as_the_owner(attacker_db, attacker):
    db_url, _ = attacker_db
    grant_role(db_url, attacker, "learning_admin")
    url = conninfo.make_conninfo(db_url, user=attacker)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(EVIL)
        for table in ("learning.learning_log", "learning.job_runs", "learning.allocation_history",
                      "learning.pending_redistribution"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    f"CREATE TRIGGER planted AFTER INSERT ON {table}"
                    " FOR EACH ROW EXECUTE FUNCTION pg_temp.evil_trigger()"
                )
        for statement in (
            "UPDATE learning.tunable_specs SET max_value = 1000 WHERE key = 'max_step'",
            "DELETE FROM learning.adopted_tables",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        conn.execute("SELECT learning.set_tunable('max_step', '0.003')")
        superuser = conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()[0]
    assert superuser is False
