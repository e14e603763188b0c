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
from harness import suites
from harness.checkpoints import save_atomic
from harness.compat import load_checkpoint
from harness.config import canonical_json, derive_seed, file_sha256
from harness.errors import TrainingDiverged
from harness.evaluate import eval_subset, evaluate_suite, worst_case
from harness.fast import FastPath
from harness.grid import TRAIN_DEFAULTS, RunSpec
from harness.registry import DATASETS
from harness.store import Store
from harness.teachers import load_teacher
from harness.train import TrainConfig, train
from harness.transfer import surrogate_examples, transfer_accuracy


@lru_cache(maxsize=4)
def _dataset(key: str, data_root: str | None) -> Any:
    spec = json.loads(key)
    options = dict(spec["options"])
    if data_root and "root" in inspect.signature(DATASETS.get(spec["name"])).parameters:
        options.setdefault("root", data_root)
    return harness.create_dataset(spec["name"], **options)


def load_dataset(spec: dict[str, Any], data_root: str | None = None) -> Any:
    return _dataset(canonical_json(spec), data_root)


def data_sizes(data: Any) -> dict[str, int]:
    """Images per split: ``train`` is what the run trains on (held-out ``val`` excluded)."""
    return {
        "train": len(data.train),
        "val": 0 if data.val is None else len(data.val),
        "test": len(data.test),
    }


def build_model(name: str, num_classes: int, image_size: int, seed: int) -> torch.nn.Module:
    """A freshly initialised model; the init is seeded without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init", name))
        return harness.create_model(name, num_classes=num_classes, image_size=image_size)


def provenance(device: torch.device) -> dict[str, Any]:
    """What produced a run's numbers: code version, package versions, machine."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("torch", "torchvision", "numpy", "pyautoattack"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    info = {
        "harness": harness.__version__,
        "code": _git_commit(),
        "python": platform.python_version(),
        "packages": packages,
        "host": platform.node(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _git_commit() -> str | None:
    """The source tree's commit (with ``+dirty`` for local changes), when run from a checkout."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "harness", "methods"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty.strip() else "")) or None


def execute(
    spec: RunSpec,
    store: Store,
    *,
    device: torch.device,
    data_root: str | None = None,
    resume: bool = True,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    fast: str = "auto",
) -> str:
    """Run ``spec`` to completion; returns ``"skipped"``, ``"complete"`` or ``"failed"``.

    ``fast`` is the training fast path (:meth:`FastPath.parse`); it is recorded in the run's
    provenance, not in its id: it changes how a run is computed, not what it is.

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
    fast_path = FastPath.parse(fast, device)

    # What the data set turned out to hold: part of the stored config (not of the id, which the
    # dataset entry with its val_fraction already fixes), and of the provenance.
    sizes = data_sizes(data)
    store.begin(spec.run_id, {**cfg, "data": sizes})
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
            fast=fast_path,
        )
    except TrainingDiverged as exc:
        store.fail(spec.run_id, str(exc), epoch=exc.epoch, step=exc.step)
        echo(f"failed {spec.run_id}: {exc}")
        return "failed"
    best = load_checkpoint(store.checkpoint(spec.run_id, "best"))
    # Evaluated as a fresh, eager, NCHW fp32 model, whatever the fast path did to the trained one.
    student = build_model(cfg["model"], data.num_classes, data.image_size, cfg["seed"])
    student.load_state_dict(best["student"])
    student.to(device)
    evaluation = evaluate_run(
        student,
        data,
        cfg,
        store,
        spec.run_id,
        device=device,
        data_root=data_root,
        progress=progress,
        echo=echo,
    )
    results = evaluation["results"]
    metrics = {
        **evaluation,
        "train": {
            "best_epoch": result.best_epoch,
            f"best_{tcfg.select_on}": result.best,
            "images_per_s": result.images_per_s,
            "history": result.history,
        },
        "wall_time_s": time.perf_counter() - t0,
        "provenance": {
            **provenance(device),
            "fast_path": fast_path.as_dict(),
            "train_images": sizes["train"],
        },
    }
    if hasattr(teacher, "weights_sha256"):  # the files of a checkpoint, URL or RobustBench one
        metrics["provenance"]["teacher_sha256"] = teacher.weights_sha256
    store.finish(spec.run_id, metrics)
    summary = ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in results.items())
    echo(f"done {spec.run_id}: {summary}")
    return "complete"


