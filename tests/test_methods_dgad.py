"""DGAD's outer loss (methods/dgad.py's formula) on hand-made logits, through ``m.loss``.

The teacher is a fixed table of logits (one for the clean batch, one for x'), and the student a
table of trainable logits, so the targets DGAD distils towards can be read back exactly from the
gradient: for a KD row of weight 1/B, ∂L/∂s_i = (1/B)(softmax(s_i) − t_i). That checks "swaps
exactly these two logits and nothing else" and "distilled on x, not x'" directly; the values are
also compared with an independent transcription of the formula (explicit loops over i).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import harness

C = 4
Y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
# teacher on clean x: rows 1, 3, 5 are teacher-wrong (the ST subset), the others right
Z = torch.tensor(
    [
        [2.0, 0.1, -0.5, 0.3],  # 0 right
        [0.5, 1.0, -0.3, 2.0],  # 1 wrong: argmax 3, y 1
        [0.2, -0.1, 1.5, 0.4],  # 2 right
        [1.7, 0.6, -0.2, 0.9],  # 3 wrong: argmax 0, y 3
        [1.1, 0.4, 0.7, -0.6],  # 4 right
        [0.3, -0.4, 1.2, 0.8],  # 5 wrong: argmax 2, y 1
        [-0.3, 0.2, 0.9, 0.1],  # 6 right
        [0.0, 0.5, -0.7, 1.3],  # 7 right
    ],
    dtype=torch.float64,
)
# teacher on x': rows 0, 4, 6 (teacher-right on x) and 3 (ST) have a negative margin; for rows 0
# and 6 the top wrong class on x' differs from the second-largest-overall and from argmax z
Z_ADV = torch.tensor(
    [
        [0.2, 1.5, 0.9, -1.0],  # 0 y=0: top wrong 1 (margin -1.3)
        [0.0, 1.0, 0.2, 0.3],  # 1 y=1: right on x'
        [0.1, -0.5, 2.0, 1.2],  # 2 y=2: margin +0.8
        [1.4, 0.2, -0.1, 0.6],  # 3 y=3: top wrong 0 (ST row: x' not used)
        [0.0, -0.4, 0.3, 1.1],  # 4 y=0: top wrong 3
        [0.9, 1.6, 0.1, 0.2],  # 5 y=1: right on x'
        [1.0, 0.2, 0.5, 0.7],  # 6 y=2: top wrong 0
        [0.3, 0.1, -0.2, 0.9],  # 7 y=3: margin +0.6
    ],
    dtype=torch.float64,
)
ST = torch.tensor([False, True, False, True, False, True, False, False])
NEG_MARGIN = torch.tensor([True, False, False, True, True, False, True, False])


pytestmark = pytest.mark.usefixtures("one_thread")


class FixedTeacher(nn.Module):
    """Returns ``z`` on the clean batch and ``z_adv`` on anything else."""

    def __init__(self, x: torch.Tensor, z: torch.Tensor, z_adv: torch.Tensor) -> None:
        super().__init__()
        self.x = x
        self.register_buffer("z", z.clone())
        self.register_buffer("z_adv", z_adv.clone())

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.z if torch.equal(inp, self.x) else self.z_adv


class LogitStudent(nn.Module):
    """A student whose logits are parameters: ``clean`` on the clean batch, ``adv`` otherwise."""

    def __init__(self, x: torch.Tensor, n: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.x = x
        self.clean = nn.Parameter(torch.randn(n, C, generator=g, dtype=torch.float64))
        self.adv = nn.Parameter(torch.randn(n, C, generator=g, dtype=torch.float64))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.clean if torch.equal(inp, self.x) else self.adv


class MobileNetV2(LogitStudent):
    """Same student, under the class name the official code branches on."""


def inputs(n: int = 8):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 4, 4, generator=g, dtype=torch.float64)
    x_adv = (x + 8 / 255).clamp(0, 1)
    return x, x_adv


def setup(n=8, z=Z, z_adv=Z_ADV, y=Y, student_cls=LogitStudent):
    x, xa = inputs(n)
    return student_cls(x, n), FixedTeacher(x, z[:n], z_adv[:n]), x, xa, y[:n].clone()


# -- independent transcription ----------------------------------------------------------------
def val(t) -> float:
    return float(torch.as_tensor(t).detach())


def log_softmax(z):
    shifted = z - z.max(1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(1, keepdim=True))


def softmax(z):
    return torch.exp(log_softmax(z))


def swapped(row: torch.Tensor, a: int, b: int) -> torch.Tensor:
    out = row.clone()
    out[a], out[b] = row[b], row[a]
    return out


def fixed_dist(row_logits, yi, label_fix, smoothing, mix):
    """The corrected teacher distribution of one sample (row_logits already swapped for swap)."""
    onehot = torch.zeros(C, dtype=row_logits.dtype)
    onehot[yi] = 1.0
    if label_fix == "smooth":
        return (1 - smoothing) * onehot + smoothing / C
    if label_fix == "mix":
        return mix * softmax(row_logits[None])[0] + (1 - mix) * onehot
    raise AssertionError(label_fix)


def targets(
    z,
    z_adv,
    y,
    *,
    map=True,
    els_clean=True,
    els_adv=True,
    label_fix="swap",
    smoothing=0.1,
    mix=0.5,
):
    """(st mask, clean targets, adv targets) per methods/dgad.py's formula, one at a time."""
    n = len(y)
    st, t_clean, t_adv = [], [], []
    for i in range(n):
        yi = int(y[i])
        zi, zai = z[i], z_adv[i]
        top = int(torch.argmax(zi))
        m_i = map and top != yi
        st.append(m_i)
        # clean
        if m_i and els_clean:
            if label_fix == "swap":
                t_clean.append(softmax(swapped(zi, yi, top)[None])[0])
            else:
                t_clean.append(fixed_dist(zi, yi, label_fix, smoothing, mix))
        else:
            t_clean.append(softmax(zi[None])[0])
        # adversarial
        wrong = [c for c in range(C) if c != yi]
        top_wrong = max(wrong, key=lambda c: float(zai[c]))
        if els_adv and float(zai[yi] - zai[top_wrong]) < 0:
            if label_fix == "swap":
                t_adv.append(softmax(swapped(zai, yi, top_wrong)[None])[0])
            else:
                t_adv.append(fixed_dist(zai, yi, label_fix, smoothing, mix))
        else:
            t_adv.append(softmax(zai[None])[0])
    return torch.tensor(st), torch.stack(t_clean), torch.stack(t_adv)


