"""Size limits of an episode window (pattern_episode_events), enforced by the capture trigger.

A window over a limit is refused with program_limit_exceeded (54000) and a message naming the field,
its size and the limit, before any work on it, writing nothing; a window at a limit is captured as
usual. The limits are learning.episode_limits(). An oversized value still costs PostgreSQL's own JSON
parse of what the client sent (that happens before any trigger); the refusal adds nothing to it.
"""

from __future__ import annotations

import json
import random
import secrets
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from reliability_support import admin_session, changed, snapshot, writer_session  # noqa: F401 - fixtures

INSERT = """
INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, factors)
VALUES (%(scope)s::jsonb, %(pattern_key)s::text, %(episode_id)s::text, %(decision)s::text, %(factors)s::jsonb)
"""
# The sample fields the bot's PM produces (BOT_SHAPES.md), all present: a full-width window.
FIELDS = (
    "ts_score",
    "ts_with_boost",
    "sr_boost",
    "halo",
    "halo_distance",
    "price",
    "ema60",
    "ema60_slope",
    "ema144_slope",
    "a_value",
)


@pytest.fixture(scope="module")
def limits(admin) -> dict:
    return admin.execute("SELECT learning.episode_limits()").fetchone()[0]


def _samples(n: int, fields=FIELDS) -> list[dict]:
    rng = random.Random(n)
    return [
        {f: rng.random() for f in fields} | {"ts_ok": True, "slope_ok": False, "entry_zone_ok": True} for _ in range(n)
    ]


