"""Evaluating one trained model of a run: the white-box suite, the transfer attacks from the
run's surrogates, per-sample masks kept on disk and the worst case over the run's own attacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import harness
from harness.evaluation.evaluate import eval_subset, evaluate_suite, worst_case
from harness.evaluation.per_class import with_per_class
from harness.evaluation.transfer import surrogate_examples, transfer_accuracy
from harness.execution.inputs import load_dataset
from harness.grid import suites
from harness.grid.load import default_transfer, surrogate_runs
from harness.schema import RunConfig, Transfer
from harness.store.store import Store
from harness.utils.atomic import save_atomic
from harness.utils.compat import load_checkpoint
from harness.utils.determinism import DeterminismRecord, true_fp32
from harness.utils.errors import UserError
from harness.utils.values import derive_seed, file_sha256


def evaluate_run(
    model: torch.nn.Module,
    data: Any,
    cfg: RunConfig,
    store: Store,
    run_id: str,
    *,
    device: torch.device,
    data_root: str | None = None,
    suite: str = "config",
    attacks: dict[str, Any] | None = None,
    subset: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    fast: str = "auto",
    determinism: DeterminismRecord | None = None,
) -> dict[str, Any]:
    """The white-box and transfer evaluation of one model; per-sample masks kept on disk.

    ``suite``: ``config`` (what the run's config lists), ``whitebox``, ``transfer`` or ``all``.
    The masks of every evaluation of the run accumulate in ``eval/masks.pt``; ``worst_case`` is
    over the run's own attacks (:func:`own_attacks`), so an extra ``bench eval --attack pgd50``
    adds a column of its own and leaves the run's Worst comparable with its grid's other runs.
    Attacks and predictions run in true fp32 (TF32 off). The transfer surrogates are runs of
    their own, trained before (:func:`harness.grid.load.expand_surrogates`); one missing from
    the store is a one-line error. ``fast`` and ``determinism`` are accepted for the callers'
    symmetry with :func:`execute` (evaluation is always eager fp32).
    """
    with true_fp32():
        seed = derive_seed(cfg.seed, "eval")
        test = eval_subset(data.test, subset, seed)
        bs = cfg.train.eval_batch_size
        eval_dir = store.run_dir(run_id) / "eval"
        attacks = suite_attacks(cfg, suite, attacks)
        out = evaluate_suite(
            model,
            test,
            attacks,
            batch_size=bs,
            device=device,
            seed=seed,
            state_dir=eval_dir,
            progress=progress,
            num_classes=data.num_classes,
        )
        masks = out.pop("masks")
        out["results"].pop("worst_case", None)  # over the run's own attacks, below
        transfer = transfer_of(cfg, suite)
        if transfer is not None:
            for name, mask in transfer_suite(
                model, test, cfg, transfer, store, device=device, data_root=data_root, seed=seed
            ).items():
                masks[name] = mask
                row = {
                    "accuracy": float(mask.float().mean()),
                    "n": len(mask),
                    "params": {"name": name, **transfer.attacks[name.split("/")[-1]]},
                }
                out["results"][name] = with_per_class(row, mask, test.y, data.num_classes)
        _worst_case(out, masks, cfg, store, run_id, labels=test.y, num_classes=data.num_classes)
        return out


def _worst_case(
    out: dict[str, Any],
    masks: dict[str, torch.Tensor],
    cfg: RunConfig,
    store: Store,
    run_id: str,
    *,
    labels: torch.Tensor,
    num_classes: int,
) -> None:
    """Add this evaluation's masks to the run's ``eval/masks.pt``, and the worst case over the
    run's own attacks (with its per-class accuracies) to ``out`` once every one of them has a
    mask of the same length."""
    path = store.run_dir(run_id) / "eval" / "masks.pt"
    masks = {**(load_checkpoint(path) if path.exists() else {}), **masks}
    stored = store.config(run_id) if (store.run_dir(run_id) / "config.json").exists() else cfg
    over = own_attacks(stored) or sorted(masks)  # an evaluation-only run: all it was given
    over = [n for n in over if suites.ranks(n)]  # a JSMA towards the true class is no attack
    ready = len(over) > 1 and all(n in masks for n in over)
    if ready and len({len(masks[n]) for n in over}) == 1:  # not mixed with a subset's masks
        kept = {n: masks[n] for n in over}
        out["results"]["worst_case"] = worst_case(kept, labels, num_classes)
    save_atomic(masks, path)


def transfer_of(cfg: RunConfig, suite: str) -> Transfer | None:
    """The transfer evaluation ``suite`` runs: the config's own, or for ``transfer`` and
    ``all`` the default one; none for ``whitebox``."""
    if suite == "whitebox":
        return None
    if cfg.evaluation.transfer is not None:
        return cfg.evaluation.transfer
    return default_transfer(cfg) if suite in ("transfer", "all") else None


def check_surrogates(cfg: RunConfig, store: Store, run_id: str) -> None:
    """Refuse, before training, a run whose transfer surrogates are not trained: they are runs
    of the grid, which trains them first (``bench run`` of the grid trains them)."""
    transfer = cfg.evaluation.transfer
    if transfer is None:
        return
    missing = [s.run_id for s in surrogate_runs(cfg.dataset, transfer)]
    missing = [s for s in missing if not store.is_complete(s)]
    if missing:
        raise UserError(
            f"run {run_id} needs its transfer surrogate run(s) {', '.join(missing)}, which are "
            "not complete: run its grid (bench run trains the surrogates first)"
        )


def suite_attacks(
    cfg: RunConfig, suite: str, attacks: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The white-box attacks (name → config, None: clean) an evaluation with ``suite`` runs:
    ``attacks`` if given, else the config's (``config``) or the paper's (``whitebox``,
    ``all``); only clean for ``transfer``."""
    if suite == "transfer":
        return {"clean": None}
    if attacks is not None:
        return attacks
    return dict(cfg.evaluation.attacks) if suite == "config" else whitebox(cfg)


def own_attacks(cfg: dict[str, Any]) -> list[str]:
    """The attacks a run's config evaluates (its grid's list, then its transfer attacks): the
    attacks its worst case is over. Empty for an evaluation-only run (``bench eval`` of a
    checkpoint), whose worst case is over every attack it was given."""
    names = list(cfg.get("eval", {}).get("attacks", {}))
    transfer = cfg.get("eval", {}).get("transfer") or {}
    names += [
        f"transfer/{s}/{a}"
        for s in transfer.get("surrogates", [])
        for a in transfer.get("attacks", {})
    ]
    return names


def whitebox(cfg: RunConfig) -> dict[str, Any]:
    """The paper's white-box suite under the run's threat model."""
    threat = cfg.threat.to_json()
    return {name: suites.resolve(name, suites.PRESETS[name], threat) for name in suites.WHITEBOX}


def transfer_suite(
    model: torch.nn.Module,
    test: Any,
    cfg: RunConfig,
    transfer: Transfer,
    store: Store,
    *,
    device: torch.device,
    data_root: str | None,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Per-sample correctness on each surrogate's adversarial examples. The surrogates are runs
    trained before (never from here): one not complete is a one-line error."""
    out = {}
    data = load_dataset(cfg.dataset, data_root)
    for spec in surrogate_runs(cfg.dataset, transfer):
        if not store.is_complete(spec.run_id):
            raise UserError(
                f"transfer surrogate {spec.config.model} (run {spec.run_id}) is not trained: "
                "run the grid, or bench eval, which trains it first"
            )
        path = store.checkpoint(spec.run_id, "best")
        surrogate = harness.create_model(
            spec.config.model, num_classes=data.num_classes, image_size=data.image_size
        ).to(device)
        surrogate.load_state_dict(load_checkpoint(path)["student"])
        sha = file_sha256(path)
        for attack_name, attack_cfg in transfer.attacks.items():
            x_adv = surrogate_examples(
                surrogate,
                sha,
                test,
                attack_cfg,
                cache_dir=store.root / "transfer_cache",
                batch_size=transfer.train.eval_batch_size,
                device=device,
                seed=seed,
            )
            out[f"transfer/{spec.config.model}/{attack_name}"] = transfer_accuracy(
                model, x_adv, test.y, device=device
            )
    return out
