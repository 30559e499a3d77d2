"""Every log line shape of the plan's "Learning System Logging Plan" (and design §14), produced by
really triggering it and read back from the exported learning_system.log, matched by a regex.

Shapes are "PREFIX: k=v | k=v": the plan's fields must appear in the plan's order; a line may carry
extra `| key=value` fields after them (this project adds trade_id, limit, duration, ...).
"""

from __future__ import annotations

import importlib
import json
import re
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from conftest import reset_learning
from lowcap_learning import jobs, logs, synthetic
from lowcap_learning.scheduler import HourlyScheduler

HEAD = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - learning_system - (?P<level>DEBUG|INFO|WARNING|ERROR) - "
NUM = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
RATE = rf"(?:{NUM}|null|-)"
PAT = r"[\w.]+"
SCOPE = r"\{[^{}]*\}"
ALLOC = rf"\{{15m: {NUM}, 1h: {NUM}, 4h: {NUM}\}}"
LEVER = rf"(?:ts|halo|slope)[+-]{NUM}"
RATIO = rf"(?:{NUM}x|inf)"
EXTRA = r"(?: \| [A-Za-z_]+=[^|]*)*"


def shape(*segments: str) -> re.Pattern:
    """The first segment is the prefix (with its inline fields); later ones are ` | `-separated."""
    body = segments[0] + "".join(EXTRA + r" \| " + s for s in segments[1:]) + EXTRA
    return re.compile(HEAD + body + "$")


