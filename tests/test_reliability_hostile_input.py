"""Hostile and malformed input at every entry point, table-driven (design §2, input limits).

Each case either gets a clear error naming what is wrong, with every table unchanged (before/after
fingerprint of every table in public and learning), or is accepted as documented, changing only the
tables it should. Entry points: INSERT into closed_trades (as learning_writer), `ingest` JSONL/CSV,
CLI options, `config set` and learning.set_tunable, episode factors and outcomes, the ad_strands
adapter, feature flags and the reader functions.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from lowcap_learning.cli import cli
from lowcap_learning.db import describe_error
from reliability_support import admin_session, changed, snapshot, writer_session  # noqa: F401 - fixtures

INSERT_TRADE = """
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
VALUES (%(trade_id)s::text, %(timeframe)s::text, %(rpnl_pct)s::float8, %(closed_at)s::timestamptz,
        %(actions)s::jsonb)
"""
INSERT_EPISODE = """
INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, outcome, factors)
VALUES (%(scope)s::jsonb, %(pattern_key)s::text, %(episode_id)s::text, %(decision)s::text, %(outcome)s::text,
        %(factors)s::jsonb)
"""
DECISION_MAKER = "SELECT config_data FROM public.learning_configs WHERE module_id = 'decision_maker'"
LEARNED = {
    "public.closed_trades",
    "learning.allocation_history",
    "learning.allocation_state",
    "public.learning_configs",
    "learning.learning_log",
}
UNTRACKED = {"public.closed_trades", "learning.allocation_history", "learning.learning_log"}
FACTS = LEARNED | {"public.pattern_trade_events"}
EPISODE = {"public.pattern_episode_events", "learning.learning_log"}

# Figures for the README: every hostile input tried here is counted.
TRIED: dict[str, int] = {}


def _cases(cases: list) -> list:
    return [c if hasattr(c, "marks") else pytest.param(*c, id=c[0]) for c in cases]


def _count(entry: str) -> None:
    TRIED[entry] = TRIED.get(entry, 0) + 1


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _trade(**overrides) -> dict:
    row = {
        "trade_id": f"h-{uuid.uuid4().hex[:12]}",
        "timeframe": "1h",
        "rpnl_pct": 1.0,
        "closed_at": "2026-01-01T00:00:00Z",
        "actions": "[]",
    }
    row.update(overrides)
    return row


def _action(**fields) -> str:
    base = {"pattern_key": "pm.uptrend.S1.buy_flag", "action_category": "entry", "scope": {"chain": "solana"}}
    base.update(fields)
    return json.dumps([base])


# (label, overrides, error fragment or None, tables allowed to change when accepted)
TRADE_CASES = [
    ("rpnl NaN", {"rpnl_pct": math.nan}, "rpnl_pct", None),
    ("rpnl +inf", {"rpnl_pct": math.inf}, "rpnl_pct", None),
    ("rpnl -inf", {"rpnl_pct": -math.inf}, "rpnl_pct", None),
    ("rpnl below -100%", {"rpnl_pct": -100.0001}, "rpnl_pct", None),
    ("rpnl -1e308", {"rpnl_pct": -1e308}, "rpnl_pct", None),
    ("rpnl 1e308", {"rpnl_pct": 1e308}, "rpnl_pct", None),
    ("rpnl above 1e6%", {"rpnl_pct": 1e6 + 1}, "rpnl_pct", None),
    ("rpnl null", {"rpnl_pct": None}, "rpnl_pct", None),
    ("timeframe unknown", {"timeframe": "2h"}, "timeframe", None),
    ("timeframe empty", {"timeframe": ""}, "timeframe", None),
    ("timeframe upper case", {"timeframe": "1H"}, "timeframe", None),
    ("timeframe padded", {"timeframe": " 1h"}, "timeframe", None),
    ("timeframe sql", {"timeframe": "1h'; DROP TABLE public.closed_trades; --"}, "timeframe", None),
    ("timeframe fullwidth unicode", {"timeframe": "１h"}, "timeframe", None),
    ("timeframe null", {"timeframe": None}, "timeframe", None),
    ("closed_at null", {"closed_at": None}, "closed_at", None),
    ("closed_at infinity", {"closed_at": "infinity"}, "closed_at", None),
    ("closed_at -infinity", {"closed_at": "-infinity"}, "closed_at", None),
    ("trade_id empty", {"trade_id": ""}, "trade_id", None),
    ("trade_id null", {"trade_id": None}, "trade_id", None),
    ("actions object", {"actions": "{}"}, "actions", None),
    ("actions string", {"actions": '"[]"'}, "actions", None),
    ("actions number", {"actions": "1"}, "actions", None),
    ("actions json null", {"actions": "null"}, "actions", None),
    ("actions sql null", {"actions": None}, "actions", None),
    ("action not an object", {"actions": "[1]"}, "actions", None),
    ("action null", {"actions": "[null]"}, "actions", None),
    ("action pattern_key number", {"actions": _action(pattern_key=1)}, "actions", None),
    ("action pattern_key empty", {"actions": _action(pattern_key="")}, "actions", None),
    ("action without category", {"actions": json.dumps([{"pattern_key": "p"}])}, "actions", None),
    ("action scope array", {"actions": _action(scope=[1])}, "actions", None),
    ("action scope string", {"actions": _action(scope="chain=solana")}, "actions", None),
    ("action NUL escape", {"actions": _action(pattern_key="p\u0000")}, "unicode", None),
    (
        "action nesting 100k",
        {"actions": _action(scope={}).replace("{}", '{"a": ' + _deep(100_000) + "}")},
        "stack",
        None,
    ),
    # Accepted as documented.
    ("rpnl exactly -100%", {"rpnl_pct": -100.0}, None, LEARNED),
    ("rpnl tiny 1e-300 (flat)", {"rpnl_pct": 1e-300}, None, LEARNED),
    ("rpnl denormal 5e-324 (flat)", {"rpnl_pct": 5e-324}, None, LEARNED),
    ("rpnl -0.0", {"rpnl_pct": -0.0}, None, LEARNED),
    ("rpnl 1e6 exactly", {"rpnl_pct": 1e6}, None, LEARNED),
    ("timeframe 1m: stored, no EWMA", {"timeframe": "1m"}, None, UNTRACKED),
    ("timeframe 1d: stored, no EWMA", {"timeframe": "1d"}, None, UNTRACKED),
    ("closed_at in 1970", {"closed_at": "1970-01-01T00:00:00Z"}, None, LEARNED),
    ("trade_id sql", {"trade_id": "x'); DELETE FROM public.learning_configs; --"}, None, LEARNED),
    ("trade_id unicode", {"trade_id": "трейд-🚀-\u202e-ﷺ"}, None, LEARNED),
    ("action unicode scope", {"actions": _action(scope={"链": "solana🚀", "k'": 'v"'})}, None, FACTS),
    (
        "action scope nested 2000",
        {"actions": _action(scope={}).replace("{}", '{"a": ' + _deep(2000) + "}")},
        None,
        FACTS,
    ),
    ("action scope 1 MB", {"actions": _action(scope={"blob": "x" * 1_000_000})}, None, FACTS),
    ("2000 actions", {"actions": json.dumps([json.loads(_action())[0]] * 2000)}, "actions", None),
    ("action null scope", {"actions": _action(scope=None)}, None, FACTS),
    ("action extra junk fields", {"actions": _action(extra={"a": [1, {"b": None}]}, ts="not a time")}, None, FACTS),
]


@pytest.mark.parametrize(("label", "overrides", "error", "allowed"), TRADE_CASES, ids=[c[0] for c in TRADE_CASES])
def test_closed_trades_insert(admin, writer, label, overrides, error, allowed):
    _count("closed_trades INSERT")
    row = _trade(**overrides)
    before = snapshot(admin)
    if error:
        with pytest.raises((psycopg.Error, psycopg.DataError)) as info:
            writer.execute(INSERT_TRADE, row)
        message = describe_error(info.value) if isinstance(info.value, psycopg.Error) else str(info.value)
        assert error in message.lower() or error in str(info.value).lower(), message
        assert changed(before, snapshot(admin)) == set()
    else:
        state = admin.execute(DECISION_MAKER).fetchone()[0]
        writer.execute(INSERT_TRADE, row)
        diff = changed(before, snapshot(admin))
        if allowed is UNTRACKED:
            # design §5 (skip_untracked): stored, logged, no EWMA (global included) and no allocation
            # change. The row's updated_at may move; its config_data may not.
            assert admin.execute(DECISION_MAKER).fetchone()[0] == state
            diff.discard("public.learning_configs")
        assert "public.closed_trades" in diff
        assert diff <= allowed, diff - allowed
        stored = admin.execute(
            "SELECT trade_id, actions = %(a)s::jsonb FROM public.closed_trades WHERE trade_id = %(t)s::text",
            {"t": row["trade_id"], "a": row["actions"]},
        ).fetchone()
        assert stored == (row["trade_id"], True)  # stored verbatim, never interpreted


def test_tiny_rpnl_counts_as_flat(admin):
    rois = admin.execute(
        """
        SELECT h.trade_roi FROM learning.allocation_history AS h
        JOIN public.closed_trades AS t USING (trade_id)
        WHERE t.rpnl_pct <> 0 AND abs(t.rpnl_pct) < 1e-9
        """
    ).fetchall()
    assert rois and all(r == (0.0,) for r in rois)


def test_duplicate_trade_counts_once(admin, writer):
    _count("closed_trades INSERT")
    row = _trade()
    writer.execute(INSERT_TRADE, row)
    before = snapshot(admin)
    with pytest.raises(psycopg.errors.UniqueViolation) as info:
        writer.execute(INSERT_TRADE, row)
    assert "already recorded" in describe_error(info.value)
    assert changed(before, snapshot(admin)) == set()


def test_one_bad_row_fails_the_whole_statement(admin, writer):
    _count("closed_trades INSERT")
    before = snapshot(admin)
    with pytest.raises(psycopg.errors.CheckViolation):
        writer.execute(
            """
            INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
            VALUES ('ok-1', '1h', 1, '2026-01-01'), ('ok-2', '4h', 2, '2026-01-02'), ('bad', '1h', 'NaN', '2026-01-03')
            """
        )
    assert changed(before, snapshot(admin)) == set()


# ------------------------------------------------------------------------------------- ingest
JSONL_BAD = [
    ("NaN literal", '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": NaN, "closed_at": "2026-01-02"}', "rpnl_pct"),
    ("Infinity", '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": Infinity, "closed_at": "2026-01-02"}', "rpnl_pct"),
    (
        "-Infinity",
        '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": -Infinity, "closed_at": "2026-01-02"}',
        "rpnl_pct",
    ),
    ("1e999", '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": 1e999, "closed_at": "2026-01-02"}', "rpnl_pct"),
    (
        "rpnl string",
        '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": "abc", "closed_at": "2026-01-02"}',
        "double precision",
    ),
    (
        "rpnl object",
        '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": {"v": 1}, "closed_at": "2026-01-02"}',
        "double precision",
    ),
    (
        "rpnl bool",
        '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": true, "closed_at": "2026-01-02"}',
        "double precision",
    ),
    ("rpnl -101", '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": -101, "closed_at": "2026-01-02"}', "rpnl_pct"),
    ("timeframe 2h", '{"trade_id": "j2", "timeframe": "2h", "rpnl_pct": 1, "closed_at": "2026-01-02"}', "timeframe"),
    ("timeframe number", '{"trade_id": "j2", "timeframe": 60, "rpnl_pct": 1, "closed_at": "2026-01-02"}', "timeframe"),
    ("closed_at junk", '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": 1, "closed_at": "not a date"}', "timestamp"),
    ("closed_at missing", '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": 1}', "closed_at"),
    (
        "actions string",
        '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": 1, "closed_at": "2026-01-02", "actions": "[]"}',
        "actions",
    ),
    (
        "actions object",
        '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": 1, "closed_at": "2026-01-02", "actions": {"a": 1}}',
        "actions",
    ),
    (
        "action scope array",
        '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": 1, "closed_at": "2026-01-02", '
        '"actions": [{"pattern_key": "p", "action_category": "entry", "scope": [1]}]}',
        "actions",
    ),
    (
        "unknown field",
        '{"trade_id": "j2", "timeframe": "1h", "rpnl_pct": 1, "closed_at": "2026-01-02", "evil": 1}',
        "unknown field",
    ),
    ("not an object", "[1, 2, 3]", "json object"),
    ("scalar line", '"DROP TABLE public.closed_trades"', "json object"),
    ("broken JSON", '{"trade_id": "j2", ', "not valid json"),
    (
        "duplicate of line 1",
        '{"trade_id": "j1", "timeframe": "1h", "rpnl_pct": 1, "closed_at": "2026-01-02"}',
        "already recorded",
    ),
]


def _ingest(db_url: str, path: Path, *extra: str):
    return CliRunner().invoke(cli, ["--database-url", db_url, "ingest", str(path), *extra], catch_exceptions=False)


@pytest.mark.parametrize(("label", "line", "fragment"), JSONL_BAD, ids=[c[0] for c in JSONL_BAD])
def test_ingest_jsonl_bad_line(admin, db_url, tmp_path, label, line, fragment):
    _count("ingest JSONL")
    tag = uuid.uuid4().hex[:8]
    good = {"trade_id": f"j1-{tag}", "timeframe": "1h", "rpnl_pct": 1.5, "closed_at": "2026-01-01T00:00:00Z"}
    path = tmp_path / "trades.jsonl"
    path.write_text(
        json.dumps(good)
        + "\n"
        + line.replace('"j1"', json.dumps(good["trade_id"])).replace('"j2"', f'"j2-{tag}"')
        + "\n"
        + json.dumps(dict(good, trade_id=f"j3-{tag}"))
        + "\n"
    )
    before = snapshot(admin)
    result = _ingest(db_url, path)
    assert result.exit_code != 0
    assert "line 2" in result.output, result.output
    assert fragment in result.output.lower(), result.output
    assert "Traceback" not in result.output
    assert changed(before, snapshot(admin)) == set()


CSV_BAD = [
    ("NaN", "c2,1h,NaN,2026-01-02", "rpnl_pct"),
    ("inf", "c2,1h,inf,2026-01-02", "rpnl_pct"),
    ("-Infinity", "c2,1h,-Infinity,2026-01-02", "rpnl_pct"),
    ("1e309 overflows", "c2,1h,1e309,2026-01-02", "out of range"),
    ("1e-400 underflows", "c2,1h,1e-400,2026-01-02", "out of range"),
    ("unknown timeframe", "c2,4H,1,2026-01-02", "timeframe"),
    ("empty closed_at", "c2,1h,1,", "closed_at"),
    ("empty rpnl", "c2,1h,,2026-01-02", "rpnl_pct"),
]


@pytest.mark.parametrize(("label", "line", "fragment"), CSV_BAD, ids=[c[0] for c in CSV_BAD])
def test_ingest_csv_bad_line(admin, db_url, tmp_path, label, line, fragment):
    _count("ingest CSV")
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "trades.csv"
    path.write_text(
        "trade_id,timeframe,rpnl_pct,closed_at\n"
        f"c1-{tag},15m,2,2026-01-01\n" + line.replace("c2", f"c2-{tag}") + f"\nc3-{tag},4h,1,2026-01-03\n"
    )
    before = snapshot(admin)
    result = _ingest(db_url, path)
    assert result.exit_code != 0
    assert "line 3" in result.output, result.output
    assert fragment in result.output.lower(), result.output
    assert changed(before, snapshot(admin)) == set()


@pytest.mark.parametrize(
    ("label", "content", "fragment"),
    [
        ("unknown column", "trade_id,timeframe,rpnl_pct,closed_at,evil\nx,1h,1,2026-01-01,1\n", "unknown column"),
        (
            "BOM header, unknown column",
            "\ufefftrade_id,timeframe,rpnl_pct,closed_at,x\nx,1h,1,2026-01-01,1\n",
            "unknown column",
        ),
        ("actions not JSON", 'trade_id,timeframe,rpnl_pct,closed_at,actions\nx,1h,1,2026-01-01,"[{bad"\n', "json"),
    ],
)
def test_ingest_csv_bad_file(admin, db_url, tmp_path, label, content, fragment):
    _count("ingest CSV")
    path = tmp_path / "t.csv"
    path.write_text(content)
    before = snapshot(admin)
    result = _ingest(db_url, path)
    assert result.exit_code != 0
    assert fragment in result.output.lower(), result.output
    assert changed(before, snapshot(admin)) == set()


def test_ingest_csv_with_a_bom_is_read(admin, db_url, tmp_path):
    """Spreadsheet CSVs start with a byte-order mark: it is not part of the first column's name."""
    _count("ingest CSV")
    path = tmp_path / "bom.csv"
    path.write_text("\ufefftrade_id,timeframe,rpnl_pct,closed_at\nbom-1,1h,1,2026-01-01\n")
    result = _ingest(db_url, path)
    assert result.exit_code == 0, result.output
    assert admin.execute("SELECT count(*) FROM public.closed_trades WHERE trade_id = 'bom-1'").fetchone()[0] == 1


