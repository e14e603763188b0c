"""``bench report --paper dgad``: the published numbers, the cell → run mapping, and the report
built from a fabricated store (ours beside the paper's, marks, DGAD − best other, --missing).

Pure bookkeeping: grids are loaded, runs are written with fixed metrics; nothing is trained.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.grid.load import Grid, RunSpec, load_grid
from harness.publishing import report as rp
from harness.store.store import Store
from harness.utils.values import config_hash

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "reports" / "dgad" / "tables.toml"
#: The paper's tables as typed from its text (a Markdown file kept outside the repository):
#: the numbers in tables.toml are checked against it when $BENCH_PAPER_TABLES names it.
PAPER_MD = os.environ.get("BENCH_PAPER_TABLES")
WHITEBOX = ["clean", "fgsm", "pgd10", "cw2", "autoattack"]

_GRIDS: dict[str, Grid] = {}


def grid(name: str) -> Grid:
    if name not in _GRIDS:
        _GRIDS[name] = load_grid(name)
    return _GRIDS[name]


def spec_of(grid_name: str, method: str, student: str, teacher: str | None) -> RunSpec:
    hits = [
        r
        for r in grid(grid_name).runs
        if (r.config["method"].get("variant") or r.config["method"]["name"]) == method
        and r.config["model"] == student
        and (r.config["teacher"] or {}).get("name") == teacher
    ]
    assert len(hits) == 1, (grid_name, method, student, teacher, len(hits))
    return hits[0]


def tables_toml() -> dict:
    with open(TABLES, "rb") as fh:
        return tomllib.load(fh)


def finish(store: Store, spec: RunSpec, acc: dict[str, float], failed: tuple[str, ...] = ()):
    """A completed run with the given accuracies (in %) and reliability checks."""
    store.begin(spec.run_id, spec.config)
    results = {k: {"accuracy": v / 100, "n": 10000, "params": {"name": k}} for k, v in acc.items()}
    checks = {name: {"ok": name not in failed} for name in ("ordering", "eps_sweep")}
    store.finish(spec.run_id, {"results": results, "checks": checks})


def whitebox(*values: float) -> dict[str, float]:
    return dict(zip(WHITEBOX, values))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


# -- the published numbers ------------------------------------------------------------------------
def _number(text: str) -> float | None:
    t = text.strip().replace("−", "-").replace("+", "")
    return float(t) if re.fullmatch(r"-?\d+(\.\d+)?", t) else None


def parse_paper_md(path: Path) -> dict[str, list[tuple[list[str], list[float]]]]:
    """``## Table N`` → its markdown table's rows as (text cells, numbers), header dropped."""
    out: dict[str, list[tuple[list[str], list[float]]]] = {}
    current = None
    for line in path.read_text().splitlines():
        m = re.match(r"## Table (\d+)", line)
        if m:
            current = m.group(1)
            out[current] = []
            continue
        if current is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r"-+", c) for c in cells):
            continue
        nums = [_number(c) for c in cells]
        if not any(n is not None for n in nums):
            continue  # the header
        out[current].append(
            ([c for c, n in zip(cells, nums) if n is None], [n for n in nums if n is not None])
        )
    return out


def toml_rows(table: dict) -> list[tuple[str, str, list[float]]]:
    """(block, label, numbers) in the paper's order; printed deltas after their block's rows."""

    def flat(values: list) -> list[float]:
        return [x for v in values for x in v] if isinstance(values[0], list) else list(values)

    printed = {d.get("block", ""): d for d in table.get("printed_delta", [])}
    rows = table["rows"]
    out = []
    for i, row in enumerate(rows):
        block = row.get("block", "")
        out.append((block, row["label"], flat(row["paper"])))
        last = i + 1 == len(rows) or rows[i + 1].get("block", "") != block
        if last and block in printed:
            out.append((block, "(printed delta)", flat(printed[block]["paper"])))
    return out