def kl_row(p, logits_row):
    lq = log_softmax(logits_row[None])[0]
    return (p * (torch.log(p) - lq)).sum()


def expected_loss(
    s_clean, s_adv, z, z_adv, y, *, gamma=5.0, pcr=True, weighting="standard", B=None, **opts
):
    n = len(y)
    B = n if B is None else B
    st, t_clean, t_adv = targets(z, z_adv, y, **opts)
    n_st = int(st.sum())
    l_st = sum((kl_row(t_clean[i], s_clean[i]) for i in range(n) if st[i]), torch.tensor(0.0))
    l_st = l_st / (n_st + 1e-10)
    l_at = sum((kl_row(t_adv[i], s_adv[i]) for i in range(n) if not st[i]), torch.tensor(0.0))
    l_at = l_at / (n - n_st) if n - n_st else l_at * 0
    p_adv, p_clean = softmax(s_adv), softmax(s_clean)
    l_pcr = sum((p_adv[i, c] - p_clean[i, c]) ** 2 for i in range(n) for c in range(C)) / (n * C)
    if not pcr:
        # kunsaram01/DGAD main.py, ``--alp off``: the same line for every student
        return (n_st / B) * l_st + ((B - n_st) / B) * l_at
    if weighting == "literal":
        # main.py, ``--alp on``, ``--model mobilenetV2``, parentheses as written there
        return 0.5 * ((n_st / B) * l_st + ((B - n_st) / B)) * l_at + gamma * l_pcr
    kd = (n_st / B) * l_st + ((B - n_st) / B) * l_at
    if weighting == "intended":
        kd = 0.5 * kd
    return kd + gamma * l_pcr


def run(m, student, teacher, x, xa, y):
    loss, logs = m.loss(student, teacher, x, xa, y)
    g_clean, g_adv = torch.autograd.grad(loss, [student.clean, student.adv], retain_graph=True)
    return loss, logs, g_clean, g_adv


