"""Execute one run: data → teacher → train → evaluate best checkpoint → store."""

from __future__ import annotations

import inspect
import json
import math
import os
import platform
import time
import traceback
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import torch

import harness
from harness.evaluation.evaluate import eval_subset, evaluate_suite, worst_case
from harness.evaluation.per_class import with_per_class
from harness.evaluation.transfer import surrogate_examples, transfer_accuracy
from harness.execution.teachers import load_teacher
from harness.grid import suites
from harness.grid.load import RunSpec, default_transfer, surrogate_runs
from harness.method_code import method_code
from harness.registry import DATASETS
from harness.schema import TEACHER_ROLE, Dataset, RunConfig, TeacherRef, Transfer
from harness.store.claims import Claim, Claimed, ClaimLost, clear_stale, wait_released
from harness.store.store import Store
from harness.training.curves import epoch_log
from harness.training.fast import FastPath
from harness.training.train import Teachers, TrainConfig, TrainResult, check_trainable, train
from harness.utils.atomic import save_atomic, write_json_atomic
from harness.utils.compat import load_checkpoint
from harness.utils.determinism import DeterminismRecord, tf32_state, true_fp32
from harness.utils.errors import TrainingDiverged, UserError
from harness.utils.values import canonical_json, derive_seed, file_sha256


@lru_cache(maxsize=4)
def _dataset(key: str, data_root: str | None) -> Any:
    spec = json.loads(key)
    options = dict(spec["options"])
    if data_root and "root" in inspect.signature(DATASETS.get(spec["name"])).parameters:
        options.setdefault("root", data_root)
    return harness.create_dataset(spec["name"], **options)


def load_dataset(spec: Dataset | dict[str, Any], data_root: str | None = None) -> Any:
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
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return info