def test_published_numbers_equal_paper_tables_md():
    if not PAPER_MD or not Path(PAPER_MD).is_file():
        pytest.skip("set BENCH_PAPER_TABLES to the paper's tables (Markdown) to compare")
    path = Path(PAPER_MD)
    md = parse_paper_md(path)
    spec = tables_toml()
    assert sorted(md) == sorted(str(t["id"]) for t in spec["tables"]) == list("12345678")
    for table in spec["tables"]:
        tid = str(table["id"])
        ours = toml_rows(table)
        theirs = md[tid]
        assert len(ours) == len(theirs), f"table {tid}: {len(ours)} rows vs {len(theirs)}"
        for (block, label, numbers), (texts, published) in zip(ours, theirs):
            where = f"table {tid}, {block} {label}"
            assert numbers == published, where
            if label == "(printed delta)":
                assert "best other (printed)" in texts[-1], where
            else:
                assert texts[-1] == label, where
                if block:
                    assert texts[0] == block, where


def test_paper_numbers_have_the_shape_of_their_columns():
    for table in tables_toml()["tables"]:
        groups = table.get("groups") or [{}]
        for row in table["rows"]:
            values = row["paper"] if isinstance(row["paper"][0], list) else [row["paper"]]
            assert len(values) == len(groups)
            for v, g in zip(values, groups):
                assert len(v) == len(g.get("columns", table.get("columns"))), row["label"]


# -- which run fills each cell --------------------------------------------------------------------
def test_every_cell_selects_exactly_one_run_of_its_grid(tmp_path):
    spec = tables_toml()
    reports = {t.id: t for t in rp.build_reports(Store(tmp_path))}
    for table in spec["tables"]:
        if table.get("kind") == "teachers":
            continue
        groups = table.get("groups") or [{}]
        built = reports[str(table["id"])]
        for row, built_row in zip(table["rows"], built.rows):
            for g, fill in zip(groups, built_row.fills):
                teacher = row.get("teacher", g.get("teacher"))
                teacher = None if teacher == "none" else teacher
                run = spec_of(table["grid"], row["method"], row["student"], teacher)
                assert fill.ref_ids == [run.run_id]
                assert not fill.filled


def test_named_cells_map_to_the_expected_runs(tmp_path):
    t4, t2, t7, t8 = (rp.build_report(i, Store(tmp_path)) for i in ("4", "2", "7", "8"))
    dgad = spec_of("cifar10", "dgad", "resnet18", "wrn34-10")
    assert dgad.run_id.startswith("dgad-cifar10-resnet18-wrn34-10-s0-")
    assert t4.row("DGAD", "ResNet-18").fills[0].ref_ids == [dgad.run_id]
    assert t4.row("DGAD", "ResNet-18").fills[0].command == (
        "bench run --grid cifar10 --method dgad --student resnet18 --teacher wrn34-10"
    )
    # teacher-free: one run stands in both teacher columns
    pgdat = spec_of("cifar10", "pgd-at", "resnet18", None)
    assert [f.ref_ids for f in t4.row("PGD-AT", "ResNet-18").fills] == [[pgdat.run_id]] * 2
    assert t4.row("PGD-AT", "ResNet-18").fills[0].command == (
        "bench run --grid cifar10 --method pgd-at --student resnet18"
    )
    # shared runs: Table 2's DGAD, Table 7's rows and Table 8's PGD-AT are Table 4's runs
    assert t2.row("+ MAP + ELS(x) + ELS(x') + PCR (DGAD)").fills[0].ref_ids == [dgad.run_id]
    assert t7.row("DGAD").fills[1].ref_ids == [dgad.run_id]
    assert t8.row("PGD-AT").fills[0].ref_ids == [pgdat.run_id]
    assert t7.row("DGAD").fills[1].command.startswith("bench run --grid transfer ")


