"""The store's upkeep: ``bench store check|rebuild`` (the SQLite index against the run
directories) and ``bench rm`` (remove runs from both together)."""

from __future__ import annotations

import sys

import click

from harness.cli.options import KINDS, STORE
from harness.utils.errors import UserError


@click.group("store")
def store_group() -> None:
    """Check or rebuild the store's SQLite index from its run directories."""


@store_group.command("check")
@STORE
def store_check(store: str) -> None:
    """Verify that the index agrees with the run directories (exit 1 if not)."""
    from harness.store.store import Store

    st = Store(store)
    for run_id in st.heal():
        click.echo(f"{run_id}: re-indexed (a killed process had left the index behind)")
    problems = st.check()
    for line in problems:
        click.echo(line)
    click.echo(f"{len(st.run_ids())} run(s), {len(problems)} problem(s)")
    if problems:
        sys.exit(1)


@store_group.command("rebuild")
@STORE
def store_rebuild(store: str) -> None:
    """Recreate the index from the run directories (the source of truth)."""
    from harness.store.store import Store

    click.echo(f"indexed {Store(store).rebuild_index(echo=click.echo)} run(s)")


@click.command("rm")
@click.argument("run_refs", nargs=-1)
@click.option("--grid", "grid_name", help="Remove the runs this grid lists (with --method: its).")
@click.option("--method", help="Remove the runs of this method or variant.")
@click.option("--kind", "kinds", type=KINDS, multiple=True, help="Only runs of this kind.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before removing several runs.")
@STORE
def rm(
    run_refs: tuple[str, ...],
    grid_name: str | None,
    method: str | None,
    kinds: tuple[str, ...],
    yes: bool,
    store: str,
) -> None:
    """Remove runs from the run directories and the index together (RUN: id or unique prefix)."""
    from harness.store.removal import remove_runs, select_runs
    from harness.store.store import Store

    st = Store(store)
    selection = grid_name is not None or method is not None or bool(kinds)  # "" too: refused
    if run_refs and selection:
        raise UserError("give RUN ids or --grid/--method/--kind, not both")
    if run_refs:
        ids = sorted({st.resolve(ref) for ref in run_refs})
    elif selection:
        ids = select_runs(st, grid=grid_name, method=method, kinds=kinds)
        if not ids:
            raise UserError(f"no run in {st.root} matches the selection")
        for run_id in ids:
            click.echo(f"  {run_id}")
        if not yes and not click.confirm(f"remove these {len(ids)} run(s)?"):
            raise click.exceptions.Abort()
    else:
        raise UserError("give the RUN ids to remove, or select them with --grid/--method/--kind")
    n = remove_runs(st, ids, echo=click.echo)
    click.echo(f"{n} run(s) removed from {st.root}")
