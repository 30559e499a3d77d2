"""Operator commands: flags, config, run, explain allocation, plot, status, adapter."""

from __future__ import annotations

import json
import re
import struct
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from conftest import reset_learning
from lowcap_learning.cli import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def invoke(db_url, conn):
    reset_learning(conn)
    conn.execute("TRUNCATE learning.job_runs")

    def run(*args):
        return CliRunner().invoke(cli, ["--database-url", db_url, *args], catch_exceptions=False)

    return run


def pm_config(conn):
    row = conn.execute("SELECT config_data FROM public.learning_configs WHERE module_id = 'pm'").fetchone()
    return row and row[0]


def test_flags_from_no_pm_row(invoke, conn):
    assert pm_config(conn) is None
    shown = invoke("flags", "show", "ae_v2_enabled")
    assert shown.exit_code == 0 and shown.output == "pm.feature_flags.ae_v2_enabled = false\n"
    assert invoke("flags", "enable", "ae_v2_enabled").output == "pm.feature_flags.ae_v2_enabled = true\n"
    assert pm_config(conn) == {"feature_flags": {"ae_v2_enabled": True}}
    invoke("flags", "enable", "ae_v2_enabled")  # idempotent
    assert pm_config(conn) == {"feature_flags": {"ae_v2_enabled": True}}


def test_flags_on_pm_row_without_feature_flags(invoke, conn):
    conn.execute(
        "INSERT INTO public.learning_configs (module_id, config_data) VALUES ('pm', '{\"N_MIN\": 40}')"
    )
    assert invoke("flags", "show").output == "pm: no feature flags set (every flag is false)\n"
    invoke("flags", "enable", "ae_v2_enabled")
    assert pm_config(conn) == {"N_MIN": 40, "feature_flags": {"ae_v2_enabled": True}}


def test_flags_on_pm_row_with_feature_flags(invoke, conn):
    conn.execute(
        "INSERT INTO public.learning_configs (module_id, config_data)"
        " VALUES ('pm', '{\"feature_flags\": {\"tuning_overrides_enabled\": true}, \"LOOKBACK_DAYS\": 30}')"
    )
    invoke("flags", "enable", "ae_v2_enabled")
    invoke("flags", "disable", "tuning_overrides_enabled")
    assert pm_config(conn) == {
        "LOOKBACK_DAYS": 30,
        "feature_flags": {"tuning_overrides_enabled": False, "ae_v2_enabled": True},
    }
    out = invoke("flags", "show", "--json")
    assert json.loads(out.output) == {"tuning_overrides_enabled": False, "ae_v2_enabled": True}
    assert conn.execute("SELECT learning.feature_flag('pm', 'ae_v2_enabled')").fetchone()[0] is True


def test_config_set_refuses_bad_value_with_the_range(invoke, conn):
    bad = invoke("config", "set", "max_step", "5")
    assert bad.exit_code == 1
    assert "refused: tunable max_step must be a number in [0, 1], got 5" in bad.output
    unknown = invoke("config", "set", "nope", "1")
    assert unknown.exit_code == 1
    assert 'unknown tunable "nope"' in unknown.output and "known: allocation_rule, base_bias" in unknown.output
    not_int = invoke("config", "set", "n_min", "2.5")
    assert not_int.exit_code == 1 and "an integer in [1, 1000000]" in not_int.output
    assert conn.execute("SELECT learning.tunables() -> 'max_step'").fetchone()[0] == 0.003


def test_config_set_and_get(invoke, conn):
    assert invoke("config", "set", "max_step", "0.004").output == "max_step = 0.004\n"
    assert invoke("config", "set", "scope_dims", '["chain", "regime"]').exit_code == 0
    got = json.loads(invoke("config", "get", "--json").output)
    assert got["max_step"] == 0.004 and got["scope_dims"] == ["chain", "regime"] and got["n_min"] == 33
    line = invoke("config", "get", "max_step").output
    assert line.startswith("max_step") and "(set, default 0.003; number in [0, 1])" in line
    assert invoke("config", "get", "nope").exit_code == 1