def test_ingest_sql_looking_and_unicode_values_are_data(admin, db_url, tmp_path):
    _count("ingest JSONL")
    ids = ["'; DROP TABLE public.closed_trades; --", "Robert'); DROP TABLE students;--", "名前-🚀-\u202e"]
    path = tmp_path / "odd.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"trade_id": t, "timeframe": "4h", "rpnl_pct": 0.5, "closed_at": "2026-01-05T00:00:00Z"})
            for t in ids
        )
        + "\n\n"
    )
    result = _ingest(db_url, path)
    assert result.exit_code == 0, result.output
    stored = {r[0] for r in admin.execute("SELECT trade_id FROM public.closed_trades").fetchall()}
    assert set(ids) <= stored


def test_ingest_deeply_nested_line_is_a_clear_error(admin, db_url, tmp_path):
    _count("ingest JSONL")
    path = tmp_path / "deep.jsonl"
    path.write_text('{"actions": ' + _deep(100_000) + "}\n")
    before = snapshot(admin)
    result = CliRunner().invoke(cli, ["--database-url", db_url, "ingest", str(path)])
    assert (
        result.exit_code == 1
        and "line 1" in result.output
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    )
    assert changed(before, snapshot(admin)) == set()


# ------------------------------------------------------------------------------------- CLI options
CLI_BAD = [
    ("ingest --batch 0", ["ingest", "{file}", "--batch", "0"], "0"),
    ("ingest --batch -5", ["ingest", "{file}", "--batch", "-5"], "-5"),
    ("ingest --batch abc", ["ingest", "{file}", "--batch", "abc"], "abc"),
    ("ingest missing file", ["ingest", "/nonexistent/trades.csv"], "does not exist"),
    ("ingest .txt file", ["ingest", "{txt}"], "unsupported file type"),
    ("run --as-of junk", ["run", "lesson-builder", "--as-of", "yesterday; DROP"], "timestamp"),
    ("explain allocation --last 0", ["explain", "allocation", "--last", "0"], "0"),
    ("unknown command", ["drop-everything"], "no such command"),
    ("config set NaN", ["config", "set", "max_step", "NaN"], "max_step"),
    ("config set Infinity", ["config", "set", "max_step", "Infinity"], "max_step"),
    ("config set -Infinity", ["config", "set", "max_step", "--", "-Infinity"], "max_step"),
    ("config set 1e999", ["config", "set", "max_step", "1e999"], "max_step"),
    ("config set negative", ["config", "set", "max_step", "--", "-0.1"], "max_step"),
    ("config set above range", ["config", "set", "max_step", "2"], "max_step"),
    ("config set string number", ["config", "set", "max_step", '"0.004"'], "max_step"),
    ("config set sql", ["config", "set", "max_step", "0.004; DROP TABLE public.learning_configs"], "max_step"),
    ("config set object", ["config", "set", "max_step", '{"v": 0.004}'], "max_step"),
    ("config set non-integer", ["config", "set", "min_trades_full", "2.5"], "integer"),
    ("config set huge integer", ["config", "set", "n_min", "1e300"], "n_min"),
    ("config set scope_dims object", ["config", "set", "scope_dims", '{"chain": 1}'], "scope_dims"),
    ("config set scope_dims numbers", ["config", "set", "scope_dims", "[1, 2]"], "scope_dims"),
    ("config set scope_dims nested", ["config", "set", "scope_dims", '[["chain"]]'], "scope_dims"),
    ("config set unknown key", ["config", "set", "max_step'; --", "1"], "unknown tunable"),
    ("config set tau zero", ["config", "set", "tau_short_days", "0"], "tau_short_days"),
    ("flags enable empty", ["flags", "enable", ""], "required"),
    ("flags enable empty module", ["flags", "enable", "x", "--module", ""], "required"),
]


