"""PM strength jobs (design §11, §14): the lesson builder and the strength materializer, each one transaction.

Business rules live in SQL (learning.build_strength_lessons, learning.materialize_strength_overrides);
this module runs them and returns the counts they return.
"""

from __future__ import annotations

from datetime import timedelta

BUILD = """
SELECT b.lessons, b.trades, b.inserted, b.updated, b.deactivated
FROM learning.build_strength_lessons(
    p_as_of => coalesce(%(as_of)s::timestamptz, pg_catalog.now()),
    p_lookback => %(lookback)s::interval,
    p_n_min => %(n_min)s::integer
) AS b
"""
MATERIALIZE = (
    "SELECT m.active, m.written, m.deactivated, m.no_override FROM learning.materialize_strength_overrides() AS m"
)


def run_lesson_builder(conn, as_of=None, lookback: timedelta | None = None, n_min: int | None = None) -> dict:
    """Build pm_strength lessons in (as_of - lookback, as_of]; returns counts.

    {"lessons", "active", "inserted", "updated", "deactivated", "trades"}; as_of defaults to now,
    lookback and n_min to the tunables.
    """
    with conn.transaction():
        lessons, trades, inserted, updated, deactivated = conn.execute(
            BUILD, {"as_of": as_of, "lookback": lookback, "n_min": n_min}
        ).fetchone()
    return {
        "trades": trades,
        "lessons": lessons,
        "active": lessons,
        "inserted": inserted,
        "updated": updated,
        "deactivated": deactivated,
    }


def materialize_strength(conn, as_of=None) -> dict:
    """Write active directional pm_strength lessons to pm_overrides; returns counts.

    {"active", "written", "deactivated", "no_override"}. as_of is accepted for the job interface;
    the materializer reads the current lessons.
    """
    del as_of
    with conn.transaction():
        active, written, deactivated, no_override = conn.execute(MATERIALIZE).fetchone()
    return {"active": active, "written": written, "deactivated": deactivated, "no_override": no_override}
