"""The paper grids (leaderboards/*.toml) expand to exactly the cells of the DGAD paper's tables.

Each table's rows and columns are written out here from the paper; a grid must give
one run per cell (teacher-free methods once per student), with the schedules and
hyperparameters its header promises. Pure loading: no training, no data, no network.
"""

from __future__ import annotations

import socket
import sys
from itertools import product

import pytest

from harness.grid import suites
from harness.grid.load import Grid, load_grid

SEED = 0
TEACHER_FREE = ("pgd-at", "trades")
DISTILLERS = ("ard", "iad", "rslad", "akd", "adaad", "dgad")
CIFAR10_GRIDS = ("cifar10", "transfer", "ablation", "selfdistill")
ROBUSTBENCH = {"wrn34-10": "Chen2021LTD_WRN34_10", "wrn34-20": "Chen2021LTD_WRN34_20"}


def table(students, teachers, teacher_free, distillers) -> set[tuple[str, str | None, str]]:
    """(student, teacher name or None, method or variant) for every cell of a paper table."""
    return {(s, None, m) for s, m in product(students, teacher_free)} | set(
        product(students, teachers, distillers)
    )


# Table 4: students x {WRN-34-10, WRN-34-20} x 8 methods; PGD-AT and TRADES once per student.
TABLE_4 = table(("resnet18", "mobilenet_v2"), ("wrn34-10", "wrn34-20"), TEACHER_FREE, DISTILLERS)
# Table 5: CIFAR-100, WRN-34-10 teacher only.
TABLE_5 = table(("resnet18", "mobilenet_v2"), ("wrn34-10",), TEACHER_FREE, DISTILLERS)
# Table 6: Tiny ImageNet, PreActResNet-18 (TRADES) -> ResNet-18; rows ARD, RSLAD, AdaAD, DGAD.
TABLE_6 = table(("resnet18",), ("preact-trades",), (), ("ard", "rslad", "adaad", "dgad"))
# Table 7: the 8 methods, ResNet-18 student, WRN-34-10 teacher (the CIFAR-10 main setting).
TABLE_7 = table(("resnet18",), ("wrn34-10",), TEACHER_FREE, DISTILLERS)
# Table 8: ResNet-18 (TRADES) -> ResNet-18; rows PGD-AT, ARD, IAD, RSLAD, AKD, AdaAD, DGAD.
TABLE_8 = table(
    ("resnet18",),
    ("resnet18-trades",),
    ("pgd-at",),
    ("ard", "iad", "rslad", "akd", "adaad", "dgad"),
)
# Tables 2 and 3: one row each, as (map, els_clean, els_adv, pcr, label_fix); adaad is the baseline.
ABLATION_ROWS: dict[str, tuple[bool, bool, bool, bool, str] | None] = {
    "adaad": None,  # baseline (AdaAD)
    "dgad-map": (True, False, False, False, "swap"),  # + MAP
    "dgad-map-pcr": (True, False, False, True, "swap"),  # + MAP + PCR
    "dgad-els-adv": (False, False, True, False, "swap"),  # + ELS(x')
    "dgad-map-els-adv": (True, False, True, False, "swap"),  # + MAP + ELS(x')
    "dgad-map-els-clean": (True, True, False, False, "swap"),  # + MAP + ELS(x)
    "dgad-map-els": (True, True, True, False, "swap"),  # + MAP + ELS(x) + ELS(x')
    "dgad": (True, True, True, True, "swap"),  # DGAD = Table 3's label swapping
    "dgad-smooth": (True, True, True, True, "smooth"),  # Table 3: label smoothing
    "dgad-mix": (True, True, True, True, "mix"),  # Table 3: label mixing
}
TABLES_2_3 = table(("resnet18",), ("wrn34-10",), (), tuple(ABLATION_ROWS))

PAPER = {
    "cifar10": ("cifar10", TABLE_4),
    "cifar100": ("cifar100", TABLE_5),
    "tinyimagenet": ("tinyimagenet", TABLE_6),
    "transfer": ("cifar10", TABLE_7),
    "selfdistill": ("cifar10", TABLE_8),
    "ablation": ("cifar10", TABLES_2_3),
}