@pytest.mark.parametrize(("label", "args", "fragment"), _cases(CLI_BAD))
def test_cli_options(admin, db_url, tmp_path, label, args, fragment):
    _count("CLI options")
    good = tmp_path / "ok.csv"
    good.write_text("trade_id,timeframe,rpnl_pct,closed_at\n")
    txt = tmp_path / "ok.txt"
    txt.write_text("x")
    argv = [a.replace("{file}", str(good)).replace("{txt}", str(txt)) for a in args]
    if argv[0] in {"run", "explain", "flags", "config"} and argv[0] not in cli.commands:
        pytest.fail(f"command group {argv[0]} is missing")
    before = snapshot(admin)
    result = CliRunner().invoke(cli, ["--database-url", db_url, *argv])
    assert result.exit_code not in (0, None), result.output
    assert not (result.exception and not isinstance(result.exception, SystemExit)), repr(result.exception)
    assert fragment.lower() in result.output.lower(), result.output
    assert changed(before, snapshot(admin)) == set()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('"NaN"', "max_step"),
        ("1e400", "max_step"),
        ("-1e400", "max_step"),
        ("null", "max_step"),
        ("true", "max_step"),
        ("[0.1]", "max_step"),
    ],
)
def test_set_tunable_sql(admin, value, fragment):
    _count("config set (SQL)")
    before = snapshot(admin)
    with pytest.raises(psycopg.Error) as info:
        admin.execute("SELECT learning.set_tunable('max_step', %(v)s::jsonb)", {"v": value})
    assert fragment in describe_error(info.value)
    assert changed(before, snapshot(admin)) == set()


