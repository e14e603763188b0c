"""What ``bench eval`` is about to run, and roughly how long it takes, said before it starts.

Each attack is listed with its parameters (eps as a fraction of 255, steps, restarts, version,
...). Its time is estimated from the wall time the store's earlier evaluations of the same
attack (same parameters) took per image on the same architecture, data set and kind of device;
an attack no evaluation has measured is "unknown", and so is the total then. Transfer attacks
(and any surrogate still to train) are not estimated.
"""

from __future__ import annotations

from typing import Any

from harness.store.store import Store
from harness.utils.values import canonical_json


def _value(key: str, value: Any) -> str:
    if isinstance(value, float) and key in ("eps", "step_size") and value:
        scaled = value * 255
        if abs(scaled - round(scaled)) < 1e-6:
            return f"{round(scaled)}/255"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if not isinstance(value, (list, dict)) else canonical_json(value)


def describe(config: dict[str, Any] | None) -> str:
    """``pgd: eps=8/255, step_size=2/255, steps=10`` (``no attack`` for clean)."""
    if config is None:
        return "no attack"
    params = ", ".join(f"{k}={_value(k, v)}" for k, v in sorted(config.items()) if k != "attack")
    return f"{config['attack']}: {params}" if params else str(config["attack"])


def seconds_per_image(store: Store, model: str, dataset: str, device: str) -> dict[str, float]:
    """Attack config (canonical JSON) → seconds per image, over every evaluation the store
    recorded of ``model`` on ``dataset`` on a device of type ``device`` (cpu, cuda)."""
    runs = store.frame("runs")
    runs = runs[(runs["student"] == model) & (runs["dataset"] == dataset)]
    total: dict[str, list[float]] = {}
    for run_id in runs["run_id"]:
        try:
            metrics = store.metrics(run_id)
        except Exception:  # a damaged file: `bench store check` reports it, not this estimate
            continue
        for row in (metrics.get("eval_seconds") or {}).values():
            if not isinstance(row, dict) or row.get("device") != device or not row.get("n"):
                continue
            acc = total.setdefault(str(row.get("key")), [0.0, 0.0])
            acc[0] += float(row["seconds"])
            acc[1] += float(row["n"])
    return {key: s / n for key, (s, n) in total.items() if n}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def eval_plan(
    store: Store,
    config: dict[str, Any],
    attacks: dict[str, Any],
    transfer: dict[str, Any] | None,
    n_images: int,
    device: str,
) -> list[str]:
    """The lines ``bench eval`` prints before it starts: the suite and its estimated time."""
    measured = seconds_per_image(store, config["model"], config["dataset"]["name"], device)
    lines = [f"suite on {n_images} test image(s) of {config['dataset']['name']}, {device}:"]
    known, total = 0, 0.0
    for name, attack in attacks.items():
        per_image = measured.get(canonical_json(attack))
        if per_image is not None:
            known += 1
            total += per_image * n_images
        when = _duration(per_image * n_images) if per_image is not None else "unknown"
        lines.append(f"  {name:<12} {describe(attack):<60} {when}")
    if transfer:
        names = ", ".join(transfer["attacks"])
        lines.append(
            f"  transfer     {names} made on {', '.join(transfer['surrogates'])} (surrogates "
            "trained first where missing)  not estimated"
        )
    if known == len(attacks) and not transfer:
        lines.append(
            f"estimated time: {_duration(total)} from earlier evaluations of {config['model']} "
            f"on {config['dataset']['name']} in this store, plus the reliability checks"
        )
    else:
        why = []
        if known < len(attacks):
            why.append(
                f"{len(attacks) - known} attack(s) never timed on this model, data set "
                "and device in this store"
            )
        if transfer:
            why.append("transfer attacks are not estimated")
        lines.append(f"estimated time: unknown ({'; '.join(why)})")
    return lines