_CACHE: dict[str, Grid] = {}


def grid(name: str) -> Grid:
    if name not in _CACHE:
        _CACHE[name] = load_grid(name)
    return _CACHE[name]


def label(run) -> str:
    return run.config["method"].get("variant", run.config["method"]["name"])


def cell(run) -> tuple[str, str | None, str]:
    return run.config["model"], (run.config["teacher"] or {}).get("name"), label(run)


def by_cell(name: str) -> dict[tuple[str, str | None, str], dict]:
    return {cell(r): r.config for r in grid(name).runs}


def hp(config: dict) -> dict:
    return config["method"]["hparams"]


def test_table_sizes():
    assert (len(TABLE_4), len(TABLE_5), len(TABLE_6)) == (28, 16, 4)
    assert (len(TABLE_7), len(TABLE_8), len(TABLES_2_3)) == (8, 7, 10)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_grid_is_exactly_its_paper_table(name):
    dataset, cells = PAPER[name]
    g = grid(name)
    got = [cell(r) for r in g.runs]
    assert len(got) == len(set(got)), "a cell appears twice"
    assert set(got) == cells
    for r in g.runs:
        c = r.config
        assert c["dataset"]["name"] == dataset
        assert c["seed"] == SEED and c["schedule"] == "full" and c["kind"] == "student"
        assert c["train"]["select_on"] == "test"  # the paper: best PGD-10 on the test set
        assert hp(c)["eps"] == 8 / 255 and hp(c)["step_size"] == 2 / 255 and hp(c)["steps"] == 10
    ids = [r.run_id for r in g.runs] + [t.run_id for t in g.teacher_runs.values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", sorted(PAPER))
def test_run_ids_are_stable(name):
    again = load_grid(name)
    assert [r.run_id for r in again.runs] == [r.run_id for r in grid(name).runs]
    assert {k: t.run_id for k, t in again.teacher_runs.items()} == {
        k: t.run_id for k, t in grid(name).teacher_runs.items()
    }


@pytest.mark.parametrize("name", sorted(PAPER))
def test_short_override_labels_every_run(name):
    g = load_grid(name, epochs=2)
    assert {cell(r) for r in g.runs} == PAPER[name][1]
    for r in g.runs:
        assert r.config["schedule"] == "short" and r.config["train"]["epochs"] == 2
        assert all(m < 2 for m in r.config["train"]["milestones"])
    assert not {r.run_id for r in g.runs} & {r.run_id for r in grid(name).runs}
    # --epochs leaves the teachers the grid trains alone; --teacher-epochs shortens them
    full = {k: t.run_id for k, t in grid(name).teacher_runs.items()}
    assert {k: t.run_id for k, t in g.teacher_runs.items()} == full
    short = load_grid(name, teacher_epochs=2)
    for r in short.teacher_runs.values():
        assert r.config["schedule"] == "short" and r.config["train"]["epochs"] == 2
    assert [r.run_id for r in short.runs if not r.needs] == [
        r.run_id for r in grid(name).runs if not r.needs
    ]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_schedules(name):
    """The paper's schedule for every method, RSLAD included ("TRADES and AD methods [...],
    including DGAD, ran for 200 epochs with learning rate adjustments at epochs 100 and 150",
    weight decay 5e-4); PGD-AT's 110 epochs."""
    for (_, _, method), c in by_cell(name).items():
        t = c["train"]
        assert (t["batch_size"], t["lr"], t["momentum"], t["lr_gamma"]) == (128, 0.1, 0.9, 0.1)
        expected = {"pgd-at": (110, [100, 105], 5e-4)}.get(method, (200, [100, 150], 5e-4))
        assert (t["epochs"], t["milestones"], t["weight_decay"]) == expected, method
        assert c["full_epochs"] == expected[0]


@pytest.mark.parametrize("name", [n for n in sorted(PAPER) if n != "ablation"])
def test_rslad_repository_schedule_is_a_named_variant(name):
    """Not a cell of the paper's table (not in `methods`), runnable by name: the repository's
    300 epochs, /10 at 215, 260, 285, wd 2e-4, with the grid's RSLAD hyperparameters."""
    assert "rslad-repo" not in grid(name).raw["methods"]
    g = load_grid(name, method="rslad-repo")
    paper = {(s, t): c for (s, t, m), c in by_cell(name).items() if m == "rslad"}
    assert g.runs and len(g.runs) == len(paper)
    for r in g.runs:
        c = r.config
        t = c["train"]
        assert (t["epochs"], t["milestones"], t["weight_decay"]) == (300, [215, 260, 285], 2e-4)
        assert c["method"]["name"] == "rslad" and c["method"]["variant"] == "rslad-repo"
        same_cell = paper[(c["model"], c["teacher"]["name"])]
        assert hp(c) == hp(same_cell)  # only the schedule differs
        assert r.run_id not in {x.run_id for x in grid(name).runs}


def test_teacher_runs_come_first_and_students_need_them():
    for name, (teacher, model) in {
        "tinyimagenet": ("preact-trades", "preact_resnet18"),
        "selfdistill": ("resnet18-trades", "resnet18"),
    }.items():
        g = grid(name)
        assert list(g.teacher_runs) == [teacher]
        t = g.teacher_runs[teacher]
        assert t.kind == "teacher" and t.needs is None and t.config["model"] == model
        assert t.config["method"]["name"] == "trades" and hp(t.config)["beta"] == 6.0
        # TRADES's official recipe: 76 epochs, lr /10 from (1-based) epoch 75, wd 2e-4.
        tr = t.config["train"]
        assert (tr["epochs"], tr["milestones"], tr["weight_decay"]) == (76, [74], 2e-4)
        assert tr["select_on"] == "test" and t.config["schedule"] == "full"
        students = [r for r in g.runs if r.config["teacher"] is not None]
        assert students and all(r.needs == t.run_id for r in students)
        assert all(r.config["teacher"]["run_id"] == t.run_id for r in students)
        assert all(r.needs is None for r in g.runs if r.config["teacher"] is None)
    # the two teachers are different runs (data set and architecture differ)
    assert grid("tinyimagenet").teacher_runs["preact-trades"].run_id != (
        grid("selfdistill").teacher_runs["resnet18-trades"].run_id
    )


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "transfer", "ablation"])
def test_robustbench_teachers_are_recorded_not_fetched(name, monkeypatch):
    """Loading a RobustBench-teacher grid needs neither the network nor robustbench."""

    def no_network(*args, **kwargs):
        raise AssertionError("grid loading touched the network")

    monkeypatch.setitem(sys.modules, "robustbench", None)  # `import robustbench` now fails
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    g = load_grid(name)
    assert not g.teacher_runs and all(r.needs is None for r in g.runs)
    refs = [r.config["teacher"] for r in g.runs if r.config["teacher"] is not None]
    assert {ref["name"] for ref in refs} == {t for _, t, _ in PAPER[name][1] if t}
    for ref in refs:
        assert ref["source"] == "robustbench" and ref["threat_model"] == "Linf"
        assert ref["robustbench"] == ROBUSTBENCH[ref["name"]]
        assert ref["model"] == ref["name"].replace("-", "_")  # wrn34-10 -> wrn34_10


