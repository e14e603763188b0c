"""Training curves: TensorBoard logging of every epoch (when asked for and installed), ``bench
show RUN --plot`` as SVG or PNG, and the HTML leaderboard's per-row curves."""

from __future__ import annotations

import re
import sys

import pytest

import harness.training.curves as curves
from harness.cli import main
from harness.publishing.curves import accuracy_keys, curves_svg, write_plot
from harness.publishing.html import render_html, training_curves
from harness.publishing.leaderboard import leaderboard_tables
from harness.utils.errors import UserError
from tests.test_html import GRID, WHEN, fabricate_store
from tests.test_train import run

HISTORY = [
    {"epoch": 0, "lr": 0.1, "train_loss": 2.0, "val_clean": 0.30, "val_pgd10": 0.10,
     "epoch_time_s": 1.0, "images_per_s": 100.0},
    {"epoch": 1, "lr": 0.1, "train_loss": 1.5, "val_clean": 0.50, "val_pgd10": 0.20,
     "epoch_time_s": 1.0, "images_per_s": 110.0},
    {"epoch": 2, "lr": 0.01, "train_loss": 1.0, "val_clean": 0.60, "val_pgd10": 0.30,
     "epoch_time_s": 1.0, "images_per_s": 120.0},
]  # fmt: skip


def test_scalars_name_each_value_of_an_epoch():
    assert curves.scalars({**HISTORY[1], "train_kd_adv": 0.25}) == {
        "lr": 0.1,
        "train/loss": 1.5,
        "train/kd_adv": 0.25,
        "val/clean": 0.50,
        "val/pgd10": 0.20,
        "speed/images_per_s": 110.0,
    }


class FakeWriter:
    """``SummaryWriter``'s calls the harness makes, recorded."""

    made: list[FakeWriter] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_every_epoch_of_a_training_reaches_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setattr(curves, "summary_writer", lambda: FakeWriter)
    FakeWriter.made = []
    log = curves.epoch_log(tmp_path / "run", {"BENCH_LOG": "tensorboard"})
    losses = []
    from harness.training import train as train_module

    real = train_module.train

    def train(*a, **kw):
        result = real(*a, **kw, on_epoch=log)
        losses.extend(r["train_loss"] for r in result.history)
        return result

    monkeypatch.setattr("tests.test_train.train", train)
    _, result = run(tmp_path / "k", epochs=2)
    log.close()
    (writer,) = FakeWriter.made
    assert writer.log_dir == str(tmp_path / "run" / "tensorboard") and writer.closed
    by_tag = {}
    for tag, value, step in writer.scalars:
        by_tag.setdefault(tag, []).append((step, value))
    assert by_tag["train/loss"] == [(1, losses[0]), (2, losses[1])]
    assert by_tag["val/pgd2"] == [(e + 1, r["val_pgd2"]) for e, r in enumerate(result.history)]
    assert [v for _, v in by_tag["lr"]] == [r["lr"] for r in result.history]


def test_no_logger_asked_for_writes_nothing(tmp_path):
    log = curves.epoch_log(tmp_path, {})
    log(HISTORY[0])
    log.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="BENCH_LOG: unknown logger"):
        curves.epoch_log(tmp_path, {"BENCH_LOG": "wandb"})


def test_tensorboard_missing_is_one_line_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setenv("BENCH_LOG", "")
    with pytest.raises(SystemExit) as info:
        main(["run", "--grid", "smoke", "--log", "tensorboard", "--store", str(tmp_path / "s")])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --log tensorboard needs tensorboard: pip install 'adv-distill-bench[tensorboard]'"
    ]
    assert not (tmp_path / "s").exists()


def polylines(svg: str) -> list[list[tuple[float, float]]]:
    return [
        [tuple(map(float, p.split(","))) for p in m.split()]
        for m in re.findall(r'points="([^"]+)"', svg)
    ]


