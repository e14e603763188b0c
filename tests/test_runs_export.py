"""``bench runs`` (every run, across grids, bench eval's too), ``bench show`` of an
evaluation-only run, ``bench compare A B`` and ``bench export`` (the documented JSON schema)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import harness
from harness.publishing import export as ex
from harness.store.store import Store
from tests.helpers import bench
from tests.tiny_grid import tiny_grid

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).resolve().parent.parent / "README.md"


def fake_run(store, run_id, method, grid, acc, hparams=None, kind="student"):
    config = {
        "kind": kind,
        "method": {"name": method, "hparams": {"eps": 8 / 255, **(hparams or {})}},
        "dataset": {"name": "cifar10", "options": {}},
        "model": "resnet18",
        "teacher": {"name": "wrn", "model": "wrn34_10", "source": "robustbench"},
        "seed": 0,
        "train": {"epochs": 200, "seed": 0, "select_on": "val"},
        "full_epochs": 200,
        "schedule": "full",
        "grids": [grid],
    }
    store.begin(run_id, config)
    results = {k: {"accuracy": v / 100, "n": 100, "params": {"name": k}} for k, v in acc.items()}
    store.finish(
        run_id,
        {
            "results": results,
            "checks": {"ordering": {"ok": True}},
            "provenance": {"code": "abc", "packages": {"torch": "2.11"}, "device": "cuda"},
            "wall_time_s": 10.0,
        },
    )


@pytest.fixture
def store(tmp_path, capsys):
    """Runs of two grids, and a checkpoint evaluated with ``bench eval``."""
    st = Store(tmp_path / "store")
    fake_run(st, "dgad-a-1", "dgad", "g", {"clean": 80.0, "pgd10": 50.0, "autoattack": 45.0})
    fake_run(st, "dgad-b-2", "dgad", "g", {"clean": 85.0, "pgd10": 49.0}, {"gamma": 10.0})
    fake_run(st, "trades-c-3", "trades", "other", {"clean": 82.0, "pgd10": 51.0})
    tiny_grid(tmp_path, ["pgd-at"])  # writes tiny.npz
    net = harness.create_model("tiny_cnn", num_classes=2, image_size=8)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "mine.pt")
    code, out, err = bench(
        capsys, "eval", str(tmp_path / "mine.pt"), "--model", "tiny_cnn", "--dataset",
        f"npz:{tmp_path / 'tiny.npz'}", "--attack", "clean", "--attack", "fgsm",
        "--store", str(st.root), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    (eval_id,) = [r for r in st.run_ids() if r.startswith("eval-")]
    return st, eval_id


def rows_of(out: str) -> dict[str, list[str]]:
    """``bench runs``'s table: run id → its cells."""
    lines = [line for line in out.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_runs_lists_every_run_across_grids_with_filters(store, capsys):
    st, eval_id = store
    code, out, _ = bench(capsys, "runs", "--store", str(st.root))
    rows = rows_of(out)
    assert code == 0 and set(rows) == {"dgad-a-1", "dgad-b-2", "trades-c-3", eval_id}
    assert rows[eval_id]["grid"] == "— (bench eval)" and rows[eval_id]["kind"] == "checkpoint"
    assert rows[eval_id]["model"] == "tiny_cnn" and rows[eval_id]["dataset"] == "npz"
    assert rows["dgad-a-1"]["clean"] == "80.00" and rows["dgad-a-1"]["AA"] == "45.00"
    assert rows["dgad-b-2"]["AA"] == "—" and rows["trades-c-3"]["grid"] == "other"
    assert out.strip().endswith("4 run(s)")
    _, out, _ = bench(capsys, "runs", "--grid", "g", "--store", str(st.root))
    assert set(rows_of(out)) == {"dgad-a-1", "dgad-b-2"}
    _, out, _ = bench(capsys, "runs", "--method", "checkpoint", "--store", str(st.root))
    assert set(rows_of(out)) == {eval_id}
    _, out, _ = bench(capsys, "runs", "--grid", "g", "--method", "trades", "--store", str(st.root))
    assert out.strip() == "0 run(s)"


def test_show_an_evaluation_only_run(store, capsys):
    """Once ``KeyError: 'select_on'``."""
    st, eval_id = store
    code, out, err = bench(capsys, "show", eval_id, "--store", str(st.root))
    assert code == 0, err
    assert "schedule   none: evaluation only (checkpoint: path " in out
    assert re.search(r"fgsm\s+\d+\.\d\d%  \(n=16\)", out)


def test_compare_marks_what_differs(store, capsys):
    st, _ = store
    code, out, err = bench(capsys, "compare", "dgad-a", "dgad-b", "--store", str(st.root))
    assert code == 0, err
    lines = out.splitlines()

    def line(key: str) -> list[str]:
        (found,) = [row.split() for row in lines if key in row.split()]
        return found

    assert line("method.hparams.gamma") == ["≠", "method.hparams.gamma", "—", "10"]
    assert line("method.hparams.eps") == ["method.hparams.eps", "8/255", "8/255"]
    assert line("clean") == ["≠", "clean", "80.00", "85.00", "+5.00"]
    assert line("autoattack") == ["≠", "autoattack", "45.00", "—", "—"]
    assert "config: 1 of" in out
    code, _, err = bench(capsys, "compare", "dgad", "nope", "--store", str(st.root))
    assert code == 2 and "ambiguous" in err


def test_export_writes_one_valid_file_per_run(store, capsys, tmp_path):
    st, eval_id = store
    out_dir = tmp_path / "exported"
    code, out, err = bench(
        capsys, "export", "--grid", "g", "--store", str(st.root), "--output", str(out_dir)
    )
    assert code == 0, err
    files = sorted(out_dir.rglob("*.json"))
    assert [f.relative_to(out_dir).as_posix() for f in files] == [
        "cifar10/Linf/dgad-a-1.json",
        "cifar10/Linf/dgad-b-2.json",
    ]
    entry = json.loads(files[0].read_text())
    assert ex.validate(entry) == []
    assert entry["clean_acc"] == 80.0 and entry["autoattack_acc"] == 45.0
    assert entry["results"]["pgd10"] == {"accuracy": 50.0, "n": 100, "params": {"name": "pgd10"}}
    assert entry["eps"] == pytest.approx(8 / 255) and entry["threat_model"] == "Linf"
    assert entry["teacher"] == {"name": "wrn", "model": "wrn34_10", "source": "robustbench"}
    assert entry["provenance"]["stale"] is False and entry["checks"] == {"ordering": True}
    second = json.loads(files[1].read_text())
    assert second["autoattack_acc"] is None and second["hparams"]["gamma"] == 10.0
    code, _, _ = bench(capsys, "export", eval_id, "--store", str(st.root), "--output", str(out_dir))
    evaluated = json.loads((out_dir / "npz" / "Linf" / f"{eval_id}.json").read_text())
    assert code == 0 and ex.validate(evaluated) == [] and evaluated["seed"] is None
    assert evaluated["kind"] == "checkpoint" and evaluated["architecture"] == "tiny_cnn"
    code, _, err = bench(capsys, "export", "--grid", "nope", "--store", str(st.root))
    assert code == 2 and err.startswith("error: no complete student run of grid nope")


def test_export_writes_all_files_or_none(store, capsys, tmp_path):
    """A file where the second run's data set folder goes: one line, exit code 2, and not the
    first run's file either (it was written, found by the fuzz); cleared, both are written."""
    st, eval_id = store
    out_dir = tmp_path / "exported"
    out_dir.mkdir()
    (out_dir / "npz").write_text("in the way\n")  # eval_id's folder; dgad-a-1 (cifar10) first
    args = ["export", "dgad-a-1", eval_id, "--store", str(st.root), "--output", str(out_dir)]
    code, out, err = bench(capsys, *args)
    assert code == 2 and err.startswith(f"error: cannot write {out_dir / 'npz'}") and not out
    assert len(err.splitlines()) == 1
    assert sorted(p.name for p in out_dir.rglob("*") if p.is_file()) == ["npz"]  # no .tmp
    (out_dir / "npz").unlink()
    code, out, err = bench(capsys, *args)
    assert code == 0 and out.endswith(f"2 run(s) exported to {out_dir}\n"), err
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.json")) == [
        "cifar10/Linf/dgad-a-1.json",
        f"npz/Linf/{eval_id}.json",
    ]


def test_validate_finds_what_breaks_the_schema(store):
    st, _ = store
    good = ex.entry(st, "dgad-a-1")
    assert ex.validate(good) == []
    assert ex.validate({**good, "clean_acc": "80.00"})  # a number as a string
    assert ex.validate({**good, "seed": True})
    assert ex.validate({k: v for k, v in good.items() if k != "run_id"})
    bad = json.loads(json.dumps(good))
    bad["results"]["clean"]["accuracy"] = 0.8 * 1000
    assert ex.validate(bad)


def test_readme_documents_every_exported_field():
    text = README.read_text()
    section = text.split("### Exporting results", 1)[1].split("\n#", 1)[0]
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", section, flags=re.M))
    expected = set(ex.FIELDS)
    expected |= {f"results.NAME.{k}" for k in ex.RESULT_FIELDS}
    expected |= {f"schedule.{k}" for k in ex.SCHEDULE_FIELDS}
    expected |= {f"provenance.{k}" for k in ex.PROVENANCE_FIELDS}
    assert documented == expected