def read_targets(student, g, n):
    """With pcr off and weight 1/n per KD row: t_i = softmax(s_i) − n·∂L/∂s_i."""
    return softmax(student.detach()) - n * g


def assert_grads_match(loss, expected, student):
    params = [student.clean, student.adv]
    for a, b in zip(
        torch.autograd.grad(loss, params, retain_graph=True),
        torch.autograd.grad(expected, params, retain_graph=True),
    ):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


# -- partition and swaps ------------------------------------------------------------------------
def test_partition_is_teacher_wrong_on_clean_and_clean_swap_is_exact():
    student, teacher, x, xa, y = setup()
    m = harness.create_method("dgad", pcr=False)
    loss, logs, g_clean, g_adv = run(m, student, teacher, x, xa, y)
    assert float(logs["st_fraction"]) == pytest.approx(3 / 8)
    # ST rows are distilled on x only, AT rows on x' only
    assert torch.all(g_clean[~ST] == 0) and torch.all(g_clean[ST].abs().sum(1) > 0)
    assert torch.all(g_adv[ST] == 0) and torch.all(g_adv[~ST].abs().sum(1) > 0)
    got = read_targets(student.clean, g_clean, 8)[ST]
    for row, i in zip(got, ST.nonzero().flatten().tolist()):
        top = int(Z[i].argmax())
        want = softmax(swapped(Z[i], int(Y[i]), top)[None])[0]
        torch.testing.assert_close(row, want, rtol=1e-7, atol=1e-10)
        # exactly the two logits moved: the other classes keep the teacher's logit gaps
        assert not torch.allclose(want, softmax(Z[i][None])[0], atol=1e-3)
        others = [c for c in range(C) if c not in (top, int(Y[i]))]
        log_got = torch.log(row)
        gaps = log_got[others] - log_got[others[0]]
        torch.testing.assert_close(gaps, Z[i][others] - Z[i][others[0]], rtol=1e-6, atol=1e-8)
        assert int(row.argmax()) == int(Y[i])


def test_adv_swap_is_true_class_and_top_wrong_of_negative_margin_rows():
    student, teacher, x, xa, y = setup()
    m = harness.create_method("dgad", pcr=False)
    _, _, _, g_adv = run(m, student, teacher, x, xa, y)
    got = read_targets(student.adv, g_adv, 8)
    for i in (~ST).nonzero().flatten().tolist():
        yi = int(Y[i])
        top_wrong = max((c for c in range(C) if c != yi), key=lambda c: float(Z_ADV[i, c]))
        if NEG_MARGIN[i]:
            want = softmax(swapped(Z_ADV[i], yi, top_wrong)[None])[0]
            assert int(got[i].argmax()) == yi
        else:
            want = softmax(Z_ADV[i][None])[0]
        torch.testing.assert_close(got[i], want, rtol=1e-7, atol=1e-10)
    # row 0: swapping with the argmax of the clean logits (class 0 = y) or the third-largest
    # class would give another target
    assert not torch.allclose(got[0], softmax(swapped(Z_ADV[0], 0, 2)[None])[0], atol=1e-3)


def test_loss_value_and_gradient_match_transcription():
    for hp in ({}, {"gamma": 2.5}, {"gamma": 10.0, "els_adv": False}):
        student, teacher, x, xa, y = setup()
        m = harness.create_method("dgad", **hp)
        loss, logs = m.loss(student, teacher, x, xa, y)
        expected = expected_loss(student.clean, student.adv, Z, Z_ADV, Y, **hp)
        torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)
        assert_grads_match(loss, expected, student)
        assert all(not torch.as_tensor(v).requires_grad for v in logs.values())


