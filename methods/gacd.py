"""GACD (``gacd``): Bai et al., "Feature Distillation With Guided Adversarial Contrastive
Learning", 2020 (arXiv 2009.09922).

**A reconstruction from the abstract**: the paper's code and full text could not be read, so
every design choice below is a hyperparameter with a documented default.

    features  f_T = normalize(h_T(φ_T(x)))   teacher penultimate features on CLEAN x (anchor)
              f_S = normalize(h_S(φ_S(x')))  student penultimate features on x'
              h_T, h_S: linear heads to ``feat_dim`` = 128, trained with the student
    InfoNCE   ℓ_i = −log [exp(f_S_i·f_T_i/τ) / (Σ_j exp(f_S_i·f_T_j/τ) + Σ_k exp(f_S_i·q_k/τ))]
              τ = ``nce_t`` = 0.07; negatives: the batch's other teacher embeddings plus a queue of
              ``queue_size`` = 4096 past teacher embeddings (0 disables the queue)
    weights   "sample reweighted estimation": w_i = p_T(x_i)_{y_i} (``weighting = "prob"``),
              [argmax T(x_i) = y_i] (``"correct"``) or 1 (``"none"``); L_con = Σ w_i ℓ_i / Σ w_i
    inner     x' = argmax Σ_i CE(S(x'_i), y_i)  (start x + U(−eps, eps), not clipped before the
              first gradient; student BN eval; no official code to follow)
    outer     L = ce_weight · CE(S(x'), y) + beta · L_con + kd_weight · KL(p_T(x) ‖ p_S(x'))

Everything after the student's forward (heads, normalisation, the InfoNCE products at
τ = 0.07, the weights, every reduction) runs in fp32 whatever the step's autocast: in bf16 the
products' rounding, divided by τ, would move the contrastive logits by several hundredths.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.models import features
from harness.utils.modes import eval_mode
from methods.base import Method, register_method
from methods.common import ce_attack, constants, full_precision, kl_logits


def info_nce(
    student_emb: Tensor, teacher_emb: Tensor, queue: Tensor, weights: Tensor, nce_t: float
) -> Tensor:
    """Weighted InfoNCE of student embeddings against teacher ones (positives on the diagonal)."""
    logits = student_emb @ teacher_emb.t()
    if len(queue):
        logits = torch.cat([logits, student_emb @ queue.t()], dim=1)
    per_sample = F.cross_entropy(
        logits / nce_t, torch.arange(len(student_emb), device=logits.device), reduction="none"
    )
    return (weights * per_sample).sum() / weights.sum().clamp(min=1e-12)


@full_precision
def gacd_loss(
    adv_logits: Tensor,
    student_features: Tensor,
    teacher_features: Tensor,
    teacher_logits: Tensor,
    y: Tensor,
    heads: ContrastiveHeads,
    *,
    weighting: str,
    nce_t: float,
    ce_weight: float,
    beta: float,
    kd_weight: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(total, CE on x', weighted InfoNCE, the teacher embeddings to enqueue), all in fp32."""
    f_s = F.normalize(heads.student(student_features), dim=1)
    f_t = F.normalize(heads.teacher(teacher_features), dim=1)
    w = sample_weights(teacher_logits, y, weighting)
    con = info_nce(f_s, f_t, heads.negatives(), w, nce_t)
    ce = F.cross_entropy(adv_logits, y)
    loss = ce_weight * ce + beta * con
    if kd_weight:
        loss = loss + kd_weight * kl_logits(teacher_logits, adv_logits, 1.0, "batchmean")
    return loss, ce, con, f_t


def sample_weights(teacher_logits: Tensor, y: Tensor, weighting: str) -> Tensor:
    if weighting == "prob":
        return F.softmax(teacher_logits, 1).gather(1, y[:, None]).squeeze(1)
    if weighting == "correct":
        return (teacher_logits.argmax(1) == y).to(teacher_logits.dtype)
    return torch.ones(len(y), dtype=teacher_logits.dtype, device=y.device)


class ContrastiveHeads(nn.Module):
    """The two projection heads and the queue of past teacher embeddings."""

    def __init__(self, student_dim: int, teacher_dim: int, feat_dim: int, queue_size: int) -> None:
        super().__init__()
        self.student = nn.Linear(student_dim, feat_dim)
        self.teacher = nn.Linear(teacher_dim, feat_dim)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, feat_dim), dim=1))
        # The counters are buffers so checkpoints hold them, mirrored as Python ints so a
        # training step never reads the device.
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self._filled = self._ptr = 0
        self.register_load_state_dict_post_hook(ContrastiveHeads._read_counters)

    @staticmethod
    def _read_counters(module: ContrastiveHeads, _incompatible: Any) -> None:
        module._filled, module._ptr = int(module.filled), int(module.ptr)

    def negatives(self) -> Tensor:
        """A copy: ``enqueue`` overwrites the buffer before the loss is backpropagated."""
        return self.queue[: self._filled].clone()

    @torch.no_grad()
    def enqueue(self, emb: Tensor) -> None:
        size = len(self.queue)
        if size == 0:
            return
        idx = (self._ptr + torch.arange(len(emb), device=emb.device)) % size
        self.queue[idx] = emb.detach().to(self.queue.dtype)
        self._ptr = (self._ptr + len(emb)) % size
        self._filled = min(size, self._filled + len(emb))
        self.ptr.fill_(self._ptr)
        self.filled.fill_(self._filled)


@register_method("gacd")
class GACD(Method):
    defaults = {
        "feat_dim": 128,
        "nce_t": 0.07,
        "queue_size": 4096,
        "weighting": "prob",
        "ce_weight": 1.0,
        "beta": 0.8,
        "kd_weight": 0.0,
    }
    choices = {"weighting": ("prob", "correct", "none")}
    positive = ("feat_dim", "nce_t")
    nonnegative = ("queue_size", "ce_weight", "beta", "kd_weight")

    def __init__(self, /, **hparams: Any) -> None:
        super().__init__(**hparams)
        self.heads: ContrastiveHeads | None = None

    def setup(self, student: nn.Module, teacher: nn.Module | None, x: Tensor) -> None:
        """Size the heads from the two networks' feature widths (known once a batch is seen)."""
        with torch.no_grad(), eval_mode(student, teacher):
            s_dim = features(student, x[:2]).shape[1]
            t_dim = features(teacher, x[:2]).shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            self.heads = ContrastiveHeads(s_dim, t_dim, self.feat_dim, self.queue_size)
        self.heads.to(x.device)

    def modules(self) -> Iterator[nn.Module]:
        return iter([self.heads] if self.heads is not None else [])

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        return ce_attack(self, student, x, y, "uniform")

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        if self.heads is None:
            self.setup(student, teacher, x)
        s_feat = features(student, x_adv)
        adv_logits = (
            student.forward_head(s_feat) if hasattr(student, "forward_head") else student(x_adv)
        )
        t_feat, t_logits = constants(lambda: (features(teacher, x), teacher(x)))
        loss, ce, con, f_t = gacd_loss(
            adv_logits,
            s_feat,
            t_feat,
            t_logits,
            y,
            self.heads,
            weighting=self.weighting,
            nce_t=self.nce_t,
            ce_weight=self.ce_weight,
            beta=self.beta,
            kd_weight=self.kd_weight,
        )
        self.heads.enqueue(f_t)
        return loss, {"ce_adv": ce.detach(), "contrastive": con.detach()}
