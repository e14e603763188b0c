"""Looking at stored runs: ``bench show`` (one run, optionally its training curves),
``bench runs`` (every run of the store) and ``bench compare`` (two runs side by side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from harness.cli.options import KINDS, STORE
from harness.cli.results import result_line
from harness.utils.errors import UserError


@click.command()
@click.argument("run_ref")
@STORE
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    help="Also write its training curves (loss, selection accuracy per epoch) to this .svg or "
    ".png (matplotlib, the 'plot' extra) file.",
)
def show(run_ref: str, store: str, plot: str | None) -> None:
    """Show one run: its config, status, metrics and files (RUN_REF: id or unique prefix)."""
    from harness.store.store import Store

    st = Store(store)
    run_id = st.resolve(run_ref)
    if plot:
        _plot_run(st, run_id, Path(plot))
    cfg = st.config(run_id)
    metrics = st.metrics(run_id)
    click.echo(f"run        {run_id}")
    click.echo(f"status     {st.status(run_id)}")
    hparams = json.dumps(cfg["method"]["hparams"], sort_keys=True)
    click.echo(f"method     {cfg['method']['name']}  {hparams}")
    data = cfg.get("data")
    sizes = f"  {data['train']} train / {data['val']} val / {data['test']} test" if data else ""
    click.echo(f"dataset    {cfg['dataset']['name']}{sizes}")
    click.echo(f"model      {cfg['model']}")
    click.echo(
        f"teacher    {json.dumps(cfg['teacher'], sort_keys=True) if cfg['teacher'] else '—'}"
    )
    for role, ref in (cfg.get("teachers") or {}).items():  # a multi-teacher run's, by role
        click.echo(f"  {role:<8} {json.dumps(ref, sort_keys=True)}")
    train = cfg["train"]
    if cfg.get("kind") in ("checkpoint", "robustbench"):  # bench eval of given weights
        source = ", ".join(f"{k} {v}" for k, v in sorted((cfg.get("source") or {}).items()))
        click.echo(f"schedule   none: evaluation only ({cfg['kind']}: {source})")
    else:
        select = train.get("select_on", "—")
        click.echo(f"schedule   {train['epochs']} epochs ({cfg['schedule']}), select on {select}")
    for name, row in metrics.get("results", {}).items():
        click.echo(result_line(name, row, 10))
    if metrics.get("wall_time_s") is not None:
        click.echo(f"wall time  {metrics['wall_time_s']:.1f} s")
    click.echo(f"directory  {st.run_dir(run_id)}")


@click.command("runs")
@click.option("--grid", "grid_name", help="Only the runs this grid lists.")
@click.option("--method", help="Only this method or variant (checkpoint, robustbench: bench eval).")
@click.option("--kind", "kinds", type=KINDS, multiple=True, help="Only runs of this kind.")
@STORE
def runs_(grid_name: str | None, method: str | None, kinds: tuple[str, ...], store: str) -> None:
    """Every run of the store, across grids (bench eval's runs of checkpoints too)."""
    from tabulate import tabulate

    from harness.store.listing import list_runs
    from harness.store.store import Store

    name = Path(grid_name).stem if grid_name and grid_name.endswith(".toml") else grid_name
    rows = list_runs(Store(store), grid=name, method=method, kinds=kinds)
    if rows:
        click.echo(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
    click.echo(f"{len(rows)} run(s)")


@click.command()
@click.argument("run_a")
@click.argument("run_b")
@STORE
def compare(run_a: str, run_b: str, store: str) -> None:
    """Two runs side by side: config, results and provenance; differences marked ≠."""
    from harness.publishing.compare import compare_text
    from harness.store.store import Store

    click.echo(compare_text(Store(store), run_a, run_b))


def _plot_run(st: Any, run_id: str, path: Path) -> None:
    from harness.publishing.curves import write_plot

    history = (st.metrics(run_id).get("train") or {}).get("history")
    if not history:
        raise UserError(f"run {run_id} has no training epochs to plot (not trained by the harness)")
    click.echo(f"curves written to {write_plot({run_id: history}, path)}")
