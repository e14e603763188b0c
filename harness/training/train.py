"""The trainer: SGD, piecewise LR, per-epoch PGD-10 selection, atomic resumable checkpoints.

It knows no method: each step is ``x_adv = method.perturb(...)`` then ``loss, logs =
method.loss(...)``, run the way ``fast`` (:mod:`harness.training.fast`) says. A step never waits on
the host: logged values and the finiteness of the loss are accumulated on the device and read once
per epoch. Every random draw of an epoch (shuffle, augmentation, attack starts) comes from
generators seeded by (run seed, epoch), so a run resumed from the checkpoint of epoch e continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.attacks.linf import PGD
from harness.data import DatasetSplits, batches
from harness.evaluation.evaluate import accuracy
from harness.schema import SELECT_ON, Training
from harness.training.compiling import RunCompiler
from harness.training.fast import FastPath
from harness.training.swa import WeightAverage, swa_start
from harness.utils.atomic import save_atomic
from harness.utils.compat import load_checkpoint
from harness.utils.determinism import true_fp32
from harness.utils.errors import TrainingDiverged, UserError
from harness.utils.progress import image_bar
from harness.utils.values import derive_seed

_SCHEDULE = Training()  # the defaults, from the one schema

# One frozen network, none, or one per role of a multi-teacher method (``Method.teacher_roles``).
Teachers = nn.Module | Mapping[str, nn.Module] | None


@dataclass
class TrainConfig:
    """The optimisation schedule (names mirror the grid file's ``[train]`` table)."""

    epochs: int = _SCHEDULE.epochs
    batch_size: int = _SCHEDULE.batch_size
    lr: float = _SCHEDULE.lr
    momentum: float = _SCHEDULE.momentum
    weight_decay: float = _SCHEDULE.weight_decay
    nesterov: bool = _SCHEDULE.nesterov
    milestones: list[int] = field(default_factory=lambda: list(_SCHEDULE.milestones))
    lr_gamma: float = _SCHEDULE.lr_gamma
    select_on: str = SELECT_ON[0]
    select_steps: int = _SCHEDULE.select_steps
    eval_batch_size: int = _SCHEDULE.eval_batch_size
    swa: bool = _SCHEDULE.swa
    seed: int = 0

    @classmethod
    def of(cls, schedule: Training, select_on: str, seed: int) -> TrainConfig:
        """The trainer's config of a run's schedule."""
        return cls(**schedule.to_json(), select_on=select_on, seed=seed)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise UserError(
                f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}"
            )
        if self.select_on not in SELECT_ON:
            raise UserError(
                f"select_on must be one of {', '.join(SELECT_ON)}, got {self.select_on!r}"
            )
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr}")


def check_trainable(data: DatasetSplits, cfg: TrainConfig) -> None:
    """Refuse, before a run starts, data the schedule cannot train on: no selection split, or
    a training batch of a single image (BatchNorm cannot train on one)."""
    data.split(cfg.select_on)
    n = len(data.train)
    if (n % cfg.batch_size or cfg.batch_size) == 1:
        raise UserError(
            f"a training batch of {data.name!r} would hold a single image ({n} images, "
            f"batch_size {cfg.batch_size}), which BatchNorm cannot train on: change batch_size"
        )


@dataclass
class TrainResult:
    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, Any]]
    wall_time_s: float
    images_per_s: float
    compile: dict[str, Any] | None = None  # a CompileRecord (harness.training.compiling)


def _scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=list(cfg.milestones), gamma=cfg.lr_gamma
    )


def frozen_teachers(teacher: Teachers, method: Any) -> dict[str, nn.Module]:
    """The networks in ``teacher`` by the name the compiler records them under: ``teacher``,
    none, or ``teacher-<role>`` for each role of a method with ``teacher_roles`` (then
    ``teacher`` must map exactly those roles to networks)."""
    roles = tuple(getattr(method, "teacher_roles", ()))
    name = getattr(method, "registry_name", "") or type(method).__name__
    if roles:
        given = sorted(teacher) if isinstance(teacher, Mapping) else None
        if given != sorted(roles):
            got = "no teacher" if teacher is None else "one network"
            got = f"roles {', '.join(given) or '(none)'}" if given is not None else got
            raise UserError(
                f"method {name!r} needs one teacher per role ({', '.join(roles)}), got {got}"
            )
        return {f"teacher-{role}": net for role, net in teacher.items()}
    if isinstance(teacher, Mapping):
        raise UserError(
            f"method {name!r} takes one teacher, not one per role ({', '.join(sorted(teacher))})"
        )
    return {} if teacher is None else {"teacher": teacher}


