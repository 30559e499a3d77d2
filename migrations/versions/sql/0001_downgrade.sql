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
    -- The learning state is a function of closed_trades: when that table goes, so does the state we
    -- keep in the decision_maker row (the bot's legacy global_roi comes back).
    IF EXISTS (
        SELECT FROM learning.adopted_tables WHERE table_name = 'closed_trades' AND NOT existed_before
    ) AND EXISTS (
        SELECT FROM learning.adopted_tables WHERE table_name = 'learning_configs' AND existed_before
    ) THEN
        UPDATE public.learning_configs
        SET config_data = (config_data - 'timeframe_allocation' - 'global_roi' - 'learning_state'
            - 'global_roi_legacy_pct')
            || CASE WHEN config_data ? 'global_roi_legacy_pct'
                THEN pg_catalog.jsonb_build_object('global_roi', config_data -> 'global_roi_legacy_pct')
                ELSE '{}'::jsonb END
        WHERE module_id = 'decision_maker';
    END IF;
    FOR r IN
        SELECT table_name FROM learning.adopted_tables WHERE NOT existed_before
    LOOP
        EXECUTE pg_catalog.format('DROP TABLE IF EXISTS public.%I CASCADE', r.table_name);
    END LOOP;
END
$down$;

DROP SCHEMA IF EXISTS learning CASCADE;
