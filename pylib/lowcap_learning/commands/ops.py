"""Operations: run, scheduler, flags, config, logs, explain allocation, plot, adapter, demo."""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import psycopg

from lowcap_learning import db, output
from lowcap_learning import jobs as jobs_module

FLAG_GET = "SELECT learning.feature_flag(%(module)s::text, %(flag)s::text)"
FLAG_SET = "SELECT learning.set_feature_flag(%(module)s::text, %(flag)s::text, %(value)s::boolean)"
FLAGS_SHOW = """
SELECT coalesce(
    (SELECT CASE WHEN pg_catalog.jsonb_typeof(config_data -> 'feature_flags') = 'object'
        THEN config_data -> 'feature_flags' END
     FROM public.learning_configs WHERE module_id = %(module)s::text),
    '{}'::jsonb
)
"""
CONFIG_GET = """
SELECT s.key, t.value, c.config_data ? s.key AS is_set, s.default_value, s.kind, s.min_value, s.max_value,
    s.description, s.choices
FROM learning.tunable_specs AS s
CROSS JOIN LATERAL pg_catalog.jsonb_each(learning.tunables()) AS t (key, value)
LEFT JOIN public.learning_configs AS c ON c.module_id = 'learning'
WHERE t.key = s.key AND (%(key)s::text IS NULL OR s.key = %(key)s::text)
ORDER BY s.key
"""
CONFIG_SET = "SELECT learning.set_tunable(%(key)s::text, %(value)s::jsonb)"
CONFIG_UNSET = "SELECT learning.unset_tunable(%(key)s::text)"
ADAPTER_INSTALL = "SELECT learning.install_ad_strands_adapter()"

# Flags the bot reads from learning_configs module pm (feature_flags); anything else needs --new.
KNOWN_FLAGS = {
    "pm": {
        "ae_v2_enabled": "the PM computes A (aggressiveness) and E (exit eagerness) with the v2 method "
        "(flag-derived A/E, which the strength overrides steer) instead of the legacy compute_levers(); "
        "default false",
        "learning_overrides_enabled": "the PM applies the pm_strength overrides (A/E steering) at runtime; "
        "default false",
        "tuning_overrides_enabled": "the PM applies the tuning_* execution overrides (ts_min, halo, slope) "
        "at runtime; default false",
    },
}
FLAG_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Active lessons per (module, lesson_type) and active overrides per kind: a job run that would take a
# group from some to none is refused unless forced (see _guarded_runner).
ACTIVE_GROUPS = """
SELECT 'lessons ' || l.module || '/' || l.lesson_type, pg_catalog.count(*)
FROM public.learning_lessons AS l WHERE l.status = 'active' GROUP BY 1
UNION ALL
SELECT 'overrides ' || CASE WHEN o.action_category LIKE 'tuning\\_%%' THEN 'tuning_*' ELSE o.action_category END,
    pg_catalog.count(*)
FROM public.pm_overrides AS o WHERE o.status = 'active' GROUP BY 1
"""
DATA_WINDOW = """
SELECT
    coalesce(%(as_of)s::timestamptz, pg_catalog.now()),
    (learning.tunables() ->> 'lookback_days')::double precision,
    (SELECT pg_catalog.max(t.closed_at) FROM public.closed_trades AS t),
    (SELECT pg_catalog.max(e."timestamp") FROM public.pattern_episode_events AS e)
"""


def _parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO timestamp: {value!r} (e.g. 2025-01-15T10:09:00Z)") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _guarded_runner(force: bool):
    """The job's providers, refused (and rolled back) when they would deactivate every active lesson
    or override of a group that had some: the usual cause is --as-of defaulting to now while the data
    is older than the lookback."""

    def runner(conn, job, as_of):
        before = dict(conn.execute(ACTIVE_GROUPS).fetchall())
        counts = jobs_module._run_providers(conn, job, as_of)
        if force:
            return counts
        after = dict(conn.execute(ACTIVE_GROUPS).fetchall())
        gone = [f"all {n} active {group}" for group, n in sorted(before.items()) if n and not after.get(group)]
        if gone:
            at, lookback, trade, episode = conn.execute(DATA_WINDOW, {"as_of": as_of}).fetchone()
            raise jobs_module.JobRefused(
                f"refused: this run would deactivate {' and '.join(gone)}; nothing was changed. It ran as of "
                f"{output.iso(at)} with lookback_days {lookback:g}; the newest trade closed at "
                f"{output.iso(trade) if trade else 'never'}, the newest episode at "
                f"{output.iso(episode) if episode else 'never'}. Pass --as-of <time of the data> or, "
                "if this is what you want, --force"
            )
        return counts

    return runner


