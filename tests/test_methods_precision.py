"""Decisions and reductions in fp32 whatever the step's autocast (the fast path's ``amp``).

Under bf16 autocast a teacher's logits are rounded to 8 bits of mantissa: near-tied logits
become ties, and DGAD's partition (``argmax z ≠ y``) and ELS swaps (``margin < 0``) flip. On
the CPU, autocast also runs softmax, log_softmax and every matmul (GACD's InfoNCE products at
τ = 0.07) in bf16. Every method's loss, and every teacher output it uses as a target or for a
decision, must be what fp32 gives.

The students here are built from elementwise operations only, which autocast leaves in fp32:
their outputs are the same with and without autocast, so any difference in a loss comes from
the method. The teachers are ``nn.Linear`` layers, which autocast runs in bf16.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import harness
from methods.common import teacher_outputs

B, C = 8, 4
SHAPE = (3, 4, 4)
D = 48
ALL = ["pgd-at", "trades", "mart", "ard", "iad", "rslad", "akd", "adaad", "dgad", "gacd"]


pytestmark = pytest.mark.usefixtures("one_thread")


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


class ElementwiseStudent(nn.Module):
    """tanh(x·w + b) features, logits Σ_d f_d W_cd: no op that autocast casts down."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(D, generator=g))
        self.b = nn.Parameter(0.1 * torch.randn(D, generator=g))
        self.head = nn.Parameter(0.5 * torch.randn(C, D, generator=g))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.flatten(1) * self.w + self.b)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return (f.unsqueeze(1) * self.head).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class PixelTeacher(nn.Module):
    """Logits = the first C pixels of the image, through an ``nn.Linear`` (bf16 under
    autocast); its features are the flattened image."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.fc = nn.Linear(D, C, bias=False)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[:, :C] = scale * torch.eye(C)
        self.requires_grad_(False).eval()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def with_first_pixels(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    flat = x.view(len(x), -1)
    flat[:, :C] = rows
    return x


def near_tie_batch():
    """Rows 0-3: the teacher is wrong on x by 0.001 (fp32: ST; bf16 rounds both logits to 0.5,
    a tie that argmax breaks towards y, the lower index). Rows 4-7: right by a clear margin on x;
    on x' wrong by 0.0005 (fp32: margin < 0, swapped; bf16: margin 0, not swapped)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((B, *SHAPE), generator=g)
    y = torch.tensor([0, 1, 2, 0, 0, 1, 2, 3])
    clean = torch.full((B, C), 0.1)
    adv = torch.full((B, C), 0.1)
    for i in range(4):
        clean[i, y[i]], clean[i, y[i] + 1] = 0.5005, 0.5015  # the wrong class: higher index
        adv[i] = clean[i]
    for i in range(4, 8):
        clean[i, y[i]] = 0.9
        adv[i, y[i]], adv[i, (y[i] + 1) % C] = 0.5010, 0.5015  # wrong by 0.0005
    return with_first_pixels(x, clean), with_first_pixels(x, adv), y


def test_near_ties_are_what_the_test_says():
    x, xa, y = near_tie_batch()
    t = PixelTeacher()
    z, z_adv = t(x), t(xa)
    assert torch.all((z.argmax(1) != y)[:4]) and torch.all((z.argmax(1) == y)[4:])
    with bf16():
        zb = t(x)
    assert zb.dtype == torch.bfloat16 and torch.all(zb.argmax(1) == y)  # the ties flip
    rows = torch.arange(B)
    top_wrong = z_adv.clone()
    top_wrong[rows, y] = -1
    assert torch.all((z_adv[rows, y] - top_wrong.max(1).values)[4:] < 0)


def test_teacher_outputs_are_fp32_under_autocast():
    x, xa, _ = near_tie_batch()
    t = PixelTeacher(scale=1.37)
    exact = (t(x), t(xa))
    with bf16():
        got = teacher_outputs(t, x, xa)
    for a, b in zip(got, exact):
        assert a.dtype == torch.float32
        assert torch.equal(a, b)


def test_dgad_partition_under_bf16_autocast_equals_fp32():
    x, xa, y = near_tie_batch()
    student, teacher = ElementwiseStudent(), PixelTeacher()
    m = harness.create_method("dgad")
    loss32, logs32 = m.loss(student, teacher, x, xa, y)
    with bf16():
        loss16, logs16 = m.loss(student, teacher, x, xa, y)
    assert float(logs32["st_fraction"]) == 0.5  # rows 0-3 are teacher-wrong in fp32
    assert float(logs16["st_fraction"]) == float(logs32["st_fraction"])
    for key in ("l_st", "l_at", "l_pcr"):
        torch.testing.assert_close(logs16[key], logs32[key], rtol=1e-6, atol=1e-7, msg=key)
    assert loss16.dtype == torch.float32
    torch.testing.assert_close(loss16, loss32, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ALL)
def test_every_loss_is_fp32_under_autocast(name):
    """Same inputs, same (autocast-immune) student outputs: the loss and its gradient under
    bf16 autocast are the fp32 ones, for every method."""
    x, xa, y = near_tie_batch()
    teacher = PixelTeacher(scale=3.0)
    results = []
    for autocast in (False, True):
        student = ElementwiseStudent()
        m = harness.create_method(name)
        m.reseed(0)
        if name == "gacd":
            m.setup(student, teacher, x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, _ = m.loss(student, teacher, x, xa, y, epoch=100)
        assert loss.dtype == torch.float32
        (grad,) = torch.autograd.grad(loss, [student.head])
        results.append((loss.detach(), grad))
    (l32, g32), (l16, g16) = results
    torch.testing.assert_close(l16, l32, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g16, g32, rtol=1e-5, atol=1e-7)


def test_gacd_infonce_products_are_fp32():
    """τ = 0.07 amplifies a bf16 product's rounding: the contrastive term must not see it."""
    x, _, y = near_tie_batch()
    teacher = PixelTeacher(scale=3.0)
    values = []
    for autocast in (False, True):
        student = ElementwiseStudent()
        m = harness.create_method("gacd", queue_size=0)
        m.reseed(0)
        m.setup(student, teacher, x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            _, logs = m.loss(student, teacher, x, x, y)
        values.append(logs["contrastive"])
    torch.testing.assert_close(values[1], values[0], rtol=1e-6, atol=1e-7)