# ------------------------------------------------------------------------------------- episodes
EPISODE_ACCEPTED = [
    ("factors array", "[]"),
    ("factors string", '"junk"'),
    ("factors number", "1"),
    ("factors json null", "null"),
    ("samples object", '{"samples": {"ts_score": 1}}'),
    ("samples string", '{"samples": "[]"}'),
    ("samples junk elements", '{"samples": [1, "a", null, [], {"ts_score": 0.7}]}'),
    ("samples string numbers", '{"samples": [{"ts_score": "0.9", "halo_distance": "NaN"}]}'),
    ("samples huge numbers", '{"samples": [{"ts_score": 1e400, "halo_distance": -1e400, "ema60_slope": 1e-400}]}'),
    ("samples nested", '{"samples": [{"ts_score": {"v": [1, {"w": 2}]}, "ts_ok": "true"}]}'),
    ("samples deep", '{"samples": [{"ts_score": ' + _deep(2000) + "}]}"),
    ("samples 5000", json.dumps({"samples": [{"ts_score": i / 5000, "ts_ok": i % 2 == 0} for i in range(5000)]})),
    ("thresholds strings", '{"ts_min": "0.6", "halo_max": "x", "slope_min": "0", "samples": [{"ts_score": 0.1}]}'),
    ("thresholds non-positive", '{"ts_min": -1, "halo_max": 0, "slope_min": 1e400, "samples": []}'),
    ("thresholds NaN-like", '{"ts_min": "NaN", "halo_max": "Infinity", "samples": [{"halo_distance": 1}]}'),
    ("unicode keys", '{"ts_min": 0.6, "samples": [{"ts_score": 0.9, "名前🚀": 1, "k\'; DROP": 2}]}'),
]


