"""Execute one run: data → teacher → train → evaluate best checkpoint → store."""

from __future__ import annotations

import inspect
import json
import platform
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch

import harness
from harness.compat import load_checkpoint
from harness.config import canonical_json, derive_seed
from harness.errors import TrainingDiverged
from harness.evaluate import evaluate_suite
from harness.grid import RunSpec
from harness.registry import DATASETS
from harness.store import Store
from harness.teachers import load_teacher
from harness.train import TrainConfig, train


@lru_cache(maxsize=4)
def _dataset(key: str, data_root: str | None) -> Any:
    spec = json.loads(key)
    options = dict(spec["options"])
    if data_root and "root" in inspect.signature(DATASETS.get(spec["name"])).parameters:
        options.setdefault("root", data_root)
    return harness.create_dataset(spec["name"], **options)


def load_dataset(spec: dict[str, Any], data_root: str | None = None) -> Any:
    return _dataset(canonical_json(spec), data_root)


def build_model(name: str, num_classes: int, image_size: int, seed: int) -> torch.nn.Module:
    """A freshly initialised model; the init is seeded without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init", name))
        return harness.create_model(name, num_classes=num_classes, image_size=image_size)


def provenance(device: torch.device) -> dict[str, Any]:
    info = {
        "harness": harness.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "host": platform.node(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def execute(
    spec: RunSpec,
    store: Store,
    *,
    device: torch.device,
    data_root: str | None = None,
    resume: bool = True,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> str:
    """Run ``spec`` to completion; returns ``"skipped"``, ``"complete"`` or ``"failed"``.

    Everything a user can get wrong (data set missing, teacher checkpoint of another
    architecture, unknown model) is checked before the run's directory is created.
    """
    cfg = spec.config
    if store.status(spec.run_id) == "complete":
        echo(f"skip {spec.run_id} (complete)")
        return "skipped"
    data = load_dataset(cfg["dataset"], data_root)
    teacher = None
    if cfg["teacher"] is not None:
        teacher = load_teacher(
            cfg["teacher"],
            store,
            num_classes=data.num_classes,
            image_size=data.image_size,
            dataset=cfg["dataset"]["name"],
        )
    student = build_model(cfg["model"], data.num_classes, data.image_size, cfg["seed"])
    method = harness.create_method(cfg["method"]["name"], **cfg["method"]["hparams"])
    tcfg = TrainConfig(**cfg["train"])

    store.begin(spec.run_id, cfg)
    if not resume:
        store.checkpoint(spec.run_id, "last").unlink(missing_ok=True)
    echo(f"run {spec.run_id}")
    t0 = time.perf_counter()
    try:
        result = train(
            student,
            method,
            data,
            tcfg,
            ckpt_dir=store.run_dir(spec.run_id) / "checkpoints",
            teacher=teacher,
            device=device,
            resume=resume,
            progress=progress,
            log=lambda line: store.log(spec.run_id, line),
        )
    except TrainingDiverged as exc:
        store.fail(spec.run_id, str(exc), epoch=exc.epoch, step=exc.step)
        echo(f"failed {spec.run_id}: {exc}")
        return "failed"
    best = load_checkpoint(store.checkpoint(spec.run_id, "best"))
    student.load_state_dict(best["student"])
    results = evaluate_suite(
        student,
        data.test,
        cfg["eval"]["attacks"],
        batch_size=tcfg.eval_batch_size,
        device=device,
        seed=derive_seed(cfg["seed"], "eval"),
        progress=progress,
    )
    metrics = {
        "results": results,
        "train": {
            "best_epoch": result.best_epoch,
            f"best_{tcfg.select_on}": result.best,
            "images_per_s": result.images_per_s,
            "history": result.history,
        },
        "wall_time_s": time.perf_counter() - t0,
        "provenance": provenance(device),
    }
    store.finish(spec.run_id, metrics)
    summary = ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in results.items())
    echo(f"done {spec.run_id}: {summary}")
    return "complete"
