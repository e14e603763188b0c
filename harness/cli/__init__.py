"""The ``bench`` command line. Flags mirror the grid file's keys.

Errors a user can cause print one line and exit with code 2. Each command lives in the module of
its concern (run_grid, evaluate, grid_views, run_views, publish, store, catalog); this one holds
the group, registers them, and turns errors into that one line.
"""

from __future__ import annotations

import sys

import click

from harness.cli.catalog import list_, new_method
from harness.cli.evaluate import eval_
from harness.cli.grid_views import plan, status, teachers
from harness.cli.publish import export, leaderboard, report
from harness.cli.run_grid import run
from harness.cli.run_views import compare, runs_, show
from harness.cli.store import rm, store_group
from harness.utils.errors import UserError, one_line

#: Every command, in the order of a grid's life: run it, watch it, look at and publish its
#: results, keep the store, evaluate anything, add a method (``bench --help`` sorts them by name).
COMMANDS = [
    run,
    status,
    plan,
    teachers,
    show,
    runs_,
    compare,
    leaderboard,
    report,
    export,
    store_group,
    rm,
    eval_,
    list_,
    new_method,
]


@click.group(commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adv-distill-bench")
def bench() -> None:
    """Benchmark harness and leaderboard for adversarial distillation."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors → one line on stderr and exit code 2."""
    try:
        bench.main(args=argv, prog_name="bench", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        if not isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # help: as is
            message = one_line(" ".join(exc.format_message().split()))  # click's may span lines
            exc.format_message = lambda: message  # type: ignore[method-assign]
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