def _window(**overrides) -> dict:
    row = {
        "scope": '{"chain": "solana", "timeframe": "15m"}',
        "pattern_key": "pm.uptrend.S1.entry",
        "episode_id": f"lim-{uuid.uuid4().hex[:10]}",
        "decision": "skipped",
        "factors": json.dumps({"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "samples": _samples(3)}),
    }
    row.update(overrides)
    return row


def _refused(conn, admin, row: dict) -> tuple[psycopg.Error, float]:
    """Insert row on conn expecting a refusal; (the error, seconds taken); asserts nothing was written."""
    before = snapshot(admin)
    started = time.monotonic()
    with pytest.raises(psycopg.Error) as info:
        conn.execute(INSERT, row)
    elapsed = time.monotonic() - started
    assert changed(before, snapshot(admin)) == set(), "a refused window writes nothing"
    return info.value, elapsed


def _is_limit(err: psycopg.Error, *fragments: str) -> None:
    assert err.diag.sqlstate == "54000", (err.diag.sqlstate, str(err))
    for fragment in fragments:
        assert fragment in err.diag.message_primary, (fragment, err.diag.message_primary)


def _peak_mib(conn: psycopg.Connection) -> int | None:
    """The server process's peak resident memory in MiB (None when the server is not on this machine)."""
    try:
        status = Path(f"/proc/{conn.info.backend_pid}/status").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) // 1024 for line in status.splitlines() if line.startswith("VmHWM:"))


# ------------------------------------------------------------------------------------- samples, factors
def test_window_just_over_the_sample_cap_is_refused_at_once(admin, writer, limits):
    cap = limits["samples"]
    assert cap == 10_000
    factors = json.dumps({"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "samples": _samples(cap + 1)})
    row = _window(factors=factors)
    err, elapsed = _refused(writer, admin, row)
    _is_limit(err, "factors.samples", row["episode_id"], f"has {cap + 1} samples", f"limit {cap}")
    assert err.diag.column_name == "factors"
    assert elapsed < 2.0, f"refused after {elapsed:.2f} s"


def test_window_at_the_sample_cap_is_captured(admin, writer, limits):
    cap = limits["samples"]
    factors = {"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "samples": _samples(cap)}
    assert len(json.dumps(factors)) < limits["factors_bytes"] / 2, "a full-width window at the cap fits twice"
    row = _window(factors=json.dumps(factors))
    started = time.monotonic()
    writer.execute(INSERT, row)
    elapsed = time.monotonic() - started
    (stored,) = admin.execute(
        "SELECT factors FROM public.pattern_episode_events WHERE episode_id = %(e)s::text", {"e": row["episode_id"]}
    ).fetchone()
    assert "samples" not in stored and stored["n_samples"] == cap
    assert stored["ts_score_max"] == max(s["ts_score"] for s in factors["samples"])
    assert elapsed < 10.0, f"captured in {elapsed:.2f} s"


def test_huge_window_costs_no_more_than_parsing_it(db_url, admin, limits):
    """The million-sample window scaled down to 60,000 samples (~10 MB): the trigger refuses it on its
    size before reading it, so the INSERT costs what PostgreSQL's JSON parse of the value costs alone
    (there it was summarised first: 72 s and 3.5 GiB for a million)."""
    factors = json.dumps({"samples": _samples(60_000, FIELDS[:3])})
    assert len(factors) > limits["factors_bytes"]
    with psycopg.connect(db_url, autocommit=True) as parser:
        started = time.monotonic()
        parser.execute("SELECT pg_catalog.pg_column_size(%(f)s::jsonb)", {"f": factors})
        parse_seconds = time.monotonic() - started
        parse_peak = _peak_mib(parser)
    with psycopg.connect(db_url, autocommit=True) as writer:
        writer.execute("SET ROLE learning_writer")
        row = _window(factors=factors)
        err, elapsed = _refused(writer, admin, row)
        peak = _peak_mib(writer)
    _is_limit(err, "factors", "bytes", f"limit {limits['factors_bytes']}")
    assert elapsed < 2 * parse_seconds + 0.5, (
        f"refused after {elapsed:.2f} s, the parse alone takes {parse_seconds:.2f} s"
    )
    if peak is not None and parse_peak is not None:
        assert peak < parse_peak + 64, f"peak {peak} MiB, the parse alone {parse_peak} MiB"


def test_compressed_samples_are_measured_uncompressed(admin, limits):
    """A value read from a table arrives compressed: small as stored, large once read. The samples are
    measured as the summary would read them."""
    admin.execute(
        """
        CREATE TEMP TABLE wide_source AS
        SELECT pg_catalog.jsonb_build_object('samples', pg_catalog.jsonb_agg(s.o)) AS f
        FROM (
            SELECT (SELECT pg_catalog.jsonb_object_agg('field_' || k, 0.5) FROM generate_series(1, 600) AS k) AS o
            FROM generate_series(1, 1000)
        ) AS s
        """
    )
    stored, raw = admin.execute(
        "SELECT pg_column_size(f), pg_column_size(f -> 'samples') FROM pg_temp.wide_source"
    ).fetchone()
    assert stored < limits["factors_bytes"] < raw
    before = snapshot(admin)
    started = time.monotonic()
    with pytest.raises(psycopg.Error) as info:
        admin.execute(
            "INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, factors)"
            " SELECT '{}', 'pm.x', 'lim-compressed', 'skipped', f FROM pg_temp.wide_source"
        )
    elapsed = time.monotonic() - started
    admin.execute("DROP TABLE pg_temp.wide_source")
    # The whole factors' JSON text is over the limit before its samples are looked at.
    _is_limit(
        info.value, "pattern_episode_events.factors of episode lim-compressed is", f"limit {limits['factors_bytes']}"
    )
    assert elapsed < 2.0, f"refused after {elapsed:.2f} s"
    assert changed(before, snapshot(admin)) == set()


# ------------------------------------------------------------------------------------- keys and scope
@pytest.mark.parametrize("field", ["pattern_key", "episode_id"])
@pytest.mark.parametrize("length", [201, 3000, 1 << 20])
def test_long_key_is_refused_naming_the_field(admin, writer, limits, field, length):
    """Random (incompressible) text: 3000 characters used to fail on the btree row size, 1 MB on the
    index row size; either way the message did not name the field."""
    value = secrets.token_hex(length)[:length]
    err, elapsed = _refused(writer, admin, _window(**{field: value}))
    _is_limit(err, f"pattern_episode_events.{field}", f"is {length} characters", f"limit {limits[field + '_chars']}")
    assert err.diag.column_name == field
    assert elapsed < 2.0


@pytest.mark.parametrize("field", ["pattern_key", "episode_id"])
def test_key_at_the_limit_is_captured(admin, writer, limits, field):
    value = "k" * (limits[field + "_chars"] - 8) + uuid.uuid4().hex[:8]
    writer.execute(INSERT, _window(**{field: value}))
    n = admin.execute(
        f"SELECT count(*) FROM public.pattern_episode_events WHERE {field} = %(v)s::text", {"v": value}
    ).fetchone()[0]
    assert n == 1


def test_scope_over_its_limit_is_refused(admin, writer, limits):
    scope = json.dumps({"chain": "solana", "note": secrets.token_hex(limits["scope_bytes"])})
    row = _window(scope=scope)
    err, _ = _refused(writer, admin, row)
    _is_limit(err, "pattern_episode_events.scope", row["episode_id"], f"limit {limits['scope_bytes']}")
    # A long scope value under the limit is the miners' to ignore, not the insert's to refuse.
    writer.execute(INSERT, _window(scope=json.dumps({"chain": "x" * 3000})))


# ------------------------------------------------------------------------------------- outcome, updates
def test_set_episode_outcome_refuses_a_huge_episode_id(admin, writer, limits):
    """It used to return 0 and write the megabyte into the log."""
    before = snapshot(admin)
    with pytest.raises(psycopg.Error) as info:
        writer.execute("SELECT learning.set_episode_outcome(%(e)s::text, 'success')", {"e": "e" * (1 << 20)})
    _is_limit(info.value, "episode_id", f"is {1 << 20} characters", f"limit {limits['episode_id_chars']}")
    assert changed(before, snapshot(admin)) == set()

    longest = "e" * (limits["episode_id_chars"] - 8) + uuid.uuid4().hex[:8]
    writer.execute(INSERT, _window(episode_id=longest))
    n = writer.execute("SELECT learning.set_episode_outcome(%(e)s::text, 'success')", {"e": longest}).fetchone()[0]
    assert n == 1


def test_admin_updates_meet_the_same_limits(admin, writer, limits):
    row = _window()
    writer.execute(INSERT, row)
    where = {"e": row["episode_id"]}
    for assignment, fragment in [
        ("pattern_key = repeat('k', 201)", "pattern_episode_events.pattern_key"),
        ("episode_id = episode_id || repeat('k', 200)", "pattern_episode_events.episode_id"),
        (
            "factors = jsonb_build_object('samples', (SELECT jsonb_agg('{}'::jsonb) FROM generate_series(1, 10001)))",
            "factors.samples",
        ),
    ]:
        before = snapshot(admin)
        with pytest.raises(psycopg.Error) as info:
            admin.execute(
                f"UPDATE public.pattern_episode_events SET {assignment} WHERE episode_id = %(e)s::text", where
            )
        _is_limit(info.value, fragment)
        assert changed(before, snapshot(admin)) == set()
    # An update within the limits is stored as written (only an INSERT is summarised).
    admin.execute(
        "UPDATE public.pattern_episode_events SET factors = factors || '{\"note\": 1}', outcome = 'failure'"
        " WHERE episode_id = %(e)s::text",
        where,
    )
    stored = admin.execute(
        "SELECT factors, outcome FROM public.pattern_episode_events WHERE episode_id = %(e)s::text", where
    ).fetchone()
    assert stored[0]["note"] == 1 and stored[0]["n_samples"] == 3 and stored[1] == "failure"


def test_a_stored_value_is_not_judged_again(admin, writer):
    """A row stored before a limit existed keeps working: only the columns an UPDATE changes are checked."""
    row = _window()
    writer.execute(INSERT, row)
    legacy = "legacy-" + "x" * 300
    admin.execute("SET session_replication_role = replica")  # as a row written before the limits
    try:
        admin.execute(
            "UPDATE public.pattern_episode_events SET episode_id = %(l)s::text WHERE episode_id = %(e)s::text",
            {"l": legacy, "e": row["episode_id"]},
        )
    finally:
        admin.execute("RESET session_replication_role")
    admin.execute(
        "UPDATE public.pattern_episode_events SET pattern_key = 'pm.renamed', scope = '{}'"
        " WHERE episode_id = %(l)s::text",
        {"l": legacy},
    )
    assert (
        admin.execute(
            "SELECT pattern_key FROM public.pattern_episode_events WHERE episode_id = %(l)s::text", {"l": legacy}
        ).fetchone()[0]
        == "pm.renamed"
    )