def test_table1_cells_are_the_grids_teachers(tmp_path):
    from harness.execution.external import external_config

    rows = next(t for t in tables_toml()["tables"] if t.get("kind") == "teachers")["rows"]
    t1 = rp.build_report("1", Store(tmp_path))
    for row, built in zip(rows, t1.rows):
        g = grid(row["grid"])
        tspec = g.raw["teacher"][row["teacher"]]
        fill = built.fills[0]
        assert fill.command == row["command"], row["label"]
        if "robustbench" in tspec:
            config = external_config(
                "robustbench",
                tspec["robustbench"],
                {"robustbench": tspec["robustbench"]},
                {"name": g.raw["dataset"], "options": {}},
            )
            want = f"eval-{tspec['robustbench']}-{g.raw['dataset']}-{config_hash(config)}"
            assert fill.ref_ids == [want]
            assert fill.command.startswith(f"bench eval {tspec['robustbench']} --robustbench ")
        else:
            assert fill.ref_ids == [g.teacher_runs[row["teacher"]].run_id]
            assert g.teacher_runs[row["teacher"]].config["kind"] == "teacher"


# -- the report from a fabricated store -----------------------------------------------------------
def test_ours_paper_and_difference(tmp_path):
    store = Store(tmp_path)
    finish(store, spec_of("cifar10", "dgad", "resnet18", "wrn34-10"), whitebox(87, 62, 55, 78, 50))
    finish(store, spec_of("cifar10", "pgd-at", "resnet18", None), whitebox(83, 57, 53, 77, 47.5))
    t4 = rp.build_report(4, store)
    cell = t4.cell("DGAD", "clean", 0, "ResNet-18")
    assert (cell.ours, cell.paper, cell.diff, cell.marks) == (pytest.approx(87.0), 87.58, -0.58, "")
    assert t4.cell("DGAD", "fgsm", 0, "ResNet-18").diff == pytest.approx(0.28)
    assert t4.cell("DGAD", "clean", 1, "ResNet-18").state == "missing"
    # the teacher-free run fills both teacher columns
    assert t4.cell("PGD-AT", "autoattack", 1, "ResNet-18").diff == pytest.approx(-0.19)
    md = rp.render_markdown(t4)
    line = next(x for x in md.splitlines() if x.startswith("| ResNet-18") and "| DGAD " in x)
    assert "87.00 / 87.58 (−0.58)" in line
    assert "62.00 / 61.72 (+0.28)" in line
    assert "— / 85.75" in line  # WRN-34-20 column: no run
    assert "— no completed run" in md
    ard = next(x for x in md.splitlines() if x.startswith("| ResNet-18") and "| ARD " in x)
    assert ard.count("— / ") == 10


def test_seeds_are_averaged(tmp_path):
    store = Store(tmp_path)
    finish(store, spec_of("cifar10", "dgad", "resnet18", "wrn34-10"), whitebox(87, 62, 55, 78, 50))
    (seed1,) = load_grid(
        "cifar10", method="dgad", student="resnet18", teacher="wrn34-10", seeds=[1]
    ).runs
    finish(store, seed1, whitebox(88, 63, 56, 79, 51))
    cell = rp.build_report("4", store).cell("DGAD", "clean", 0, "ResNet-18")
    assert (cell.ours, cell.seeds) == (pytest.approx(87.5), 2)


