-- The tunables in effect at this upgrade, merged by the function that keeps them from now on.
INSERT INTO learning.effective_tunables (singleton, tunables)
VALUES (true, learning._effective_tunables())
ON CONFLICT (singleton) DO NOTHING;
