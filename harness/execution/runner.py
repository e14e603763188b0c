"""Execute one run: data → teacher → train → evaluate best checkpoint → store."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import torch

import harness
from harness.execution.inputs import build_model, data_sizes, load_dataset
from harness.execution.provenance import provenance
from harness.execution.run_evaluation import check_surrogates, evaluate_run
from harness.execution.teachers import load_teacher
from harness.grid.load import RunSpec
from harness.method_code import method_code
from harness.schema import TEACHER_ROLE, RunConfig, TeacherRef
from harness.store.claims import Claim, Claimed, ClaimLost, clear_stale, wait_released
from harness.store.store import Store
from harness.training.curves import epoch_log
from harness.training.fast import FastPath
from harness.training.train import Teachers, TrainConfig, TrainResult, check_trainable, train
from harness.utils.atomic import write_json_atomic
from harness.utils.compat import load_checkpoint
from harness.utils.determinism import DeterminismRecord, tf32_state
from harness.utils.errors import TrainingDiverged, UserError

#: What :func:`execute` returns for a run another live process holds (it was skipped).
ELSEWHERE = "running elsewhere"


@dataclasses.dataclass(frozen=True)
class Options:
    """How :func:`execute` runs (not what: nothing here is in a run's id)."""

    device: torch.device
    data_root: str | None = None
    resume: bool = True
    progress: bool = True
    echo: Callable[[str], None] = print
    fast: str = "auto"
    determinism: DeterminismRecord | None = None


@dataclasses.dataclass(frozen=True)
class Job:
    """One run, built and claimed: what it trains, from what, and the claim it writes under."""

    spec: RunSpec
    store: Store
    claim: Claim
    data: Any
    teacher: Teachers
    student: torch.nn.Module
    method: Any
    tcfg: TrainConfig
    fast_path: FastPath

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    def log(self, line: str) -> None:
        """A line of the run's log.txt, written only while the claim is still this process's."""
        self.claim.check()
        self.store.log(self.run_id, line)


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
    opts = Options(device, data_root, resume, progress, echo, fast, determinism)
    cfg = spec.config
    if store.is_complete(spec.run_id):
        if store.sync(spec.run_id):  # finished, but killed before the index said so
            echo(f"re-indexed {spec.run_id} (complete)")
        clear_stale(store.run_dir(spec.run_id))  # the claim of a process killed after that
        echo(f"skip {spec.run_id} (complete)")
        return "skipped"
    check_surrogates(cfg, store, spec.run_id)
    data = load_dataset(cfg.dataset, data_root)
    parts = {
        "data": data,
        "teacher": _teachers(cfg, store, data),
        "student": build_model(cfg.model, data.num_classes, data.image_size, cfg.seed),
        "method": harness.create_method(cfg.method, **cfg.hparams),
        "tcfg": TrainConfig.of(cfg.train, cfg.select_on, cfg.seed),
        "fast_path": FastPath.parse(fast, device),
    }
    check_trainable(data, parts["tcfg"])
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
            return _execute_claimed(Job(spec, store, claim, **parts), opts)
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


def _execute_claimed(job: Job, opts: Options) -> str:
    """The part of :func:`execute` that writes: only while this process holds the run's claim
    (checked before every write that another holder could also make)."""
    store, run_id = job.store, job.run_id
    # What the data set turned out to hold: part of the stored config (not of the id, which the
    # dataset entry with its val_fraction already fixes), and of the provenance.
    sizes = data_sizes(job.data)
    store.begin(run_id, {**job.spec.config.to_json(), "data": sizes})
    if not opts.resume:
        store.checkpoint(run_id, "last").unlink(missing_ok=True)
        store.train_record(run_id).unlink(missing_ok=True)
    opts.echo(f"run {run_id}")
    t0 = time.perf_counter()
    train_precision = tf32_state()
    code = method_code(job.spec.config.method)  # the code that trains it (not in its id)
    result = _train_or_recover(job, opts)
    if result is None:
        return "failed"
    evaluation = _evaluate_best(job, opts)
    provenance_extra = {
        "fast_path": job.fast_path.as_dict(),
        "train_images": sizes["train"],
        "compile": result.compile,
        "deterministic": (opts.determinism or DeterminismRecord(False)).as_dict(),
        "training_precision": train_precision,
        "method_code": code,
    } | _teacher_files(job.teacher)
    metrics = {
        **evaluation,
        "train": train_summary(result, job.tcfg.select_on),
        "wall_time_s": time.perf_counter() - t0,
        "provenance": {**provenance(opts.device), **provenance_extra},
    }
    job.claim.check(verify=True)
    _complete(store, run_id, metrics, opts.echo)
    return "complete"


def _train_or_recover(job: Job, opts: Options) -> TrainResult | None:
    """Train the run (resuming it), or take the training a complete run recorded in its
    ``train.json``; None when training diverged (the run is then marked failed)."""
    store, run_id = job.store, job.run_id
    curves = epoch_log(store.run_dir(run_id))  # $BENCH_LOG: bench run --log tensorboard
    done = finished_training(store, run_id, job.tcfg) if opts.resume else None
    try:
        if done is not None:  # trained to the end before (its last.pt pruned): evaluate best.pt
            opts.echo(f"{run_id}: training was complete; evaluating its best.pt again")
        result = done or train(
            job.student,
            job.method,
            job.data,
            job.tcfg,
            ckpt_dir=store.run_dir(run_id) / "checkpoints",
            teacher=job.teacher,
            device=opts.device,
            resume=opts.resume,
            progress=opts.progress,
            log=job.log,
            fast=job.fast_path,
            on_epoch=curves,
        )
    except TrainingDiverged as exc:
        job.claim.check(verify=True)
        store.fail(run_id, str(exc), epoch=exc.epoch, step=exc.step)
        opts.echo(f"failed {run_id}: {exc}")
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


def _evaluate_best(job: Job, opts: Options) -> dict[str, Any]:
    """Evaluate the run's ``best.pt`` as a fresh, eager, NCHW fp32 model, whatever the fast
    path did to the trained one."""
    cfg, data = job.spec.config, job.data
    best = load_checkpoint(job.store.checkpoint(job.run_id, "best"))
    student = build_model(cfg.model, data.num_classes, data.image_size, cfg.seed)
    student.load_state_dict(best["student"])
    student.to(opts.device)
    return evaluate_run(
        student, data, cfg, job.store, job.run_id, device=opts.device, data_root=opts.data_root,
        progress=opts.progress, echo=opts.echo, fast=opts.fast, determinism=opts.determinism,
    )  # fmt: skip


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