def _run(obj, name: str, as_of: str | None, slot: str | None, as_json: bool, force: bool = False) -> None:
    as_of_ts = _parse_ts(as_of)
    if slot == "current":
        from lowcap_learning.scheduler import hour_slot

        slot_ts = hour_slot(datetime.now(UTC))
    else:
        slot_ts = _parse_ts(slot)
    results = []
    with db.connection(obj["url"], autocommit=True) as conn:
        for job in jobs_module.job_names(name):
            results.append(jobs_module.run_job(
                conn, job, as_of=as_of_ts, slot_start=slot_ts, runner=_guarded_runner(force),
                single_transaction=True,
            ))
    if as_json:
        click.echo(output.dumps([r.as_dict() for r in results], indent=2))
    else:
        for r in results:
            if r.status == "skipped":
                click.echo(f"{r.job}: skipped (slot {output.iso(r.slot_start)} already claimed)")
            elif r.status == "succeeded":
                took = (r.finished_at - r.started_at).total_seconds()
                click.echo(f"{r.job}: succeeded in {took:.2f}s {json.dumps(r.counts, default=str)}")
            else:
                click.echo(f"error: {r.job} failed: {r.error}", err=True)
    if any(r.status == "failed" for r in results):
        sys.exit(1)


RUN_OPTIONS = (
    click.option("--as-of", "as_of", default=None, help="Simulated time (ISO), default now."),
    click.option(
        "--slot",
        default=None,
        help="Claim this hour slot (ISO or 'current', for cron); default: an ad-hoc run that always runs.",
    ),
    output.json_option,
    click.option(
        "--force", is_flag=True,
        help="Run even if it deactivates every active lesson or override of a kind (refused otherwise).",
    ),
)


def run_command(name: str, help_text: str) -> click.Command:
    """`run <name>`: one job (or `all`) now, with the options every run shares."""

    def command(obj, as_of, slot, as_json, force):
        _run(obj, name, as_of, slot, as_json, force)

    command.__doc__ = help_text
    for opt in reversed(RUN_OPTIONS):
        command = opt(command)
    return click.command(name=name)(click.pass_obj(command))


@click.command()
@click.option("--job", "names", multiple=True, type=click.Choice(list(jobs_module.JOBS)), help="Only these jobs.")
@click.option("--log-file", default=None, help="Learning-system log (default $LOWCAP_LEARNING_LOG or logs/...).")
@click.option("--export-logs/--no-export-logs", default=True, help="Export learning_log rows after each job.")
@click.pass_obj
def scheduler(obj, names, log_file, export_logs) -> None:
    """Run the hourly jobs (:08 lesson-builder, :09 tuning-miner, :10 materializer) until stopped."""
    from lowcap_learning.pooler import refuse_transaction_pooler
    from lowcap_learning.scheduler import HourlyScheduler

    try:
        refuse_transaction_pooler(obj["url"], "scheduler", "session advisory locks and session settings per job")
    except RuntimeError as err:
        raise click.ClickException(str(err)) from None
    sched = HourlyScheduler(obj["url"], list(names) or None, export_logs=export_logs, log_file=log_file)
    aps = sched.build()

    def stop(*_):
        if aps.running:
            aps.shutdown(wait=False)
        else:  # not started yet (or starting): leave before the main loop
            raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, stop)
        names_at = ", ".join(f"{n} at :{jobs_module.JOBS[n].minute:02d}" for n in sched.names)
        click.echo(f"scheduler started: {names_at}")
        aps.start()
    click.echo("scheduler stopped")


# ---------------------------------------------------------------------- flags
@click.group()
def flags() -> None:
    """Feature flags (learning_configs module pm, key feature_flags)."""


def _set_flag(obj, flag: str, module: str, value: bool) -> None:
    with db.connection(obj["url"], autocommit=True) as conn:
        conn.execute(FLAG_SET, {"module": module, "flag": flag, "value": value})
        now = conn.execute(FLAG_GET, {"module": module, "flag": flag}).fetchone()[0]
    click.echo(f"{module}.feature_flags.{flag} = {str(now).lower()}")


def _check_flag(obj, flag: str, module: str, new: bool) -> None:
    if not flag or not module:
        raise click.ClickException("refused: module and flag are required (not empty)")
    if not FLAG_NAME.match(flag):
        raise click.ClickException(
            f"refused: flag name {flag!r} must be lower-case letters, digits and _ (starting with a letter)"
        )
    if flag in KNOWN_FLAGS.get(module, {}) or new:
        return
    with db.connection(obj["url"]) as conn:
        present = conn.execute(FLAGS_SHOW, {"module": module}).fetchone()[0]
    if flag not in present:
        known = ", ".join(sorted(set(KNOWN_FLAGS.get(module, {})) | set(present))) or "none"
        raise click.ClickException(
            f"refused: unknown flag {module}.{flag} (known: {known}; see `lowcap-learning flags list`); "
            "pass --new to create it"
        )