def test_svg_draws_loss_and_accuracy_per_epoch():
    assert accuracy_keys(HISTORY) == ["val_clean", "val_pgd10"]
    svg = curves_svg({"run": HISTORY})
    loss, pgd, clean = polylines(svg)
    assert [len(loss), len(pgd), len(clean)] == [3, 3, 3]
    assert loss[0][1] < loss[1][1] < loss[2][1]  # the loss falls: y grows downwards
    assert pgd[0][1] > pgd[2][1] and clean[0][1] > clean[2][1]  # accuracy rises
    assert all(y > c for (_, y), (_, c) in zip(pgd, clean, strict=True))  # PGD below clean
    assert loss[0][0] < loss[2][0] and max(x for x, _ in loss) <= 320 < min(x for x, _ in pgd)
    assert "<title>run: val_pgd10</title>" in svg and 'stroke-dasharray="4 3"' in svg


def test_show_plot_writes_svg_and_refuses_what_it_cannot(tmp_path, capsys):
    from harness.store.store import Store
    from tests.test_store import config, metrics

    st = Store(tmp_path / "s")
    cfg = config(0)
    cfg["train"]["select_on"] = "val"
    st.begin("run-a", cfg)
    st.finish("run-a", {**metrics(0.8), "train": {"history": HISTORY}})
    st.begin("run-b", config(1))
    st.finish("run-b", metrics(0.7))
    out = tmp_path / "c.svg"
    main(["show", "run-a", "--plot", str(out), "--store", str(tmp_path / "s")])
    assert f"curves written to {out}" in capsys.readouterr().out
    assert out.read_text() == curves_svg({"run-a": HISTORY})
    for args, message in [
        (["run-b", "--plot", str(tmp_path / "b.svg")], "run run-b has no training epochs"),
        (["run-a", "--plot", str(tmp_path / "c.pdf")], "--plot writes .svg or .png, not 'c.pdf'"),
    ]:
        with pytest.raises(SystemExit) as info:
            main(["show", *args, "--store", str(tmp_path / "s")])
        assert info.value.code == 2
        assert capsys.readouterr().err.startswith(f"error: {message}")


def test_png_needs_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UserError) as info:
        write_plot({"r": HISTORY}, tmp_path / "c.png")
    assert str(info.value) == (
        "a .png plot needs matplotlib: pip install 'adv-distill-bench[plot]' (or write .svg)"
    )
    assert not (tmp_path / "c.png").exists()


def test_png_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    path = write_plot({"r": HISTORY}, tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_rows_link_their_curves(tmp_path):
    store = fabricate_store(tmp_path / "store")
    dgad = [r for r in store.run_ids() if r.startswith(("run0-", "run1-"))]
    for run_id in dgad:  # fabricated runs have no history; give two of them one
        metrics = store.metrics(run_id)
        store.finish(run_id, {**metrics, "train": {"history": HISTORY}})
    tables = leaderboard_tables(store, GRID)
    found = training_curves(store, tables)
    assert sorted(found) == sorted(dgad)
    page = render_html(tables, GRID, generated=WHEN, curves=found)
    links = re.findall(r'<a class="curves-link" href="#([^"]+)"', page)
    assert len(links) == 1  # one row: dgad on resnet18, both its seeds
    (figure,) = re.findall(rf'<figure class="curves" id="{links[0]}">(.*?)</figure>', page, re.S)
    assert "dgad" in figure and figure.count("<polyline") == 6  # 2 seeds x (loss, pgd, clean)
    assert "seed 0" in figure and "seed 1" in figure
    assert 'class="curves-link"' not in render_html(tables, GRID, generated=WHEN)


def test_browser_self_test_passes_with_curves(chromium, tmp_path):
    """The page with curves still lays out, sorts and fits in a real Chromium."""
    from tests.test_html import run_chromium

    store = fabricate_store(tmp_path / "store")
    for run_id in store.run_ids():
        if run_id.startswith("run"):
            store.finish(run_id, {**store.metrics(run_id), "train": {"history": HISTORY}})
    tables = leaderboard_tables(store, GRID)
    target = tmp_path / "board.html"
    target.write_text(
        render_html(
            tables, GRID, generated=WHEN, self_test=True, curves=training_curves(store, tables)
        )
    )
    proc = run_chromium(chromium, tmp_path, target, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r'<body[^>]*\sdata-selftest="([^"]*)"', proc.stdout)
    assert match and match.group(1) == "ok", (match and match.group(1), proc.stderr[-2000:])
    assert proc.stdout.count('class="curves-link"') == sum(len(t.rows) for t in tables)