@pytest.mark.parametrize(("label", "factors"), _cases(EPISODE_ACCEPTED))
@pytest.mark.parametrize("decision", ["acted", "skipped"])
def test_episode_factors_kept_and_logged(admin, writer, label, factors, decision):
    _count("episode factors")
    episode = f"ep-{uuid.uuid4().hex[:10]}"
    before = snapshot(admin)
    writer.execute(
        INSERT_EPISODE,
        {
            "scope": '{"chain": "solana"}',
            "pattern_key": "pm.x",
            "episode_id": episode,
            "decision": decision,
            "outcome": None,
            "factors": factors,
        },
    )
    diff = changed(before, snapshot(admin))
    assert diff <= EPISODE and "public.pattern_episode_events" in diff
    (has_samples, capture_error) = admin.execute(
        """
        SELECT factors ? 'samples', factors ? 'capture_error'
        FROM public.pattern_episode_events WHERE episode_id = %(e)s::text
        """,
        {"e": episode},
    ).fetchone()
    if '"samples": [' in factors:
        assert not has_samples, "the summary replaced the samples array"
    elif '"samples"' in factors:
        assert has_samples and capture_error, "a non-array samples is kept and marked"
    warnings = admin.execute(
        "SELECT count(*) FROM learning.learning_log WHERE level = 'WARNING' AND message LIKE %(m)s::text",
        {"m": f"%{episode}%"},
    ).fetchone()[0]
    if label.startswith(("factors", "samples object", "samples string ", "samples junk", "thresholds")):
        assert warnings >= 1, "a malformed factors value is logged as a WARNING"


