"""GACD (a documented reconstruction, methods/gacd.py) against an independent transcription.

Student and teacher are tiny MLPs exposing ``forward_features``/``forward_head``/
``num_features`` with different feature widths (6 and 5), so the two projection heads can be
told apart by their input width without reading the method's attribute names. The InfoNCE is
written with explicit loops over i and j; past teacher embeddings (the queue) are recomputed here
from the earlier batches, not read from the method's buffer.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import harness
from tests.helpers import FeatureMLP as MLP

B, C = 8, 4
SHAPE = (3, 4, 4)
D = 3 * 4 * 4
S_DIM, T_DIM = 6, 5


pytestmark = pytest.mark.usefixtures("one_thread")


def batch(seed: int, n: int = B):
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand((n, *SHAPE), generator=g)
    step = torch.rand((n, *SHAPE), generator=g).round() * 2 - 1
    x_adv = (x + 0.25 * step).clamp(0, 1)  # far from x, so x and x' branches differ clearly
    y = torch.randint(0, C, (n,), generator=g)
    return x, x_adv, y


@pytest.fixture
def nets():
    return MLP(0, S_DIM), MLP(1, T_DIM, scale=1.5)


def labelled(teacher, seed, n=B):
    """A batch whose even samples the teacher classifies correctly (the odd ones mostly not)."""
    x, xa, y = batch(seed, n)
    with torch.no_grad():
        pred = teacher(x).argmax(1)
    y[::2] = pred[::2]
    y[1::2] = (pred[1::2] + 1) % C
    return x, xa, y


def heads(m) -> tuple[nn.Linear, nn.Linear]:
    linears = [sub for mod in m.modules() for sub in mod.modules() if isinstance(sub, nn.Linear)]
    hs = [lin for lin in linears if lin.in_features == S_DIM]
    ht = [lin for lin in linears if lin.in_features == T_DIM]
    assert len(hs) == 1 and len(ht) == 1, linears
    return hs[0], ht[0]


def embed(head: nn.Linear, f: torch.Tensor) -> torch.Tensor:
    h = f @ head.weight.t() + head.bias
    return h / torch.sqrt((h * h).sum(1, keepdim=True))


def log_softmax(z):
    shifted = z - z.max(1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(1, keepdim=True))


def teacher_embeddings(m, teacher, x):
    _, ht = heads(m)
    with torch.no_grad():
        return embed(ht, teacher.forward_features(x))


def expected_loss(
    m, S, T, x, xa, y, queue, *, weighting, nce_t, ce_w, beta, kd_w, s_in=None, t_in=None
):
    hs, ht = heads(m)
    n = len(y)
    with torch.no_grad():
        t_feat = T.forward_features(x if t_in is None else t_in)
        t_logits = T(x if t_in is None else t_in)
    f_s = embed(hs, S.forward_features(xa if s_in is None else s_in))
    f_t = embed(ht, t_feat)
    adv_logits = S(xa if s_in is None else s_in)
    ells = []
    for i in range(n):
        sims = [(f_s[i] * f_t[j]).sum() / nce_t for j in range(n)]
        sims += [(f_s[i] * q).sum() / nce_t for q in queue]
        ells.append(torch.log(torch.exp(torch.stack(sims)).sum()) - sims[i])
    ell = torch.stack(ells)
    p_t = torch.exp(log_softmax(t_logits))
    if weighting == "prob":
        w = p_t[torch.arange(n), y]
    elif weighting == "correct":
        w = (t_logits.argmax(1) == y).float()
    else:
        w = torch.ones(n)
    con = (w * ell).sum() / w.sum()
    ls = log_softmax(adv_logits)
    ce = -ls[torch.arange(n), y].sum() / n
    kd = (p_t * (torch.log(p_t) - ls)).sum() / n
    return ce_w * ce + beta * con + kd_w * kd


def all_params(S, m):
    return list(S.parameters()) + list(m.parameters())


def compare(loss, expected, params, rtol=2e-5, atol=1e-6, grad=True):
    torch.testing.assert_close(loss, expected, rtol=rtol, atol=atol)
    if not grad:
        return
    g1 = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    g2 = torch.autograd.grad(expected, params, retain_graph=True, allow_unused=True)
    for p, a, b in zip(params, g1, g2):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_setup_creates_two_heads_as_the_method_parameters(nets):
    S, T = nets
    m = harness.create_method("gacd", feat_dim=8)
    assert m.parameters() == []
    x, _, _ = batch(0)
    S.train()
    T.eval()
    state = torch.get_rng_state()
    m.setup(S, T, x)
    assert torch.equal(state, torch.get_rng_state())
    assert S.training and not T.training
    hs, ht = heads(m)
    assert (hs.out_features, ht.out_features) == (8, 8)
    params = m.parameters()
    assert {id(p) for p in params} == {id(hs.weight), id(hs.bias), id(ht.weight), id(ht.bias)}
    # same seed, same heads
    m2 = harness.create_method("gacd", feat_dim=8)
    m2.setup(S, T, x)
    for a, b in zip(params, m2.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("weighting", ["prob", "correct", "none"])
@pytest.mark.parametrize("queue_size", [0, 12])
def test_loss_matches_reconstruction(nets, weighting, queue_size):
    """Three consecutive batches: the queue holds the latest ``queue_size`` teacher embeddings."""
    S, T = nets
    hp = {
        "feat_dim": 8,
        "queue_size": queue_size,
        "weighting": weighting,
        "nce_t": 0.2,
        "ce_weight": 0.7,
        "beta": 1.3,
        "kd_weight": 0.0,
    }
    m = harness.create_method("gacd", **hp)
    batches = [labelled(T, seed) for seed in range(3)]
    m.setup(S, T, batches[0][0])
    params = all_params(S, m)
    opts = {"weighting": weighting, "nce_t": 0.2, "ce_w": 0.7, "beta": 1.3, "kd_w": 0.0}
    past: list[torch.Tensor] = []
    for k, (x, xa, y) in enumerate(batches):
        queue = past[-queue_size:] if queue_size else []
        loss, logs = m.loss(S, T, x, xa, y)
        expected = expected_loss(m, S, T, x, xa, y, queue, **opts)
        # gradients once the queue holds entries: see test_backward_with_a_filled_queue
        compare(loss, expected, params, grad=True)
        assert all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())
        # discriminating variants
        variants = [
            expected_loss(m, S, T, x, xa, y, queue, **{**opts, "beta": 0.0}),
            expected_loss(m, S, T, x, xa, y, queue, **opts, t_in=xa),  # teacher on x'
            expected_loss(m, S, T, x, xa, y, queue, **opts, s_in=x),  # student on x
        ]
        if k > 0 and queue_size:
            variants.append(expected_loss(m, S, T, x, xa, y, [], **opts))  # queue ignored
        if weighting != "none":
            variants.append(
                expected_loss(m, S, T, x, xa, y, queue, **{**opts, "weighting": "none"})
            )
        for v in variants:
            # 10x the value tolerance of ``compare``
            assert abs(float((v - expected).detach())) > 2e-4 * abs(float(expected.detach()))
        past.extend(teacher_embeddings(m, T, x))
    assert all(p.grad is None for p in T.parameters())


def test_default_temperature_and_kd_term(nets):
    S, T = nets
    m = harness.create_method("gacd", feat_dim=8, kd_weight=0.5, queue_size=4)
    assert m.nce_t == 0.07 and m.beta == 0.8 and m.ce_weight == 1.0
    x, xa, y = labelled(T, 0)
    m.setup(S, T, x)
    opts = {"weighting": "prob", "nce_t": 0.07, "ce_w": 1.0, "beta": 0.8}
    loss, _ = m.loss(S, T, x, xa, y)
    # the KD reduction is not fixed by the paper; the code documents batchmean (1/B) Σ_i Σ_c
    expected = expected_loss(m, S, T, x, xa, y, [], **opts, kd_w=0.5)
    compare(loss, expected, all_params(S, m))
    without_kd = expected_loss(m, S, T, x, xa, y, [], **opts, kd_w=0.0)
    assert abs(float((expected - without_kd).detach())) > 1e-3


def test_queue_smaller_than_batch_keeps_the_latest(nets):
    S, T = nets
    m = harness.create_method("gacd", feat_dim=8, queue_size=3, weighting="none", nce_t=0.5)
    (x1, xa1, y1), (x2, xa2, y2) = labelled(T, 0), labelled(T, 1)
    m.setup(S, T, x1)
    m.loss(S, T, x1, xa1, y1)
    loss, _ = m.loss(S, T, x2, xa2, y2)
    latest = list(teacher_embeddings(m, T, x1))[-3:]
    opts = {"weighting": "none", "nce_t": 0.5, "ce_w": 1.0, "beta": 0.8, "kd_w": 0.0}
    expected = expected_loss(m, S, T, x2, xa2, y2, latest, **opts)
    compare(loss, expected, all_params(S, m), grad=False)
    no_queue = expected_loss(m, S, T, x2, xa2, y2, [], **opts)
    assert abs(float((expected - no_queue).detach())) > 1e-3


def test_loss_without_setup_builds_heads_and_keeps_rng_and_modes(nets):
    S, T = nets
    S.train()
    T.eval()
    m = harness.create_method("gacd", feat_dim=8, queue_size=0)
    x, xa, y = labelled(T, 0)
    state = torch.get_rng_state()
    loss, _ = m.loss(S, T, x, xa, y)
    assert torch.equal(state, torch.get_rng_state())
    assert S.training and not T.training
    assert len(m.parameters()) == 4
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_backward_with_a_filled_queue(nets):
    """What the trainer does: loss, then backward, every step; the queue is full from step 2."""
    S, T = nets
    m = harness.create_method("gacd", feat_dim=8, queue_size=12, nce_t=0.5)
    opts = {"weighting": "prob", "nce_t": 0.5, "ce_w": 1.0, "beta": 0.8, "kd_w": 0.0}
    (x1, xa1, y1), (x2, xa2, y2) = labelled(T, 0), labelled(T, 1)
    m.setup(S, T, x1)
    m.loss(S, T, x1, xa1, y1)[0].backward()
    queue = list(teacher_embeddings(m, T, x1))
    loss, _ = m.loss(S, T, x2, xa2, y2)
    params = all_params(S, m)
    got = torch.autograd.grad(loss, params)
    want = torch.autograd.grad(expected_loss(m, S, T, x2, xa2, y2, queue, **opts), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