# -- PCR ----------------------------------------------------------------------------------------
def test_pcr_is_mean_squared_probability_gap_with_gradient_through_both_branches():
    student, teacher, x, xa, y = setup()
    gamma = 3.0
    with_pcr = harness.create_method("dgad", gamma=gamma)
    without = harness.create_method("dgad", pcr=False)
    l1, logs, gc1, ga1 = run(with_pcr, student, teacher, x, xa, y)
    l0, _, gc0, ga0 = run(without, student, teacher, x, xa, y)
    s_c, s_a = student.clean, student.adv
    p_a, p_c = softmax(s_a), softmax(s_c)
    pcr = sum((p_a[i, c] - p_c[i, c]) ** 2 for i in range(8) for c in range(C)) / (8 * C)
    torch.testing.assert_close(l1 - l0, gamma * pcr, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(logs["l_pcr"], pcr.detach(), rtol=1e-9, atol=1e-12)
    # (1/B) Σ_i and Σ_c, not (1/B) Σ_i Σ_c: the wrong reduction would be C times larger
    assert abs(val(l1 - l0 - gamma * pcr * C)) > 1e-3
    g_pcr_c, g_pcr_a = torch.autograd.grad(gamma * pcr, [s_c, s_a])
    torch.testing.assert_close(gc1 - gc0, g_pcr_c, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(ga1 - ga0, g_pcr_a, rtol=1e-7, atol=1e-10)
    assert g_pcr_c.abs().sum() > 1e-4 and g_pcr_a.abs().sum() > 1e-4


# -- ablation switches -------------------------------------------------------------------------
def test_map_off_distills_every_sample_on_x_adv():
    student, teacher, x, xa, y = setup()
    m = harness.create_method("dgad", map=False, pcr=False)
    loss, logs, g_clean, g_adv = run(m, student, teacher, x, xa, y)
    assert torch.all(g_clean == 0)
    assert float(logs["st_fraction"]) == 0.0
    _, _, t_adv = targets(Z, Z_ADV, Y, map=False)
    torch.testing.assert_close(read_targets(student.adv, g_adv, 8), t_adv, rtol=1e-7, atol=1e-10)
    expected = expected_loss(student.clean, student.adv, Z, Z_ADV, Y, map=False, pcr=False)
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)


def test_els_clean_off_keeps_teacher_distribution_on_st_rows():
    student, teacher, x, xa, y = setup()
    m = harness.create_method("dgad", els_clean=False, pcr=False)
    _, _, g_clean, g_adv = run(m, student, teacher, x, xa, y)
    got = read_targets(student.clean, g_clean, 8)
    torch.testing.assert_close(got[ST], softmax(Z)[ST], rtol=1e-7, atol=1e-10)
    # the adversarial side is untouched by this switch
    _, _, t_adv = targets(Z, Z_ADV, Y)
    torch.testing.assert_close(read_targets(student.adv, g_adv, 8)[~ST], t_adv[~ST])


def test_els_adv_off_keeps_teacher_distribution_on_at_rows():
    student, teacher, x, xa, y = setup()
    m = harness.create_method("dgad", els_adv=False, pcr=False)
    _, _, g_clean, g_adv = run(m, student, teacher, x, xa, y)
    got = read_targets(student.adv, g_adv, 8)
    torch.testing.assert_close(got[~ST], softmax(Z_ADV)[~ST], rtol=1e-7, atol=1e-10)
    _, t_clean, _ = targets(Z, Z_ADV, Y)
    torch.testing.assert_close(read_targets(student.clean, g_clean, 8)[ST], t_clean[ST])


def test_pcr_off_has_no_gamma_term_and_gamma_scales_it():
    student, teacher, x, xa, y = setup()
    l_off = [
        harness.create_method("dgad", pcr=False, gamma=g).loss(student, teacher, x, xa, y)[0]
        for g in (1.0, 50.0)
    ]
    assert val(l_off[0]) == val(l_off[1])
    l_on = [
        harness.create_method("dgad", gamma=g).loss(student, teacher, x, xa, y)[0]
        for g in (0.0, 1.0, 4.0)
    ]
    assert val(l_on[0]) == pytest.approx(val(l_off[0]), rel=1e-12)
    step = val(l_on[1] - l_on[0])
    assert step > 0
    assert val(l_on[2] - l_on[0]) == pytest.approx(4 * step, rel=1e-9)


@pytest.mark.parametrize(
    ("label_fix", "hp"),
    [("smooth", {"smoothing": 0.2}), ("smooth", {}), ("mix", {"mix": 0.3}), ("mix", {})],
)
def test_label_fix_variants(label_fix, hp):
    student, teacher, x, xa, y = setup()
    m = harness.create_method("dgad", label_fix=label_fix, pcr=False, **hp)
    loss, _, g_clean, g_adv = run(m, student, teacher, x, xa, y)
    _, t_clean, t_adv = targets(Z, Z_ADV, Y, label_fix=label_fix, **hp)
    got_c = read_targets(student.clean, g_clean, 8)
    got_a = read_targets(student.adv, g_adv, 8)
    torch.testing.assert_close(got_c[ST], t_clean[ST], rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(got_a[~ST], t_adv[~ST], rtol=1e-7, atol=1e-10)
    # corrected rows really differ from the swap targets; uncorrected rows are the teacher's
    _, sw_clean, sw_adv = targets(Z, Z_ADV, Y)
    assert not torch.allclose(got_c[ST], sw_clean[ST], atol=1e-3)
    fixed_adv = ~ST & NEG_MARGIN
    assert not torch.allclose(got_a[fixed_adv], sw_adv[fixed_adv], atol=1e-3)
    torch.testing.assert_close(got_a[~ST & ~NEG_MARGIN], softmax(Z_ADV)[~ST & ~NEG_MARGIN])
    if label_fix == "smooth":
        s = hp.get("smoothing", 0.1)
        row = got_c[1]
        torch.testing.assert_close(row[1], torch.tensor(1 - s + s / C, dtype=row.dtype))
        torch.testing.assert_close(row[0], torch.tensor(s / C, dtype=row.dtype))
    expected = expected_loss(
        student.clean, student.adv, Z, Z_ADV, Y, pcr=False, label_fix=label_fix, **hp
    )
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)


# -- the spec's equivalence with AdaAD -------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self, seed: int, name: str = "MLP") -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(48, 6).double()
        self.fc2 = nn.Linear(6, C).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def test_all_teacher_right_and_no_adv_swap_equals_adaad_batchmean_plus_pcr():
    x, xa = inputs()
    z_right = Z.clone()
    z_right[ST] = swapped_rows(Z[ST], Y[ST])  # now every sample is teacher-right on x
    teacher = FixedTeacher(x, z_right, Z_ADV)
    student = MLP(3)
    gamma = 5.0
    dgad = harness.create_method("dgad", gamma=gamma, els_adv=False)
    ada = harness.create_method("adaad", alpha=1.0, kl_reduction="batchmean")
    l_dgad, logs = dgad.loss(student, teacher, x, xa, Y)
    l_ada, _ = ada.loss(student, teacher, x, xa, Y)
    assert float(logs["st_fraction"]) == 0.0
    with torch.no_grad():
        p_a, p_c = softmax(student(xa)), softmax(student(x))
    pcr = ((p_a - p_c) ** 2).sum() / (8 * C)
    assert abs(val(l_dgad) - val(l_ada + gamma * pcr)) < 1e-6
    # discriminating: AdaAD's default elementwise reduction, or ELS on x', would not match
    ada_el = harness.create_method("adaad", alpha=1.0).loss(student, teacher, x, xa, Y)[0]
    assert abs(val(l_dgad) - val(ada_el + gamma * pcr)) > 1e-3
    with_els = harness.create_method("dgad", gamma=gamma).loss(student, teacher, x, xa, Y)[0]
    assert abs(val(with_els) - val(l_dgad)) > 1e-3


def swapped_rows(z, y):
    return torch.stack([swapped(row, int(yi), int(row.argmax())) for row, yi in zip(z, y)])


# -- edge cases ----------------------------------------------------------------------------------
def test_no_teacher_wrong_sample_gives_zero_st_term():
    z_right = Z.clone()
    z_right[ST] = swapped_rows(Z[ST], Y[ST])
    student, teacher, x, xa, y = setup(z=z_right)
    m = harness.create_method("dgad")
    loss, logs, g_clean, g_adv = run(m, student, teacher, x, xa, y)
    assert float(logs["l_st"]) == 0.0
    assert torch.isfinite(loss) and torch.isfinite(g_clean).all() and torch.isfinite(g_adv).all()
    expected = expected_loss(student.clean, student.adv, z_right, Z_ADV, Y)
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)


