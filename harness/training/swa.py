"""Stochastic weight averaging of the student (``[train] swa = true``), as PeerAiD trains it.

PeerAiD's official scripts all run with ``--swa_s`` (jaewonalive/PeerAiD ``main.py``,
``utils/SWA.py``): from the first milestone of the student's schedule on, after each epoch's
training the averaged student takes the student's weights with weight 1/(n+1)
(``moving_average``), and its BatchNorm statistics are estimated again over one pass of the
training data (``bn_update``). The scripts evaluate and keep both students; the harness selects,
keeps and evaluates the averaged one (its best epoch). That is what this module does, for any
method. A schedule shortened to one epoch (``--epochs 1``) averages that epoch.

Two details follow the official code rather than ``torch.optim.swa_utils``: the average is
``p_swa · (1 − α) + p · α`` (not ``p_swa + (p − p_swa)/(n+1)``), and the BatchNorm pass weights
each batch by its images (momentum b/(n+b)), where ``update_bn`` weights batches equally.
Only parameters are averaged; buffers come from the BatchNorm pass.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from harness.data import batches
from harness.utils.values import derive_seed


def swa_start(milestones: list[int] | tuple[int, ...], epochs: int) -> int:
    """The first epoch (0-based) averaged: the schedule's first milestone; 0 when no milestone
    falls within the ``epochs`` (a grid refuses that; a schedule shortened to one epoch has it)."""
    return min((m for m in milestones if m < epochs), default=0)


class WeightAverage:
    """The averaged copy of a student, updated after each epoch from :func:`swa_start` on."""

    def __init__(self, student: nn.Module, start: int, device: torch.device | str) -> None:
        self.start = start
        self.n = 0
        # made before the fast path compiles the student: an eager network of its own
        self.model = copy.deepcopy(student).to(device)
        self.model.requires_grad_(False)

    def active(self, epoch: int) -> bool:
        return epoch >= self.start

    @torch.no_grad()
    def update(
        self,
        student: nn.Module,
        train_set: Any,
        *,
        batch_size: int,
        seed: int,
        epoch: int,
        device: torch.device,
    ) -> None:
        """Average in ``student``'s weights, then estimate the BatchNorm statistics again on an
        augmented pass over ``train_set`` in its own seeded order."""
        alpha = 1.0 / (self.n + 1)
        for averaged, current in zip(self.model.parameters(), student.parameters(), strict=True):
            averaged.mul_(1.0 - alpha)
            averaged.add_(current.detach() * alpha)
        self.n += 1
        gen = torch.Generator().manual_seed(derive_seed(seed, "swa-bn", epoch))
        stream = batches(
            train_set, batch_size, shuffle=True, generator=gen, augment=True, device=device
        )
        bn_update(self.model, stream)

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start, "n": self.n, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start, self.n = int(state["start"]), int(state["n"])
        self.model.load_state_dict(state["model"])


def bn_update(model: nn.Module, stream: Any) -> None:
    """Set every BatchNorm's running statistics to their image-weighted average over
    ``stream`` (train mode, reset first), then put the momenta back (official ``bn_update``)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
    was_training = model.training
    model.train()
    seen = 0
    for x, _ in stream:
        b = len(x)
        for m in norms:
            m.momentum = b / (seen + b)
        model(x)
        seen += b
    for m, momentum in momenta.items():
        m.momentum = momentum
    model.train(was_training)
