"""The ``bench`` command line. Flags mirror the grid file's keys.

Errors a user can cause print one line and exit with code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from harness.errors import UserError

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


@bench.command()
@GRID
@click.option("--method", help="Run only this method (default: every method of the grid).")
@click.option("--dataset", help="Override the grid's data set (npz:FILE for an .npz file).")
@click.option("--teacher", help="Run only this teacher of the grid.")
@click.option("--student", help="Override the grid's students with this model.")
@click.option(
    "--epochs", type=click.IntRange(min=1), help="Shorter schedule; runs are labelled 'short'."
)
@click.option(
    "--seed", "seeds", type=int, multiple=True, help="Seeds (repeatable; default: the grid's)."
)
@click.option("--select-on", type=click.Choice(["val", "test"]), help="Checkpoint selection split.")
@STORE
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
def run(
    grid_name: str,
    method: str | None,
    dataset: str | None,
    teacher: str | None,
    student: str | None,
    epochs: int | None,
    seeds: tuple[int, ...],
    select_on: str | None,
    store: str,
    data_root: str | None,
    device: str,
    resume: bool,
    progress: bool,
) -> None:
    """Train and evaluate every run of a grid (teachers first), then write its leaderboard."""
    from harness.compat import resolve_device
    from harness.grid import load_grid
    from harness.leaderboard import leaderboard_markdown
    from harness.runner import execute
    from harness.store import Store

    grid = load_grid(
        grid_name,
        method=method,
        dataset=dataset,
        teacher=teacher,
        student=student,
        epochs=epochs,
        seeds=list(seeds) or None,
        select_on=select_on,
    )
    dev = resolve_device(device)
    st = Store(store)
    needed = {r.needs for r in grid.runs if r.needs}
    teachers = [r for r in grid.teacher_runs.values() if r.run_id in needed]
    outcome: dict[str, int] = {}
    click.echo(
        f"grid {grid.name}: {len(teachers)} teacher run(s), {len(grid.runs)} run(s) on {dev}"
    )
    failed_teachers = set()
    for spec in teachers + grid.runs:
        if spec.needs in failed_teachers:
            click.echo(f"skip {spec.run_id}: its teacher run {spec.needs} failed")
            outcome["blocked"] = outcome.get("blocked", 0) + 1
            continue
        status = execute(
            spec,
            st,
            device=dev,
            data_root=data_root,
            resume=resume,
            progress=progress,
            echo=click.echo,
        )
        outcome[status] = outcome.get(status, 0) + 1
        if status == "failed" and spec.kind == "teacher":
            failed_teachers.add(spec.run_id)
    path = _write_leaderboard(st, grid.name, leaderboard_markdown(st, grid.name))
    click.echo(", ".join(f"{n} {k}" for k, n in sorted(outcome.items())))
    click.echo(f"leaderboard written to {path}")
    if outcome.get("failed") or outcome.get("blocked"):
        sys.exit(1)


def _write_leaderboard(store: Any, grid: str, text: str) -> Path:
    from harness.checkpoints import write_text_atomic

    path = Path(store.root) / "leaderboards" / f"{grid}.md"
    write_text_atomic(text, path)
    return path


@bench.command("list")
@click.argument("kind", type=click.Choice(["methods", "models", "datasets", "attacks", "grids"]))
@click.argument("pattern", required=False)
def list_(kind: str, pattern: str | None) -> None:
    """List registered methods, models, datasets, attacks, or the available grids."""
    import harness
    from harness.grid import list_grids

    names = list_grids() if kind == "grids" else getattr(harness, f"list_{kind}")(pattern)
    for name in names:
        click.echo(name)


@bench.command()
@click.argument("run_ref")
@STORE
def show(run_ref: str, store: str) -> None:
    """Show one run: its config, status, metrics and files (RUN_REF: id or unique prefix)."""
    from harness.store import Store

    st = Store(store)
    run_id = st.resolve(run_ref)
    cfg = st.config(run_id)
    metrics = st.metrics(run_id)
    click.echo(f"run        {run_id}")
    click.echo(f"status     {st.status(run_id)}")
    hparams = json.dumps(cfg["method"]["hparams"], sort_keys=True)
    click.echo(f"method     {cfg['method']['name']}  {hparams}")
    click.echo(f"dataset    {cfg['dataset']['name']}")
    click.echo(f"model      {cfg['model']}")
    click.echo(
        f"teacher    {json.dumps(cfg['teacher'], sort_keys=True) if cfg['teacher'] else '—'}"
    )
    train = cfg["train"]
    click.echo(
        f"schedule   {train['epochs']} epochs ({cfg['schedule']}), select on {train['select_on']}"
    )
    for name, row in metrics.get("results", {}).items():
        click.echo(f"  {name:<10} {100 * row['accuracy']:6.2f}%  (n={row['n']})")
    if metrics:
        click.echo(f"wall time  {metrics.get('wall_time_s', 0):.1f} s")
    click.echo(f"directory  {st.run_dir(run_id)}")


@bench.command()
@GRID
@STORE
@click.option(
    "--output", type=click.Path(dir_okay=False), help="Also write the table to this file."
)
def leaderboard(grid_name: str, store: str, output: str | None) -> None:
    """Print a grid's leaderboard (Markdown) from the store's index."""
    from harness.grid import grid_path
    from harness.leaderboard import leaderboard_markdown
    from harness.store import Store

    name = grid_path(grid_name).stem
    text = leaderboard_markdown(Store(store), name)
    click.echo(text)
    if output:
        from harness.checkpoints import write_text_atomic

        write_text_atomic(text, Path(output))


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
    store: str,
    data_root: str | None,
    device: str,
    progress: bool,
) -> None:
    """Evaluate a stored run, a checkpoint file or a RobustBench model (resumable)."""
    from harness.compat import resolve_device
    from harness.external import evaluate_target

    rows = evaluate_target(
        target,
        suite=suite,
        attack_names=list(attack_names),
        subset=eval_subset,
        surrogates=list(surrogates),
        model=model,
        dataset=dataset,
        robustbench=robustbench,
        store=store,
        data_root=data_root,
        device=resolve_device(device),
        progress=progress,
        echo=click.echo,
    )
    for name, row in rows["results"].items():
        click.echo(f"  {name:<28} {100 * row['accuracy']:6.2f}%  (n={row['n']})")
    failed = [name for name, check in rows.get("checks", {}).items() if not check["ok"]]
    click.echo(f"checks: {', '.join(failed) + ' FAILED' if failed else 'ok'}")


@bench.command("new-method")
@click.argument("name")
@click.option("--methods-dir", default=None, help="Where the method file goes (default: methods/).")
@click.option("--tests-dir", default="tests", show_default=True, help="Where its test goes.")
def new_method(name: str, methods_dir: str | None, tests_dir: str) -> None:
    """Write a working method skeleton (KD on adversarial examples) and its test."""
    import methods
    from harness.scaffold import new_method as scaffold

    folder = Path(methods_dir) if methods_dir else Path(methods.__file__).parent
    method_path, test_path = scaffold(name, folder, Path(tests_dir))
    click.echo(f"wrote {method_path}")
    click.echo(f"wrote {test_path}")
    click.echo(f"try it: bench run --method {name} --grid smoke")


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
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