def test_all_teacher_wrong_gives_zero_at_term_not_nan():
    z_wrong = Z.clone()
    right = ~ST
    z_wrong[right] = torch.stack(
        [swapped(r, int(yi), (int(yi) + 1) % C) for r, yi in zip(Z[right], Y[right])]
    )
    assert torch.all(z_wrong.argmax(1) != Y)
    student, teacher, x, xa, y = setup(z=z_wrong)
    for pcr in (False, True):
        m = harness.create_method("dgad", pcr=pcr)
        loss, logs, g_clean, g_adv = run(m, student, teacher, x, xa, y)
        assert float(logs["l_at"]) == 0.0 and float(logs["st_fraction"]) == 1.0
        assert (
            torch.isfinite(loss) and torch.isfinite(g_clean).all() and torch.isfinite(g_adv).all()
        )
        if not pcr:
            assert torch.all(g_adv == 0)
        expected = expected_loss(student.clean, student.adv, z_wrong, Z_ADV, Y, pcr=pcr)
        torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)


# -- MobileNetV2 weighting and the short last batch ---------------------------------------------
def test_mobilenet_weighting_default_is_the_official_code():
    """The paper's MobileNetV2 numbers come from the official branch: it is the default."""
    assert harness.create_method("dgad").mobilenet_weighting == "literal"
    student, teacher, x, xa, y = setup(student_cls=MobileNetV2)
    loss, _ = harness.create_method("dgad", gamma=2.0).loss(student, teacher, x, xa, y)
    official = expected_loss(
        student.clean, student.adv, Z, Z_ADV, Y, gamma=2.0, weighting="literal"
    )
    torch.testing.assert_close(loss, official, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("pcr", [True, False])
@pytest.mark.parametrize("setting", ["intended", "literal", "off"])
def test_mobilenet_weighting(setting, pcr):
    student, teacher, x, xa, y = setup(student_cls=MobileNetV2)
    m = harness.create_method("dgad", mobilenet_weighting=setting, gamma=2.0, pcr=pcr)
    loss, _ = m.loss(student, teacher, x, xa, y)
    weighting = {"intended": "intended", "literal": "literal", "off": "standard"}[setting]
    expected = expected_loss(
        student.clean, student.adv, Z, Z_ADV, Y, gamma=2.0, weighting=weighting, pcr=pcr
    )
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)
    assert_grads_match(loss, expected, student)
    values = {
        w: val(
            expected_loss(student.clean, student.adv, Z, Z_ADV, Y, gamma=2.0, weighting=w, pcr=pcr)
        )
        for w in ("standard", "intended", "literal")
    }
    # with PCR on the three forms differ; with PCR off the official code weights every
    # student alike (no 0.5, no product), so every setting gives the standard loss
    assert len({round(v, 6) for v in values.values()}) == (3 if pcr else 1)
    # a student of another class ignores the switch
    plain, teacher2, x2, xa2, y2 = setup()
    l_plain, _ = harness.create_method(
        "dgad", mobilenet_weighting=setting, gamma=2.0, pcr=pcr
    ).loss(plain, teacher2, x2, xa2, y2)
    assert val(l_plain) == pytest.approx(values["standard"], rel=1e-9)


