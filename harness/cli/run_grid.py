"""``bench run``: train and evaluate a grid's runs here, in local workers, or through submitit
(Slurm or its local executor), then write the grid's leaderboard into the store."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from harness.cli.options import grid_options, load_selected
from harness.utils.errors import UserError


@click.command()
@grid_options
@click.option(
    "--data-root", envvar="BENCH_DATA", help="Folder with the data sets. Env: BENCH_DATA."
)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto.")
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Continue interrupted runs from their last checkpoint.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
@click.option(
    "--fast",
    envvar="BENCH_FAST",
    default="auto",
    show_default=True,
    help="Training fast path: auto (all on CUDA, off on CPU), off, all, or switches "
    "resident,amp,channels_last,compile,fused applied in order, e.g. auto,-compile. "
    "Env: BENCH_FAST.",
)
@click.option(
    "--deterministic",
    is_flag=True,
    help="Bit-repeatable training on one GPU (cuDNN/cuBLAS/Inductor deterministic; slower). "
    "The grid's 'deterministic = true' asks for it too.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "slurm", "submitit-local"]),
    default="local",
    show_default=True,
    help="local: here; slurm: submit through submitit; submitit-local: submitit's "
    "local executor (same code path as slurm, on this machine).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs in parallel with --executor local (one GPU each).",
)
@click.option("--partition", help="Slurm partition (else the grid's [slurm] table).")
@click.option("--time", "time_min", type=click.IntRange(min=1), help="Slurm time limit, minutes.")
@click.option("--gpus", type=click.IntRange(min=0), help="GPUs per Slurm job.")
@click.option("--cpus", type=click.IntRange(min=1), help="CPUs per Slurm job.")
@click.option("--mem-gb", type=click.IntRange(min=1), help="Memory per Slurm job.")
@click.option(
    "--force",
    is_flag=True,
    help="Rerun the selected student runs that are complete (their old results, checkpoints "
    "and log are removed first; teachers and surrogates are kept).",
)
@click.option(
    "--stale",
    is_flag=True,
    help="Rerun, as --force does, only the selected complete student runs whose method's "
    "code changed since they were trained (marked stale on the leaderboard).",
)
@click.option(
    "--log",
    "loggers",
    type=click.Choice(["tensorboard"]),
    multiple=True,
    help="Also write each epoch's metrics to TensorBoard (<run>/tensorboard; needs the "
    "'tensorboard' extra). Env: BENCH_LOG.",
)
def run(
    store: str,
    data_root: str | None,
    device: str,
    resume: bool,
    progress: bool,
    fast: str,
    deterministic: bool,
    executor: str,
    workers: int,
    partition: str | None,
    time_min: int | None,
    gpus: int | None,
    cpus: int | None,
    mem_gb: int | None,
    force: bool,
    stale: bool,
    loggers: tuple[str, ...],
    **selection: Any,
) -> None:
    """Train and evaluate every run of a grid (teachers first), then write its leaderboard."""
    from harness.execution.executors import run_local
    from harness.publishing.leaderboard import leaderboard_markdown
    from harness.store.store import Store
    from harness.training.fast import FastPath
    from harness.utils.compat import resolve_device
    from harness.utils.threads import set_threads

    FastPath.parse(fast, "cuda")  # a typo fails here, before any job or run directory exists
    if force and stale:
        raise UserError("give --force (every complete run) or --stale (the stale ones), not both")
    set_threads(1)  # workers set their own share (harness.utils.threads)
    _request_loggers(loggers)
    grid = load_selected(**selection)
    deterministic = deterministic or grid.deterministic
    if deterministic:
        from harness.utils.determinism import request_cublas_workspace

        request_cublas_workspace()  # before CUDA starts, here and in every worker
    st = Store(store)
    if executor != "local":
        from harness.execution.executors import require_submitit

        require_submitit("slurm" if executor == "slurm" else "local")  # before any reset
    if force or stale:
        from harness.execution.rerun import force_rerun

        force_rerun(grid, st, echo=click.echo, only_stale=stale)
    if executor != "local":
        slurm = {"partition": partition, "time": time_min, "gpus_per_node": gpus,
                 "cpus_per_task": cpus, "mem_gb": mem_gb}  # fmt: skip
        _submit(grid, st, executor, slurm, store=store, data_root=data_root, fast=fast,
                deterministic=deterministic)  # fmt: skip
        return
    dev = resolve_device(device)
    n_teachers = len({t for r in grid.runs for t in r.teacher_needs})
    surrogates = f"{len(grid.surrogate_runs)} surrogate run(s), " if grid.surrogate_runs else ""
    click.echo(
        f"grid {grid.name}: {n_teachers} teacher run(s), {surrogates}{len(grid.runs)} run(s) "
        f"on {dev} "
        f"(fast path: {FastPath.parse(fast, dev)}{', deterministic' if deterministic else ''})"
    )
    outcome = run_local(
        grid,
        st,
        device=dev,
        data_root=data_root,
        resume=resume,
        progress=progress,
        workers=workers,
        echo=click.echo,
        fast=fast,
        deterministic=deterministic,
    )
    path = _write_leaderboard(st, grid.name, leaderboard_markdown(st, grid.name))
    click.echo(", ".join(f"{n} {k}" for k, n in sorted(outcome.items())))
    click.echo(f"leaderboard written to {path}")
    if outcome.get("failed") or outcome.get("blocked"):
        sys.exit(1)


def _request_loggers(loggers: tuple[str, ...]) -> None:
    """Ask for ``--log`` through the environment, which workers and Slurm jobs inherit; a
    logger that is not installed is one line now, not a failed run later."""
    from harness.training import curves

    if loggers:
        os.environ[curves.ENV] = ",".join(loggers)
    if "tensorboard" in curves.requested():
        curves.summary_writer()


def _submit(
    grid: Any,
    st: Any,
    executor: str,
    slurm: dict[str, Any],
    *,
    store: str,
    data_root: str | None,
    fast: str,
    deterministic: bool,
) -> None:
    """``bench run --executor slurm|submitit-local``: submit the grid's runs through submitit
    (with submitit-local: wait for them, then write the leaderboard)."""
    from harness.execution.executors import run_submitit, slurm_parameters
    from harness.publishing.leaderboard import leaderboard_markdown

    params = slurm_parameters(grid, slurm)
    cluster = "slurm" if executor == "slurm" else "local"
    jobs = run_submitit(
        grid,
        st,
        cluster=cluster,
        params=params,
        data_root=data_root,
        echo=click.echo,
        fast=fast,
        deterministic=deterministic,
    )
    click.echo(
        f"{len(jobs)} job(s) submitted; follow them with: bench status --grid "
        f"{grid.name} --store {store}"
    )
    if executor == "submitit-local":
        for job in jobs:
            job.result()
        path = _write_leaderboard(st, grid.name, leaderboard_markdown(st, grid.name))
        click.echo(f"leaderboard written to {path}")


def _write_leaderboard(store: Any, grid: str, text: str) -> Path:
    from harness.utils.atomic import write_text_atomic

    path = Path(store.root) / "leaderboards" / f"{grid}.md"
    write_text_atomic(text, path)
    return path