def _lr_scale(sched: torch.optim.lr_scheduler.LRScheduler) -> float:
    """The schedule's current factor: the first group's lr over its initial lr."""
    return sched.get_last_lr()[0] / sched.base_lrs[0]


def prepare(
    student: nn.Module,
    teacher: Teachers,
    method: Any,
    first_x: torch.Tensor,
    cfg: TrainConfig,
    *,
    fast: FastPath,
    device: torch.device,
    compiler: RunCompiler | None = None,
) -> torch.optim.Optimizer:
    """Everything before the first step, returning the optimiser: models on ``device`` in the
    fast path's form (compiled by the run's ``compiler``: the student, the teachers and the
    networks the method owns), the teachers frozen (attacks need
    gradients w.r.t. inputs only), the method set up on a first batch. Shared with
    ``benchmarks/throughput.py``."""
    student.to(device)
    method.to(device)
    teachers = frozen_teachers(teacher, method)
    for net in teachers.values():
        net.to(device).eval().requires_grad_(False)
    method.reseed(derive_seed(cfg.seed, "setup"))
    method.setup(student, teacher, first_x)
    fast.prepare(student, compiler, "student")
    for role, net in teachers.items():
        fast.prepare(net, compiler, role)
    for i, net in enumerate(method.modules()):  # what the method trains itself (a peer, heads)
        fast.prepare(net, compiler, f"method-{i}")
    return torch.optim.SGD(
        list(student.parameters()) + list(method.parameters()),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
        **fast.optimizer_options(device),
    )


@dataclass
class EpochSums:
    """What one epoch's steps leave on the device: sample-weighted sums of the logged values,
    and the first step whose loss was not finite (-1: none)."""

    sums: dict[str, torch.Tensor]
    images: int
    bad_step: torch.Tensor
    bad_loss: torch.Tensor

    def raise_if_diverged(self, epoch: int) -> None:
        """The epoch's one host synchronisation for the finiteness check."""
        step = int(self.bad_step)
        if step >= 0:
            raise TrainingDiverged(epoch, step, float(self.bad_loss))

    def means(self) -> dict[str, float]:
        return {k: float(v) / max(self.images, 1) for k, v in self.sums.items()}


