"""Per-epoch training records to TensorBoard (an optional extra: ``pip install
'adv-distill-bench[tensorboard]'``).

``bench run --log tensorboard`` (or ``$BENCH_LOG=tensorboard``, which the flag sets so that
workers and Slurm jobs inherit it) makes every run write its epochs' records to
``<run>/tensorboard/``: ``train/<name>`` for the mean of each logged training value (``loss``
and what the method logs), ``<split>/clean`` and ``<split>/pgd<k>`` for the selection split's
accuracies, ``lr``; the step is the epoch (1-based). ``tensorboard --logdir <store>/runs`` shows
them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.utils.errors import UserError

LOGGERS = ("tensorboard",)
ENV = "BENCH_LOG"
INSTALL_HINT = "pip install 'adv-distill-bench[tensorboard]'"


def requested(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The loggers ``$BENCH_LOG`` asks for (comma-separated), checked."""
    names = [n.strip() for n in environ.get(ENV, "").split(",") if n.strip()]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise UserError(
            f"{ENV}: unknown logger(s) {', '.join(unknown)}; valid: {', '.join(LOGGERS)}"
        )
    return names


def summary_writer() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or one line saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(f"--log tensorboard needs tensorboard: {INSTALL_HINT}") from None
    return SummaryWriter


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """An epoch's record (:func:`harness.training.train.train`) as TensorBoard tags."""
    out = {}
    for key, value in record.items():
        if key in ("epoch", "epoch_time_s", "images_per_s") or not isinstance(value, int | float):
            continue
        if key.startswith("train_"):
            tag = "train/" + key.removeprefix("train_")
        elif key == "lr":
            tag = "lr"
        else:  # val_clean, test_pgd10, ...
            split, _, name = key.partition("_")
            tag = f"{split}/{name}"
        out[tag] = float(value)
    out["speed/images_per_s"] = float(record.get("images_per_s", 0.0))
    return out


class EpochLog:
    """What the trainer calls after each epoch (``on_epoch``): the requested loggers."""

    def __init__(self, run_dir: Path, names: list[str]) -> None:
        self._writers = []
        if "tensorboard" in names:
            self._writers.append(summary_writer()(log_dir=str(Path(run_dir) / "tensorboard")))

    def __call__(self, record: Mapping[str, Any]) -> None:
        step = int(record["epoch"]) + 1
        for writer in self._writers:
            for tag, value in scalars(record).items():
                writer.add_scalar(tag, value, step)
            writer.flush()

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


def epoch_log(run_dir: Path, environ: Mapping[str, str] = os.environ) -> EpochLog:
    """The loggers ``$BENCH_LOG`` asks for, writing under ``run_dir``."""
    return EpochLog(run_dir, requested(environ))