EPISODE_REFUSED = [
    ("decision unknown", {"decision": "maybe"}, "decision"),
    ("decision null", {"decision": None}, "decision"),
    ("outcome unknown", {"outcome": "win"}, "outcome"),
    ("factors sql null", {"factors": None}, "factors"),
    ("scope sql null", {"scope": None}, "scope"),
    ("pattern_key null", {"pattern_key": None}, "pattern_key"),
    ("episode_id null", {"episode_id": None}, "episode_id"),
    ("factors NUL escape", {"factors": '{"a": "\\u0000"}'}, "unicode"),
    ("factors nesting 100k", {"factors": '{"a": ' + _deep(100_000) + "}"}, "stack"),
]


@pytest.mark.parametrize(("label", "overrides", "fragment"), EPISODE_REFUSED, ids=[c[0] for c in EPISODE_REFUSED])
def test_episode_refused(admin, writer, label, overrides, fragment):
    _count("episode INSERT")
    row = {
        "scope": "{}",
        "pattern_key": "pm.x",
        "episode_id": "e-r",
        "decision": "acted",
        "outcome": None,
        "factors": "{}",
    }
    row.update(overrides)
    before = snapshot(admin)
    with pytest.raises(psycopg.Error) as info:
        writer.execute(INSERT_EPISODE, row)
    assert fragment in (describe_error(info.value) + str(info.value)).lower()
    assert changed(before, snapshot(admin)) == set()


@pytest.mark.parametrize(
    ("label", "scope"),
    [("scope array", "[1, 2]"), ("scope string", '"chain=solana"'), ("scope null", "null"), ("scope deep", _deep(500))],
)
def test_episode_non_object_scope_is_stored(admin, writer, label, scope):
    """A non-object scope is kept; the miners read it as having no dimensions (scope_dimensions = {})."""
    _count("episode INSERT")
    before = snapshot(admin)
    writer.execute(
        INSERT_EPISODE,
        {
            "scope": scope,
            "pattern_key": "pm.x",
            "episode_id": f"e-{uuid.uuid4().hex[:8]}",
            "decision": "skipped",
            "outcome": None,
            "factors": '{"ts_min": 0.6, "halo_max": 1, "slope_min": 0}',
        },
    )
    assert changed(before, snapshot(admin)) <= EPISODE
    if admin.execute("SELECT to_regprocedure('learning.scope_dimensions(jsonb,text[])')").fetchone()[0]:
        assert admin.execute("SELECT learning.scope_dimensions(%(s)s::jsonb)", {"s": scope}).fetchone()[0] == {}


@pytest.mark.parametrize(
    ("episode", "outcome", "fragment"),
    [
        ("e-any", "win", "outcome"),
        ("e-any", None, "outcome"),
        ("e-any", "SUCCESS", "outcome"),
        (None, "success", "episode_id"),
    ],
)
def test_set_episode_outcome_refused(admin, writer, episode, outcome, fragment):
    _count("set_episode_outcome")
    before = snapshot(admin)
    with pytest.raises(psycopg.Error) as info:
        writer.execute("SELECT learning.set_episode_outcome(%(e)s::text, %(o)s::text)", {"e": episode, "o": outcome})
    assert fragment in describe_error(info.value)
    assert changed(before, snapshot(admin)) == set()


def test_set_episode_outcome_unknown_episode_changes_nothing_but_the_log(admin, writer):
    _count("set_episode_outcome")
    before = snapshot(admin)
    n = writer.execute(
        "SELECT learning.set_episode_outcome(%(e)s::text, 'success')", {"e": "'; UPDATE x; --"}
    ).fetchone()[0]
    assert n == 0
    assert changed(before, snapshot(admin)) == {"learning.learning_log"}


# ------------------------------------------------------------------------------------- flags, readers
@pytest.mark.parametrize(
    ("module", "flag"), [("pm", "x'; DROP TABLE public.learning_configs; --"), ("pm", "名前🚀"), ("evil module", "f")]
)
def test_feature_flag_names_are_data(admin, module, flag):
    _count("feature flags")
    admin.execute("SELECT learning.set_feature_flag(%(m)s::text, %(f)s::text, true)", {"m": module, "f": flag})
    flag_get = "SELECT learning.feature_flag(%(m)s::text, %(f)s::text)"
    assert admin.execute(flag_get, {"m": module, "f": flag}).fetchone()[0]
    assert admin.execute("SELECT to_regclass('public.learning_configs')").fetchone()[0] is not None


def test_feature_flag_of_a_corrupt_config_is_false(admin):
    _count("feature flags")
    admin.execute(
        """
        INSERT INTO public.learning_configs (module_id, config_data)
        VALUES ('corrupt', '{"feature_flags": {"a": "true", "b": 1, "c": null, "d": [true]}}')
        ON CONFLICT (module_id) DO UPDATE SET config_data = excluded.config_data
        """
    )
    values = [
        admin.execute("SELECT learning.feature_flag('corrupt', %(f)s::text)", {"f": f}).fetchone()[0]
        for f in ("a", "b", "c", "d", "missing")
    ]
    assert values == [False] * 5


