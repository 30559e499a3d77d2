-- No write of learning_configs until this commits: one that landed after the merge below is read
-- would be in effect in the learning row but not in learning.effective_tunables.
LOCK TABLE public.learning_configs IN SHARE ROW EXCLUSIVE MODE;

-- The tunables in effect, kept by triggers so a trade reads one row (design §3); filled at the end.
CREATE TABLE IF NOT EXISTS learning.effective_tunables (
    singleton boolean PRIMARY KEY DEFAULT true,
    tunables jsonb NOT NULL,
    CONSTRAINT effective_tunables_singleton_check CHECK (singleton)
);

-- ewma_short, ewma_long and _series_json take a series number now; the SQL-bodied functions that
-- call them depend on them and go first (they are created again below).
DROP FUNCTION IF EXISTS learning._decision_maker_config(double precision [], double precision [], integer []);