def train_steps(
    student: nn.Module,
    teacher: Teachers,
    method: Any,
    opt: torch.optim.Optimizer,
    stream: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    epoch: int,
    fast: FastPath,
    device: torch.device,
    on_batch: Callable[[int], None] = lambda n: None,
) -> EpochSums:
    """One pass of optimisation steps over ``stream`` with no host synchronisation.

    A non-finite loss is remembered (its first step and value) rather than checked at once;
    :meth:`EpochSums.raise_if_diverged` reports it before anything of the epoch is saved.
    """
    sums: dict[str, torch.Tensor] = {}
    images = 0
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    bad_loss = torch.zeros((), device=device)
    for step, (x, y) in enumerate(stream):
        x = fast.inputs(x)
        with fast.autocast(device):
            x_adv = method.perturb(student, teacher, x, y)
            loss, logs = method.loss(student, teacher, x, x_adv, y, epoch=epoch)
        first = (bad_step < 0) & ~torch.isfinite(loss.detach())
        bad_step = torch.where(first, step, bad_step)
        bad_loss = torch.where(first, loss.detach().float(), bad_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n = len(y)
        images += n
        for key, value in {"loss": loss, **logs}.items():
            value = torch.as_tensor(value, device=device).detach().float() * n
            sums[key] = sums[key] + value if key in sums else value
        on_batch(n)
    return EpochSums(sums, images, bad_step, bad_loss)


def train(
    student: nn.Module,
    method: Any,
    data: DatasetSplits,
    cfg: TrainConfig,
    *,
    ckpt_dir: Path,
    teacher: Teachers = None,
    device: torch.device | str = "cpu",
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    fast: FastPath | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``student`` with ``method`` and keep ``last.pt`` (every epoch) and ``best.pt``.

    ``on_epoch`` gets each epoch's record once it is saved (TensorBoard,
    :mod:`harness.training.curves`).

    ``best.pt`` holds the weights with the best PGD-10 accuracy on the selection split
    (``cfg.select_on``: the held-out validation split, or the test set as the DGAD paper does);
    with ``cfg.swa``, from the first milestone on, those of the best averaged student
    (:mod:`harness.training.swa`), whose accuracies the history's selection columns then hold.
    ``fast`` defaults to :meth:`FastPath.auto` for ``device``; selection always runs in true
    fp32 (no autocast, TF32 off).
    """
    device = torch.device(device)
    fast = FastPath.auto(device) if fast is None else fast
    ckpt_dir = Path(ckpt_dir)
    train_set = data.train.to(device) if fast.resident else data.train
    select_split = data.split(cfg.select_on)
    select_split = select_split.to(device) if fast.resident else select_split
    first_x, _ = next(batches(train_set, cfg.batch_size, device=device))
    compiler = RunCompiler() if fast.compile else None
    swa = WeightAverage(student, swa_start(cfg.milestones, cfg.epochs), device) if cfg.swa else None
    opt = prepare(
        student, teacher, method, first_x, cfg, fast=fast, device=device, compiler=compiler
    )
    sched = _scheduler(opt, cfg)
    state = _resume_state(ckpt_dir, log) if resume else None
    start_epoch, best, history = _restore(state, student, opt, sched, method, log, swa)

    t_start = time.perf_counter()
    seen = 0
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        epoch_sums = _train_epoch(
            student, teacher, method, opt, train_set, cfg, epoch,
            fast=fast, device=device, progress=progress, lr_scale=_lr_scale(sched),
        )  # fmt: skip
        n_seen = epoch_sums.images
        lr_used = opt.param_groups[0]["lr"]
        sched.step()
        method.end_epoch(epoch, lr_scale=_lr_scale(sched))  # its state goes into last.pt below
        seen += n_seen
        train_time = time.perf_counter() - t_epoch

        kept, best = _averaged(swa, student, train_set, cfg, epoch, device, best)
        clean, pgd = _select(kept, method, select_split, cfg, epoch, device)
        record = {
            "epoch": epoch,
            "lr": lr_used,
            **{f"train_{k}": v for k, v in epoch_sums.means().items()},
            f"{cfg.select_on}_clean": clean,
            f"{cfg.select_on}_pgd{cfg.select_steps}": pgd,
            "epoch_time_s": train_time,
            "images_per_s": n_seen / max(train_time, 1e-9),
        } | ({"swa_models": swa.n} if swa is not None else {})
        history.append(record)
        if pgd > best["pgd"]:
            best = {"pgd": pgd, "clean": clean, "epoch": epoch}
            save_atomic(
                {"epoch": epoch, "student": kept.state_dict(), "metrics": record},
                ckpt_dir / "best.pt",
            )
        _save_last(ckpt_dir, epoch, student, opt, sched, method, best, history, swa)
        log(
            json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in record.items()})
        )
        if on_epoch is not None:
            on_epoch(record)

    return _result(best, history, time.perf_counter() - t_start, seen, compiler, log)


#: The best selection result before any epoch (every epoch's beats it).
NO_BEST: dict[str, Any] = {"pgd": -1.0, "clean": -1.0, "epoch": -1}


def _averaged(
    swa: WeightAverage | None,
    student: nn.Module,
    train_set: Any,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
    best: dict[str, Any],
) -> tuple[nn.Module, dict[str, Any]]:
    """(the network this epoch selects on and keeps as ``best.pt``, the best so far).

    With ``swa`` from its first epoch on: the averaged student, updated with this epoch's
    weights; the best is then among averaged students only (PeerAiD keeps its best SWA
    student), so the first averaged epoch starts it again."""
    if swa is None or not swa.active(epoch):
        return student, best
    swa.update(
        student, train_set, batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch, device=device
    )
    return swa.model, dict(NO_BEST) if swa.n == 1 else best


def _result(
    best: dict[str, Any],
    history: list[dict[str, Any]],
    wall: float,
    seen: int,
    compiler: RunCompiler | None,
    log: Callable[[str], None],
) -> TrainResult:
    """What :func:`train` returns (and logs what the compiler did)."""
    compiled = compiler.record() if compiler is not None else None
    if compiled is not None:
        log(compiled.summary())
    return TrainResult(
        best_epoch=int(best["epoch"]),
        best={"pgd": best["pgd"], "clean": best["clean"]},
        history=history,
        wall_time_s=wall,
        images_per_s=seen / wall if seen and wall > 0 else math.nan,
        compile=compiled.as_dict() if compiled is not None else None,
    )


def _train_epoch(
    student: nn.Module,
    teacher: Teachers,
    method: Any,
    opt: torch.optim.Optimizer,
    train_set: Any,
    cfg: TrainConfig,
    epoch: int,
    *,
    fast: FastPath,
    device: torch.device,
    progress: bool,
    lr_scale: float,
) -> EpochSums:
    """One epoch of training steps: its data order and attack randomness seeded from the run's
    seed and the epoch (a resumed run repeats them), the method told the epoch starts (with the
    schedule's factor ``lr_scale``); raises if the loss diverged."""
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "data", epoch))
    method.reseed(derive_seed(cfg.seed, "attack", epoch))
    student.train()
    method.train()
    bar = image_bar(len(train_set), f"epoch {epoch + 1}/{cfg.epochs}", progress)
    stream = batches(
        train_set, cfg.batch_size, shuffle=True, generator=gen, augment=True, device=device
    )
    method.start_epoch(epoch, lr_scale=lr_scale)
    epoch_sums = train_steps(
        student, teacher, method, opt, stream,
        epoch=epoch, fast=fast, device=device, on_batch=bar.update,
    )  # fmt: skip
    bar.close()
    epoch_sums.raise_if_diverged(epoch)
    return epoch_sums


