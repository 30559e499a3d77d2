"""The `lowcap-learning` command line. Commands live in lowcap_learning.commands.*; each module
registers its commands on the root group or on the shared `run` and `explain` groups."""

from __future__ import annotations

import importlib
import sys

import click
import psycopg

from lowcap_learning.db import describe_error

COMMAND_MODULES = [
    "core",  # migrate, status, ingest
    "strength",  # explain strength
    "tuning",  # explain tuning
    "ops",  # run, scheduler, flags, config, logs, explain allocation, plot, demo, check
    "check",  # check (recompute and compare the learning state)
]


class LearningGroup(click.Group):
    """Turns database errors into one clear line and a non-zero exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except psycopg.Error as err:
            click.echo(f"error: {describe_error(err)}", err=True)
            sys.exit(1)


@click.group(cls=LearningGroup)
@click.option("--database-url", envvar="DATABASE_URL", default=None, help="libpq URL (default: DATABASE_URL).")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None) -> None:
    """lowcap-learning: timeframe allocation, PM tuning and PM strength learning in PostgreSQL."""
    ctx.ensure_object(dict)
    ctx.obj["url"] = database_url


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


def main() -> None:
    cli(prog_name="lowcap-learning")


if __name__ == "__main__":
    main()
