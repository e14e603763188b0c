"""Pieces two or more methods share: KL with the method's reduction, soft targets, logit swaps,
the fp32 island every loss runs in, and the official code's extra BatchNorm passes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.attacks.pgd import ce_sum
from harness.utils.modes import eval_mode, set_mode

REDUCTIONS = ("batchmean", "elementwise", "sum", "none")
LOW_PRECISION = (torch.bfloat16, torch.float16)
AUTOCAST_DEVICES = ("cpu", "cuda")

F_ = TypeVar("F_", bound=Callable[..., Any])


# -- precision: decisions and reductions in fp32 whatever the step's autocast ---------------------
@contextmanager
def autocast_off() -> Iterator[None]:
    """Autocast disabled (on every device type where it is on) for the block.

    Under the fast path's bf16 autocast, a matmul of fp32 tensors still runs in bf16, and on the
    CPU so do softmax and log_softmax: casting the inputs up is not enough, autocast must be off.
    """
    with ExitStack() as stack:
        for device_type in AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


def up(value: Any) -> Any:
    """A bf16/fp16 tensor as fp32 (differentiably); anything else (fp32, fp64) unchanged."""
    if isinstance(value, Tensor) and value.dtype in LOW_PRECISION:
        return value.float()
    return value


def full_precision(loss_fn: F_) -> F_:
    """Run a pure loss function in fp32: its half-precision tensor arguments cast up, autocast
    off inside. The student's forwards stay in the fast path's precision; every decision (an
    argmax, a margin's sign), softmax, product and reduction of the loss is fp32. Float64
    arguments stay float64 (the parity tests)."""

    @functools.wraps(loss_fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(up(a) for a in args)
        kwargs = {k: up(v) for k, v in kwargs.items()}
        with autocast_off():
            return loss_fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def kl(
    target: Tensor, log_q: Tensor, reduction: str = "batchmean", weights: Tensor | None = None
) -> Tensor:
    """``KL(target ‖ q)`` with ``log_q`` the trained log-probabilities.

    ``batchmean`` = (1/B) Σ_i Σ_c, ``elementwise`` = (1/(B·C)) Σ_i Σ_c, ``sum`` = Σ_i Σ_c,
    ``none`` = the per-sample Σ_c. Exactly ``F.kl_div(log_q, target)`` (0·log 0 = 0).
    ``weights``: per-sample weights w_i multiplying each sample's terms (Fair-*'s class weights).
    """
    per_entry = F.kl_div(log_q, target, reduction="none")
    if weights is not None:
        per_entry = per_entry * weights[:, None]
    if reduction == "none":
        return per_entry.sum(1)
    total = per_entry.sum()
    if reduction == "sum":
        return total
    if reduction == "batchmean":
        return total / log_q.shape[0]
    if reduction == "elementwise":
        return total / log_q.numel()
    raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")


def kl_logits(
    target_logits: Tensor,
    logits: Tensor,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    weights: Tensor | None = None,
) -> Tensor:
    """``KL(σ(target/τ) ‖ σ(logits/τ))``."""
    return kl(
        F.softmax(target_logits / temperature, dim=1),
        F.log_softmax(logits / temperature, dim=1),
        reduction,
        weights,
    )


def smoothed_kl(log_q: Tensor, target: Tensor) -> Tensor:
    """The elementwise ``kl_loss(a, b) = −a·b + log(b + 1e-5)·b`` of RSLAD's, MTARD's and ABSLD's
    official code (``a`` the student's log-probabilities, ``b`` the target distribution): KL up
    to a constant, so the same gradient, but a different value where the value is used (MTARD's
    adaptive weights)."""
    return -log_q * target + torch.log(target + 1e-5) * target


def cross_entropy(logits: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
    """``(1/B) Σ_i w_i CE(logits_i, y_i)``; unweighted (w_i = 1) when ``weights`` is None."""
    if weights is None:
        return F.cross_entropy(logits, y)
    return (weights * F.cross_entropy(logits, y, reduction="none")).mean()


def soft_cross_entropy(target: Tensor, logits: Tensor) -> Tensor:
    """``−(1/B) Σ_i Σ_c target_ic · log σ(logits)_ic``."""
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def swap_logits(logits: Tensor, y: Tensor, other: Tensor, mask: Tensor) -> Tensor:
    """Where ``mask``, exchange the logit of the true class ``y`` with that of class ``other``."""
    rows = torch.arange(len(y), device=y.device)
    swapped = logits.clone()
    true_val = logits[rows, y]
    other_val = logits[rows, other]
    swapped[rows, y] = torch.where(mask, other_val, true_val)
    swapped[rows, other] = torch.where(mask, true_val, other_val)
    return swapped


def top_wrong_class(logits: Tensor, y: Tensor) -> Tensor:
    """``argmax_{c ≠ y} logits_c`` per sample."""
    return logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).argmax(1)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """``z_y − max_{c≠y} z_c``: negative exactly when the sample is misclassified."""
    rows = torch.arange(len(y), device=y.device)
    return logits[rows, y] - logits[rows, top_wrong_class(logits, y)]


def ce_attack(
    method: Any,
    student: nn.Module,
    x: Tensor,
    y: Tensor,
    init: str,
    bn_train: bool = False,
    clamp_start: bool = False,
) -> Tensor:
    """The CE inner maximisation Σ_i CE(S(x'_i), y_i) under ``method``'s threat model; the
    student's BN in eval mode (Madry, MART, AKD, GACD) or train mode (ARD, IAD); the random
    start clipped to [0,1] before the first step where the official code does (Madry)."""
    with set_mode(bn_train, student):
        return method.pgd(lambda xa: ce_sum(student(xa), y), x, init, clamp_start=clamp_start)


def kl_attack(method: Any, student: nn.Module, x: Tensor, target: Tensor, init: str) -> Tensor:
    """The KL inner maximisation Σ_i KL(target_i ‖ S(x'_i)) under ``method``'s threat model,
    the student's BN in eval mode: towards a teacher's (RSLAD, ABSLD), a peer's (PeerAiD) or
    the student's own clean (TRADES) probabilities ``target``."""
    with eval_mode(student):
        return method.pgd(lambda xa: kl(target, F.log_softmax(student(xa), 1), "sum"), x, init)


def constants(compute: Callable[[], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """The tensors ``compute()`` returns, as fp32 constants of the student's loss.

    Computed in fp32 with autocast off (they are targets and decisions: a bf16 teacher would
    round near-tied logits into ties and flip DGAD's partition), under inference mode (no
    autograd bookkeeping at all, cheaper than ``no_grad``), then cloned out of it: inference
    tensors may not be saved for the student's backward.
    """
    with torch.inference_mode(), autocast_off():
        outs = compute()
    return tuple(up(out).clone() for out in outs)


def teacher_outputs(teacher: nn.Module, *xs: Tensor) -> tuple[Tensor, ...]:
    """``teacher(x)`` for each ``x``, as fp32 constants (the teacher is never trained)."""
    return constants(lambda: tuple(teacher(x) for x in xs))


def bn_passes(student: nn.Module, *xs: Tensor) -> None:
    """Train-mode forwards of the student whose outputs no loss needs, made because the
    official code makes them: each moves the BN running statistics (and nothing else).

    Without gradient: the official passes either feed nothing (IAD's ``basicop``, AdaAD's and
    DGAD's clean pass in ``Plain_Madry``) or repeat another pass exactly (TRADES's second clean
    forward: BN in train mode gives the same output, so loss and gradient are unchanged).
    """
    with torch.no_grad():
        for x in xs:
            student(x)


def forward_both(
    student: nn.Module, teacher: nn.Module, x: Tensor, x_adv: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(S(x), S(x'), T(x), T(x')): the student with gradients, the teacher as constants."""
    clean, adv = student(x), student(x_adv)
    t_clean, t_adv = teacher_outputs(teacher, x, x_adv)
    return clean, adv, t_clean, t_adv
