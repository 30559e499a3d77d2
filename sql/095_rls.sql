-- Row-level security on the public tables this project created (Supabase exposes schema public over
-- its HTTP API and grants anon and authenticated everything on new tables there by default).
-- Tables the bot already had (learning.adopted_tables.existed_before) are left as the bot keeps
-- them: their RLS and grants are the bot's to decide. Alembic's version table is ours too.
--
-- A table with RLS and no policy admits only its owner (and roles with BYPASSRLS, such as Supabase's
-- service_role). Our SECURITY DEFINER triggers and functions run as the owner, so they are unaffected;
-- our roles, which read or write the tables directly, get one permissive policy that admits every row,
-- so their table privileges (sql/090_roles.sql) alone decide what they may do. anon and authenticated
-- get no policy and lose the privileges Supabase's default privileges gave them.
DO $rls$
DECLARE
    t record;
    seq text;
    to_roles text;
    web_roles text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname), ', ' ORDER BY r.rolname)
    INTO to_roles
    FROM pg_catalog.pg_roles AS r
    WHERE r.rolname IN ('learning_writer', 'learning_reader', 'learning_admin', 'service_role');
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname), ', ' ORDER BY r.rolname)
    INTO web_roles
    FROM pg_catalog.pg_roles AS r
    WHERE r.rolname IN ('anon', 'authenticated');
    FOR t IN
        SELECT a.table_name AS name, true AS with_policy
        FROM learning.adopted_tables AS a
        WHERE NOT a.existed_before AND pg_catalog.to_regclass('public.' || a.table_name) IS NOT NULL
        UNION ALL
        SELECT 'lowcap_learning_alembic_version', false
        WHERE pg_catalog.to_regclass('public.lowcap_learning_alembic_version') IS NOT NULL
        ORDER BY name
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t.name);
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS lowcap_learning_roles ON public.%I', t.name);
        IF t.with_policy THEN
            EXECUTE pg_catalog.format(
                'CREATE POLICY lowcap_learning_roles ON public.%I AS PERMISSIVE FOR ALL TO %s '
                'USING (true) WITH CHECK (true)',
                t.name, to_roles
            );
        END IF;
        IF web_roles IS NOT NULL THEN
            EXECUTE pg_catalog.format('REVOKE ALL ON public.%I FROM %s', t.name, web_roles);
            seq := NULL;
            IF EXISTS (
                SELECT FROM pg_catalog.pg_attribute AS a
                WHERE a.attrelid = pg_catalog.to_regclass('public.' || t.name)
                    AND a.attname = 'id' AND NOT a.attisdropped
            ) THEN
                seq := pg_catalog.pg_get_serial_sequence(pg_catalog.format('public.%I', t.name), 'id');
            END IF;
            IF seq IS NOT NULL THEN
                EXECUTE pg_catalog.format('REVOKE ALL ON SEQUENCE %s FROM %s', seq, web_roles);
            END IF;
        END IF;
    END LOOP;
END
$rls$;