def _git_commit() -> str | None:
    """The source tree's commit (with ``+dirty`` for local changes), when run from a checkout."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
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


#: What :func:`execute` returns for a run another live process holds (it was skipped).
ELSEWHERE = "running elsewhere"


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
    determinism: DeterminismRecord | None = None,
) -> str:
    """Run ``spec`` to completion; returns ``"skipped"``, ``"complete"``, ``"failed"`` or
    :data:`ELSEWHERE` (another live process holds the run's claim: it is left to that one).

    ``fast`` is the training fast path (:meth:`FastPath.parse`); ``determinism`` the record of
    the deterministic mode the caller runs this in (:func:`harness.utils.determinism.deterministic`,
    as :func:`harness.execution.executors.run_one` does), if any. Both are recorded in the run's
    provenance, not in its id: they change how a run is computed, not what it is.

    Everything a user can get wrong (data set missing, teacher checkpoint of another
    architecture, unknown model) is checked before the run's directory is created. Then the run
    is claimed (:mod:`harness.store.claims`): nothing is written to it by a process without
    its claim.
    """
    cfg = spec.config
    if store.is_complete(spec.run_id):
        if store.sync(spec.run_id):  # finished, but killed before the index said so
            echo(f"re-indexed {spec.run_id} (complete)")
        clear_stale(store.run_dir(spec.run_id))  # the claim of a process killed after that
        echo(f"skip {spec.run_id} (complete)")
        return "skipped"
    check_surrogates(cfg, store, spec.run_id)
    data = load_dataset(cfg.dataset, data_root)
    teacher = _teachers(cfg, store, data)
    student = build_model(cfg.model, data.num_classes, data.image_size, cfg.seed)
    method = harness.create_method(cfg.method, **cfg.hparams)
    tcfg = TrainConfig.of(cfg.train, cfg.select_on, cfg.seed)
    check_trainable(data, tcfg)
    fast_path = FastPath.parse(fast, device)

    try:
        claim = store.claim(spec.run_id)
    except Claimed as exc:
        echo(f"skip {spec.run_id}: {exc} (running there)")
        return ELSEWHERE
    with claim:
        if store.is_complete(spec.run_id):  # completed by the process that held it before us
            echo(f"skip {spec.run_id} (complete)")
            return "skipped"
        try:
            return _execute_claimed(
                spec, store, claim, data, teacher, student, method, tcfg, fast_path,
                device=device, data_root=data_root, resume=resume, progress=progress, echo=echo,
                fast=fast, determinism=determinism,
            )  # fmt: skip
        except ClaimLost as exc:
            echo(f"stopped {spec.run_id}: {exc}")
            return ELSEWHERE
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a crash in one run must not take the grid down
            if store.status(spec.run_id) is None:  # before begin: a bug, shown as it is
                raise
            return record_crash(store, spec.run_id, exc, echo)


def _teachers(cfg: RunConfig, store: Store, data: Any) -> Teachers:
    """What ``train`` distils from: the one teacher (or None), or for a method with teacher
    roles {role: frozen network}, each loaded as :func:`load_teacher` loads one."""

    def load(ref: TeacherRef) -> torch.nn.Module:
        return load_teacher(
            ref,
            store,
            num_classes=data.num_classes,
            image_size=data.image_size,
            dataset=cfg.dataset.name,
        )

    if [role for role, _ in cfg.teachers] in ([], [TEACHER_ROLE]):
        return load(cfg.teacher) if cfg.teacher is not None else None
    return {role: load(ref) for role, ref in cfg.teachers}


def record_crash(store: Store, run_id: str, exc: Exception, echo: Callable[[str], None]) -> str:
    """Mark ``run_id`` failed by ``exc`` (its traceback in log.txt); returns ``"failed"``.

    Called with the run's claim held. When the store cannot take the record either (disk
    full, read-only), that is the one-line error raised, naming the crash it could not record.
    """
    first = f"{type(exc).__name__}: {exc}".splitlines()[0]
    try:
        store.log(run_id, traceback.format_exc())
        store.fail(run_id, first)
    except UserError as store_error:
        raise UserError(
            f"run {run_id} crashed ({first}) and the store could not record it: {store_error}"
        ) from None
    echo(f"failed {run_id}: {first}")
    return "failed"


def _execute_claimed(
    spec: RunSpec,
    store: Store,
    claim: Claim,
    data: Any,
    teacher: Teachers,
    student: torch.nn.Module,
    method: Any,
    tcfg: TrainConfig,
    fast_path: FastPath,
    *,
    device: torch.device,
    data_root: str | None,
    resume: bool,
    progress: bool,
    echo: Callable[[str], None],
    fast: str,
    determinism: DeterminismRecord | None,
) -> str:
    """The part of :func:`execute` that writes: only while this process holds the run's claim
    (checked before every write that another holder could also make)."""
    cfg = spec.config
    # What the data set turned out to hold: part of the stored config (not of the id, which the
    # dataset entry with its val_fraction already fixes), and of the provenance.
    sizes = data_sizes(data)
    store.begin(spec.run_id, {**cfg.to_json(), "data": sizes})
    if not resume:
        store.checkpoint(spec.run_id, "last").unlink(missing_ok=True)
        store.train_record(spec.run_id).unlink(missing_ok=True)
    echo(f"run {spec.run_id}")

    def log(line: str) -> None:
        claim.check()
        store.log(spec.run_id, line)

    t0 = time.perf_counter()
    train_precision = tf32_state()
    code = method_code(cfg.method)  # the code that trains it (not in its id)
    result = _train_or_recover(
        spec, store, claim, data, teacher, student, method, tcfg, fast_path, log,
        device=device, resume=resume, progress=progress, echo=echo,
    )  # fmt: skip
    if result is None:
        return "failed"
    evaluation = _evaluate_best(
        spec, store, data, device=device, data_root=data_root, progress=progress, echo=echo,
        fast=fast, determinism=determinism,
    )  # fmt: skip
    provenance_extra = {
        "fast_path": fast_path.as_dict(),
        "train_images": sizes["train"],
        "compile": result.compile,
        "deterministic": (determinism or DeterminismRecord(False)).as_dict(),
        "training_precision": train_precision,
        "method_code": code,
    } | _teacher_files(teacher)
    metrics = {
        **evaluation,
        "train": train_summary(result, tcfg.select_on),
        "wall_time_s": time.perf_counter() - t0,
        "provenance": {**provenance(device), **provenance_extra},
    }
    claim.check(verify=True)
    _complete(store, spec.run_id, metrics, echo)
    return "complete"


def _train_or_recover(
    spec: RunSpec,
    store: Store,
    claim: Claim,
    data: Any,
    teacher: torch.nn.Module | None,
    student: torch.nn.Module,
    method: Any,
    tcfg: TrainConfig,
    fast_path: FastPath,
    log: Callable[[str], None],
    *,
    device: torch.device,
    resume: bool,
    progress: bool,
    echo: Callable[[str], None],
) -> TrainResult | None:
    """Train the run (resuming it), or take the training a complete run recorded in its
    ``train.json``; None when training diverged (the run is then marked failed)."""
    curves = epoch_log(store.run_dir(spec.run_id))  # $BENCH_LOG: bench run --log tensorboard
    done = finished_training(store, spec.run_id, tcfg) if resume else None
    try:
        if done is not None:  # trained to the end before (its last.pt pruned): evaluate best.pt
            echo(f"{spec.run_id}: training was complete; evaluating its best.pt again")
        result = done or train(
            student,
            method,
            data,
            tcfg,
            ckpt_dir=store.run_dir(spec.run_id) / "checkpoints",
            teacher=teacher,
            device=device,
            resume=resume,
            progress=progress,
            log=log,
            fast=fast_path,
            on_epoch=curves,
        )
    except TrainingDiverged as exc:
        claim.check(verify=True)
        store.fail(spec.run_id, str(exc), epoch=exc.epoch, step=exc.step)
        echo(f"failed {spec.run_id}: {exc}")
        return None
    finally:
        curves.close()
    return result


def _complete(
    store: Store, run_id: str, metrics: dict[str, Any], echo: Callable[[str], None]
) -> None:
    """Write a trained and evaluated run's results (under its claim, checked by the caller)."""
    # The training record outlives last.pt (pruned below): metrics.json, when damaged, is
    # rewritten from best.pt and this (harness.execution.external).
    write_json_atomic(metrics["train"], store.train_record(run_id))
    store.finish(run_id, metrics)
    store.prune(run_id)  # complete: nothing resumes it, best.pt is what it left
    summary = ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in metrics["results"].items())
    echo(f"done {run_id}: {summary}")