def evaluate_run(
    model: torch.nn.Module,
    data: Any,
    cfg: dict[str, Any],
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
) -> dict[str, Any]:
    """The white-box and transfer evaluation of one model; per-sample masks kept on disk.

    ``suite``: ``config`` (what the run's config lists), ``whitebox``, ``transfer`` or ``all``.
    """
    seed = derive_seed(cfg["seed"], "eval")
    test = eval_subset(data.test, subset, seed)
    bs = cfg["train"].get("eval_batch_size", 256)
    eval_dir = store.run_dir(run_id) / "eval"
    if attacks is None:
        attacks = cfg["eval"]["attacks"] if suite in ("config", "transfer") else whitebox(cfg)
    if suite == "transfer":
        attacks = {"clean": None}
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
    transfer_cfg = cfg["eval"].get("transfer") or (
        default_transfer(cfg) if suite in ("transfer", "all") else None
    )
    if transfer_cfg and suite != "whitebox":
        for name, mask in transfer_suite(
            model,
            test,
            cfg,
            transfer_cfg,
            store,
            device=device,
            data_root=data_root,
            seed=seed,
            progress=progress,
            echo=echo,
        ).items():
            masks[name] = mask
            out["results"][name] = {
                "accuracy": float(mask.float().mean()),
                "n": len(mask),
                "params": {"name": name, **transfer_cfg["attacks"][name.split("/")[-1]]},
            }
        # the JSMA that targets the true class is no attack: it stays out of the worst case
        out["results"]["worst_case"] = worst_case(
            {k: m for k, m in masks.items() if suites.ranks(k)}
        )
    save_atomic({k: v for k, v in masks.items()}, eval_dir / "masks.pt")
    return out


def whitebox(cfg: dict[str, Any]) -> dict[str, Any]:
    """The paper's white-box suite under the run's threat model."""
    threat = {k: cfg["method"]["hparams"][k] for k in ("eps", "step_size")}
    return {name: suites.resolve(name, suites.PRESETS[name], threat) for name in suites.WHITEBOX}


def default_transfer(cfg: dict[str, Any]) -> dict[str, Any]:
    threat = {k: cfg["method"]["hparams"][k] for k in ("eps", "step_size")}
    attacks = {
        n: suites.resolve(n, suites.TRANSFER_ATTACKS[n], threat) for n in suites.TRANSFER_DEFAULT
    }
    train = {k: v for k, v in cfg["train"].items() if k not in ("seed", "select_on")}
    if not train.get("epochs"):  # an external model: no schedule of its own to borrow
        train = {**TRAIN_DEFAULTS, "epochs": 100, "milestones": [50, 75]}
    return {"surrogates": suites.SURROGATES, "attacks": attacks, "train": train}


def transfer_suite(
    model: torch.nn.Module,
    test: Any,
    cfg: dict[str, Any],
    transfer_cfg: dict[str, Any],
    store: Store,
    *,
    device: torch.device,
    data_root: str | None,
    seed: int,
    progress: bool,
    echo: Callable[[str], None],
) -> dict[str, torch.Tensor]:
    """Per-sample correctness on each surrogate's adversarial examples (surrogates trained once)."""
    from harness.grid import surrogate_run

    out = {}
    train = {**transfer_cfg["train"], "select_on": "val"}
    for name in transfer_cfg["surrogates"]:
        spec = surrogate_run(name, cfg["dataset"], train)
        if store.status(spec.run_id) != "complete":
            echo(f"training transfer surrogate {name} ({spec.run_id})")
            execute(spec, store, device=device, data_root=data_root, progress=progress, echo=echo)
        path = store.checkpoint(spec.run_id, "best")
        data = load_dataset(cfg["dataset"], data_root)
        surrogate = harness.create_model(
            name, num_classes=data.num_classes, image_size=data.image_size
        ).to(device)
        surrogate.load_state_dict(load_checkpoint(path)["student"])
        sha = file_sha256(path)
        for attack_name, attack_cfg in transfer_cfg["attacks"].items():
            x_adv = surrogate_examples(
                surrogate,
                sha,
                test,
                attack_cfg,
                cache_dir=store.root / "transfer_cache",
                batch_size=train.get("eval_batch_size", 256),
                device=device,
                seed=seed,
            )
            out[f"transfer/{name}/{attack_name}"] = transfer_accuracy(
                model, x_adv, test.y, device=device
            )
    return out