@pytest.mark.parametrize("scope", ["[1]", '"x"', "null", "1", '{"a": ' + _deep(500) + "}", '{"链": "🚀"}'])
def test_select_execution_overrides_hostile_scope(admin, scope):
    if not admin.execute("SELECT to_regproc('learning.select_execution_overrides')").fetchone()[0]:
        pytest.fail("learning.select_execution_overrides is not installed")
    _count("select_execution_overrides")
    with psycopg.connect(admin.info.dsn, autocommit=True) as reader:
        reader.execute("SET ROLE learning_reader")
        rows = reader.execute(
            "SELECT * FROM learning.select_execution_overrides('pm.x', %(s)s::jsonb)", {"s": scope}
        ).fetchall()
    assert isinstance(rows, list)


# ------------------------------------------------------------------------------------- ad_strands
AD_STRANDS = """
CREATE TABLE IF NOT EXISTS public.ad_strands (
    id text PRIMARY KEY, module text, kind text, symbol text, timeframe text, position_id text, trade_id uuid,
    content jsonb, regime_context jsonb, tags jsonb, target_agent text, created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now()
)
"""
INSERT_STRAND = """
INSERT INTO public.ad_strands (id, kind, timeframe, position_id, content)
VALUES (%(id)s::text, 'position_closed', %(timeframe)s::text, 'pos-1', %(content)s::jsonb)
"""


def _strand(rpnl=2.5, **summary_overrides) -> dict:
    summary = {"rpnl_pct": rpnl, "exit_timestamp": "2026-02-01T00:00:00Z", "time_to_s3": None}
    summary.update(summary_overrides)
    return {
        "position_id": "pos-1",
        "token_contract": "0xabc",
        "chain": "solana",
        "ts": "2026-02-01T00:00:00Z",
        "completed_trades": [
            {
                "trade_id": str(uuid.uuid4()),
                "actions": [{"pattern_key": "pm.x", "action_category": "entry", "decision_type": "entry"}],
                "summary": summary,
            }
        ],
    }


STRAND_IGNORED = [
    ("content array", "[]"),
    ("content string", '"x"'),
    ("no completed_trades", json.dumps({"ts": "2026-01-01"})),
    ("empty completed_trades", json.dumps({"completed_trades": []})),
    ("last trade not an object", json.dumps({"completed_trades": [1]})),
    ("no summary", json.dumps({"completed_trades": [{"trade_id": "t"}]})),
    ("rpnl string", json.dumps(_strand(rpnl="5"))),
    ("rpnl null", json.dumps(_strand(rpnl=None))),
    ("rpnl 1e400", json.dumps(_strand(rpnl=1)).replace('"rpnl_pct": 1', '"rpnl_pct": 1e400')),
    ("rpnl below -100%", json.dumps(_strand(rpnl=-150))),
    ("exit time junk", json.dumps(_strand(exit_timestamp="soon'; DROP TABLE x; --"))),
    ("exit time infinity", json.dumps(_strand(exit_timestamp="infinity"))),
]


@pytest.fixture(scope="module")
def strands(admin):
    if not admin.execute("SELECT to_regproc('learning.install_ad_strands_adapter')").fetchone()[0]:
        pytest.fail("learning.install_ad_strands_adapter is not installed")
    admin.execute(AD_STRANDS)
    assert admin.execute("SELECT learning.install_ad_strands_adapter()").fetchone()[0]
    return admin


@pytest.mark.parametrize(("label", "content"), STRAND_IGNORED, ids=[c[0] for c in STRAND_IGNORED])
def test_strand_adapter_hostile_strand(strands, label, content):
    _count("ad_strands adapter")
    strand_id = f"s-{uuid.uuid4().hex[:10]}"
    before = snapshot(strands)
    strands.execute(INSERT_STRAND, {"id": strand_id, "timeframe": "1h", "content": content})
    # The bot's strand is kept; no trade is learned; one WARNING names the strand.
    assert changed(before, snapshot(strands)) == {"public.ad_strands", "learning.learning_log"}
    (warnings,) = strands.execute(
        "SELECT count(*) FROM learning.learning_log WHERE level = 'WARNING' AND message LIKE %(m)s::text",
        {"m": f"%strand_id={strand_id}%"},
    ).fetchone()
    assert warnings == 1


@pytest.mark.parametrize("timeframe", ["2h", "", "1h'; --"])
def test_strand_adapter_unknown_timeframe(strands, timeframe):
    _count("ad_strands adapter")
    before = snapshot(strands)
    strands.execute(
        INSERT_STRAND, {"id": f"s-{uuid.uuid4().hex[:10]}", "timeframe": timeframe, "content": json.dumps(_strand())}
    )
    assert changed(before, snapshot(strands)) == {"public.ad_strands", "learning.learning_log"}


