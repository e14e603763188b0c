"""The ``bench`` command line. Flags mirror the grid file's keys.

Errors a user can cause print one line and exit with code 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from harness.schema import SELECT_ON
from harness.utils.errors import UserError, one_line

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adv-distill-bench")
def bench() -> None:
    """Benchmark harness and leaderboard for adversarial distillation."""


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


@bench.command()
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


@bench.command()
@grid_options
def status(store: str, **selection: Any) -> None:
    """Done / running / interrupted / failed / pending, per cell of a grid."""
    from harness.execution.status import status_table

    click.echo(status_table(load_selected(**selection), store))


@bench.command()
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


@bench.command()
@grid_options
def teachers(store: str, **selection: Any) -> None:
    """What each teacher of a grid is, where it comes from, and whether it is ready."""
    from harness.execution.status import teachers_table

    click.echo(teachers_table(load_selected(**selection), store))


@bench.group("store")
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


@bench.command("list")
@click.argument("kind", type=click.Choice(["methods", "models", "datasets", "attacks", "grids"]))
@click.argument("pattern", required=False)
def list_(kind: str, pattern: str | None) -> None:
    """List registered methods, models, datasets, the attacks --attack takes, or the grids.

    PATTERN: a part of the name (res) or a wildcard (resnet*)."""
    import harness
    from harness.grid.load import list_grids
    from harness.registry import METHODS, match_names

    if kind == "attacks":
        from harness.grid.suites import PRESETS, preset_text

        for name in match_names(PRESETS, pattern):
            click.echo(f"{name:<12} {preset_text(PRESETS[name])}")
        return
    if kind == "grids":
        names = match_names(list_grids(), pattern)
    else:
        names = getattr(harness, f"list_{kind}")(pattern)
    width = max(map(len, names), default=0)
    for name in names:  # methods: each with its paper
        cite = METHODS.get(name).citation() if kind == "methods" else ""
        click.echo(f"{name:<{width}}  {cite}".rstrip())
    if kind == "models" and not pattern:
        click.echo("timm:NAME, torchvision:NAME  (any classifier of those packages)")


@bench.command()
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
        click.echo(f"  {name:<10} {100 * row['accuracy']:6.2f}%  (n={row['n']}){_worst_class(row)}")
    if metrics.get("wall_time_s") is not None:
        click.echo(f"wall time  {metrics['wall_time_s']:.1f} s")
    click.echo(f"directory  {st.run_dir(run_id)}")


KINDS = click.Choice(["student", "teacher", "surrogate", "checkpoint", "robustbench"])


@bench.command("runs")
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


@bench.command("rm")
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


@bench.command()
@click.argument("run_a")
@click.argument("run_b")
@STORE
def compare(run_a: str, run_b: str, store: str) -> None:
    """Two runs side by side: config, results and provenance; differences marked ≠."""
    from harness.publishing.compare import compare_text
    from harness.store.store import Store

    click.echo(compare_text(Store(store), run_a, run_b))


@bench.command()
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


def _plot_run(st: Any, run_id: str, path: Path) -> None:
    from harness.publishing.curves import write_plot

    history = (st.metrics(run_id).get("train") or {}).get("history")
    if not history:
        raise UserError(f"run {run_id} has no training epochs to plot (not trained by the harness)")
    click.echo(f"curves written to {write_plot({run_id: history}, path)}")


def _worst_class(row: dict) -> str:
    """``, worst class 3: 41.00%`` for a result row with per-class accuracies, else nothing."""
    per_class = [(v, c) for c, v in enumerate(row.get("per_class") or []) if v is not None]
    if not per_class:
        return ""
    value, cls = min(per_class)
    return f", worst class {cls}: {100 * value:.2f}%"


@bench.command()
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


@bench.command("eval")
@click.argument("target")
@click.option(
    "--suite",
    type=click.Choice(["config", "whitebox", "transfer", "all"]),
    default="whitebox",
    show_default=True,
    help="config: the attacks the run's grid lists; whitebox: clean, FGSM, PGD-10, CW2, "
    "AutoAttack; transfer: surrogates' FGSM/PGD/JSMA; all: both.",
)
@click.option(
    "--attack", "attack_names", multiple=True, help="Only these preset attacks (repeatable)."
)
@click.option("--eval-subset", type=click.IntRange(min=1), help="Evaluate N test images (seeded).")
@click.option("--surrogate", "surrogates", multiple=True, help="Transfer surrogate models.")
@click.option("--model", help="Architecture of a checkpoint TARGET.")
@click.option("--dataset", help="Data set of a checkpoint or RobustBench TARGET (npz:FILE too).")
@click.option("--robustbench", is_flag=True, help="TARGET is a RobustBench model name.")
@click.option(
    "--zoo",
    type=click.Choice(["cifar10", "cifar100", "imagenet"]),
    help="The RobustBench leaderboard of a --robustbench TARGET (default: --dataset's, or the "
    "one with its number of classes, so an npz of CIFAR-10 images takes cifar10).",
)
@STORE
@click.option(
    "--data-root", envvar="BENCH_DATA", help="Folder with the data sets. Env: BENCH_DATA."
)
@click.option("--device", default="auto", show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def eval_(
    target: str,
    suite: str,
    attack_names: tuple[str, ...],
    eval_subset: int | None,
    surrogates: tuple[str, ...],
    model: str | None,
    dataset: str | None,
    robustbench: bool,
    zoo: str | None,
    store: str,
    data_root: str | None,
    device: str,
    progress: bool,
) -> None:
    """Evaluate a stored run, a checkpoint file or a RobustBench model (resumable)."""
    from harness.execution.external import evaluate_target
    from harness.utils.compat import resolve_device
    from harness.utils.threads import set_threads

    set_threads(1)
    rows = evaluate_target(
        target,
        suite=suite,
        attack_names=list(attack_names),
        subset=eval_subset,
        surrogates=list(surrogates),
        model=model,
        dataset=dataset,
        robustbench=robustbench,
        zoo=zoo,
        store=store,
        data_root=data_root,
        device=resolve_device(device),
        progress=progress,
        echo=click.echo,
    )
    for name, row in rows["results"].items():
        click.echo(f"  {name:<28} {100 * row['accuracy']:6.2f}%  (n={row['n']}){_worst_class(row)}")
    failed = [name for name, check in rows.get("checks", {}).items() if not check["ok"]]
    click.echo(f"checks: {', '.join(failed) + ' FAILED' if failed else 'ok'}")


@bench.command("new-method")
@click.argument("name")
@click.option(
    "--methods-dir",
    default=None,
    help="Where the method file goes (default: methods/, which registers it; elsewhere it "
    "prints the entry point that does).",
)
@click.option("--tests-dir", default="tests", show_default=True, help="Where its test goes.")
def new_method(name: str, methods_dir: str | None, tests_dir: str) -> None:
    """Write a working method skeleton (KD on adversarial examples) and its test."""
    import methods
    from harness.scaffold import new_method as scaffold
    from harness.scaffold import registration_hint

    builtin = Path(methods.__file__).parent
    folder = Path(methods_dir) if methods_dir else builtin
    method_path, test_path = scaffold(name, folder, Path(tests_dir))
    click.echo(f"wrote {method_path}")
    click.echo(f"wrote {test_path}")
    for line in registration_hint(name, method_path, builtin):
        click.echo(line)
    click.echo(f"try it: bench run --method {name} --grid smoke")


@bench.command()
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


if __name__ == "__main__":
    main()