def finished_training(store: Store, run_id: str, tcfg: TrainConfig) -> TrainResult | None:
    """The training of ``run_id`` as its ``train.json`` records it, when the run trained to the
    end before (complete, then its status.json or metrics.json was damaged): ``last.pt`` is
    pruned then, so this, not a resume, is what spares it training again. None otherwise."""
    record, best = store.train_record(run_id), store.checkpoint(run_id, "best")
    if not (record.exists() and best.exists()):
        return None
    try:
        summary = json.loads(record.read_text())
        return TrainResult(
            best_epoch=int(summary["best_epoch"]),
            best=dict(summary[f"best_{tcfg.select_on}"]),
            history=list(summary["history"]),
            wall_time_s=0.0,
            images_per_s=float(summary.get("images_per_s", math.nan)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # damaged: trained again, as a run without it would be


def train_summary(result: Any, select_on: str) -> dict[str, Any]:
    """What ``metrics.json`` says about training (a :class:`TrainResult`)."""
    return {
        "best_epoch": result.best_epoch,
        f"best_{select_on}": result.best,
        "images_per_s": result.images_per_s,
        "history": result.history,
    }


def _teacher_files(teacher: Teachers) -> dict[str, Any]:
    """The files of a checkpoint, URL or RobustBench teacher (name → sha256), for provenance;
    a multi-teacher run's by role."""
    if isinstance(teacher, Mapping):
        files = {role: net.weights_sha256 for role, net in teacher.items()
                 if hasattr(net, "weights_sha256")}  # fmt: skip
        return {"teacher_sha256": files} if files else {}
    if hasattr(teacher, "weights_sha256"):
        return {"teacher_sha256": teacher.weights_sha256}
    return {}


def _evaluate_best(
    spec: RunSpec, store: Store, data: Any, *, device: torch.device, **kw: Any
) -> dict[str, Any]:
    """Evaluate the run's ``best.pt`` as a fresh, eager, NCHW fp32 model, whatever the fast
    path did to the trained one."""
    cfg = spec.config
    best = load_checkpoint(store.checkpoint(spec.run_id, "best"))
    student = build_model(cfg.model, data.num_classes, data.image_size, cfg.seed)
    student.load_state_dict(best["student"])
    student.to(device)
    return evaluate_run(student, data, cfg, store, spec.run_id, device=device, **kw)


def run_or_wait(spec: RunSpec, store: Store, **kw: Any) -> str:
    """:func:`execute`, waiting for another process that holds the run (a teacher or
    surrogate this process needs) to finish or die, then taking it up if it is not done."""
    while True:
        outcome = execute(spec, store, **kw)
        if outcome != ELSEWHERE:
            return outcome
        kw.get("echo", print)(f"waiting for {spec.run_id} to finish in the process that holds it")
        wait_released(store.run_dir(spec.run_id))
        if store.status(spec.run_id) == "failed":
            return "failed"


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
        return _evaluate(model, data, cfg, store, run_id, device=device, data_root=data_root,
                         suite=suite, attacks=attacks, subset=subset, progress=progress,
                         echo=echo, fast=fast, determinism=determinism)  # fmt: skip


def _evaluate(
    model: torch.nn.Module,
    data: Any,
    cfg: RunConfig,
    store: Store,
    run_id: str,
    *,
    device: torch.device,
    data_root: str | None,
    suite: str,
    attacks: dict[str, Any] | None,
    subset: int | None,
    progress: bool,
    echo: Callable[[str], None],
    fast: str,
    determinism: DeterminismRecord | None,
) -> dict[str, Any]:
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
