"""Grid files: expansion into runs, stable ids, overrides, and one-line errors."""

from __future__ import annotations

import pytest

from harness.grid.load import load_grid
from harness.utils.errors import UserError


def write(tmp_path, text: str, name: str = "g.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BASE = """
dataset = "digits"
students = ["tiny_cnn", "small_cnn"]
teachers = ["t1"]
methods = ["pgd-at", "dgad"]
seeds = [0, 1]
[threat]
eps = "8/255"
[train]
epochs = 10
milestones = [5, 8]
[teacher.t1]
model = "small_cnn"
train = { method = "trades", epochs = 4 }
"""


def test_expansion_and_stable_ids(tmp_path):
    g = load_grid(write(tmp_path, BASE))
    # teacher-free pgd-at: 2 students x 2 seeds; dgad: 2 students x 2 seeds x 1 teacher
    assert len(g.runs) == 8 and len(g.teacher_runs) == 1
    teacher = g.teacher_runs["t1"]
    assert teacher.config["train"]["epochs"] == 4 and teacher.config["method"]["name"] == "trades"
    dgad = [r for r in g.runs if r.config["method"]["name"] == "dgad"]
    assert all(r.needs == teacher.run_id for r in dgad)
    assert all(r.config["teacher"]["run_id"] == teacher.run_id for r in dgad)
    assert dgad[0].config["method"]["hparams"]["eps"] == 8 / 255
    again = load_grid(write(tmp_path, BASE))
    assert [r.run_id for r in g.runs] == [r.run_id for r in again.runs]
    assert len({r.run_id for r in g.runs}) == 8


def test_overrides_and_short_schedule(tmp_path):
    g = load_grid(write(tmp_path, BASE), method="dgad", student="tiny_cnn", epochs=2, seeds=[7])
    assert len(g.runs) == 1
    (run,) = g.runs
    assert run.config["schedule"] == "short" and run.config["full_epochs"] == 10
    assert run.config["train"]["epochs"] == 2 and run.config["train"]["milestones"] == [1]
    assert run.config["seed"] == 7
    full = load_grid(write(tmp_path, BASE), method="dgad", student="tiny_cnn", seeds=[7])
    assert full.runs[0].run_id != run.run_id


def test_epochs_shortens_students_and_teacher_epochs_teachers(tmp_path, capsys):
    """``--epochs`` leaves the teacher the grid trains alone; ``--teacher-epochs`` shortens it,
    and the teacher is then labelled short in ``bench status``, ``plan`` and ``teachers``."""
    from harness.cli import main

    full = load_grid(write(tmp_path, BASE), method="dgad")
    students = load_grid(write(tmp_path, BASE), method="dgad", epochs=2)
    assert students.teacher_runs["t1"].run_id == full.teacher_runs["t1"].run_id
    assert students.teacher_runs["t1"].config["train"]["epochs"] == 4
    assert {r.needs for r in students.runs} == {full.teacher_runs["t1"].run_id}
    assert {r.config["schedule"] for r in students.runs} == {"short"}
    both = load_grid(write(tmp_path, BASE), method="dgad", epochs=2, teacher_epochs=1)
    teacher = both.teacher_runs["t1"]
    assert teacher.config["schedule"] == "short" and teacher.config["train"]["epochs"] == 1
    assert {r.needs for r in both.runs} == {teacher.run_id} != {full.teacher_runs["t1"].run_id}
    assert [r.run_id for r in both.runs] != [r.run_id for r in students.runs]
    with pytest.raises(UserError, match=r"^--teacher-epochs must be in \[1, 100000\], got 0$"):
        load_grid(write(tmp_path, BASE), teacher_epochs=0)
    flags = ["--grid", write(tmp_path, BASE), "--method", "dgad", "--store", str(tmp_path / "s")]
    for command in ("status", "plan", "teachers"):
        for extra, label in (([], "| t1 "), (["--teacher-epochs", "1"], "t1 (short: 1/4 ep)")):
            try:
                main([command, *flags, "--epochs", "2", *extra])
            except SystemExit as exc:
                assert exc.code in (0, None)
            text = capsys.readouterr().out
            assert label in text, (command, extra, text)
            assert ("short: 1/4 ep" in text) == bool(extra), (command, extra, text)


def test_method_table_sets_hparams_per_student(tmp_path):
    text = BASE + "[method.dgad]\ngamma = 7\n[method.dgad.student.small_cnn]\ngamma = 10.0\n"
    g = load_grid(write(tmp_path, text), method="dgad")
    gammas = {r.config["model"]: r.config["method"]["hparams"]["gamma"] for r in g.runs}
    assert gammas == {"tiny_cnn": 7.0, "small_cnn": 10.0}


def test_smoke_grid_ships():
    g = load_grid("smoke")
    assert g.runs and all(r.config["dataset"]["name"] == "digits" for r in g.runs)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('dataset = "digits"\nstudents = [\n', "invalid TOML"),
        (BASE.replace('eps = "8/255"', "eps = 8"), "write eps"),
        (BASE + "colour = 1\n", "unknown key"),
        (BASE.replace('methods = ["pgd-at", "dgad"]', 'methods = ["dgadd"]'), "unknown method"),
        (BASE.replace("[train]", "[train]\nlrate = 1"), "unknown key"),
        (BASE.replace('teachers = ["t1"]', 'teachers = ["t2"]'), "no [teacher.t2] table"),
        (BASE + "[method.dgad]\ngama = 3\n", "unknown hyperparameter"),
        (BASE + '[method.dgad]\ngamma = "lots"\n', "must be a number"),
        (BASE.replace("seeds = [0, 1]", 'seeds = ["a"]'), "seeds must be integers"),
    ],
)
def test_bad_grids_give_one_line(tmp_path, text, message):
    with pytest.raises(UserError) as info:
        load_grid(write(tmp_path, text))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "line"), [('dataset = "digits"\nstudents = [\n', 2), ("a = 1\nb = = 2\nc = 3\n", 2)]
)
def test_invalid_toml_names_file_and_line(tmp_path, text, line):
    with pytest.raises(UserError, match=rf"g\.toml: invalid TOML: .*line {line}"):
        load_grid(write(tmp_path, text))


def test_unknown_grid_lists_valid():
    with pytest.raises(UserError, match="valid grids: .*smoke"):
        load_grid("no-such-grid")


def test_variants_are_named_runs_of_a_base_method(tmp_path):
    text = BASE.replace('methods = ["pgd-at", "dgad"]', 'methods = ["dgad", "dgad-no-pcr"]')
    text += '[method.dgad]\ngamma = 7.0\n[variant.dgad-no-pcr]\nmethod = "dgad"\npcr = false\n'
    g = load_grid(write(tmp_path, text), student="tiny_cnn", seeds=[0])
    by_label = {r.run_id.split("-digits-")[0]: r.config["method"] for r in g.runs}
    assert by_label["dgad"] == {"name": "dgad", "hparams": by_label["dgad"]["hparams"]}
    variant = by_label["dgad-no-pcr"]
    assert variant["name"] == "dgad" and variant["variant"] == "dgad-no-pcr"
    assert variant["hparams"]["pcr"] is False and variant["hparams"]["gamma"] == 7.0
    assert by_label["dgad"]["hparams"]["pcr"] is True
    only = load_grid(write(tmp_path, text), method="dgad-no-pcr")
    assert {r.config["method"].get("variant") for r in only.runs} == {"dgad-no-pcr"}


def test_variant_without_method_is_refused(tmp_path):
    text = (
        BASE.replace('methods = ["pgd-at", "dgad"]', 'methods = ["v"]') + "[variant.v]\npcr = 1\n"
    )
    with pytest.raises(UserError, match=r"\[variant.v\] needs method"):
        load_grid(write(tmp_path, text))


def test_shipped_grids_expand(monkeypatch):
    from harness.grid.load import list_grids

    assert {"smoke", "cifar10-mini"} <= set(list_grids())
    monkeypatch.setenv("BENCH_CIFAR10_MINI", "data/cifar10_mini.npz")
    mini = load_grid("cifar10-mini")
    assert mini.runs[0].config["dataset"]["options"]["path"] == "data/cifar10_mini.npz"
    dgad = [r for r in mini.runs if r.config["method"]["name"] == "dgad"]
    assert len(dgad) == 1 and dgad[0].config["method"]["hparams"]["gamma"] == 5.0


def test_default_eval_is_the_papers_whitebox_protocol(tmp_path):
    from harness.grid import suites

    (run,) = load_grid(write(tmp_path, BASE), method="pgd-at", student="tiny_cnn", seeds=[0]).runs
    attacks = run.config["eval"]["attacks"]
    assert list(attacks) == suites.WHITEBOX
    assert attacks["pgd10"] == {"attack": "pgd", "steps": 10, "eps": 8 / 255, "step_size": 2 / 255}
    assert "eps" not in attacks["cw2"]  # CW2 is unbounded
    assert attacks["autoattack"]["eps"] == 8 / 255


RB = BASE.replace(
    'train = { method = "trades", epochs = 4 }', 'robustbench = "Chen2021LTD_WRN34_10"'
)
DIGEST = "0123456789abcdef" * 4


def test_robustbench_teacher_takes_a_pinned_sha256(tmp_path):
    pinned = load_grid(write(tmp_path, RB + f'sha256 = "{DIGEST.upper()}"\n'), method="dgad")
    ref = pinned.runs[0].config["teacher"]
    assert ref["source"] == "robustbench" and ref["sha256"] == DIGEST  # normalised
    unpinned = load_grid(write(tmp_path, RB), method="dgad")
    assert "sha256" not in unpinned.runs[0].config["teacher"]
    assert pinned.runs[0].run_id != unpinned.runs[0].run_id  # the pin is part of the teacher


def test_url_teacher_needs_its_sha256(tmp_path):
    url = BASE.replace(
        'train = { method = "trades", epochs = 4 }', 'url = "https://example.org/t.pt"'
    )
    g = load_grid(write(tmp_path, url + f'sha256 = "{DIGEST}"\n'), method="dgad")
    ref = g.runs[0].config["teacher"]
    assert ref == {
        "name": "t1",
        "model": "small_cnn",
        "source": "url",
        "url": "https://example.org/t.pt",
        "sha256": DIGEST,
    }
    with pytest.raises(UserError, match=r"url needs sha256") as info:
        load_grid(write(tmp_path, url))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (RB + 'sha256 = "abc123"\n', "must be a sha256 digest (64 hex digits)"),
        (RB + f'sha256 = "{DIGEST[:-1]}g"\n', "must be a sha256 digest"),
        (RB + f'sha256 = "{DIGEST}\\n"\n', "must be a sha256 digest"),
        (RB + "sha256 = 12\n", "must be a sha256 digest"),
        (BASE + f'sha256 = "{DIGEST}"\n', "is trained by the grid"),
        (RB.replace("robustbench =", "url =") + f'sha256 = "{DIGEST}"\n', "url must start with"),
    ],
)
def test_bad_teacher_hashes_give_one_line(tmp_path, text, message):
    with pytest.raises(UserError) as info:
        load_grid(write(tmp_path, text))
    assert message in str(info.value) and "\n" not in str(info.value)


DEEP = "[" * 3000 + "]" * 3000
# bad grids the fuzz (tests/test_fuzz.py) found crashing the loader, and the error each gives now
FUZZ_FOUND = [
    (
        BASE.replace('methods = ["pgd-at", "dgad"]', 'methods = [["dgad"]]'),
        "{path}: 'methods' must be a list of names (strings), got [['dgad']]",
    ),
    (
        BASE.split("[teacher.t1]")[0] + "[teacher]\nt1 = 5\n",
        '{path}: [teacher.t1] needs model = "<model name>"',
    ),
    (
        BASE + '[eval]\nattacks = [["clean"]]\n',
        "{path}: unknown eval attack ['clean']; valid presets: clean, fgsm, pgd10, pgd20, pgd50, "
        "cw_inf, cw2, autoattack (or a table [eval.attacks.NAME] attack = ...)",
    ),
    (
        BASE.replace('eps = "8/255"', "eps = " + "9" * 400),
        "{path}: [threat] eps is too large: an integer of 1329 bits",
    ),
    (
        BASE.replace("epochs = 10", "epochs = " + "9" * 4301),
        "{path}: invalid TOML: an integer with too many digits",
    ),
    (
        BASE.replace("seeds = [0, 1]", f"seeds = {DEEP}"),
        "{path}: invalid TOML: arrays or tables nested too deeply",
    ),
    (
        BASE + "[method.dgad]\nname = 1\n",
        "unknown hyperparameter(s) name for method 'dgad'; valid: els_adv, els_clean, eps, gamma, "
        "label_fix, map, mix, mobilenet_weighting, pcr, smoothing, step_size, steps",
    ),
    (
        BASE.replace("[threat]", "dataset_options = { val_fraction = 1979-05-27 }\n[threat]"),
        "{path}: dataset_options.val_fraction = 1979-05-27: a grid takes no dates or times",
    ),
    (BASE.replace("epochs = 10", "epochs = 0"), "{path}: [train] epochs must be >= 1, got 0"),
    (
        BASE.replace("epochs = 10", "epochs = 10\nlr = -1"),
        "{path}: [train] lr must be > 0, got -1.0",
    ),
    (
        BASE.replace("epochs = 10", "epochs = 10\nnesterov = true\nmomentum = 0"),
        "{path}: [train] nesterov = true needs momentum > 0",
    ),
    (
        BASE + '[eval.transfer]\nepochs = "x"\n',
        "{path}: [eval.transfer] epochs must be an integer, got 'x'",
    ),
    (
        BASE + "[eval.transfer]\nattacks = 5\n",
        "{path}: [eval.transfer]: 'attacks' must be a list of names (strings), got 5",
    ),
    (BASE + "[method]\ndgad = 5\n", "{path}: [method.dgad] must be a table, got 5"),
    (BASE + "[method.dgad]\ntrain = 5\n", "{path}: [method.dgad.train] must be a table, got 5"),
    (
        BASE + "[method.dgad.student]\ntiny_cnn = 5\n",
        "{path}: [method.dgad.student.tiny_cnn] must be a table, got 5",
    ),
    (
        '"a\\nb" = 1\n' + BASE,
        "{path}: unknown key(s) a\\nb; valid: dataset, dataset_options, description, "
        "deterministic, eval, method, methods, seeds, select_on, slurm, students, teacher, "
        "teachers, threat, train, variant",
    ),
]


@pytest.mark.parametrize(("text", "message"), FUZZ_FOUND)
def test_fuzz_found_grids_give_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_grid(path, epochs=1)
    assert str(info.value) == message.format(path=path)


def test_transfer_surrogates_are_checked_at_load(tmp_path):
    with pytest.raises(UserError, match=r"^unknown model 'resnet19'; valid models: "):
        load_grid(write(tmp_path, BASE + '[eval.transfer]\nsurrogates = ["resnet19"]\n'))


def test_grid_name_too_long_for_the_file_system():
    with pytest.raises(UserError) as info:
        load_grid("a" * 300)
    assert str(info.value) == f"grid {'a' * 300!r}: File name too long"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'mypgd = { attack = "pgd", stepz = 3 }',
            "eval attack 'mypgd': unknown parameter(s) stepz for attack 'pgd'; valid:",
        ),
        ('aa = { attack = "autoattack", version = "fast" }', "eval attack 'aa': "),
        ('x = { attack = "nope" }', "unknown attack 'nope'"),
    ],
)
def test_eval_attack_parameters_are_checked_when_the_grid_loads(tmp_path, table, message):
    """Not hours later, when the first run finishes training."""
    path = write(tmp_path, BASE + f"[eval.attacks]\n{table}\n")
    with pytest.raises(UserError) as info:
        load_grid(str(path))
    assert message in str(info.value) and "\n" not in str(info.value)


SMALL = """
dataset = "digits"
students = ["tiny_cnn"]
methods = ["pgd-at"]
"""
RULE = (
    "is not a valid name: use letters, digits, '-', '_' and '.', starting with a letter, a "
    "digit or '_', at most 48 characters"
)


def variant(name: str) -> str:
    return SMALL.replace('"pgd-at"]', f'"{name}"]') + f'[variant."{name}"]\nmethod = "pgd-at"\n'


@pytest.mark.parametrize(
    "text, message",
    [
        (variant("../../../x"), "variant name '../../../x' "),
        (variant("/tmp/x"), "variant name '/tmp/x' "),
        (variant("a\\nb"), "variant name 'a\\nb' "),
        (variant(".hidden"), "variant name '.hidden' "),
        (variant("v" * 49), f"variant name '{'v' * 49}' "),
        (
            SMALL.replace("pgd-at", "ard")
            + 'teachers = ["../../T"]\n[teacher."../../T"]\nmodel = "tiny_cnn"\n'
            'train = { method = "pgd-at" }\n',
            "teacher name '../../T' ",
        ),
        (
            SMALL + '[eval.attacks."../../../tmp/x"]\nattack = "fgsm"\n',
            "[eval.attacks] name '../../../tmp/x' ",
        ),
    ],
)
def test_names_that_would_leave_the_store_are_refused(tmp_path, text, message):
    """A name that becomes a path is checked when the grid loads, before anything is written."""
    with pytest.raises(UserError) as info:
        load_grid(write(tmp_path, text))
    assert message + RULE in str(info.value) and "\n" not in str(info.value)


def test_a_grid_file_name_is_a_name_too(tmp_path):
    with pytest.raises(UserError, match=r"grid name '\.g' is not a valid name"):
        load_grid(write(tmp_path, SMALL, ".g.toml"))
    assert load_grid(write(tmp_path, SMALL, "my-grid_2.toml")).name == "my-grid_2"


@pytest.mark.parametrize(
    "seeds, ok",
    [
        ([0], True),
        ([2**31 - 1], True),
        ([-1], False),
        ([2**31], False),
        ([99999999999999999999], False),
    ],
)
def test_seeds_are_bounded(tmp_path, seeds, ok):
    """Seeds are 0 <= seed < 2**31 (every RNG takes them; the index holds them)."""
    path = write(tmp_path, SMALL)
    if ok:
        assert [r.config["seed"] for r in load_grid(path, seeds=seeds).runs] == seeds
        return
    with pytest.raises(UserError) as info:
        load_grid(path, seeds=seeds)
    assert str(info.value) == (
        f"seed {seeds[0]} is out of range: seeds are integers in [0, 2147483647]"
    )


@pytest.mark.parametrize(
    "table, message",
    [
        ("[train]\nepochs = 100001", "[train] epochs must be <= 100000, got 100001"),
        ("[train]\nbatch_size = 2147483648", "[train] batch_size must be <= 2147483647"),
        ("[train]\nmilestones = [10000000]", "[train] milestones must be <= 100000"),
        ("[threat]\nsteps = 100001", "[threat] steps must be in [0, 100000], got 100001"),
    ],
)
def test_integers_are_bounded(tmp_path, table, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_grid(write(tmp_path, SMALL + table))
    with pytest.raises(UserError, match=r"--epochs must be in \[1, 100000\], got 100001"):
        load_grid(write(tmp_path, SMALL), epochs=100001)
