"""PeerAiD (``peeraid``): Jung et al., "PeerAiD: Improving Adversarial Distillation from a
Specialized Peer Tutor", CVPR 2024 (official code: jaewonalive/PeerAiD ``main.py:train_kd`` and
``attack_function.py:LinfPeerAttack``, with ``training_scripts/resnet18_cifar10.sh`` and
``configs/PeerAiD_resnet18_cifar10.json``, commit cd12e9210ceb43a68c104f3c4ca281ea991880b8;
every default follows the CIFAR-10 ResNet-18 script).

No pretrained teacher: a peer network P, of the student's architecture and freshly initialised,
is trained together with the student S, on the student's adversarial examples. The peer is a
module the method owns (``setup``/``modules``, as GACD's heads): its parameters join the
student's in the optimiser and it is saved and restored with the run.

    inner:  x' = argmax Σ_{i,c} KL(σ(P(x_i)) ‖ σ(S(x'_i)))   with P(x) the peer in EVAL mode on
            the clean input, no gradient; start x + 0.001·N(0, I), not clipped before the first
            gradient; student BN eval
    peer:   L_P = gamma1 · CE(P(x'), y)
                + gamma2 · τ_r² · KL_elem(σ(S(x')/τ_r) ‖ σ(P(x')/τ_r))
    student: L_S = lamb1 · CE(S(x'), y)
                + lamb2 · τ² · KL_elem(σ(P(x')/τ) ‖ σ(S(x')/τ))      (P(x') detached)
                + lamb3 · τ² · KL_elem(σ(S(x)/τ) ‖ σ(S(x')/τ))
    L = L_P + L_S, one backward, one SGD step for both networks
    KL_elem: nn.KLDivLoss()'s default, (1/(B·C)) Σ_{i,c}; τ = ``temperature`` (5), τ_r =
    ``re_kd_temperature`` (1). As in the official code the targets S(x') in L_P and S(x) in
    L_S are NOT detached: the student also gets gradient from them.
    train-mode forwards per step, as ``train_kd``: P(x'), then S(x') twice (the peer's target,
    then the student's own output: in train mode the two are the same function of the same
    batch, so the second one here carries both gradients and the first only moves the BN
    statistics), then S(x)

The peer: rebuilt from the model registry when the student names its registered architecture
(its constructor's initialisation), else a copy of the student with every layer reset; its
init is seeded from the run's setup seed. The official scripts give it the student's settings
(lr 0.1, weight decay 2e-4, the same LR decay epochs, separate but identical SGD optimisers),
so one optimiser over both is the same update.

The scripts' ``--swa_s`` (in every command of the repository's README: a weight-averaged copy
of the student from the first LR decay on, evaluated and kept beside the student) is the
trainer's ``[train] swa = true`` (:mod:`harness.training.swa`), which the cifar10 grid's
``peeraid`` variant sets: the averaged student is the one selected and evaluated. The scripts
keep the best of both; the code does not say which one the paper's tables report. A grid
without the key evaluates the student itself.

Official CIFAR-10 schedule (ResNet-18 student and peer): 300 epochs, batch 128, SGD lr 0.1 for
both, momentum 0.9, weight decay 2e-4, no Nesterov, LR ÷10 from epochs 214, 259, 284
(``lr_decay_epochs``, 0-based: ``milestones = [214, 259, 284]``); no teacher.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.registry import MODELS
from harness.utils.modes import eval_mode
from methods.base import Method, Teachers, register_method
from methods.common import bn_passes, constants, full_precision, kl, kl_attack, kl_logits


@full_precision
def peeraid_loss(
    peer_adv_logits: Tensor,
    adv_logits: Tensor,
    clean_logits: Tensor,
    y: Tensor,
    *,
    temperature: float,
    re_kd_temperature: float,
    lamb1: float,
    lamb2: float,
    lamb3: float,
    gamma1: float,
    gamma2: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(L_P + L_S, L_P, L_S)."""
    tr, t = re_kd_temperature, temperature
    peer = gamma1 * F.cross_entropy(peer_adv_logits, y) + gamma2 * tr * tr * kl_logits(
        adv_logits, peer_adv_logits, tr, "elementwise"
    )
    log_s = F.log_softmax(adv_logits / t, dim=1)
    student = (
        lamb1 * F.cross_entropy(adv_logits, y)
        + lamb2 * t * t * kl(F.softmax(peer_adv_logits.detach() / t, dim=1), log_s, "elementwise")
        + lamb3 * t * t * kl(F.softmax(clean_logits / t, dim=1), log_s, "elementwise")
    )
    return peer + student, peer, student


def fresh_like(model: nn.Module, x: Tensor) -> nn.Module:
    """A newly initialised network of ``model``'s architecture, on its device and dtype."""
    param = next(model.parameters())
    arch = getattr(model, "arch", "")
    new: nn.Module | None = None
    if arch in MODELS:
        with torch.no_grad(), eval_mode(model):
            classes = model(x[:2]).shape[1]
        size = getattr(model, "image_size", x.shape[-1])
        new = MODELS.create(arch, num_classes=classes, image_size=size)
        theirs = {k: v.shape for k, v in model.state_dict().items()}
        if {k: v.shape for k, v in new.state_dict().items()} != theirs:
            new = None  # built with other options (WRN's sub_block1): copy and reset instead
    if new is None:
        new = copy.deepcopy(model)
        for module in new.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return new.to(device=param.device, dtype=param.dtype)


@register_method("peeraid")
class PeerAiD(Method):
    needs_teacher = False
    defaults = {
        "temperature": 5.0,
        "re_kd_temperature": 1.0,
        "lamb1": 0.0,
        "lamb2": 1.0,
        "lamb3": 1.0,
        "gamma1": 1.0,
        "gamma2": 0.1,
    }
    positive = ("temperature", "re_kd_temperature")
    nonnegative = ("lamb1", "lamb2", "lamb3", "gamma1", "gamma2")

    def __init__(self, /, **hparams: Any) -> None:
        super().__init__(**hparams)
        self.peer: nn.Module | None = None

    def setup(self, student: nn.Module, teacher: Teachers, x: Tensor) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            self.peer = fresh_like(student, x)
        self.peer.train(student.training)

    def modules(self) -> Iterator[nn.Module]:
        return iter([self.peer] if self.peer is not None else [])

    def perturb(self, student: nn.Module, teacher: Teachers, x: Tensor, y: Tensor) -> Tensor:
        if self.peer is None:
            self.setup(student, teacher, x)
        with eval_mode(self.peer):
            (peer_clean,) = constants(lambda: (self.peer(x),))
        target = F.softmax(peer_clean, 1)
        return kl_attack(self, student, x, target, "normal")

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        if self.peer is None:
            self.setup(student, teacher, x)
        peer_adv = self.peer(x_adv)
        bn_passes(student, x_adv)  # S(x') as the peer's target: the same outputs as the next
        adv_logits = student(x_adv)
        clean_logits = student(x)
        loss, peer, stud = peeraid_loss(
            peer_adv,
            adv_logits,
            clean_logits,
            y,
            temperature=self.temperature,
            re_kd_temperature=self.re_kd_temperature,
            lamb1=self.lamb1,
            lamb2=self.lamb2,
            lamb3=self.lamb3,
            gamma1=self.gamma1,
            gamma2=self.gamma2,
        )
        return loss, {"loss_peer": peer.detach(), "loss_student": stud.detach()}