def test_short_schedule_and_flags_are_marked(tmp_path):
    store = Store(tmp_path)
    (short,) = load_grid(
        "cifar10", method="ard", student="resnet18", teacher="wrn34-10", epochs=2
    ).runs
    assert short.config["schedule"] == "short"
    finish(store, short, whitebox(40, 20, 18, 30, 15))
    adaad = spec_of("cifar10", "adaad", "resnet18", "wrn34-10")
    finish(store, adaad, whitebox(86, 60, 54, 78, 50), failed=("ordering",))
    pgdat = spec_of("cifar10", "pgd-at", "resnet18", None)
    finish(store, pgdat, whitebox(83, 57, 53, 77, 47.5), failed=("eps_sweep",))
    t4 = rp.build_report("4", store)
    ard = t4.row("ARD", "ResNet-18")
    assert ard.fills[0].short and ard.fills[0].runs == [short.run_id]
    assert ard.cells[0][0].marks == "†" and ard.cells[0][0].ours == pytest.approx(40.0)
    assert t4.cell("AdaAD", "clean", 0, "ResNet-18").marks == "‡"
    md = rp.render_markdown(t4)
    assert "40.00† / 84.04 (−44.04)" in md
    assert "- † ResNet-18 · ARD · WRN-34-10: 2 epochs, a shorter schedule than the paper's" in md
    assert "(the paper: 200)" in md
    assert "86.00‡ / 86.75 (−0.75)" in md
    assert "- ‡ ResNet-18 · AdaAD · WRN-34-10: failed reliability check(s): ordering." in md
    # the teacher-free run fills both teacher columns, marked in both, noted once
    assert [c.marks for cs in t4.row("PGD-AT", "ResNet-18").cells for c in cs] == ["‡"] * 10
    assert md.count("- ‡ ResNet-18 · PGD-AT: failed reliability check(s): eps_sweep.") == 1
    # once the full-schedule run is complete, it alone fills the cell
    finish(store, spec_of("cifar10", "ard", "resnet18", "wrn34-10"), whitebox(84, 58, 52, 75, 48))
    cell = rp.build_report("4", store).cell("ARD", "clean", 0, "ResNet-18")
    assert (cell.ours, cell.marks, cell.seeds) == (pytest.approx(84.0), "", 1)


def test_pgdat_at_its_own_110_epochs_is_not_short(tmp_path):
    store = Store(tmp_path)
    pgdat = spec_of("cifar10", "pgd-at", "resnet18", None)
    assert pgdat.config["train"]["epochs"] == 110
    finish(store, pgdat, whitebox(83, 57, 53, 77, 47.5))
    assert rp.build_report("4", store).cell("PGD-AT", "clean", 0, "ResNet-18").marks == ""


def test_dgad_minus_best_other(tmp_path):
    store = Store(tmp_path)
    # Table 6: DGAD beats the best other row by +0.50 in Clean, loses by −1.00 in FGSM
    numbers = {
        "ard": whitebox(41.0, 24.0, 23.0, 37.0, 17.0),
        "rslad": whitebox(40.0, 25.0, 22.0, 38.0, 16.0),
        "adaad": whitebox(47.5, 24.5, 23.5, 42.0, 17.5),
        "dgad": whitebox(48.0, 24.0, 23.25, 42.5, 17.5),
    }
    for method, acc in numbers.items():
        finish(store, spec_of("tinyimagenet", method, "resnet18", "preact-trades"), acc)
    t6 = rp.build_report("6", store)
    delta = t6.delta()
    assert delta.ours[0] == pytest.approx([0.5, -1.0, -0.25, 0.5, 0.0])
    # the paper's own numbers: 47.92 − 47.54, 24.42 − 24.47, 23.05 − 23.30, 42.81 − 42.79, ...
    assert delta.paper[0] == pytest.approx([0.38, -0.05, -0.25, 0.02, -0.23])
    assert delta.printed is None
    md = rp.render_markdown(t6)
    assert "| DGAD − best other (ours / paper) | +0.50 / +0.38 (+0.12) |" in md.replace("  ", "")