def test_run_with_a_slot_runs_it_once(invoke, conn):
    slot = "2025-01-15T10:00:00Z"
    first = invoke("run", "all", "--slot", slot, "--as-of", "2025-01-15T10:08:00Z", "--json")
    runs = json.loads(first.output)
    assert [r["job"] for r in runs] == ["lesson-builder", "tuning-miner", "materializer"]
    assert all(r["status"] in ("succeeded", "failed") for r in runs)
    assert first.exit_code == (1 if any(r["status"] == "failed" for r in runs) else 0)
    second = invoke("run", "tuning-miner", "--slot", slot)
    assert second.exit_code == 0
    assert second.output == "tuning-miner: skipped (slot 2025-01-15T10:00:00Z already claimed)\n"
    assert conn.execute("SELECT count(*) FROM learning.job_runs").fetchone()[0] == 3
    status = invoke("status")
    assert status.exit_code == 0
    for job in ("lesson-builder", "tuning-miner", "materializer"):
        assert any(line.startswith(job) and "2025-01-15 10:00:00" in line for line in status.output.splitlines())
    assert {j["job"] for j in json.loads(invoke("status", "--json").output)["jobs"]} == {
        "lesson-builder", "tuning-miner", "materializer"
    }


def test_run_bad_timestamp_is_a_clear_error(invoke):
    out = invoke("run", "all", "--as-of", "yesterday")
    assert out.exit_code == 2 and "not an ISO timestamp: 'yesterday'" in out.output


def insert_trades(conn, n: int = 6):
    start = datetime(2025, 1, 15, tzinfo=UTC)
    conn.execute(
        "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)"
        " SELECT 't' || i, (ARRAY['15m', '1h', '4h'])[i %% 3 + 1], (i * 1.5 - 4),"
        " %(start)s::timestamptz + i * interval '1 hour'"
        " FROM generate_series(1, %(n)s::integer) AS i",
        {"start": start, "n": n},
    )


def test_explain_allocation(invoke, conn):
    assert invoke("explain", "allocation").output == "no closed trades yet: the allocation is the starting one\n"
    insert_trades(conn)
    out = invoke("explain", "allocation", "--last", "2")
    lines = out.output.splitlines()
    assert re.match(r"#\d+ trade t5 \(4h, roi \+0\.0350, closed 2025-01-15 05:00\): moved one capped step", lines[0])
    assert any(line.strip().startswith("scores") for line in lines)
    assert any("limit" in line for line in lines) and any(" -> " in line for line in lines)
    data = json.loads(invoke("explain", "allocation", "--last", "3", "--json").output)
    assert [d["trade_id"] for d in data] == ["t4", "t5", "t6"]
    last = data[-1]
    assert set(last["after"]) == {"15m", "1h", "4h"} and abs(sum(last["after"].values()) - 1) < 1e-12
    assert last["before"] == data[-2]["after"]


def test_plot_allocation_writes_a_png(invoke, conn, tmp_path):
    insert_trades(conn, 30)
    out = tmp_path / "plots" / "alloc.png"
    out.parent.mkdir()  # a missing directory is refused (tests/test_cli_no_surprises.py)
    res = invoke("plot", "allocation", "--out", str(out))
    assert res.exit_code == 0 and res.output == f"wrote {out} (30 steps)\n"
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1000 and height == 500


def test_adapter_install_without_table_fails_clearly(invoke, conn):
    conn.execute("DROP TABLE IF EXISTS public.ad_strands")
    out = invoke("adapter", "install")
    assert out.exit_code == 1 and "public.ad_strands does not exist" in out.output


def test_status_without_runs(invoke):
    out = invoke("status")
    assert out.exit_code == 0 and "(no runs yet)" in out.output


def test_run_help_lists_every_job(invoke):
    out = invoke("run", "--help").output
    for name in ("all", "lesson-builder", "tuning-miner", "materializer"):
        assert name in out
    assert timedelta  # noqa: B018 - imported for the trade helpers
