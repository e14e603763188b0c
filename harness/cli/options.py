"""What several ``bench`` commands share: the ``--store`` and ``--grid`` options, the flags that
select cells of a grid, the run kinds ``--kind`` takes, and loading the selected grid."""

from __future__ import annotations

from typing import Any

import click

from harness.schema import SELECT_ON

STORE = click.option(
    "--store",
    envvar="BENCH_STORE",
    default="results",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Result store folder (run directories + SQLite index). Env: BENCH_STORE.",
)
GRID = click.option(
    "--grid", "grid_name", required=True, help="Grid name (leaderboards/NAME.toml) or path."
)
#: The kinds of run ``bench runs`` and ``bench rm`` select with ``--kind``.
KINDS = click.Choice(["student", "teacher", "surrogate", "checkpoint", "robustbench"])


def grid_options(func: Any) -> Any:
    """The flags that select cells of a grid (shared by run, status, plan and teachers)."""
    for option in reversed(
        [
            GRID,
            click.option("--method", help="Only this method or variant (default: the grid's)."),
            click.option("--dataset", help="Override the grid's data set (npz:FILE for an .npz)."),
            click.option("--teacher", help="Only this teacher of the grid."),
            click.option("--student", help="Override the grid's students with this model."),
            click.option(
                "--epochs",
                type=click.IntRange(min=1),
                help="Shorter schedule for the students (teachers keep theirs); runs are "
                "labelled 'short'.",
            ),
            click.option(
                "--teacher-epochs",
                type=click.IntRange(min=1),
                help="Shorter schedule for the teachers the grid trains; such a teacher is "
                "labelled 'short' wherever it appears.",
            ),
            click.option(
                "--seed",
                "seeds",
                type=int,
                multiple=True,
                help="Seeds (repeatable; default: the grid's).",
            ),
            click.option(
                "--select-on",
                type=click.Choice(list(SELECT_ON)),
                help="Checkpoint selection split.",
            ),
            STORE,
        ]
    ):
        func = option(func)
    return func


def load_selected(grid_name: str, seeds: tuple[int, ...] = (), **selection: Any) -> Any:
    """The grid with the cells the flags select (``seeds`` empty: the grid's own)."""
    from harness.grid.load import load_grid

    return load_grid(grid_name, seeds=list(seeds) or None, **selection)
