-- Revision 0005 merges the tunables at each call and has no table of them.
DROP TABLE IF EXISTS learning.effective_tunables;

-- The SQL-bodied functions that call ewma_short, ewma_long and _series_json go before them (they
-- are created again below).
DROP FUNCTION IF EXISTS learning._decision_maker_config(double precision [], double precision [], integer []);
