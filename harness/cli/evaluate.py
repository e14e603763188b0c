"""``bench eval``: evaluate a stored run, a checkpoint file or a RobustBench model under an
attack suite (resumable), printing one line per attack and the reliability checks."""

from __future__ import annotations

import click

from harness.cli.options import STORE
from harness.cli.results import result_line


@click.command("eval")
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
        click.echo(result_line(name, row, 28))
    failed = [name for name, check in rows.get("checks", {}).items() if not check["ok"]]
    click.echo(f"checks: {', '.join(failed) + ' FAILED' if failed else 'ok'}")