# (name, level, regex, the plan's example line it stands for)
SHAPES = [
    ("tuning_miner_starting", "INFO", shape(r"TuningMiner starting", r"events=\d+", rf"lookback_days={NUM}"),
     "TuningMiner starting | events=104 | lookback_days=90"),
    ("tuning_miner_created_lesson", "INFO",
     shape(r"TuningMiner: Created lesson", rf"pattern={PAT}", rf"scope={SCOPE}", r"n=\d+",
           rf"wr={RATE} fpr={RATE} mr={RATE} dr={RATE}"),
     "TuningMiner: Created lesson | pattern=pm.uptrend.S1.entry | scope={} | n=104 | wr=0.286 fpr=0.714 ..."),
    ("tuning_miner_scope_slice", None,
     shape(r"TuningMiner: Scope slice passed", rf"pattern={PAT}", rf"scope={SCOPE}", r"n=\d+"),
     "TuningMiner: Scope slice passed | pattern=pm.uptrend.S1.entry | scope={timeframe: 15m} | n=57"),
    ("tuning_miner_completed", "INFO", shape(r"TuningMiner completed", r"lessons_created=\d+", rf"duration={NUM}s"),
     "TuningMiner completed | lessons_created=3 | duration=2.9s"),
    ("materializer_starting", "INFO", shape(r"Override Materializer starting", r"lessons=\d+"),
     "Override Materializer starting | lessons=3"),
    ("simulation", "INFO",
     shape(rf"SIMULATION: pattern={PAT} scope={SCOPE}", r"tested=\d+ skipped=\d+",
           rf"best={LEVER}(?:\+{LEVER})* ratio={RATIO} \(gained=\d+ misses_caught=\d+ failures_avoided=\d+"
           r" lost=\d+ failures_added=\d+ wins_lost=\d+\)"),
     "SIMULATION: pattern=... scope={} | tested=.. skipped=.. | best=ts-0.05+halo+0.1 ratio=3.0x (gained=6 ...)"),
    ("override_created", "INFO",
     shape(rf"OVERRIDE CREATED: pattern={PAT}", r"action=tuning_(?:ts_min|halo|slope_min)", rf"multiplier={NUM}",
           rf"scope={SCOPE}", rf"ratio={RATIO}"),
     "OVERRIDE CREATED: pattern=pm.uptrend.S1.entry | action=tuning_halo | multiplier=1.1 | scope={} | ratio=5.0x"),
    ("no_override", "WARNING", shape(rf"NO OVERRIDE: pattern={PAT}", rf"scope={SCOPE}", r"reason=[^|]+"),
     "(No Override Reasons: why no override was created)"),
    ("materializer_completed", "INFO",
     shape(r"Override Materializer completed", r"overrides_created=\d+", rf"duration={NUM}s"),
     "Override Materializer completed | overrides_created=1 | duration=1.9s"),
    ("episode_event", "INFO",
     shape(rf"EPISODE EVENT: pattern={PAT}", r"decision=skipped", r"episode_id=shape_ep_1", r"blocked_by=\[ts\]"),
     "EPISODE EVENT: pattern=pm.uptrend.S1.entry | decision=skipped | episode_id=s1_ep_abc123 | blocked_by=[ts]"),
    ("episode_outcome", "INFO",
     shape(r"EPISODE OUTCOME: episode_id=shape_ep_1", r"outcome=success", r"windows_updated=3"),
     "EPISODE OUTCOME: episode_id=s1_ep_abc123 | outcome=success | windows_updated=3"),
    ("episode_missing_thresholds", "WARNING",
     shape(r"EPISODE EVENT: Missing threshold data", r"episode_id=shape_ep_2", r"missing=\[ts_min, halo_max\]"),
     "EPISODE EVENT: Missing threshold data | episode_id=s1_ep_abc123 | missing=[ts_min, halo_max]"),
    ("allocation_update", "INFO",
     shape(r"ALLOCATION UPDATE: trigger=1h trade closed", rf"old={ALLOC}", rf"new={ALLOC}", rf"change={NUM}%"),
     "ALLOCATION UPDATE: trigger=15m trade closed | old={15m: 0.15, ...} | new={...} | change=0.03%"),
    ("roi_update", "INFO",
     shape(r"ROI UPDATE: timeframe=15m", rf"roi_short={NUM}", r"n=1", rf"trade_roi={NUM}"),
     "ROI UPDATE: timeframe=15m | roi_short=-0.0864 | n=14 | trade_roi=-0.022"),
    ("allocation_skip", "INFO",
     shape(r"ALLOCATION SKIP: Only 1 timeframe has trades \(need 2\+\)", r"timeframes_with_trades=\[15m\]"),
     "ALLOCATION SKIP: Only 1 timeframe has trades (need 2+) | timeframes_with_trades=[15m]"),
    ("strength_override", "INFO",
     shape(rf"STRENGTH OVERRIDE: pattern={PAT}", rf"dirA={NUM} dirE={NUM} conf={NUM} edge={NUM} n=\d+",
           r"scope=\{[^{}\"]*\}"),  # the plan's {chain: solana}, not JSON
     "STRENGTH OVERRIDE: pattern=… | dirA=… dirE=… conf=… edge=… n=… | scope=… (design §14)"),
    ("strength_lessons", "INFO",
     shape(r"STRENGTH LESSONS: as_of=[^|]+", r"trades=\d+", r"lessons=\d+"),
     "(PM strength lesson builder run summary)"),
    ("strength_materializer", "INFO",
     shape(r"STRENGTH MATERIALIZER: active=\d+", r"written=\d+", r"deactivated=\d+", r"no_override=\d+"),
     "(PM strength materializer summary, with the no-override count)"),
    # Operations (this project's own lines, same shape)
    ("job_succeeded", "INFO", shape(r"JOB SUCCEEDED: job=tuning-miner", r"slot=\S+", r"as_of=\S+",
                                    rf"duration={NUM}s", r"counts=\{.*\}"), "JOB SUCCEEDED"),
    ("job_failed", "ERROR", shape(r"JOB FAILED: job=ghost", r"slot=\S+", r"as_of=now", rf"duration={NUM}s",
                                  r"error=.*is not available.*"), "JOB FAILED"),
    ("config_set", "INFO", shape(r"CONFIG SET: key=n_min", r"old=default", r"new=5"), "CONFIG SET"),
    # value=t: sql/010_config.sql formats the boolean with %s (reported to the lead; should print true).
    ("feature_flag", "INFO", shape(r"FEATURE FLAG: module=pm", r"flag=ae_v2_enabled", r"value=(?:true|t)"),
     "FEATURE FLAG"),
    ("strand_adapter", "WARNING",
     shape(r"STRAND ADAPTER: Cannot read position_closed strand", r"strand_id=shape-bad", r"reason=.+"),
     "STRAND ADAPTER"),
    ("scheduler_unreachable", "ERROR",
     shape(r"SCHEDULER: Database unreachable", r"job=lesson-builder", r"slot=\S+", r"attempt=1", r"error=.*"),
     "SCHEDULER"),
]

START = datetime(2025, 1, 1, tzinfo=UTC)
AS_OF = START + timedelta(days=61)


def _sample(ts: float) -> dict:
    return {"ts_score": ts, "ts_ok": ts >= 0.6, "slope_ok": True, "entry_zone_ok": True, "halo_distance": 0.5,
            "ema60_slope": 0.001, "ema144_slope": 0.001}


def _call(module: str, func: str, conn, problems: list[str], **kwargs):
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ModuleNotFoundError, AttributeError) as err:
        problems.append(f"{module}.{func} missing: {err}")
        return None
    return fn(conn, **kwargs)


