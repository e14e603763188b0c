"""Evaluation: accuracy under attacks, per sample, resumable per batch, with reliability checks.

Model in eval mode and fp32. Each attack runs batch by batch; after every batch the per-sample
correctness so far is written atomically to ``<state_dir>/<attack>.pt``, so a killed evaluation
(AutoAttack on 10,000 images takes a while) resumes at the first unfinished batch. The attack of
batch ``b`` is seeded by (seed, attack, b): a resumed evaluation gives exactly the numbers of an
uninterrupted one.

Beside the accuracies: each row's per-class accuracies (:mod:`harness.evaluation.per_class`),
the worst case per sample over every attack run, and the checks a careful reviewer makes (clean ≥
FGSM ≥ PGD ≥ AutoAttack; accuracy falls, to about zero, as eps grows; predictions do not depend
on the batch size; every adversarial input inside its threat model and [0,1]). Each check is a
flag on the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.attacks.base import build_attack
from harness.data import ArraySet, batches
from harness.evaluation.per_class import with_per_class
from harness.grid import suites
from harness.grid.suites import EPS_SWEEP
from harness.utils.atomic import save_atomic
from harness.utils.compat import load_checkpoint
from harness.utils.modes import eval_mode
from harness.utils.progress import image_bar
from harness.utils.values import canonical_json, derive_seed

Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]
ORDER = ["clean", "fgsm", "pgd10", "autoattack"]  # each at least as strong as the one before
TOLERANCE = 0.005  # accuracy differences below half a point are noise, not a violation


def correct_mask(
    model: nn.Module,
    data: ArraySet,
    attack: Attack | None,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "",
) -> Tensor:
    """Per-sample correctness (bool, CPU) on ``attack(model, x, y)``, or clean if None."""
    out = []
    with (
        eval_mode(model),
        image_bar(len(data), desc, progress) as bar,
    ):
        for x, y in batches(data, batch_size, device=device):
            x_in = attack(model, x, y) if attack is not None else x
            with torch.no_grad():
                out.append((model(x_in).argmax(1) == y).cpu())
            bar.update(len(y))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def accuracy(
    model: nn.Module,
    data: ArraySet,
    attack: Attack | None,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> float:
    mask = correct_mask(model, data, attack, batch_size=batch_size, device=device)
    return float(mask.float().mean()) if len(mask) else float("nan")


def eval_subset(data: ArraySet, n: int | None, seed: int) -> ArraySet:
    """``n`` test images drawn with ``seed`` (all of them if ``n`` is None or ≥ the set)."""
    if n is None or n >= len(data):
        return data
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=gen)[:n].sort().values
    return data.subset(idx)


def run_attack(
    model: nn.Module,
    data: ArraySet,
    name: str,
    config: dict[str, Any] | None,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    state_dir: Path | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], Tensor]:
    """One attack over ``data``: its result row and the per-sample correctness mask."""
    key = canonical_json({"config": config, "batch_size": batch_size, "seed": seed, "n": len(data)})
    state_path = Path(state_dir) / f"{name}.pt" if state_dir else None
    state = {"key": key, "masks": [], "max_linf": 0.0, "in_box": True, "params": None}
    if state_path is not None and state_path.exists():
        saved = load_checkpoint(state_path)
        if saved.get("key") == key:
            state = saved
    done = len(state["masks"])
    eps = (config or {}).get("eps")
    with (
        eval_mode(model),
        image_bar(len(data), name, progress, initial=min(done * batch_size, len(data))) as bar,
    ):
        for b, (x, y) in enumerate(batches(data, batch_size, device=device)):
            if b < done:
                continue
            x_in = x
            if config is not None:
                attack = build_attack(config, derive_seed(seed, name, b))
                if state["params"] is None:
                    full = attack.params() if hasattr(attack, "params") else dict(config)
                    state["params"] = {**full, "seed": seed}
                x_in = attack(model, x, y).detach()
                state["max_linf"] = max(state["max_linf"], float((x_in - x).abs().max()))
                state["in_box"] = state["in_box"] and bool(x_in.min() >= 0 and x_in.max() <= 1)
            with torch.no_grad():
                state["masks"].append((model(x_in).argmax(1) == y).cpu())
            if state_path is not None:
                save_atomic(state, state_path)
            bar.update(len(y))
    mask = torch.cat(state["masks"]) if state["masks"] else torch.zeros(0, dtype=torch.bool)
    row: dict[str, Any] = {
        "accuracy": float(mask.float().mean()) if len(mask) else float("nan"),
        "n": len(mask),
        "params": state["params"] if config is not None else {"name": "clean"},
    }
    if config is not None:
        row["max_linf"] = state["max_linf"]
        row["in_bounds"] = state["in_box"] and (eps is None or state["max_linf"] <= eps + 1e-6)
    return row, mask


def worst_case(
    masks: dict[str, Tensor], labels: Tensor | None = None, num_classes: int = 0
) -> dict[str, Any]:
    """A sample counts as robust only if it survives every attack run (and is clean-correct).

    With ``labels``, the row carries its per-class accuracies too (:mod:`.per_class`)."""
    stacked = torch.stack(list(masks.values()))
    robust = stacked.all(0)
    row = {
        "accuracy": float(robust.float().mean()),
        "n": int(robust.numel()),
        "params": {"name": "worst_case", "of": sorted(masks)},
    }
    return row if labels is None else with_per_class(row, robust, labels, num_classes)


def check_ordering(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """clean ≥ FGSM ≥ PGD-10 ≥ AutoAttack over the attacks that were run."""
    present = [n for n in ORDER if n in results]
    bad = [
        f"{a} < {b}"
        for a, b in zip(present, present[1:])
        if results[a]["accuracy"] + TOLERANCE < results[b]["accuracy"]
    ]
    return {"ok": not bad, "detail": bad or present}


def check_eps_sweep(
    model: nn.Module,
    data: ArraySet,
    *,
    batch_size: int,
    device: torch.device | str,
    seed: int,
    n: int = 200,
    chance: float = 0.1,
) -> dict[str, Any]:
    """PGD-10 at growing eps must lower accuracy, to about zero at the largest eps.

    Masked gradients (a model that quantises its input, say) fail this: their accuracy stays
    put as eps grows, although a large enough perturbation changes every image's class.
    """
    from harness.attacks.linf import PGD

    subset = eval_subset(data, n, seed)
    accs = []
    for k in EPS_SWEEP:
        eps = k / 255
        attack = PGD(
            eps=eps, step_size=2.5 * eps / 10, steps=10, seed=derive_seed(seed, "sweep", k)
        )
        accs.append(accuracy(model, subset, attack, batch_size=batch_size, device=device))
    monotone = all(b <= a + 0.02 for a, b in zip(accs, accs[1:]))
    reaches_zero = accs[-1] <= chance
    return {
        "ok": monotone and reaches_zero,
        "detail": {
            "eps_255": EPS_SWEEP,
            "accuracy": accs,
            "monotone": monotone,
            "reaches_zero": reaches_zero,
        },
    }


def check_batch_invariance(
    model: nn.Module, data: ArraySet, *, batch_size: int, device: torch.device | str, n: int = 64
) -> dict[str, Any]:
    """Eval-mode predictions must not change with the batch size (BN left in train mode, or
    batch-dependent layers, would)."""
    subset = data.subset(torch.arange(min(n, len(data))))
    logits = []
    for bs in (batch_size, 7):
        with eval_mode(model), torch.no_grad():
            logits.append(
                torch.cat([model(x).cpu() for x, _ in batches(subset, bs, device=device)])
            )
    same = bool(torch.equal(logits[0].argmax(1), logits[1].argmax(1)))
    return {"ok": same, "detail": {"max_logit_diff": float((logits[0] - logits[1]).abs().max())}}


def evaluate_suite(
    model: nn.Module,
    data: ArraySet,
    attacks: dict[str, dict[str, Any] | None],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    state_dir: Path | None = None,
    progress: bool = False,
    checks: bool = True,
    num_classes: int = 10,
) -> dict[str, Any]:
    """Every attack of ``attacks`` (``None`` = clean), the worst case, the checks, and each
    attack's wall time (``eval_seconds``).

    Each result row carries its per-class accuracies (``per_class``, ``class_n``) over
    ``num_classes`` classes (:mod:`harness.evaluation.per_class`)."""
    results: dict[str, dict[str, Any]] = {}
    masks: dict[str, Tensor] = {}
    seconds: dict[str, dict[str, Any]] = {}
    for name, config in attacks.items():
        start = time.perf_counter()
        results[name], masks[name] = run_attack(
            model,
            data,
            name,
            config,
            batch_size=batch_size,
            device=device,
            seed=seed,
            state_dir=state_dir,
            progress=progress,
        )
        with_per_class(results[name], masks[name], data.y, num_classes)
        seconds[name] = {  # what `bench eval` estimates its time from (a resumed one: less)
            "seconds": time.perf_counter() - start,
            "n": len(data),
            "key": canonical_json(config),
            "device": torch.device(device).type,
        }
    out: dict[str, Any] = {"results": results, "masks": masks, "eval_seconds": seconds}
    if len(masks) > 1:  # over the attacks (a JSMA towards the true class is none) and clean
        kept = {
            k: m for k, m in masks.items() if attacks[k] is None or suites.is_attack(attacks[k])
        }
        results["worst_case"] = worst_case(kept, data.y, num_classes)
    if checks:
        out["checks"] = {
            "ordering": check_ordering(results),
            "in_threat_model": {
                "ok": all(r.get("in_bounds", True) for r in results.values()),
                "detail": {n: r["max_linf"] for n, r in results.items() if "max_linf" in r},
            },
            "batch_invariant": check_batch_invariance(
                model, data, batch_size=batch_size, device=device
            ),
            "eps_sweep": check_eps_sweep(
                model,
                data,
                batch_size=batch_size,
                device=device,
                seed=seed,
                chance=1.0 / num_classes,
            ),
        }
    return out
