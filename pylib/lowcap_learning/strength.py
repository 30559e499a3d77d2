"""PM strength jobs (contract 2): the lesson builder and the strength materializer, each one transaction.

Business rules live in SQL (learning.build_strength_lessons, learning.materialize_strength_overrides);
this module runs them and returns their counts (set by the SQL in transaction-local settings).
"""

from __future__ import annotations

import json
from datetime import timedelta

BUILD = """
SELECT learning.build_strength_lessons(
    p_as_of => coalesce(%(as_of)s::timestamptz, pg_catalog.now()),
    p_lookback => %(lookback)s::interval,
    p_n_min => %(n_min)s::integer
)
"""
BUILD_COUNTS = "SELECT pg_catalog.current_setting('learning.strength_lessons_counts', true)"
MATERIALIZE = "SELECT learning.materialize_strength_overrides()"
MATERIALIZE_COUNTS = "SELECT pg_catalog.current_setting('learning.strength_overrides_counts', true)"


def _counts(text: str | None) -> dict:
    return json.loads(text) if text else {}


def run_lesson_builder(conn, as_of=None, lookback: timedelta | None = None, n_min: int | None = None) -> dict:
    """Build pm_strength lessons in (as_of - lookback, as_of]; returns counts.

    {"lessons", "active", "inserted", "updated", "deactivated", "trades"}; as_of defaults to now,
    lookback and n_min to the tunables.
    """
    with conn.transaction():
        lessons = conn.execute(BUILD, {"as_of": as_of, "lookback": lookback, "n_min": n_min}).fetchone()[0]
        counts = _counts(conn.execute(BUILD_COUNTS).fetchone()[0])
    counts["lessons"] = lessons
    return counts


def materialize_strength(conn, as_of=None) -> dict:
    """Write active directional pm_strength lessons to pm_overrides; returns counts.

    {"active", "written", "deactivated", "no_override"}. as_of is accepted for the job interface;
    the materializer reads the current lessons.
    """
    del as_of
    with conn.transaction():
        active = conn.execute(MATERIALIZE).fetchone()[0]
        counts = _counts(conn.execute(MATERIALIZE_COUNTS).fetchone()[0])
    counts["active"] = active
    return counts
