-- Downgrade to base: remove the learning schema, our triggers and functions, and the shared tables
-- this project created. Tables the bot had before are kept with every row (and with the columns
-- we added, which hold its data now); roles are cluster-wide and are kept too.

DO $down$
DECLARE
    r record;
BEGIN
    IF pg_catalog.to_regnamespace('learning') IS NULL THEN
        RETURN;
    END IF;
    -- Our triggers on tables that stay (the bot's own tables, ad_strands).
    FOR r IN
        SELECT t.tgname, c.relname
        FROM pg_catalog.pg_trigger AS t
        INNER JOIN pg_catalog.pg_class AS c ON t.tgrelid = c.oid
        INNER JOIN pg_catalog.pg_proc AS p ON t.tgfoid = p.oid
        WHERE p.pronamespace = 'learning'::regnamespace
            AND c.relnamespace = 'public'::regnamespace
            AND NOT t.tgisinternal
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON public.%I', r.tgname, r.relname);
    END LOOP;
    FOR r IN
        SELECT table_name FROM learning.adopted_tables WHERE NOT existed_before
    LOOP
        EXECUTE pg_catalog.format('DROP TABLE IF EXISTS public.%I CASCADE', r.table_name);
    END LOOP;
END
$down$;

DROP SCHEMA IF EXISTS learning CASCADE;