def test_dgad_gamma_per_student():
    for name in ("cifar10", "cifar100", "transfer", "ablation", "selfdistill"):
        for (student, _, method), c in by_cell(name).items():
            if c["method"]["name"] == "dgad":
                assert hp(c)["gamma"] == {"resnet18": 5.0, "mobilenet_v2": 10.0}[student], method
                # the official code's MobileNetV2 branch: the paper's numbers come from it
                assert hp(c)["mobilenet_weighting"] == "literal"
    # Tiny ImageNet: 15, the paper's weight "for PreActResNet18" (see the grid's header)
    assert hp(by_cell("tinyimagenet")[("resnet18", "preact-trades", "dgad")])["gamma"] == 15.0


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_dgad_intended_weighting_is_a_variant_row(name):
    """The corrected MobileNetV2 weighting: runnable by name, not a cell of Table 4/5."""
    assert "dgad-intended" not in grid(name).raw["methods"]
    g = load_grid(name, method="dgad-intended", student="mobilenet_v2")
    official = {
        t: c for (s, t, m), c in by_cell(name).items() if (s, m) == ("mobilenet_v2", "dgad")
    }
    assert len(g.runs) == len(official)
    for r in g.runs:
        c = r.config
        assert c["method"]["variant"] == "dgad-intended"
        assert hp(c) == {**hp(official[c["teacher"]["name"]]), "mobilenet_weighting": "intended"}