def test_short_last_batch_uses_actual_batch_length():
    n = 5  # rows 0-4: ST rows 1 and 3
    student, teacher, x, xa, y = setup(n=n)
    m = harness.create_method("dgad")
    loss, logs = m.loss(student, teacher, x, xa, y)
    expected = expected_loss(student.clean, student.adv, Z[:n], Z_ADV[:n], Y[:n])
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)
    assert float(logs["st_fraction"]) == pytest.approx(2 / 5)
    for nominal in (8, 128):
        wrong = expected_loss(student.clean, student.adv, Z[:n], Z_ADV[:n], Y[:n], B=nominal)
        assert abs(val(wrong) - val(expected)) > 1e-3


def test_harness_mobilenet_v2_takes_the_mobilenet_branch():
    """The harness's own MobileNetV2 (its forward swapped for a logit table: CPU-cheap)."""
    student = harness.create_model("mobilenet_v2", num_classes=C, image_size=32)
    table, teacher, x, xa, y = setup()
    student.forward = table.forward
    losses = {
        w: val(
            harness.create_method("dgad", mobilenet_weighting=w, gamma=0.0).loss(
                student, teacher, x, xa, y
            )[0]
        )
        for w in ("literal", "intended", "off")
    }
    assert losses["off"] > 0
    assert losses["intended"] == pytest.approx(0.5 * losses["off"], rel=1e-9)
    assert abs(losses["literal"] - losses["intended"]) > 1e-3