def _flag_setter(name: str, value: bool, help_text: str) -> None:
    """`flags enable` / `flags disable`: one command each, the same options and checks."""

    @flags.command(name, help=help_text)
    @click.argument("flag")
    @click.option("--module", default="pm", show_default=True)
    @click.option("--new", is_flag=True, help="Create a flag that is neither known nor already set.")
    @click.pass_obj
    def command(obj, flag, module, new) -> None:
        _check_flag(obj, flag, module, new)
        _set_flag(obj, flag, module, value)


_flag_setter("enable", True, "Set a flag to true (e.g. ae_v2_enabled); see `flags list`.")
_flag_setter("disable", False, "Set a flag to false.")


@flags.command("list")
@click.option("--json", "as_json", is_flag=True)
def flags_list(as_json) -> None:
    """The known flags: what each switches in the bot (no database needed)."""
    if as_json:
        click.echo(output.dumps(KNOWN_FLAGS, indent=2))
        return
    for module, known in sorted(KNOWN_FLAGS.items()):
        for flag, text in sorted(known.items()):
            click.echo(f"{module}.feature_flags.{flag}: {text}")


@flags.command("show")
@click.argument("flag", required=False)
@click.option("--module", default="pm", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def flags_show(obj, flag, module, as_json) -> None:
    """Show every flag of the module, or one flag (false when missing)."""
    with db.connection(obj["url"]) as conn:
        if flag:
            data = {flag: conn.execute(FLAG_GET, {"module": module, "flag": flag}).fetchone()[0]}
        else:
            data = conn.execute(FLAGS_SHOW, {"module": module}).fetchone()[0]
    if as_json:
        click.echo(output.dumps(data))
        return
    if not data:
        click.echo(f"{module}: no feature flags set (every flag is false)")
    for key, value in sorted(data.items()):
        click.echo(f"{module}.feature_flags.{key} = {json.dumps(value)}")


# ---------------------------------------------------------------------- config
@click.group()
def config() -> None:
    """Tunables, design §3 (learning_configs module learning)."""


@contextlib.contextmanager
def _refused_when_invalid():
    """The tunable validator's refusal (22023) as one `refused:` line with its hint."""
    try:
        yield
    except psycopg.errors.InvalidParameterValue as err:
        hint = f" ({err.diag.message_hint})" if err.diag.message_hint else ""
        raise click.ClickException(f"refused: {err.diag.message_primary}{hint}") from None


@config.command("get")
@click.argument("key", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def config_get(obj, key, as_json) -> None:
    """Show every tunable (value, default or set, allowed range), or one."""
    with db.connection(obj["url"]) as conn:
        rows = conn.execute(CONFIG_GET, {"key": key}).fetchall()
    if key and not rows:
        raise click.ClickException(f"unknown tunable {key!r}: see `lowcap-learning config get`")
    if as_json:
        click.echo(output.dumps({r[0]: r[1] for r in rows}))
        return
    for k, value, is_set, default, kind, lo, hi, desc, choices in rows:
        if kind == "string_array":
            allowed = "array of strings"
        elif kind == "choice":
            allowed = "one of " + ", ".join(choices)
        else:
            allowed = f"{kind} in [{lo:g}, {hi:g}]"
        origin = f"set, default {json.dumps(default)}" if is_set else "default"
        click.echo(f"{k:<16}{json.dumps(value):>10}  ({origin}; {allowed}) {desc}")


@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
@click.pass_obj
def config_set(obj, key, value) -> None:
    """Validate and store a tunable; VALUE is JSON (0.004, 5, '["chain"]')."""
    def no_constants(name: str):
        raise ValueError(name)

    try:
        parsed = json.loads(value, parse_constant=no_constants)
    except json.JSONDecodeError:
        parsed = value  # a bare word is a string; the validator will say what is expected
    except ValueError:
        parsed = None
    if parsed is None and value.strip() != "null" or (isinstance(parsed, float) and not math.isfinite(parsed)):
        raise click.ClickException(f"refused: tunable {key} must be a finite value, got {value}")
    with db.connection(obj["url"], autocommit=True) as conn, _refused_when_invalid():
        stored = conn.execute(CONFIG_SET, {"key": key, "value": json.dumps(parsed)}).fetchone()[0]
    click.echo(f"{key} = {json.dumps(stored)}")


@config.command("unset")
@click.argument("key")
@click.pass_obj
def config_unset(obj, key) -> None:
    """Remove a stored tunable: its default applies again."""
    with db.connection(obj["url"], autocommit=True) as conn, _refused_when_invalid():
        value = conn.execute(CONFIG_UNSET, {"key": key}).fetchone()[0]
    click.echo(f"{key} = {json.dumps(value)} (default)")


# ---------------------------------------------------------------------- logs
LOG_FILE_OPTION = click.option(
    "--log-file", default=None, help="Default $LOWCAP_LEARNING_LOG or logs/learning_system.log."
)


@click.group("logs")
def logs_group() -> None:
    """Export learning.learning_log rows to the learning-system log file."""


@logs_group.command("export")
@LOG_FILE_OPTION
@click.pass_obj
def logs_export(obj, log_file) -> None:
    """Export every row not yet exported (each row once), then exit."""
    from lowcap_learning import logs

    with db.connection(obj["url"], autocommit=True) as conn:
        count = logs.export(conn, log_file)
    click.echo(f"exported {count} rows to {logs.log_path(log_file)}")


@logs_group.command("follow")
@LOG_FILE_OPTION
@click.option("--poll", default=30.0, show_default=True, help="Seconds between safety sweeps.")
@click.pass_obj
def logs_follow(obj, log_file, poll) -> None:
    """Export on start, then on every NOTIFY learning_log, until stopped (SIGTERM/Ctrl-C)."""
    from lowcap_learning import logs
    from lowcap_learning.pooler import refuse_transaction_pooler

    try:
        refuse_transaction_pooler(obj["url"], "logs follow", "LISTEN learning_log")
    except RuntimeError as err:
        raise click.ClickException(str(err)) from None
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    click.echo(f"following learning_log into {logs.log_path(log_file)}")
    with contextlib.suppress(KeyboardInterrupt):
        logs.follow(obj["url"], log_file, poll=poll, stop=lambda: bool(stopping))


# ---------------------------------------------------------------------- explain / plot
@click.command("allocation")
@click.option("--last", default=5, show_default=True, type=click.IntRange(min=1), help="How many steps.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def explain_allocation(obj, last, as_json) -> None:
    """The last allocation steps: trade, scores, desired, limit, before -> after."""
    from lowcap_learning import explain

    with db.connection(obj["url"]) as conn:
        timeframes = explain.tracked_timeframes(conn)
        steps = explain.last_steps(conn, last)
    if as_json:
        click.echo(output.dumps([s.as_dict(timeframes) for s in steps], indent=2))
        return
    if not steps:
        click.echo("no closed trades yet: the allocation is the starting one")
    for line in explain.render(steps, timeframes):
        click.echo(line)


@click.group()
def plot() -> None:
    """PNG plots."""


@plot.command("allocation")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG file.")
@click.pass_obj
def plot_allocation(obj, out: Path) -> None:
    """Allocation per timeframe over time, trades marked."""
    from lowcap_learning.plot import plot_allocation as draw

    if out.suffix.lower() != ".png":
        raise click.ClickException(f"refused: --out {out} must end in .png (the plot is written as PNG)")
    if not out.resolve().parent.is_dir():
        raise click.ClickException(f"refused: directory {out.parent} does not exist (create it first)")
    with db.connection(obj["url"]) as conn:
        steps = draw(conn, out)
    click.echo(f"wrote {out} ({steps} steps)")


# ---------------------------------------------------------------------- adapter / demo
@click.group()
def adapter() -> None:
    """The bot's ad_strands -> closed_trades adapter."""


@adapter.command("install")
@click.pass_obj
def adapter_install(obj) -> None:
    """Put the trigger on public.ad_strands (run again if the bot created the table after migrate)."""
    with db.connection(obj["url"], autocommit=True) as conn:
        installed = conn.execute(ADAPTER_INSTALL).fetchone()[0]
    if not installed:
        raise click.ClickException("public.ad_strands does not exist (or has no kind column): nothing installed")
    click.echo("ad_strands adapter installed: position_closed strands now become closed_trades rows")


@click.command()
@click.option("--small", is_flag=True, help="A few seconds' version (tests).")
@click.option("--out", "out_dir", default="demo-output", show_default=True, type=click.Path(path_type=Path))
@click.option("--seed", default=7, show_default=True)
@click.pass_obj
def demo(obj, small, out_dir, seed) -> None:
    """Recreate the demo database and run the whole system on synthetic history (destroys that database)."""
    from lowcap_learning import demo as demo_module

    demo_module.main(url=obj["url"], small=small, out_dir=out_dir, seed=seed)


def register(cli: click.Group) -> None:
    run_group: click.Group = cli.commands["run"]
    for job in jobs_module.JOBS.values():
        run_group.add_command(
            run_command(job.name, f"Run the {job.name} now ({job.description}; scheduled at :{job.minute:02d}).")
        )
    run_group.add_command(
        run_command("all", "Run every job now, in schedule order (lesson-builder, tuning-miner, materializer).")
    )
    cli.commands["explain"].add_command(explain_allocation)
    for command in (scheduler, flags, config, logs_group, plot, adapter, demo):
        cli.add_command(command)