def test_printed_delta_beside_ours_and_the_papers_own(tmp_path):
    store = Store(tmp_path)
    block = {
        "pgd-at": whitebox(82, 57, 52, 77, 47),
        "trades": whitebox(83, 58, 53, 76, 49),
        "ard": whitebox(84, 58, 52, 75, 48),
        "iad": whitebox(83, 57, 53, 76, 48),
        "rslad": whitebox(83, 57, 52, 76, 48),
        "akd": whitebox(84, 59, 53, 77, 48),
        "adaad": whitebox(86, 60, 54, 78, 50),
        "dgad": whitebox(87, 61.5, 55, 77.5, 50.5),
    }
    for method, acc in block.items():
        teacher = None if method in ("pgd-at", "trades") else "wrn34-10"
        finish(store, spec_of("cifar10", method, "resnet18", teacher), acc)
    t4 = rp.build_report("4", store)
    r18 = t4.delta("ResNet-18")
    assert r18.ours[0] == pytest.approx([1.0, 1.5, 1.0, -0.5, 0.5])
    assert r18.ours[1] == [None] * 5  # the WRN-34-20 column has no runs yet
    assert r18.printed[0] == [0.83, 1.35, 1.16, 0.17, 0.53]
    mobile = t4.delta("MobileNetV2")
    assert mobile.paper[1][1] == pytest.approx(61.20 - 58.29)  # printed: +3.49
    md = rp.render_markdown(t4).replace("  ", "")
    lines = md.splitlines()
    ours_row = next(x for x in lines if "ResNet-18 | DGAD − best other (ours / printed)" in x)
    assert "| +1.00 / +0.83 (+0.17) |" in ours_row
    assert "| −0.50 / +0.17 (−0.67) |" in ours_row
    assert "| — / +0.17 |" in ours_row  # WRN-34-20 Clean: not computable, printed beside it
    own = next(x for x in lines if "MobileNetV2 | DGAD − best other (the paper's own numbers)" in x)
    assert "+2.91*" in own and "+0.39 |" in own
    assert "printed value is not DGAD minus the best other" in md


def test_missing_and_failed_and_not_evaluated(tmp_path, capsys):
    store = Store(tmp_path)
    tiny = {m: spec_of("tinyimagenet", m, "resnet18", "preact-trades") for m in ("ard", "dgad")}
    finish(store, tiny["ard"], whitebox(41, 24, 23, 37, 17))
    finish(store, tiny["dgad"], {"clean": 48.0, "fgsm": 24.0, "pgd10": 23.0, "cw2": 42.0})
    rslad = spec_of("tinyimagenet", "rslad", "resnet18", "preact-trades")
    store.begin(rslad.run_id, rslad.config)
    store.fail(rslad.run_id, "loss became nan")
    t6 = rp.build_report("6", store)
    assert t6.cell("DGAD", "autoattack").state == "not_evaluated"
    md = rp.render_markdown(t6)
    assert "n/e / 17.18" in md
    assert "- — RSLAD: 1 failed." in md
    args = ["report", "--paper", "dgad", "--table", "6", "--missing", "--store", str(tmp_path)]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    commands = [x for x in out.splitlines() if not x.startswith("#")]
    assert commands == [
        "bench run --grid tinyimagenet --method rslad --student resnet18 --teacher preact-trades",
        "bench run --grid tinyimagenet --method adaad --student resnet18 --teacher preact-trades",
        f"bench eval {tiny['dgad'].run_id} --attack autoattack",
    ]


def test_missing_lists_exactly_the_unfilled_cells(tmp_path, capsys):
    store = Store(tmp_path)
    filled = {("dgad", "resnet18", "wrn34-10"), ("pgd-at", "mobilenet_v2", None)}
    for cell in filled:
        finish(store, spec_of("cifar10", *cell), whitebox(80, 60, 50, 70, 45))
    (short,) = load_grid(
        "cifar10", method="iad", student="resnet18", teacher="wrn34-20", epochs=5
    ).runs
    finish(store, short, whitebox(50, 30, 25, 40, 20))
    expected = []
    for row in next(t for t in tables_toml()["tables"] if str(t["id"]) == "4")["rows"]:
        for teacher in ("wrn34-10", "wrn34-20"):
            t = None if row.get("teacher") == "none" else teacher
            key = (row["method"], row["student"], t)
            command = (
                f"bench run --grid cifar10 --method {row['method']} --student {row['student']}"
            )
            command += f" --teacher {t}" if t else ""
            short_only = key == ("iad", "resnet18", "wrn34-20")
            if key not in filled and not short_only and command not in expected:
                expected.append(command)
    code, out, err = cli(
        capsys, "report", "--paper", "dgad", "--table", "4", "--missing", "--store", str(tmp_path)
    )
    assert code == 0, err
    lines = out.splitlines()
    cut = lines.index("# cells filled only by shorter-schedule runs; the paper's schedule:")
    empty = [x for x in lines[:cut] if not x.startswith("#")]
    assert empty == expected and len(expected) == 25
    assert lines[cut + 1 :] == [
        "bench run --grid cifar10 --method iad --student resnet18 --teacher wrn34-20"
    ]
    assert lines[0] == "# Table 4 — CIFAR-10: 25 missing run(s)"


