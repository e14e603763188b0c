"""Results out of the store: ``bench leaderboard`` (a grid's tables as Markdown, HTML, CSV or
LaTeX), ``bench report`` (a paper's tables beside ours) and ``bench export`` (JSON per run)."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.options import GRID, STORE
from harness.utils.errors import UserError


@click.command()
@GRID
@STORE
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html", "csv", "latex"]),
    default="md",
    show_default=True,
    help="Markdown, a self-contained HTML page, CSV, or LaTeX.",
)
@click.option("--output", type=click.Path(dir_okay=False), help="Write to this file.")
def leaderboard(grid_name: str, store: str, fmt: str, output: str | None) -> None:
    """A grid's leaderboard: one table per (data set, teacher, student), from the store."""
    from harness.grid.load import grid_path
    from harness.publishing import leaderboard as lb
    from harness.store.store import Store

    name = grid_path(grid_name).stem
    tables = lb.leaderboard_tables(Store(store), name)
    if fmt == "html":
        from harness.publishing.html import render_html, training_curves

        text = render_html(tables, name, curves=training_curves(Store(store), tables))
    else:
        text = {
            "md": lambda: lb.to_markdown(tables, name),
            "csv": lambda: lb.to_csv(tables),
            "latex": lambda: lb.to_latex(tables),
        }[fmt]()
    if output:
        from harness.utils.atomic import write_text_atomic

        write_text_atomic(text, Path(output))  # an OSError becomes one line naming the file
        click.echo(f"leaderboard written to {output}")
    else:
        click.echo(text)


@click.command()
@click.option("--paper", required=True, help="The paper whose tables to reproduce (dgad).")
@click.option("--table", "table_id", help="One table by number (e.g. 4); default: every table.")
@click.option("--all", "all_tables", is_flag=True, help="Every table of the paper (the default).")
@click.option(
    "--missing",
    is_flag=True,
    help="Print the bench commands that fill the empty cells instead of the tables.",
)
@STORE
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md"]),
    default="md",
    show_default=True,
    help="Markdown.",
)
def report(
    paper: str, table_id: str | None, all_tables: bool, missing: bool, store: str, fmt: str
) -> None:
    """A paper's tables beside ours: ours / paper (ours − paper) per cell, from the store."""
    from harness.publishing.report import build_reports, missing_commands, report_markdown
    from harness.store.store import Store

    if table_id is not None and all_tables:
        raise UserError("give --table N or --all, not both")
    tables = build_reports(Store(store), paper=paper, table=table_id)
    if missing:
        for line in missing_commands(tables):
            click.echo(line)
    else:
        click.echo(report_markdown(tables))


@click.command()
@click.argument("run_refs", nargs=-1)
@click.option("--grid", "grid_name", help="Every complete student run of this grid.")
@click.option("--method", help="With --grid: only this method or variant.")
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    help="Folder for <dataset>/Linf/<run>.json (default: <store>/export).",
)
@STORE
def export(
    run_refs: tuple[str, ...],
    grid_name: str | None,
    method: str | None,
    output: str | None,
    store: str,
) -> None:
    """Write runs' results as JSON, one file per run (README: "Exporting results")."""
    from harness.publishing.export import export_runs
    from harness.store.removal import select_runs
    from harness.store.store import Store

    st = Store(store)
    if bool(run_refs) == (grid_name is not None):  # an empty --grid: refused by select_runs
        raise UserError("give the RUN ids to export, or --grid G (not both)")
    if run_refs:
        if method is not None:
            raise UserError("--method selects within --grid; give RUN ids without it")
        ids = sorted({st.resolve(ref) for ref in run_refs})
    else:
        ids = select_runs(st, grid=grid_name, method=method, kinds=("student",))
        ids = [i for i in ids if st.status(i) == "complete"]
        if not ids:
            raise UserError(f"no complete student run of grid {grid_name} in {st.root}")
    folder = Path(output) if output else st.root / "export"
    paths = export_runs(st, ids, folder)
    for path in paths:
        click.echo(f"wrote {path}")
    click.echo(f"{len(paths)} run(s) exported to {folder}")
