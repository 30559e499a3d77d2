"""A command line that cannot surprise: each point fails on the behaviour before it was fixed."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from conftest import empty_db, reset_learning
from lowcap_learning import __version__
from lowcap_learning.cli import cli

T0 = datetime(2025, 1, 10, tzinfo=UTC)
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
LOOKS_LIKE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")


def call(*args, env=None):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)


@pytest.fixture
def db(db_url, conn):
    reset_learning(conn)
    conn.execute("TRUNCATE learning.job_runs, public.learning_lessons, public.pm_overrides")
    return db_url


def trades(conn, n: int = 6, start: datetime = T0) -> None:
    rows = [
        (f"t-{start:%m%d}-{i}", "1h", 8.0 if i % 2 else -3.0, start + timedelta(hours=i),
         json.dumps([{"pattern_key": "pm.uptrend.S1.entry", "action_category": "entry",
                      "scope": {"chain": "solana"}, "decision_type": "entry"}]))
        for i in range(n)
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)"
            " VALUES (%s, %s, %s, %s, %s::jsonb)", rows)


def test_database_url_after_the_subcommand(db):
    # DATABASE_URL points nowhere: only the option after the subcommand can make this work.
    bogus = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing"}
    result = call("status", "--json", "--database-url", db, env=bogus)
    assert result.exit_code == 0, result.output
    assert [r["timeframe"] for r in json.loads(result.output)["allocation"]] == ["15m", "1h", "4h"]
    result = call("config", "get", "max_step", "--database-url", db, env=bogus)
    assert result.exit_code == 0 and "max_step" in result.output
    result = call("run", "tuning-miner", "--as-of", "2025-01-11T00:00:00Z", "--database-url", db, env=bogus)
    assert result.exit_code == 0, result.output


def test_missing_schema_says_run_migrate_first():
    with empty_db("nomigrate") as url:
        for args in (["status"], ["config", "get"], ["explain", "allocation"]):
            result = call(*args, "--database-url", url)
            assert result.exit_code == 1
            assert result.output.strip().splitlines()[-1] == (
                "error: the learning schema is missing or older than this package: run `lowcap-learning migrate` first"
            ), result.output


def test_version():
    result = call("--version")
    assert result.exit_code == 0 and result.output.strip() == f"lowcap-learning {__version__}"


def test_ingest_resume_with_skip_existing(db, conn, tmp_path):
    good = [{"trade_id": f"r-{i}", "timeframe": "1h", "rpnl_pct": 1.5,
             "closed_at": f"2025-01-0{1 + i // 4}T0{i % 4}:00:00Z"} for i in range(8)]
    bad = dict(good[5], rpnl_pct="NaN")
    path = tmp_path / "trades.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*good[:5], bad, *good[6:]]) + "\n")
    first = call("ingest", str(path), "--batch", "2", "--database-url", db)
    assert first.exit_code == 1
    assert "line 6" in first.output
    assert "4 row(s) in 2 earlier batch(es) were committed; re-run with --skip-existing to resume" in first.output
    assert conn.execute("SELECT count(*) FROM public.closed_trades").fetchone()[0] == 4
    path.write_text("\n".join(json.dumps(r) for r in good) + "\n")  # the bad row fixed
    plain = call("ingest", str(path), "--batch", "2", "--database-url", db)
    assert plain.exit_code == 1 and "trade_id already recorded" in plain.output
    resumed = call("ingest", str(path), "--batch", "2", "--skip-existing", "--database-url", db)
    assert resumed.exit_code == 0, resumed.output
    assert "ingested 4 trades in 4 transaction(s), skipped 4 already recorded" in resumed.output
    assert conn.execute("SELECT count(*) FROM public.closed_trades").fetchone()[0] == 8


def test_ingest_help_lists_columns_and_units():
    text = call("ingest", "--help").output
    for column in ("trade_id", "timeframe", "rpnl_pct", "closed_at", "actions", "position_id", "token_contract",
                   "token_chain", "did_trim", "reached_s3", "--skip-existing"):
        assert column in text
    assert "PERCENT (4.2 = +4.2%)" in text and "ISO-8601" in text


def active(conn) -> tuple[int, int]:
    return conn.execute(
        "SELECT (SELECT count(*) FROM public.learning_lessons WHERE status = 'active' AND lesson_type = 'pm_strength'),"
        " (SELECT count(*) FROM public.pm_overrides WHERE status = 'active' AND action_category = 'pm_strength')"
    ).fetchone()


def test_a_run_that_would_deactivate_everything_refuses_without_force(db, conn):
    conn.execute("SELECT learning.set_tunable('n_min', '2')")
    trades(conn)
    built = call("run", "all", "--as-of", "2025-01-11T00:00:00Z", "--database-url", db)
    assert built.exit_code == 0, built.output
    lessons, overrides = active(conn)
    assert lessons > 0 and overrides > 0
    refused = call("run", "all", "--database-url", db)  # as of now: the data is older than the lookback
    assert refused.exit_code == 1
    assert "refused: this run would deactivate all" in refused.output
    assert "active lessons pm/pm_strength" in refused.output and "--force" in refused.output
    assert "the newest trade closed at 2025-01-10T05:00:00Z" in refused.output
    assert active(conn) == (lessons, overrides), "a refused run changes nothing"
    forced = call("run", "all", "--force", "--database-url", db)
    assert forced.exit_code == 0, forced.output
    assert active(conn) == (0, 0)


def test_flags_refuse_unknown_names_unless_new(db, conn):
    typo = call("flags", "enable", "ae_v2_enabeld", "--database-url", db)
    assert typo.exit_code == 1 and "unknown flag pm.ae_v2_enabeld" in typo.output and "--new" in typo.output
    bad = call("flags", "enable", "bad flag!", "--new", "--database-url", db)
    assert bad.exit_code == 1 and "flag name" in bad.output
    assert conn.execute("SELECT config_data -> 'feature_flags' FROM public.learning_configs"
                        " WHERE module_id = 'pm'").fetchone() is None
    assert call("flags", "enable", "ae_v2_enabled", "--database-url", db).exit_code == 0
    assert call("flags", "enable", "my_experiment", "--new", "--database-url", db).exit_code == 0
    assert call("flags", "disable", "my_experiment", "--database-url", db).exit_code == 0  # exists now
    listing = call("flags", "list").output
    assert "pm.feature_flags.ae_v2_enabled: the PM computes A" in listing and "compute_levers" in listing


def test_config_unset_returns_to_the_default(db, conn):
    assert call("config", "set", "max_step", "0.004", "--database-url", db).exit_code == 0
    result = call("config", "unset", "max_step", "--database-url", db)
    assert result.exit_code == 0 and result.output.strip() == "max_step = 0.003 (default)"
    assert conn.execute("SELECT config_data ? 'max_step' FROM public.learning_configs"
                        " WHERE module_id = 'learning'").fetchone()[0] is False
    unknown = call("config", "unset", "max_stpe", "--database-url", db)
    assert unknown.exit_code == 1 and 'unknown tunable "max_stpe"' in unknown.output


def test_tau_short_must_stay_below_tau_long(db, conn):
    result = call("config", "set", "tau_short_days", "120", "--database-url", db)
    assert result.exit_code == 1 and "tau_short_days must be below tau_long_days" in result.output
    result = call("config", "set", "tau_long_days", "10", "--database-url", db)
    assert result.exit_code == 1 and "tau_short_days must be below tau_long_days" in result.output
    import psycopg

    with pytest.raises(psycopg.errors.InvalidParameterValue, match="below tau_long_days"):
        conn.execute("INSERT INTO public.learning_configs (module_id, config_data)"
                     " VALUES ('learning', '{\"tau_short_days\": 30, \"tau_long_days\": 30}')")
    assert call("config", "set", "tau_long_days", "200", "--database-url", db).exit_code == 0
    assert call("config", "set", "tau_short_days", "120", "--database-url", db).exit_code == 0


def test_one_error_prefix(db):
    for args in (["config", "get", "nope"], ["flags", "enable", "zzz"], ["run", "all", "--as-of", "yesterday"],
                 ["plot", "allocation", "--out", "a.gif"]):
        result = call(*args, "--database-url", db)
        assert result.exit_code != 0
        assert "Error:" not in result.output and "\nerror: " in "\n" + result.output, result.output


def test_explain_exits_1_on_an_unknown_pattern(db, conn):
    strength = call("explain", "strength", "pm.nothing.S9.entry", "--database-url", db)
    assert strength.exit_code == 1 and "unknown pattern 'pm.nothing.S9.entry'" in strength.output
    tuning = call("explain", "tuning", "pm.nothing.S9.entry", "--database-url", db)
    assert tuning.exit_code == 1


def test_plot_refuses_other_formats_and_missing_directories(db, tmp_path):
    jpg = call("plot", "allocation", "--out", str(tmp_path / "a.jpg"), "--database-url", db)
    assert jpg.exit_code == 1 and "must end in .png" in jpg.output
    missing = tmp_path / "no" / "such" / "a.png"
    nodir = call("plot", "allocation", "--out", str(missing), "--database-url", db)
    assert nodir.exit_code == 1 and "does not exist" in nodir.output
    assert list(tmp_path.iterdir()) == []


def timestamps(value, path="$"):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from timestamps(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from timestamps(v, f"{path}[{i}]")
    elif isinstance(value, str) and LOOKS_LIKE_TIME.match(value):
        yield path, value


def test_every_json_timestamp_is_iso_8601_utc(db, conn):
    conn.execute("SET TIME ZONE 'Asia/Kolkata'")
    conn.execute("SELECT learning.set_tunable('n_min', '2')")
    trades(conn)
    outputs = {}
    env = {"PGTZ": "America/New_York"}  # a session TimeZone that is not UTC
    for args in (["run", "all", "--as-of", "2025-01-11T00:00:00+02:00", "--json"], ["status", "--json"],
                 ["explain", "allocation", "--json"], ["check", "--json"], ["doctor", "--json"],
                 ["explain", "strength", "pm.uptrend.S1.entry", "--scope", '{"chain": "solana"}', "--json"],
                 ["flags", "show", "--json"], ["config", "get", "--json"]):
        result = CliRunner().invoke(cli, [*args, "--database-url", db], env=env, catch_exceptions=False)
        assert result.exit_code in (0, 1), result.output  # doctor: 1 when the roles are not granted yet
        outputs[args[0] + " " + args[1]] = json.loads(result.output)
    found = [(name, path, v) for name, data in outputs.items() for path, v in timestamps(data)]
    assert {name for name, _, _ in found} >= {"run all", "status --json", "explain allocation"}
    bad = [(name, path, v) for name, path, v in found if not ISO_UTC.match(v)]
    assert bad == []