def test_missing_across_tables_lists_a_run_once(tmp_path, capsys):
    code, out, _ = cli(
        capsys, "report", "--paper", "dgad", "--all", "--missing", "--store", str(tmp_path / "s")
    )
    assert code == 0
    commands = [x for x in out.splitlines() if not x.startswith("#")]
    assert len(commands) == len(set(commands))
    # Table 7's runs are Table 4's (and Table 2's): no `--grid transfer` command is needed
    assert not [c for c in commands if "--grid transfer" in c]
    assert "bench eval Chen2021LTD_WRN34_20 --robustbench --dataset cifar10" in commands
    assert not (tmp_path / "s").exists()  # reading a report writes nothing


def test_table1_from_eval_and_teacher_runs(tmp_path):
    from harness.execution.external import external_config

    store = Store(tmp_path)
    config = external_config(
        "robustbench",
        "Chen2021LTD_WRN34_20",
        {"robustbench": "Chen2021LTD_WRN34_20"},
        {"name": "cifar10", "options": {}},
    )
    run_id = f"eval-Chen2021LTD_WRN34_20-cifar10-{config_hash(config)}"
    store.begin(run_id, config)
    store.finish(run_id, {"results": {"clean": {"accuracy": 0.8603, "n": 10000}}})
    teacher = grid("selfdistill").teacher_runs["resnet18-trades"]
    finish(store, teacher, whitebox(82.0, 59.0, 53.0, 77.0, 49.0))
    t1 = rp.build_report("1", store)
    row = t1.row("WideResNet-34-20 (LTD, RobustBench `Chen2021LTD_WRN34_20`)")
    assert row.fills[0].runs == [run_id]
    assert row.cells[0][0].diff == 0.0 and row.cells[0][1].state == "not_evaluated"
    assert t1.cell("ResNet-18 (TRADES)", "clean").diff == pytest.approx(-0.94)
    assert t1.cell("PreActResNet-18 (TRADES)", "clean").state == "missing"
    assert "86.03 / 86.03 (+0.00)" in rp.render_markdown(t1)


def test_cli_report_and_errors(tmp_path, capsys):
    store = Store(tmp_path)
    finish(store, spec_of("cifar10", "dgad", "resnet18", "wrn34-10"), whitebox(87, 62, 55, 78, 50))
    code, out, _ = cli(
        capsys, "report", "--paper", "dgad", "--table", "4", "--store", str(tmp_path)
    )
    assert code == 0
    assert "## Table 4 — CIFAR-10" in out and "87.00 / 87.58 (−0.58)" in out
    assert "## Table 5" not in out
    for args, message in [
        (("--paper", "nope"), "error: unknown paper 'nope'; valid: dgad"),
        (("--paper", "dgad", "--table", "9"), "error: unknown table '9' of paper dgad"),
        (("--paper", "dgad", "--table", "4", "--all"), "error: give --table N or --all"),
    ]:
        code, out, err = cli(capsys, "report", *args, "--store", str(tmp_path))
        assert code == 2 and out == ""
        assert err.startswith(message) and err.count("\n") == 1