def test_method_hyperparameters():
    c10, c100, tiny = by_cell("cifar10"), by_cell("cifar100"), by_cell("tinyimagenet")
    for s in ("resnet18", "mobilenet_v2"):
        # AdaAD: elementwise KL in its CIFAR-10 code, batchmean in its CIFAR-100 code
        assert hp(c10[(s, "wrn34-10", "adaad")])["kl_reduction"] == "elementwise"
        assert hp(c100[(s, "wrn34-10", "adaad")])["kl_reduction"] == "batchmean"
        # RSLAD: 5/6 and 1/6; the official CIFAR-100 script multiplies both by 10
        rs10, rs100 = hp(c10[(s, "wrn34-20", "rslad")]), hp(c100[(s, "wrn34-10", "rslad")])
        assert (rs10["adv_weight"], rs10["clean_weight"]) == (5 / 6, 1 / 6)
        assert (rs100["adv_weight"], rs100["clean_weight"]) == (50 / 6, 10 / 6)
        for table_ in (c10, c100):
            assert hp(table_[(s, "wrn34-10", "iad")])["warmup_epochs"] == 60
            assert hp(table_[(s, "wrn34-10", "ard")])["temperature"] == 30.0
            assert hp(table_[(s, None, "trades")])["beta"] == 6.0
    assert hp(tiny[("resnet18", "preact-trades", "adaad")])["kl_reduction"] == "batchmean"


def test_ablation_rows_switch_exactly_their_parts():
    rows = {label: c for (_, _, label), c in by_cell("ablation").items()}
    assert set(rows) == set(ABLATION_ROWS)
    for name, switches in ABLATION_ROWS.items():
        c = rows[name]
        if switches is None:
            assert c["method"] == {"name": "adaad", "hparams": hp(c)}
            assert hp(c)["alpha"] == 1.0 and hp(c)["kl_reduction"] == "elementwise"
            continue
        assert c["method"]["name"] == "dgad"
        if name != "dgad":  # a variant writes out every switch, the ones it turns off too
            written = grid("ablation").raw["variant"][name]
            assert {"map", "els_clean", "els_adv", "pcr"} <= set(written), name
        keys = ("map", "els_clean", "els_adv", "pcr", "label_fix")
        assert tuple(hp(c)[k] for k in keys) == switches, name
        assert (hp(c)["gamma"], hp(c)["smoothing"], hp(c)["mix"]) == (5.0, 0.1, 0.5)


def test_cifar10_grids_share_the_cells_their_tables_share():
    """One run per shared cell: the paper prints the same numbers for them."""
    c10 = {r.run_id for r in grid("cifar10").runs}
    # Table 7 is Table 4's ResNet-18 / WRN-34-10 column
    assert {r.run_id for r in grid("transfer").runs} <= c10
    # Table 2's baseline and DGAD rows (= Table 3's label swapping) are Table 4's
    ablation = {label(r): r.run_id for r in grid("ablation").runs}
    assert {ablation["adaad"], ablation["dgad"]} <= c10
    assert len(set(ablation.values()) & c10) == 2
    # Table 8's PGD-AT row is Table 4's
    self_ids = {label(r): r.run_id for r in grid("selfdistill").runs}
    assert self_ids["pgd-at"] in c10 and len(set(self_ids.values()) & c10) == 1
    # the same evaluation everywhere: the paper's white-box protocol plus Table 7's transfer
    evals = [r.config["eval"] for name in CIFAR10_GRIDS for r in grid(name).runs]
    assert all(e == evals[0] for e in evals)
    assert list(evals[0]["attacks"]) == ["clean", "fgsm", "pgd10", "cw2", "autoattack"]
    assert evals[0]["transfer"]["surrogates"] == ["resnet34", "vgg16_bn"]
    assert list(evals[0]["transfer"]["attacks"]) == ["fgsm", "pgd10", "jsma", "jsma-paper"]
    assert evals[0]["transfer"]["train"]["epochs"] == 200


