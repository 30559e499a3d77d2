"""The tuning miner job (design §9): learning.mine_tuning_lessons in one transaction."""

from __future__ import annotations

MINE = "SELECT learning.mine_tuning_lessons(p_as_of => coalesce(%(as_of)s::timestamptz, pg_catalog.now()))"
COUNT_ACTIVE = """
SELECT
    pg_catalog.count(*) FILTER (WHERE l.status = 'active'),
    pg_catalog.count(*) FILTER (WHERE l.status = 'inactive')
FROM public.learning_lessons AS l
WHERE l.module = 'pm' AND l.lesson_type = 'tuning_rates'
"""


def run_tuning_miner(conn, as_of=None) -> dict:
    """Mine tuning_rates lessons in (as_of - lookback_days, as_of]; returns counts."""
    with conn.transaction():
        lessons = conn.execute(MINE, {"as_of": as_of}).fetchone()[0]
        active, inactive = conn.execute(COUNT_ACTIVE).fetchone()
    return {"lessons": lessons, "active": active, "inactive": inactive}
