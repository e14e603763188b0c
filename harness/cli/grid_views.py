"""What a grid's cells are before and while they run: ``bench status`` (done, running, failed,
pending), ``bench plan`` (projected GPU-hours and the commands) and ``bench teachers``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from harness.cli.options import grid_options, load_selected


@click.command()
@grid_options
def status(store: str, **selection: Any) -> None:
    """Done / running / interrupted / failed / pending, per cell of a grid."""
    from harness.execution.status import status_table

    click.echo(status_table(load_selected(**selection), store))


@click.command()
@grid_options
@click.option(
    "--throughput",
    envvar="BENCH_THROUGHPUT",
    type=click.Path(dir_okay=False),
    help="throughput.json of benchmarks/throughput.py, for cells without a completed run "
    "(default: benchmarks/results/throughput.json when present). Env: BENCH_THROUGHPUT.",
)
def plan(store: str, throughput: str | None, **selection: Any) -> None:
    """The runs of a grid, their projected GPU-hours and the commands that run them."""
    from harness.execution.status import plan_table

    default = Path("benchmarks/results/throughput.json")
    if throughput is None and default.is_file():
        throughput = str(default)
    click.echo(
        plan_table(load_selected(**selection), store, throughput, {**selection, "store": store})
    )


@click.command()
@grid_options
def teachers(store: str, **selection: Any) -> None:
    """What each teacher of a grid is, where it comes from, and whether it is ready."""
    from harness.execution.status import teachers_table

    click.echo(teachers_table(load_selected(**selection), store))