def test_strand_adapter_zero_rpnl_and_sql_trade_id_are_data(strands):
    _count("ad_strands adapter")
    content = _strand(rpnl=0.0)
    content["completed_trades"][-1]["trade_id"] = "x'); DELETE FROM public.closed_trades; --"
    strands.execute(
        INSERT_STRAND, {"id": f"s-{uuid.uuid4().hex[:10]}", "timeframe": "4h", "content": json.dumps(content)}
    )
    row = strands.execute(
        "SELECT rpnl_pct FROM public.closed_trades WHERE trade_id = %(t)s::text",
        {"t": content["completed_trades"][-1]["trade_id"]},
    ).fetchone()
    assert row == (0.0,)


@pytest.fixture(scope="module")
def strand_inserter(strands, db_url):
    """A LOGIN role that may only INSERT into ad_strands, as a bot's strand writer would be."""
    name = f"strand_{uuid.uuid4().hex[:8]}"
    strands.execute(f"CREATE ROLE {name} LOGIN")
    strands.execute(f"GRANT INSERT ON public.ad_strands TO {name}")
    with psycopg.connect(psycopg.conninfo.make_conninfo(db_url, user=name), autocommit=True) as c:
        yield c
    strands.execute(f"DROP OWNED BY {name}")
    strands.execute(f"DROP ROLE {name}")


@pytest.mark.parametrize(("label", "content"), STRAND_IGNORED, ids=[c[0] for c in STRAND_IGNORED])
def test_strand_adapter_hostile_strand_from_a_plain_inserter(strands, strand_inserter, label, content):
    """The same strands from a role that holds nothing of ours: kept, not learned, one WARNING."""
    _count("ad_strands inserter role")
    strand_id = f"s-{uuid.uuid4().hex[:10]}"
    before = snapshot(strands)
    strand_inserter.execute(INSERT_STRAND, {"id": strand_id, "timeframe": "1h", "content": content})
    assert changed(before, snapshot(strands)) == {"public.ad_strands", "learning.learning_log"}


def test_strand_adapter_learns_from_a_plain_inserter(strands, strand_inserter):
    _count("ad_strands inserter role")
    content = _strand(rpnl=3.0)
    strand_inserter.execute(
        INSERT_STRAND, {"id": f"s-{uuid.uuid4().hex[:10]}", "timeframe": "15m", "content": json.dumps(content)}
    )
    trade_id = content["completed_trades"][-1]["trade_id"]
    assert strands.execute(
        "SELECT count(*) FROM learning.allocation_history WHERE trade_id = %(t)s::text", {"t": trade_id}
    ).fetchone() == (1,)


# ------------------------------------------------------------------------------- admin functions
# (label, call, error fragment or None when the call is accepted as documented)
ADMIN_CALLS = [
    ("miner lookback negative", "SELECT learning.mine_tuning_lessons(now(), '-1 day')", "lookback must be positive"),
    ("miner n_min 0", "SELECT learning.mine_tuning_lessons(now(), '1 day', 0)", "n_min must be a positive"),
    ("miner n_min negative", "SELECT learning.mine_tuning_lessons(now(), '1 day', -5)", "n_min must be a positive"),
    ("builder lookback negative", "SELECT learning.build_strength_lessons(now(), '-1 day')", "lookback must be"),
    ("builder n_min 0", "SELECT learning.build_strength_lessons(now(), '1 day', 0)", "n_min must be a positive"),
    ("set_tunable NULL key", "SELECT learning.set_tunable(NULL, '1')", "unknown tunable"),
    ("set_tunable NULL value", "SELECT learning.set_tunable('max_step', NULL)", "must be a number"),
    ("set_tunable object", "SELECT learning.set_tunable('max_step', '{\"a\": 1}')", "must be a number"),
    ("set_tunable 1e400", "SELECT learning.set_tunable('max_step', '1e400')", "must be a number"),
    ("set_tunable SQL-looking key", "SELECT learning.set_tunable('x''; DROP TABLE y; --', '1')", "unknown tunable"),
    ("set_feature_flag NULL module", "SELECT learning.set_feature_flag(NULL, 'x', true)", "are required"),
    ("learning row not an object",
     "UPDATE public.learning_configs SET config_data = '[1]' WHERE module_id = 'learning'", "must be a JSON object"),
    ("learning row tau 0", "UPDATE public.learning_configs SET config_data = config_data"
     " || '{\"tau_short_days\": 0}' WHERE module_id = 'learning'", "tau_short_days"),
]


@pytest.mark.parametrize(("label", "call", "fragment"), ADMIN_CALLS, ids=[c[0] for c in ADMIN_CALLS])
def test_admin_function_hostile_arguments(admin, label, call, fragment):
    """learning_admin's functions and direct writes: a clear error, every table unchanged."""
    _count("admin functions")
    admin.execute(
        "INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{}')"
        " ON CONFLICT (module_id) DO NOTHING"
    )
    with psycopg.connect(admin.info.dsn, autocommit=True) as c:
        c.execute("SET ROLE learning_admin")
        before = snapshot(admin)
        with pytest.raises(psycopg.Error) as err:
            c.execute(call)
    assert fragment in describe_error(err.value)
    assert changed(before, snapshot(admin)) == set()


def test_zz_report_inputs_tried(capsys):
    """Prints the figure for the README (inputs tried per entry point)."""
    total = sum(TRIED.values())
    with capsys.disabled():
        print(f"\nhostile inputs tried: {total} {dict(sorted(TRIED.items()))}")
    assert total >= 150