@pytest.fixture(scope="module")
def exported(db_url, tmp_path_factory):
    """Trigger every shape once on the module's database; export; return (lines, problems)."""
    log = tmp_path_factory.mktemp("shapes") / "learning_system.log"
    problems: list[str] = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        reset_learning(conn)
        conn.execute("TRUNCATE public.pattern_episode_events, public.learning_lessons, public.pm_overrides,"
                     " learning.job_runs")
        # Allocation: the plan's walkthrough (15m +5% -> skip; 1h -2% -> update).
        conn.execute(
            "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES"
            " ('shape-1', '15m', 5.0, '2025-01-15 10:30:31+00')"
        )
        conn.execute(
            "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES"
            " ('shape-2', '1h', -2.0, '2025-01-15 11:30:31+00')"
        )
        # Episodes: a skipped window blocked by ts only, outcome on 3 windows, one without thresholds.
        thresholds = {"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "dx_min": 0.5}
        rows = [
            {"scope": {"chain": "solana"}, "pattern_key": "pm.uptrend.S1.entry", "episode_id": "shape_ep_1",
             "decision": "skipped", "factors": {"samples": [_sample(0.5)], **thresholds},
             "timestamp": "2025-01-15T10:30:31+00:00"},
            *[{"scope": {"chain": "solana"}, "pattern_key": "pm.uptrend.S1.entry", "episode_id": "shape_ep_1",
               "decision": "acted", "factors": {"samples": [_sample(0.7)], **thresholds},
               "timestamp": f"2025-01-15T1{i}:30:31+00:00"} for i in (1, 2)],
            {"scope": {"chain": "base"}, "pattern_key": "pm.uptrend.S1.entry", "episode_id": "shape_ep_2",
             "decision": "acted", "factors": {"samples": [_sample(0.7)], "slope_min": 0.0, "dx_min": 0.5},
             "timestamp": "2025-01-15T13:30:31+00:00"},
        ]
        for r in rows:
            r.setdefault("trade_id", None)
            r.setdefault("outcome", None)
        synthetic.insert_episode_events(conn, rows)
        conn.execute("SELECT learning.set_episode_outcome('shape_ep_1', 'success')")
        # Config and flags.
        conn.execute("SELECT learning.set_tunable('n_min', '5')")
        conn.execute("SELECT learning.set_tunable('max_slice_dims', '1')")
        conn.execute("SELECT learning.set_feature_flag('pm', 'ae_v2_enabled', true)")
        # Tuning: a synthetic history, mined through the job (JOB SUCCEEDED), then materialized.
        synthetic.insert_episode_events(conn, synthetic.episode_events(600, seed=11, start=START, span_days=60))
        run = jobs.run_job(conn, "tuning-miner", as_of=AS_OF, slot_start=AS_OF)
        if run.status != "succeeded":
            problems.append(f"tuning-miner job: {run.error}")
        _call("lowcap_learning.simulate", "materialize_tuning", conn, problems, as_of=AS_OF)
        # Strength: trades with actions, lessons, overrides.
        trades = synthetic.closed_trades(300, seed=11, start=START, span_days=60)
        synthetic.insert_closed_trades(conn, trades)
        _call("lowcap_learning.strength", "run_lesson_builder", conn, problems, as_of=AS_OF)
        _call("lowcap_learning.strength", "materialize_strength", conn, problems, as_of=AS_OF)
        # Operations.
        ghost = {"ghost": jobs.Job("ghost", 8, ("lowcap_learning.no_such_module:run",), "test")}
        jobs.run_job(conn, "ghost", registry=ghost)
        conn.execute("CREATE TABLE IF NOT EXISTS public.ad_strands (id text PRIMARY KEY, kind text,"
                     " timeframe text, position_id text, trade_id uuid, content jsonb)")
        conn.execute("SELECT learning.install_ad_strands_adapter()")
        conn.execute("INSERT INTO public.ad_strands (id, kind, content) VALUES ('shape-bad', 'position_closed', %s)",
                     (json.dumps({"completed_trades": []}),))
        logs.export(conn, log)
    HourlyScheduler("postgresql://root@127.0.0.1:1/nowhere?connect_timeout=1", retries=0, log_file=str(log)).fire(
        "lesson-builder", AS_OF
    )
    return log.read_text().splitlines(), problems


@pytest.mark.parametrize(("name", "level", "regex", "example"), SHAPES, ids=[s[0] for s in SHAPES])
def test_log_line_shape(exported, name, level, regex, example):
    lines, problems = exported
    matches = [m for m in (regex.match(line) for line in lines) if m]
    prefix = regex.pattern[len(HEAD):].split(r" \|")[0].split("(?:")[0].replace("\\", "")[:40]
    near = [line for line in lines if prefix.split(":")[0] in line][:3]
    assert matches, f"no line of shape {name} ({example}); problems: {problems}; lines with its prefix: {near}"
    if level is not None:
        assert {m["level"] for m in matches} == {level}


def test_every_line_is_in_the_learning_system_format(exported):
    lines, _ = exported
    head = re.compile(HEAD)
    assert lines and all(head.match(line) for line in lines)
