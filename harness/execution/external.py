"""``bench eval``: evaluate a stored run, a checkpoint file or a RobustBench model.

A checkpoint or RobustBench model gets a run of its own in the store (kind ``checkpoint`` or
``robustbench``, id derived from the file's sha256 or the model name), so its numbers reach
leaderboards and reports like any trained student's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import harness
from harness.execution.runner import evaluate_run, load_dataset, provenance, whitebox
from harness.grid import suites
from harness.grid.load import TRAIN_DEFAULTS
from harness.store.claims import Claimed
from harness.store.store import Store
from harness.utils.compat import load_checkpoint
from harness.utils.errors import DamagedFile, UserError
from harness.utils.values import config_hash, file_sha256, is_file


def _dataset_spec(dataset: str | None) -> dict[str, Any]:
    if not dataset:
        raise UserError("--dataset is needed to evaluate a checkpoint or a RobustBench model")
    name, _, arg = dataset.partition(":")
    return {"name": name, "options": {"path": arg} if arg else {}}


def external_config(kind: str, label: str, source: dict, dataset: dict) -> dict[str, Any]:
    threat = {"eps": 8 / 255, "step_size": 2 / 255, "steps": 10}
    return {
        "kind": kind,
        "method": {"name": kind, "hparams": threat},
        "dataset": dataset,
        "model": label,
        "teacher": None,
        "seed": 0,
        "train": {"epochs": 0, "eval_batch_size": TRAIN_DEFAULTS["eval_batch_size"]},
        "eval": {"attacks": {}},
        "source": source,
        "full_epochs": 0,
        "schedule": "none",
        "grids": [],
    }


def _load_target(
    target: str,
    *,
    model: str | None,
    dataset: str | None,
    robustbench: bool,
    store: Store,
    data_root: str | None,
) -> tuple[str, dict[str, Any], torch.nn.Module, Any]:
    """(run id, config, model with weights, data) for any kind of target."""
    if robustbench:
        from harness.models.robustbench import load_robustbench

        spec = _dataset_spec(dataset)
        data = load_dataset(spec, data_root)
        net = load_robustbench(target, dataset=spec["name"])
        config = external_config("robustbench", target, {"robustbench": target}, spec)
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
        config = store.config(run_id)
        if not store.checkpoint(run_id, "best").exists():
            raise UserError(f"run {run_id} has no checkpoint to evaluate yet")
        data = load_dataset(config["dataset"], data_root)
        net = harness.create_model(
            config["model"], num_classes=data.num_classes, image_size=data.image_size
        )
        net.load_state_dict(load_checkpoint(store.checkpoint(run_id, "best"))["student"])
        return run_id, config, net, data
    run_id = f"eval-{config['model']}-{config['dataset']['name']}-{config_hash(config)}"
    return run_id, config, net, data


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
) -> dict[str, Any]:
    st = Store(store)
    run_id, config, net, data = _load_target(
        target,
        model=model,
        dataset=dataset,
        robustbench=robustbench,
        store=st,
        data_root=data_root,
    )
    attacks = None
    if attack_names:
        unknown = [a for a in attack_names if a not in suites.PRESETS]
        if unknown:
            raise UserError(
                f"unknown attack preset(s) {', '.join(unknown)}; valid: {', '.join(suites.PRESETS)}"
            )
        full = whitebox(config) | {
            n: suites.resolve(n, suites.PRESETS[n], config["method"]["hparams"])
            for n in attack_names
        }
        attacks = {n: full[n] for n in attack_names}
    if surrogates:
        from harness.execution.runner import default_transfer

        transfer = config["eval"].get("transfer") or default_transfer(config)
        transfer = {**transfer, "surrogates": surrogates}
        config = {**config, "eval": {**config["eval"], "transfer": transfer}}
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


def _evaluate_claimed(
    st: Store,
    run_id: str,
    config: dict[str, Any],
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
    metrics.setdefault("provenance", provenance(device))
    if hasattr(net, "weights_sha256"):
        metrics["provenance"]["weights_sha256"] = net.weights_sha256
    st.finish(run_id, metrics)
    return out


def _train_summary(st: Store, run_id: str, config: dict[str, Any]) -> dict[str, Any]:
    """What metrics.json said about training, recovered from last.pt (empty if unreadable)."""
    path = st.checkpoint(run_id, "last")
    if not path.exists():
        return {}
    try:
        state = load_checkpoint(path)
        best, select_on = state["best"], config["train"].get("select_on", "val")
        return {
            "best_epoch": int(best["epoch"]),
            f"best_{select_on}": {"pgd": best["pgd"], "clean": best["clean"]},
            "history": state["history"],
        }
    except (UserError, KeyError, TypeError, ValueError):
        return {}
