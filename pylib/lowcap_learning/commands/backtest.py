"""backtest: replay a trade file through the real trigger, writing nothing live."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lowcap_learning import output
from lowcap_learning.backtest import IngestError, parse_overrides, plot, replay
from lowcap_learning.ingest import read_rows


def _report(result, every: int) -> list[str]:
    lines = [f"allocation_rule {result.rule}: {len(result.steps)} trades"]
    header = "trade".rjust(8) + "".join(tf.rjust(10) for tf in result.timeframes)
    lines.append(header)
    for point in result.path(every):
        lines.append(str(point["trade"]).rjust(8) + "".join(f"{v:10.4f}" for v in point["allocation"].values()))
    lift = result.learned - result.static
    lines.append(
        f"capital-weighted ROI: learned {result.learned:+.4f}, static {result.static:+.4f}, lift {lift:+.4f}"
    )
    return lines


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="A tunable for this replay (repeatable).")
@click.option("--compare", metavar="KEY=VALUE", default=None, help="Also replay with this tunable changed.")
@click.option("--every", type=int, default=None, help="Show the allocation every N trades (default: ~10 points).")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the allocation path as a PNG.")
@click.option("--scratch-url", default=None, help="Server for the scratch database (default: the same).")
@output.json_option
@click.pass_obj
def backtest(obj, file, sets, compare, every, plot_file, scratch_url, as_json) -> None:
    """Replay FILE (CSV or JSONL, as `ingest` reads it) through the real trigger in a scratch
    database, under the live tunables or --set ones; the live database is only read.

    Prints the allocation path and the capital-weighted ROI of the learned split against the
    static starting split (Σ allocation·roi over trades, and the lift). Needs CREATEDB on the
    server (or --scratch-url).
    """
    if plot_file is not None and (plot_file.suffix.lower() != ".png" or not plot_file.parent.is_dir()):
        raise click.ClickException(f"--plot must name a .png file in an existing directory, got {plot_file}")
    try:
        overrides = parse_overrides(sets)
        variants = [overrides]
        if compare:
            variants.append(overrides | parse_overrides([compare]))
        total = sum(1 for _ in read_rows(file))
        results = []
        for variant in variants:
            with click.progressbar(length=total, label=f"replaying {file.name}", file=sys.stderr) as bar:
                results.append(replay(file, obj["url"], variant, scratch_url, progress=bar.update))
    except IngestError as err:
        raise click.ClickException(f"{file.name}: {err} (nothing was written)") from None
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    step = every or max(1, len(results[0].steps) // 10)
    if plot_file is not None:
        plot(results, plot_file)
    if as_json:
        data = results[0].as_dict(step)
        if compare:
            data["compare"] = results[1].as_dict(step)
        click.echo(output.dumps(data, indent=2))
        return
    for i, result in enumerate(results):
        if i:
            click.echo("")
        for line in _report(result, step):
            click.echo(line)


def register(cli: click.Group) -> None:
    cli.add_command(backtest)
