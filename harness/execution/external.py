"""``bench eval``: evaluate a stored run, a checkpoint file or a RobustBench model.

A checkpoint or RobustBench model gets a run of its own in the store (kind ``checkpoint`` or
``robustbench``, id derived from the file's sha256 or the model name), so its numbers reach
leaderboards and reports like any trained student's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import harness
from harness.execution.inputs import load_dataset
from harness.execution.provenance import provenance
from harness.execution.run_evaluation import evaluate_run, transfer_of, whitebox
from harness.execution.runner import run_or_wait
from harness.grid import suites
from harness.grid.load import surrogate_runs
from harness.schema import THREAT_DEFAULTS, Dataset, Evaluation, RunConfig, Training
from harness.store.claims import Claimed
from harness.store.store import Store
from harness.utils.compat import load_checkpoint
from harness.utils.errors import DamagedFile, UserError
from harness.utils.values import file_sha256, is_file


def _dataset_spec(dataset: str | None) -> Dataset:
    if not dataset:
        raise UserError("--dataset is needed to evaluate a checkpoint or a RobustBench model")
    name, _, arg = dataset.partition(":")
    return Dataset(name, {"path": arg} if arg else {})


def external_config(
    kind: str, label: str, source: dict[str, Any], dataset: Dataset | dict[str, Any]
) -> RunConfig:
    """The config of a model trained elsewhere (``kind`` checkpoint or robustbench): no
    schedule, the default threat model; its id is ``eval-<model>-<data set>-<hash>``."""
    return RunConfig(
        kind=kind,
        method=kind,
        hparams=dict(THREAT_DEFAULTS),
        dataset=dataset if isinstance(dataset, Dataset) else Dataset.from_json(dataset),
        model=label,
        seed=0,
        train=Training(epochs=0),
        evaluation=Evaluation(),
        full_epochs=0,
        source=source,
    )


def _load_target(
    target: str,
    *,
    model: str | None,
    dataset: str | None,
    robustbench: bool,
    store: Store,
    data_root: str | None,
    zoo: str | None = None,
) -> tuple[str, RunConfig, torch.nn.Module, Any]:
    """(run id, config, model with weights, data) for any kind of target."""
    if robustbench:
        from harness.models.robustbench import check_classes, load_robustbench, zoo_dataset

        spec = _dataset_spec(dataset)
        data = load_dataset(spec, data_root)
        board = zoo_dataset(spec.name, data.num_classes, zoo)
        net = load_robustbench(target, dataset=board)
        check_classes(net, data.num_classes, f"RobustBench model {target} ({board})", spec.name)
        # the leaderboard is part of the source where the data set does not name it
        source = {"robustbench": target} | ({"zoo": board} if board != spec.name else {})
        config = external_config("robustbench", target, source, spec)
    elif is_file(target) or target.endswith((".pt", ".pth", ".tar")):
        from harness.models import load_weights

        if not model:
            raise UserError("--model is needed to evaluate a checkpoint file")
        spec = _dataset_spec(dataset)
        data = load_dataset(spec, data_root)
        net = harness.create_model(model, num_classes=data.num_classes, image_size=data.image_size)
        load_weights(net, target, what=f"checkpoint {target}")
        source = {"path": str(Path(target).resolve()), "sha256": file_sha256(target)}
        config = external_config("checkpoint", model, source, spec)
    else:
        run_id = store.resolve(target)
        config = RunConfig.from_json(store.config(run_id))
        if not store.checkpoint(run_id, "best").exists():
            raise UserError(f"run {run_id} has no checkpoint to evaluate yet")
        data = load_dataset(config.dataset, data_root)
        net = harness.create_model(
            config.model, num_classes=data.num_classes, image_size=data.image_size
        )
        net.load_state_dict(load_checkpoint(store.checkpoint(run_id, "best"))["student"])
        return run_id, config, net, data
    return config.run_id, config, net, data


def evaluate_target(
    target: str,
    *,
    suite: str,
    attack_names: list[str],
    subset: int | None,
    surrogates: list[str],
    model: str | None,
    dataset: str | None,
    robustbench: bool,
    store: str,
    data_root: str | None,
    device: torch.device,
    progress: bool,
    echo: Callable[[str], None],
    zoo: str | None = None,
) -> dict[str, Any]:
    st = Store(store)
    run_id, config, net, data = _load_target(
        target,
        model=model,
        dataset=dataset,
        robustbench=robustbench,
        store=st,
        data_root=data_root,
        zoo=zoo,
    )
    attacks = _attacks(config, attack_names)
    if surrogates:
        transfer = replace(transfer_of(config, "transfer"), surrogates=tuple(surrogates))
        config = config.replace(evaluation=Evaluation(config.evaluation.attacks, transfer))
    from harness.execution.estimate import eval_plan
    from harness.execution.run_evaluation import suite_attacks

    n_images = min(subset or len(data.test), len(data.test))
    transfer = transfer_of(config, suite)
    for line in eval_plan(
        st,
        config,
        suite_attacks(config, suite, attacks),
        transfer.to_json() if transfer is not None else None,
        n_images,
        device.type,
    ):
        echo(line)
    _train_surrogates(
        config, suite, st, device=device, data_root=data_root, progress=progress, echo=echo
    )
    try:
        claim = st.claim(run_id)
    except Claimed as exc:
        raise UserError(
            f"run {run_id} is {exc} (training or evaluating it); evaluate it once that is done"
        ) from None
    with claim:
        return _evaluate_claimed(
            st, run_id, config, net, data, suite=suite, attacks=attacks, subset=subset,
            data_root=data_root, device=device, progress=progress, echo=echo,
        )  # fmt: skip


def _attacks(config: RunConfig, names: list[str]) -> dict[str, Any] | None:
    """The ``--attack`` presets under the target's threat model (``None``: the suite's)."""
    if not names:
        return None
    unknown = [a for a in names if a not in suites.PRESETS]
    if unknown:
        raise UserError(
            f"unknown attack preset(s) {', '.join(unknown)}; valid: {', '.join(suites.PRESETS)}"
        )
    full = whitebox(config) | {
        n: suites.resolve(n, suites.PRESETS[n], config.threat.to_json()) for n in names
    }
    return {n: full[n] for n in names}


def _train_surrogates(
    config: RunConfig,
    suite: str,
    store: Store,
    *,
    device: torch.device,
    data_root: str | None,
    progress: bool,
    echo: Callable[[str], None],
) -> None:
    """The surrogate runs the transfer evaluation needs, trained first (or waited for, when
    another process holds one): they are runs of their own, shared with every grid."""
    transfer = transfer_of(config, suite)
    if transfer is None:
        return
    for spec in surrogate_runs(config.dataset, transfer):
        if store.is_complete(spec.run_id):
            continue
        echo(f"training transfer surrogate {spec.config.model} ({spec.run_id})")
        outcome = run_or_wait(
            spec, store, device=device, data_root=data_root, progress=progress, echo=echo
        )
        if outcome == "failed":
            raise UserError(f"transfer surrogate run {spec.run_id} failed; see its log.txt")


def _evaluate_claimed(
    st: Store,
    run_id: str,
    config: RunConfig,
    net: torch.nn.Module,
    data: Any,
    *,
    suite: str,
    attacks: dict[str, Any] | None,
    subset: int | None,
    data_root: str | None,
    device: torch.device,
    progress: bool,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    if st.status(run_id) is None:
        st.begin(run_id, config)
    try:
        metrics = st.metrics(run_id)
    except DamagedFile as exc:  # re-evaluated from best.pt: no retraining
        echo(f"warning: {exc.path} is damaged; it is rewritten from this evaluation")
        metrics = {"train": _train_summary(st, run_id, config)}
    echo(f"evaluating {run_id} ({suite})")
    out = evaluate_run(
        net.to(device),
        data,
        config,
        st,
        run_id,
        device=device,
        data_root=data_root,
        suite=suite,
        attacks=attacks,
        subset=subset,
        progress=progress,
        echo=echo,
    )
    metrics["results"] = {**metrics.get("results", {}), **out["results"]}
    metrics["checks"] = {**metrics.get("checks", {}), **out.get("checks", {})}
    metrics["eval_seconds"] = {**metrics.get("eval_seconds", {}), **out.get("eval_seconds", {})}
    metrics.setdefault("provenance", provenance(device))
    if hasattr(net, "weights_sha256"):
        metrics["provenance"]["weights_sha256"] = net.weights_sha256
    st.finish(run_id, metrics)
    return out


def _train_summary(st: Store, run_id: str, config: RunConfig) -> dict[str, Any]:
    """What metrics.json said about training: a complete run's train.json, else (a run stopped
    before it completed) recovered from last.pt; empty if neither can be read."""
    record = st.train_record(run_id)
    if record.exists():
        try:
            summary = json.loads(record.read_text())
            if isinstance(summary, dict):
                return summary
        except (OSError, ValueError):
            pass
    path = st.checkpoint(run_id, "last")
    if not path.exists():
        return {}
    try:
        state = load_checkpoint(path)
        best, select_on = state["best"], config.select_on
        return {
            "best_epoch": int(best["epoch"]),
            f"best_{select_on}": {"pgd": best["pgd"], "clean": best["clean"]},
            "history": state["history"],
        }
    except (UserError, KeyError, TypeError, ValueError):
        return {}
