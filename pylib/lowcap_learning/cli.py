"""The `lowcap-learning` command line. Commands live in lowcap_learning.commands.*; each module
registers its commands on the root group or on the shared `run` and `explain` groups.

Every error is one line starting with `error:` (usage errors add click's usage line first), exit code 1
(2 for usage errors). `--database-url` is accepted before the subcommand or after any subcommand."""

from __future__ import annotations

import importlib
import sys

import click
import psycopg

from lowcap_learning import __version__
from lowcap_learning.db import describe_error

COMMAND_MODULES = [
    "core",  # migrate, status, ingest
    "strength",  # explain strength
    "tuning",  # explain tuning
    "ops",  # run, scheduler, flags, config, logs, explain allocation, plot, adapter, demo
    "check",  # check (recompute and compare the learning state)
    "doctor",  # doctor (what the operator must still do: RLS, roles, pooler, adapter)
    "backtest",  # backtest (replay a trade file in a scratch database)
]

MIGRATE_FIRST = "the learning schema is missing or older than this package: run `lowcap-learning migrate` first"


def _needs_migrate(err: psycopg.Error) -> bool:
    """Schema learning missing (3F000), or one of its functions/tables missing (42883, 42P01)."""
    message = err.diag.message_primary or ""
    if isinstance(err, psycopg.errors.InvalidSchemaName):
        return '"learning"' in message
    if isinstance(err, psycopg.errors.UndefinedFunction | psycopg.errors.UndefinedTable):
        return "learning." in message or '"learning' in message
    return False


def error_line(err: psycopg.Error) -> str:
    return MIGRATE_FIRST if _needs_migrate(err) else describe_error(err)


class LearningGroup(click.Group):
    """Turns database errors into one clear line and a non-zero exit code; one `error:` prefix."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except psycopg.Error as err:
            click.echo(f"error: {error_line(err)}", err=True)
            sys.exit(1)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except click.UsageError as err:
            if err.ctx is not None:
                click.echo(err.ctx.get_usage(), err=True)
                if err.ctx.command.get_help_option(err.ctx) is not None:
                    click.echo(f"Try '{err.ctx.command_path} --help' for help.", err=True)
            click.echo(f"error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except click.ClickException as err:
            click.echo(f"error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except click.exceptions.Exit as err:
            sys.exit(err.exit_code)
        except BrokenPipeError:
            sys.exit(1)


def _database_url_option() -> click.Option:
    """--database-url after a subcommand: overrides the one before it (and DATABASE_URL)."""

    def remember(ctx: click.Context, _param, value):
        if value is not None:
            ctx.find_root().ensure_object(dict)["url"] = value
        return value

    return click.Option(
        ["--database-url"], default=None, expose_value=False, is_eager=True, callback=remember,
        help="libpq URL (default: DATABASE_URL); also accepted before the subcommand.",
    )


def _add_database_url(command: click.Command) -> None:
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_database_url(sub)
        return
    if not any(getattr(p, "name", None) == "database_url" for p in command.params):
        command.params.append(_database_url_option())


@click.group(cls=LearningGroup)
@click.version_option(__version__, "--version", prog_name="lowcap-learning", message="%(prog)s %(version)s")
@click.option("--database-url", envvar="DATABASE_URL", default=None, help="libpq URL (default: DATABASE_URL).")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None) -> None:
    """lowcap-learning: timeframe allocation, PM tuning and PM strength learning in PostgreSQL."""
    ctx.ensure_object(dict)
    ctx.obj.setdefault("url", database_url)


@cli.group()
def run() -> None:
    """Run one learning job now (for cron)."""


@cli.group()
def explain() -> None:
    """Explain why the allocation or an override is what it is."""


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"lowcap_learning.commands.{_name}")
    except ModuleNotFoundError as _err:
        if _err.name != f"lowcap_learning.commands.{_name}":
            raise
        continue
    _module.register(cli)

for _command in cli.commands.values():
    _add_database_url(_command)


def main() -> None:
    cli(prog_name="lowcap-learning")


if __name__ == "__main__":
    main()
