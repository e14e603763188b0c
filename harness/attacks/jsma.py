"""JSMA (Papernot et al. 2016, arXiv:1511.07528): the targeted L0 attack of the transfer suite.

Each step takes the Jacobian of the logits (Papernot's "last hidden layer"), α = ∇ of the target
logit, β = ∇ of the sum of the other logits, and moves the pair of features (p, q) of the search
domain that maximises α_pq·|β_pq| subject to α_pq > 0, β_pq < 0 (α_pq = α_p + α_q; signs flipped
for θ < 0) by θ, clipped to [0,1]. A feature is one value of the flattened image, so each channel
of a pixel counts on its own. An image stops when it is classified as the target, when its budget
of ``ceil(n_features · gamma / 2)`` steps is spent, or when its search domain is empty.

The rules are torchattacks 3.5.1's ``JSMA`` to the pixel (tests compare the two):
- the search domain starts as the features below 0.99 (above 0.01 for θ < 0), and both chosen
  features leave it after their step, saturated or not (the paper's Algorithm 3 drops a feature
  once it reaches 0 or 1: the same thing at θ = ±1);
- the step budget is ``ceil`` (the paper's Algorithm 3 has ``floor``), so an image can change up to
  ``2·ceil(n·gamma/2)`` features: at most one pair more than ``gamma·n``;
- when no pair is admissible the arg max of the all-zero map is pair (0, 0), so feature 0 moves
  by 2θ (clipped), as in torchattacks and cleverhans.
One deliberate difference: for θ < 0 torchattacks scores pairs by α·|β|, which is negative on every
admissible pair, so its arg max always lands on the masked (0, 0) and only feature 0 ever moves.
Here the score is |α|·|β| (Papernot's map for decreasing features, cleverhans' −α·β): the exact
mirror of the θ > 0 attack on 1 − x.

``rules = "advertorch"`` follows advertorch 0.2.3's ``JacobianSaliencyMapAttack`` instead, the
attack the DGAD authors ran (their ``eval_utils.py``): every feature starts in the search domain
(saturated ones too), the budget is ``floor(n_features · gamma / 2)`` steps, and an image without
an admissible pair is left as it is; the pair choice and the step are the same.

``target = "label"`` is the DGAD authors' call, ``perturb(inputs, targets)`` with the true
labels: a targeted attack whose target is the true class. It changes only the images the model
misclassifies, pushing them towards their own class, so accuracy on its output is above clean
accuracy (the paper's Table 7 JSMA column). It is there to regenerate that table like for like;
it is not an attack on the model, and the ``jsma`` preset stays the real one (a wrong class).

The images of a batch are attacked together. α and β come from two backward passes per step
(the target logit, the sum of the others) instead of torchattacks' one per class: the same
numbers up to float rounding, for any number of classes. The pair map is built in chunks of
rows so CIFAR-sized inputs fit in memory. Targets are drawn per image from the attack's own
generator: a uniformly random class other than the label. ``attack_targets`` runs the attack
towards given targets.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from harness.attacks.base import Attack
from harness.registry import ATTACKS
from harness.utils.errors import UserError
from harness.utils.modes import eval_mode

TARGETS = ("random", "label")
RULES = ("torchattacks", "advertorch")
SATURATED = 0.99  # torchattacks' search domain: features below this (above 1 − this for θ < 0)
PAIR_CHUNK = 1 << 24  # elements of one chunk of the (images × features × features) pair map


def best_pairs(
    alpha: Tensor, beta: Tensor, domain: Tensor, increasing: bool, with_found: bool = False
) -> tuple[Tensor, ...]:
    """The most salient admissible pair (p, q) per row of ``alpha``/``beta``/``domain`` (B, F).

    Out-of-domain features are pushed out of reach by 2·max|·| as torchattacks does. Ties go to
    the first pair in row-major order of the full F × F map, and rows without an admissible pair
    get (0, 0), torchattacks' arg max of an all-zero map. The map is symmetric, so only the pairs
    q ≥ p are scored (its first maximum has p < q), in chunks of rows. ``with_found`` adds a
    third tensor: which rows had an admissible pair.
    """
    n, nf = alpha.shape
    offset = 2.0 * (~domain).to(alpha.dtype)
    if not increasing:
        offset = -offset
    t = alpha - offset * alpha.abs().amax(1, keepdim=True)
    o = beta + offset * beta.abs().amax(1, keepdim=True)
    if not increasing:  # Papernot's decreasing map: α < 0, β > 0, score |α|·|β|
        t, o = -t, -o
    rows = max(1, PAIR_CHUNK // max(1, n * nf))
    best_val = best_p = best_q = None
    for start in range(0, nf, rows):
        stop = min(nf, start + rows)
        width = nf - start
        # score[b, i, j] = max(α_p + α_q, 0) · max(−β_p − β_q, 0) for p = start + i, q = start + j:
        # α·|β| where α > 0 and β < 0, else 0
        score = (t[:, start:stop, None] + t[:, None, start:]).clamp_(min=0)
        score *= (o[:, start:stop, None] + o[:, None, start:]).neg_().clamp_(min=0)
        score.diagonal(dim1=1, dim2=2).zero_()  # a feature does not pair with itself
        score = score.view(n, -1)
        idx = score.argmax(1)  # the first maximum
        val = score.gather(1, idx[:, None]).squeeze(1)
        p, q = idx // width + start, idx % width + start
        if best_val is None:
            best_val, best_p, best_q = val, p, q
        else:
            better = val > best_val  # strict: an earlier chunk (smaller p) wins ties
            best_val = torch.where(better, val, best_val)
            best_p = torch.where(better, p, best_p)
            best_q = torch.where(better, q, best_q)
    found = best_val > 0
    p, q = best_p.masked_fill(~found, 0), best_q.masked_fill(~found, 0)
    return (p, q, found) if with_found else (p, q)


@ATTACKS.register("jsma")
class JSMA(Attack):
    """Targeted JSMA over pixel pairs: ``theta`` per feature per step (±1 saturates), at most a
    ``gamma`` fraction of the features changed, a seeded random wrong class as each target
    (``target = "label"``: the true class, the DGAD authors' call); ``rules``: torchattacks' or
    advertorch's search domain, budget and dead ends."""

    def __init__(
        self,
        theta: float = 1.0,
        gamma: float = 0.1,
        target: str = "random",
        rules: str = "torchattacks",
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        theta, gamma = float(theta), float(gamma)
        if not (0.0 < abs(theta) <= 1.0):
            raise UserError(f"JSMA needs 0 < |theta| <= 1 (inputs are in [0,1]), got {theta:g}")
        if not (0.0 < gamma <= 1.0):
            raise UserError(f"JSMA needs 0 < gamma <= 1 (a fraction of features), got {gamma:g}")
        if target not in TARGETS:
            raise UserError(f"unknown JSMA target {target!r}; valid: {', '.join(TARGETS)}")
        if rules not in RULES:
            raise UserError(f"unknown JSMA rules {rules!r}; valid: {', '.join(RULES)}")
        self.theta = theta
        self.gamma = gamma
        self.target = target
        self.rules = rules
        self._last_targets: Tensor | None = None

    @property
    def last_targets(self) -> Tensor | None:
        """The targets of the latest ``__call__`` (or ``attack_targets``)."""
        return self._last_targets

    def max_steps(self, n_features: int) -> int:
        """Pair steps per image: each changes at most two features."""
        if self.rules == "advertorch":
            return int(n_features * self.gamma / 2)
        return math.ceil(n_features * self.gamma / 2.0)

    def draw_targets(self, y: Tensor, num_classes: int) -> Tensor:
        """A uniformly random class other than ``y`` per image, from the private generator."""
        if num_classes < 2:
            raise UserError(f"a targeted attack needs at least 2 classes, got {num_classes}")
        shift = torch.randint(
            1, num_classes, y.shape, generator=self.generator(y.device), device=y.device
        )
        return (y.long() + shift) % num_classes

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        y = y.to(x.device)
        if len(x) == 0:
            self._last_targets = y.long().clone()
            return x.detach().clone()
        if self.target == "label":
            return self.attack_targets(model, x, y)
        with eval_mode(model), torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        return self.attack_targets(model, x, self.draw_targets(y, num_classes))

    def attack_targets(self, model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        """JSMA towards the given ``targets`` (one class per image)."""
        targets = targets.to(x.device, torch.long)
        self._last_targets = targets.clone()
        n = len(x)
        flat = x.detach().reshape(n, -1).clone()
        increasing = self.theta > 0
        if self.rules == "advertorch":
            domain = torch.ones_like(flat, dtype=torch.bool)
        else:
            domain = flat < SATURATED if increasing else flat > 1.0 - SATURATED
        running = torch.ones(n, dtype=torch.bool, device=x.device)
        with eval_mode(model):
            for _ in range(self.max_steps(flat.shape[1])):
                idx = running.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                xa = flat[idx].requires_grad_(True)
                with torch.enable_grad():
                    logits = model(xa.view(-1, *x.shape[1:]))
                tgt = targets[idx]
                going = (logits.detach().argmax(1) != tgt) & domain[idx].any(1)
                running[idx] = going
                if not bool(going.any()):
                    break
                onehot = torch.zeros_like(logits).scatter_(1, tgt[:, None], 1.0)
                with torch.enable_grad():
                    (alpha,) = torch.autograd.grad((logits * onehot).sum(), xa, retain_graph=True)
                    (beta,) = torch.autograd.grad((logits * (1 - onehot)).sum(), xa)
                keep = going.nonzero().squeeze(1)
                idx = idx[keep]
                p, q, found = best_pairs(
                    alpha[keep], beta[keep], domain[idx], increasing, with_found=True
                )
                if self.rules == "advertorch":  # no admissible pair: the image stays, for good
                    running[idx[~found]] = False
                    idx, p, q = idx[found], p[found], q[found]
                rows = flat[idx]
                arange = torch.arange(len(idx), device=x.device)
                rows[arange, p] += self.theta  # p == q (no admissible pair) moves by 2θ
                rows[arange, q] += self.theta
                flat[idx] = rows.clamp(0.0, 1.0)
                domain[idx, p] = False
                domain[idx, q] = False
        return flat.clamp(0.0, 1.0).view_as(x)