def _restore(
    state: dict[str, Any] | None,
    student: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    method: Any,
    log: Callable[[str], None],
    swa: WeightAverage | None = None,
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """Load a ``last.pt`` state into the run's objects: (first epoch to run, best, history);
    a run without one starts at epoch 0."""
    if state is None:
        return 0, dict(NO_BEST), []
    student.load_state_dict(state["student"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    method.load_state_dict(state["method"])
    if swa is not None and state.get("swa") is not None:
        swa.load_state_dict(state["swa"])
    log(f"resumed after epoch {state['epoch']}")
    return state["epoch"] + 1, state["best"], state["history"]


def _select(
    student: nn.Module,
    method: Any,
    select_split: Any,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
) -> tuple[float, float]:
    """(clean, PGD) accuracy on the selection split after ``epoch``, in true fp32;
    ``select_steps`` = 0 selects on clean accuracy (naturally trained surrogates)."""
    student.eval()
    select_attack = PGD(
        eps=method.eps,
        step_size=method.step_size,
        steps=cfg.select_steps,
        seed=derive_seed(cfg.seed, "select", epoch),
    )
    with true_fp32():
        bs = cfg.eval_batch_size
        clean = accuracy(student, select_split, None, batch_size=bs, device=device)
        pgd = (
            accuracy(student, select_split, select_attack, batch_size=bs, device=device)
            if cfg.select_steps > 0
            else clean
        )
    return clean, pgd


def _save_last(
    ckpt_dir: Path,
    epoch: int,
    student: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    method: Any,
    best: dict[str, Any],
    history: list[dict[str, Any]],
    swa: WeightAverage | None = None,
) -> None:
    """``last.pt``: everything a resume needs; the previous one kept as ``prev.pt``, the
    fallback if the new one is damaged."""
    last_path = ckpt_dir / "last.pt"
    if last_path.exists():
        os.replace(last_path, ckpt_dir / "prev.pt")
    save_atomic(
        {
            "epoch": epoch,
            "student": student.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "method": method.state_dict(),
            "best": best,
            "history": history,
            "swa": swa.state_dict() if swa is not None else None,
        },
        last_path,
    )


def _resume_state(ckpt_dir: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest readable checkpoint of ``last.pt`` and ``prev.pt``; a damaged one is reported
    in one line and skipped."""
    for name in ("last.pt", "prev.pt"):
        path = ckpt_dir / name
        if not path.exists():
            continue
        try:
            state = load_checkpoint(path)
            if not {"epoch", "student", "optimizer", "scheduler", "history"} <= set(state):
                raise UserError(f"checkpoint {path} is incomplete")
            return state
        except UserError as exc:
            log(f"warning: {exc}; falling back to an earlier checkpoint")
    return None
