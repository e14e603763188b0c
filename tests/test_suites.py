"""The evaluation presets are the DGAD authors' calls (kunsaram01/DGAD ``eval_utils.py`` and
``main_eval.py``: advertorch 0.2.3, AutoAttack): parameters pinned to the official call, outputs
compared with advertorch itself; the authors' transfer JSMA as its own preset, kept out of the
worst case, the leaderboard's ranking, and explained beside Table 7."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.attacks.base import build_attack
from harness.data import ArraySet
from harness.evaluation.evaluate import evaluate_suite
from harness.grid import suites
from harness.grid.load import load_grid
from harness.publishing import leaderboard
from harness.publishing import report as rp
from harness.store.store import Store
from tests.helpers import import_advertorch

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 8 / 255
THREAT = {"eps": EPS, "step_size": 2 / 255}

#: The official calls, argument for argument (eval_utils.py; ``c`` = main_eval.py's ``--eps``
#: for FGSM / PGD, its ``--coeff`` default 0.1 for CW and JSMA). advertorch's defaults that
#: the call leaves alone are written out too (CW's abort_early).
OFFICIAL = {
    "fgsm": ("GradientSignAttack", {"eps": EPS, "clip_min": 0.0, "clip_max": 1.0}),
    "pgd10": (
        "LinfPGDAttack",
        {"eps": EPS, "nb_iter": 10, "eps_iter": EPS / 4, "rand_init": True, "clip_min": 0.0},
    ),
    "cw2": (
        "CarliniWagnerL2Attack",
        {
            "confidence": 0.01,
            "max_iterations": 1000,
            "learning_rate": 0.01,
            "binary_search_steps": 1,
            "initial_const": 0.1,
            "abort_early": True,
            "clip_min": 0.0,
            "clip_max": 1.0,
        },
    ),
    "autoattack": ("AutoAttack", {"norm": "Linf", "eps": EPS, "version": "standard"}),
    "jsma-paper": (
        "JacobianSaliencyMapAttack",
        {"gamma": 0.05, "theta": 0.1, "clip_min": 0.0, "clip_max": 1.0, "targets": "labels"},
    ),
}

#: advertorch's argument → (our attribute, how our value reads in advertorch's terms)
RENAME = {
    "eps": ("eps", None),
    "nb_iter": ("steps", None),
    "eps_iter": ("step_size", None),
    "rand_init": ("init", lambda v: v == "uniform"),
    "max_iterations": ("steps", None),
    "learning_rate": ("lr", None),
    "binary_search_steps": ("binary_search_steps", None),
    "initial_const": ("c", None),
    "confidence": ("confidence", None),
    "abort_early": ("abort_early", None),
    "clip_min": ("clip_min", None),
    "clip_max": ("clip_max", None),
    "norm": ("norm", None),
    "version": ("version", None),
    "gamma": ("gamma", None),
    "theta": ("theta", None),
    "targets": ("target", lambda v: "labels" if v == "label" else v),
}
#: Ours without an attribute for the image box: clipped to [0, 1] always.
BOX = {"clip_min": 0.0, "clip_max": 1.0}


def preset(name: str) -> dict:
    table = suites.TRANSFER_ATTACKS if name == "jsma-paper" else suites.PRESETS
    return suites.resolve(name, table[name], THREAT)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_preset_parameters_are_the_official_call(name):
    attack = build_attack(preset(name), seed=0)
    _, call = OFFICIAL[name]
    for arg, value in call.items():
        attr, read = RENAME[arg]
        if not hasattr(attack, attr) and arg in BOX:
            continue
        ours = getattr(attack, attr)
        ours = read(ours) if read else ours
        assert ours == pytest.approx(value) if isinstance(value, float) else ours == value, arg
    if name == "pgd10":
        assert attack.restarts == 1 and attack.loss == "ce"
    if name == "jsma-paper":
        assert attack.rules == "advertorch"


def test_whitebox_suite_and_jsma_default():
    assert suites.WHITEBOX == ["clean", "fgsm", "pgd10", "cw2", "autoattack"]
    assert suites.TRANSFER_DEFAULT == ["fgsm", "pgd10", "jsma"]
    jsma = build_attack(preset_transfer("jsma"), seed=0)
    assert jsma.target == "random" and jsma.rules == "torchattacks"  # the real attack


def preset_transfer(name: str) -> dict:
    return suites.resolve(name, suites.TRANSFER_ATTACKS[name], THREAT)


# -- against advertorch itself ---------------------------------------------------------------------
def conv_net(seed: int, classes: int = 10, size: int = 6) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * (size - 2) ** 2, classes)
    ).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return net.eval()


def images(seed: int, n: int = 12, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 65, (n, 3, size, size), generator=g).double() / 64
    return x, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("seed", range(4))
def test_jsma_paper_is_advertorchs_call_to_the_pixel(seed):
    attacks = import_advertorch()
    net = conv_net(seed)
    x, y = images(seed + 10)
    kw = dict(OFFICIAL["jsma-paper"][1])
    kw.pop("targets")
    theirs = attacks.JacobianSaliencyMapAttack(net, num_classes=10, **kw).perturb(x, y)
    ours = build_attack(preset("jsma-paper"), seed=0)(net, x, y)
    assert torch.equal(ours, theirs)
    wrong = net(x).argmax(1) != y
    assert wrong.any() and (ours[wrong] != x[wrong]).any()  # something was attacked


def test_fgsm_is_advertorchs_call():
    attacks = import_advertorch()
    net = conv_net(1)
    x, y = images(2)
    theirs = attacks.GradientSignAttack(net, eps=EPS, clip_min=0.0, clip_max=1.0).perturb(x, y)
    ours = build_attack(preset("fgsm"), seed=0)(net, x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_pgd10_steps_are_advertorchs():
    """The same loop from the same start (advertorch's start draws from the global RNG: the
    step loop is compared from the clean input; the start's law is tested in test_attacks)."""
    attacks = import_advertorch()
    net = conv_net(2)
    x, y = images(3)
    loss = nn.CrossEntropyLoss(reduction="sum")
    theirs = attacks.LinfPGDAttack(
        net, loss_fn=loss, eps=EPS, nb_iter=10, eps_iter=EPS / 4, rand_init=False
    ).perturb(x, y)
    ours = build_attack({**preset("pgd10"), "init": "none"}, seed=0)(net, x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_cw2_is_advertorchs_call():
    attacks = import_advertorch()
    net = conv_net(3, classes=4).float()  # advertorch's CW works in float32 only
    x, y = images(4, n=6)
    x, y = x.float(), y % 4
    _, call = OFFICIAL["cw2"]
    theirs = attacks.CarliniWagnerL2Attack(net, num_classes=4, **call).perturb(x, y)
    ours = build_attack(preset("cw2"), seed=0)(net, x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


# -- jsma-paper is no attack: it only raises accuracy, and nothing ranks by it ---------------------
def test_jsma_paper_only_moves_misclassified_images_towards_their_class():
    net = conv_net(5)
    x, y = images(6, n=40)
    before = net(x).argmax(1) == y
    x_adv = build_attack(preset("jsma-paper"), seed=0)(net, x, y)
    assert torch.equal(x_adv[before], x[before])  # correct ones: untouched
    after = net(x_adv).argmax(1) == y
    assert bool(after[before].all()) and after.sum() > before.sum()


def test_is_attack_and_ranks():
    assert suites.is_attack(preset("jsma-paper")) is False
    assert suites.is_attack(preset_transfer("jsma")) and suites.is_attack(preset("pgd10"))
    assert not suites.ranks("transfer/resnet34/jsma-paper")
    assert suites.ranks("transfer/resnet34/jsma") and suites.ranks("clean")


def test_worst_case_leaves_out_jsma_paper():
    net = conv_net(7)
    x, y = images(8, n=16)
    data = ArraySet((x * 255).round().to(torch.uint8), y)
    out = evaluate_suite(
        net.float(),
        data,
        {"clean": None, "jsma-paper": preset("jsma-paper"), "fgsm": preset("fgsm")},
        batch_size=8,
        device="cpu",
        seed=0,
        checks=False,
    )
    assert out["results"]["worst_case"]["params"]["of"] == ["clean", "fgsm"]


def test_leaderboard_never_ranks_by_jsma_paper(tmp_path):
    store = Store(tmp_path)
    accs = {"a": (0.30, 0.95), "b": (0.40, 0.90)}  # (fgsm, jsma-paper): a wins on jsma-paper
    for method, (fgsm, paper) in accs.items():
        config = {
            "kind": "student",
            "method": {"name": method, "hparams": {}},
            "dataset": {"name": "cifar10", "options": {}},
            "model": "resnet18",
            "teacher": None,
            "seed": 0,
            "train": {"epochs": 1},
            "full_epochs": 1,
            "schedule": "full",
            "grids": ["g"],
        }
        run_id = f"{method}-x-s0-000000000{len(method)}"
        store.begin(run_id, config)
        results = {
            "transfer/resnet34/fgsm": {"accuracy": fgsm, "n": 1, "params": {}},
            "transfer/resnet34/jsma-paper": {"accuracy": paper, "n": 1, "params": {}},
        }
        store.finish(run_id, {"results": results, "provenance": {}})
    (table,) = leaderboard.leaderboard_tables(store, "g")
    assert [r.method for r in table.rows] == ["b", "a"]  # by FGSM, the only attack
    assert table.rank_key == "transfer/resnet34/fgsm"
    assert leaderboard.rank_column(["transfer/resnet34/jsma-paper"], table.rows) == (None, False)


# -- Table 7 ---------------------------------------------------------------------------------------
def test_table7_is_filled_from_jsma_paper_which_the_transfer_grid_runs(tmp_path):
    (table,) = rp.build_reports(Store(tmp_path), table="7")
    jsma = [g.columns[-1] for g in table.groups]
    assert jsma == ["transfer/resnet34/jsma-paper", "transfer/vgg16_bn/jsma-paper"]
    for run in load_grid("transfer").runs:
        transfer = run.config["eval"]["transfer"]
        assert transfer["attacks"]["jsma-paper"] == preset("jsma-paper")
        assert {"jsma", "jsma-paper"} <= set(transfer["attacks"])
    text = rp.render_markdown(table)
    assert "JSMA (authors' call)" in text
    assert "why this column sits above the students' clean accuracy" in text
