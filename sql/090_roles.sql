-- Roles and grants (design §2). Loaded last, so every function of sql/ exists here.
-- learning_writer: the bot's trade and episode writer; learning_reader: readers of allocation,
-- overrides and the runtime selectors; learning_admin: the operators of this system.
-- Roles are cluster-wide: created when missing, NOLOGIN (grant them to login roles), never
-- dropped by a downgrade. The grants below are idempotent and re-derived from pg_catalog, so
-- re-running this file after functions were added keeps every rule true.

DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['learning_writer', 'learning_reader', 'learning_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created by a concurrent migration of another database of the cluster
            END;
        END IF;
    END LOOP;
END
$roles$;

COMMENT ON ROLE learning_writer IS
'lowcap-learning: INSERT closed_trades and pattern_episode_events, learning.set_episode_outcome';
COMMENT ON ROLE learning_reader IS
'lowcap-learning: SELECT the data tables, EXECUTE the reader and runtime functions';
COMMENT ON ROLE learning_admin IS
'lowcap-learning: everything in schema learning, tunables, flags and jobs';

-- ---------------------------------------------------------------------------------------------
-- Nothing in schema learning is callable by PUBLIC. PostgreSQL can revoke a default privilege
-- from PUBLIC only globally (per schema it can only add), which would also strip EXECUTE from
-- every later function and extension of the bot's migrating role; so it is not done. Later
-- functions are covered instead by this file running last on every migration, PUBLIC having no
-- USAGE on schema learning, and tests/test_security_search_path.py (design §2).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA learning FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON ALL TABLES IN SCHEMA learning FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON SCHEMA learning FROM PUBLIC;  -- noqa: CP02

GRANT USAGE ON SCHEMA learning TO learning_writer, learning_reader, learning_admin;

-- Later objects of schema learning: the admin reads and writes rows, the reader reads the tables.
-- Never ALL on tables: ALL includes TRIGGER, and a trigger the admin put on a table our SECURITY
-- DEFINER functions write (learning_log, job_runs, ...) would run as their owner.
ALTER DEFAULT PRIVILEGES IN SCHEMA learning GRANT EXECUTE ON FUNCTIONS TO learning_admin;
ALTER DEFAULT PRIVILEGES IN SCHEMA learning REVOKE ALL ON TABLES FROM learning_admin;
ALTER DEFAULT PRIVILEGES IN SCHEMA learning GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO learning_admin;
ALTER DEFAULT PRIVILEGES IN SCHEMA learning GRANT ALL ON SEQUENCES TO learning_admin;
ALTER DEFAULT PRIVILEGES IN SCHEMA learning GRANT SELECT ON TABLES TO learning_reader;

-- Revoked first so every table's ACL lists the admin, then the reader, whether the table got its
-- grants from the default privileges above (created by a later migration) or from here.
REVOKE ALL ON ALL TABLES IN SCHEMA learning FROM learning_admin, learning_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA learning TO learning_admin;
-- What the tunables may be, and which tables a downgrade may drop, are the migration's alone; the
-- tunables in effect are its triggers' (set_tunable and the learning row set them, validated).
REVOKE INSERT, UPDATE, DELETE ON learning.tunable_specs, learning.adopted_tables, learning.effective_tunables
FROM learning_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA learning TO learning_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA learning TO learning_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA learning TO learning_reader;

-- ---------------------------------------------------------------------------------------------
-- Shared data tables (public). A writer only appends: the SECURITY DEFINER triggers update the
-- configs, positions, history and log on its behalf, so it never holds UPDATE on them.
-- INSERT ... RETURNING needs SELECT too: a bot that reads back ids also holds learning_reader.
-- The one column a writer may read is closed_trades.trade_id: the retry idiom
-- `ON CONFLICT (trade_id) DO NOTHING` names it as its conflict target, which needs SELECT on it.
DO $tables$
DECLARE
    t record;
    seq text;
BEGIN
    FOR t IN
        SELECT x.name, x.writer, x.admin
        FROM (
            VALUES
            ('closed_trades', 'INSERT', 'SELECT, INSERT'),
            ('pattern_episode_events', 'INSERT', 'SELECT, INSERT, UPDATE'),
            ('pattern_trade_events', NULL, 'SELECT'),
            ('learning_configs', NULL, 'SELECT, INSERT, UPDATE'),
            ('lowcap_positions', NULL, 'SELECT'),
            ('learning_lessons', NULL, 'SELECT, INSERT, UPDATE, DELETE'),
            ('pm_overrides', NULL, 'SELECT, INSERT, UPDATE, DELETE')
        ) AS x (name, writer, admin)
        WHERE pg_catalog.to_regclass('public.' || x.name) IS NOT NULL
    LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON public.%I TO learning_reader', t.name);
        EXECUTE pg_catalog.format('GRANT %s ON public.%I TO learning_admin', t.admin, t.name);
        seq := NULL;
        IF EXISTS (
            SELECT FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = pg_catalog.to_regclass('public.' || t.name)
                AND a.attname = 'id' AND NOT a.attisdropped
        ) THEN
            seq := pg_catalog.pg_get_serial_sequence(pg_catalog.format('public.%I', t.name), 'id');
        END IF;
        IF seq IS NOT NULL THEN
            EXECUTE pg_catalog.format('GRANT USAGE ON SEQUENCE %s TO learning_admin', seq);
        END IF;
        IF t.writer IS NOT NULL THEN
            EXECUTE pg_catalog.format('GRANT %s ON public.%I TO learning_writer', t.writer, t.name);
            IF seq IS NOT NULL THEN
                EXECUTE pg_catalog.format('GRANT USAGE ON SEQUENCE %s TO learning_writer', seq);
            END IF;
        END IF;
    END LOOP;
END
$tables$;

DO $retry$
BEGIN
    IF pg_catalog.to_regclass('public.closed_trades') IS NOT NULL THEN
        GRANT SELECT (trade_id) ON public.closed_trades TO learning_writer;
    END IF;
END
$retry$;

-- ---------------------------------------------------------------------------------------------
-- Functions. Named API functions are granted when they exist (helpers add functions in parallel;
-- a missing name is skipped, not an error). Besides the names:
-- - the reader may call every non-volatile function that runs with its own rights (read-only by
--   construction: PostgreSQL refuses writes in STABLE/IMMUTABLE functions, and its table grants apply);
-- - the writer may call every IMMUTABLE function that runs with its own rights (pure maths).
-- SECURITY DEFINER functions are only ever granted by name. Revoke-then-grant keeps a re-run exact.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA learning FROM learning_writer, learning_reader;

DO $functions$
DECLARE
    f record;
    writer_api CONSTANT text [] := ARRAY['set_episode_outcome'];
    reader_api CONSTANT text [] := ARRAY[
        'timeframe_allocation', 'global_roi', 'select_execution_overrides', 'select_strength_overrides',
        'match_strength_overrides', 'strength_overrides', 'feature_flag', 'tunables', 'scope_dimensions',
        'recomputed_roi_state', 'last_job_runs'
    ];
BEGIN
    FOR f IN
        SELECT
            p.oid::regprocedure AS signature,
            p.proname = any(writer_api)
            OR (p.provolatile = 'i' AND NOT p.prosecdef) AS to_writer,
            p.proname = any(reader_api)
            OR (p.provolatile IN ('i', 's') AND NOT p.prosecdef) AS to_reader
        FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'learning'::regnamespace
            AND p.prokind = 'f'
            AND p.prorettype <> 'trigger'::regtype
    LOOP
        IF f.to_writer THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO learning_writer', f.signature);
        END IF;
        IF f.to_reader THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO learning_reader', f.signature);
        END IF;
    END LOOP;
END
$functions$;