@pytest.mark.parametrize("name", ["cifar100", "tinyimagenet"])
def test_other_grids_evaluate_white_box_only(name):
    for r in [*grid(name).runs, *grid(name).teacher_runs.values()]:
        assert list(r.config["eval"]["attacks"]) == suites.WHITEBOX
        assert "transfer" not in r.config["eval"]


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "tinyimagenet"])
def test_slurm_templates_are_valid(name):
    from harness.execution.executors import slurm_parameters

    params = slurm_parameters(grid(name), {})
    assert params["gpus_per_node"] == 1 and params["timeout_min"] > 0
    assert slurm_parameters(grid(name), {"partition": "gpu"})["slurm_partition"] == "gpu"


#: The cifar10 grid's extended variant: each later method on its official CIFAR-10 schedule
#: (epochs, milestones, weight decay, Nesterov) and how many runs it makes (PeerAiD: no teacher).
EXTENDED = {
    "absld": (300, (215, 260, 285), 2e-4, False, 4),
    "peeraid": (300, (214, 259, 284), 2e-4, False, 2),
    "fair-ard": (200, (100,), 2e-4, True, 4),
    "fair-iad": (200, (100,), 2e-4, True, 4),
    "fair-rslad": (300, (215, 260, 285), 2e-4, True, 4),
}


@pytest.mark.parametrize("variant", sorted(EXTENDED))
def test_cifar10_extended_variant_rows(variant):
    """The methods beyond the paper run in the cifar10 grid on their official schedules, and
    only when asked for: Table 4's reproduction (the grid's default runs) is unchanged."""
    epochs, milestones, wd, nesterov, n_runs = EXTENDED[variant]
    g = load_grid("cifar10", method=variant)
    assert len(g.runs) == n_runs
    for run in g.runs:
        cfg = run.config
        assert cfg.label == variant and cfg.method == variant
        assert (cfg.train.epochs, tuple(cfg.train.milestones)) == (epochs, milestones)
        assert (cfg.train.weight_decay, cfg.train.nesterov) == (wd, nesterov)
        assert (cfg.teacher is None) == (variant == "peeraid")
    assert not {r.config.label for r in grid("cifar10").runs} & set(EXTENDED)


@pytest.mark.parametrize("variant", ["mtard", "fair-mtard"])
def test_cifar10_extended_multi_teacher_rows(variant):
    """MTARD and Fair-MTARD: the grid's natural WRN-34-10 with each robust teacher, per student,
    on the official 300-epoch schedule; the natural teacher is a run of the grid they need."""
    g = load_grid("cifar10", method=variant)
    assert len(g.runs) == 4
    robust = set()
    for run in g.runs:
        roles = dict(run.config.teachers)
        assert set(roles) == {"natural", "robust"}
        assert roles["natural"].name == "wrn34-10-natural"
        robust.add(roles["robust"].name)
        assert (run.config.train.epochs, tuple(run.config.train.milestones)) == (
            300,
            (215, 260, 285),
        )
        assert g.teacher_runs["wrn34-10-natural"].run_id in run.requires
    assert robust == {"wrn34-10", "wrn34-20"}
    natural = g.teacher_runs["wrn34-10-natural"].run_id
    assert natural not in {t for r in grid("cifar10").runs for t in r.requires}  # Table 4's
