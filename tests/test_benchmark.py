"""benchmarks/throughput.py runs on the CPU at tiny sizes, so it cannot rot between GPU runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """A benchmarks/ script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def throughput():
    return load_script("throughput")


@pytest.fixture(scope="module")
def report(throughput, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["--device", "cpu", "--methods", "pgd-at", "dgad", "--pairs", "tiny_cnn:tiny_cnn",
            "--batch-size", "8", "--steps", "2", "--warmup", "1", "--attack-steps", "2",
            "--ref-workers", "0", "--fast", "auto", "amp,channels_last",
            "--eval-attacks", "clean", "pgd10", "--eval-images", "12", "--eval-batch-size", "6",
            "--peak-tflops", "1", "--out", str(out)]  # fmt: skip
    throughput.main(argv)
    return out


def test_writes_json_and_markdown_side_by_side(report):
    data = json.loads((report / "throughput.json").read_text())
    assert [(r["method"], r["student"], r["teacher"]) for r in data["training"]] == [
        ("pgd-at", "tiny_cnn", "tiny_cnn"),
        ("dgad", "tiny_cnn", "tiny_cnn"),
    ]
    for row in data["training"]:
        ref = row["reference"]["images_per_s"]
        assert [v["setting"] for v in row["variants"]] == ["auto", "amp,channels_last"]
        assert [v["fast_path"] for v in row["variants"]] == ["off", "amp,channels_last"]
        assert row["harness"] == row["variants"][0]  # what bench plan reads
        for v in row["variants"]:
            ours = v["images_per_s"]
            assert ours > 0 and ref > 0 and v["compile"] is None  # compile is off on both
            assert v["speedup"] == pytest.approx(ours / ref)
            assert v["epoch_s_50k"] == pytest.approx(50_000 / ours)
            assert v["achieved_tflops"] == pytest.approx(row["gflop_per_image"] * ours / 1e3)
            assert v["fraction_of_peak"] == pytest.approx(v["achieved_tflops"] / 1.0)
        assert row["speedup"] == row["variants"][0]["speedup"]
    assert data["environment"]["device"] == "cpu"
    assert data["config"]["fast"] == ["auto", "amp,channels_last"]
    assert [r["attack"] for r in data["evaluation"]] == ["clean", "pgd10"]
    clean, pgd = data["evaluation"]
    assert clean["accuracy"] == 1.0  # labels are the model's own predictions
    assert pgd["images"] == 12 and 0 <= pgd["accuracy"] <= 1
    assert pgd["seconds_per_10k"] == pytest.approx(pgd["seconds"] * 10_000 / 12)
    md = (report / "throughput.md").read_text()
    assert "| dgad | tiny_cnn ← tiny_cnn | amp,channels_last (amp,channels_last) |" in md
    assert "| dgad | tiny_cnn ← tiny_cnn | auto (off) |" in md and "| pgd10 | 12 |" in md


def test_flops_grow_with_the_passes_a_method_makes(report):
    """DGAD backpropagates through teacher and student at every attack step; PGD-AT through
    the student only: with the same two networks DGAD must count more FLOPs per image."""
    rows = {
        r["method"]: r for r in json.loads((report / "throughput.json").read_text())["training"]
    }
    assert rows["dgad"]["gflop_per_image"] > 1.5 * rows["pgd-at"]["gflop_per_image"] > 0


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 989.5),
        ("NVIDIA H200 NVL", 835.5),
        ("NVIDIA H100 80GB HBM3", 989.5),
        ("NVIDIA H100 NVL", 835.5),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_bf16_peak_tells_h200_nvl_from_sxm(throughput, name, peak):
    """The NVL board's lower clocks give a lower peak than the SXM part of the same chip."""
    assert throughput.peak_for(name) == peak


def test_flop_count_matches_a_hand_count(throughput):
    import torch

    x, w = torch.randn(4, 5, requires_grad=True), torch.randn(5, 3)
    with throughput._FlopCount() as counter:
        (grad,) = torch.autograd.grad((x @ w).sum(), x)  # autograd.grad w.r.t. an input
    assert counter.total == 2 * 4 * 5 * 3 * 2  # forward mm + the mm of the input gradient


@pytest.fixture(scope="module")
def parity():
    return load_script("parity")


def test_parity_calls_a_difference_noise_only_within_the_seed_spread(parity):
    same = parity.compare([0.50, 0.52, 0.54], [0.51, 0.53, 0.52], n_test=1000)
    assert same["fast_mean"] == pytest.approx(0.52) and same["reference_mean"] == pytest.approx(
        0.52
    )
    assert same["fast_std"] == pytest.approx(0.02)
    # standard error of the difference: sqrt(0.02²/3 + 0.01²/3) = 0.0129; tolerance twice that
    assert same["tolerance"] == pytest.approx(2 * (0.02**2 / 3 + 0.01**2 / 3) ** 0.5)
    assert same["within_noise"]
    worse = parity.compare([0.40, 0.41, 0.42], [0.51, 0.53, 0.52], n_test=1000)
    assert worse["difference"] == pytest.approx(-0.11) and not worse["within_noise"]
    exact = parity.compare([0.5, 0.5], [0.501, 0.501], n_test=1000)  # no spread: one image
    assert exact["tolerance"] == pytest.approx(0.001) and exact["within_noise"]


def test_parity_table_marks_a_real_difference(parity):
    pgd = parity.compare([0.3, 0.31], [0.5, 0.51], 100)
    rep = {"method": "dgad", "grid": "g", "seeds": [0, 1], "fast": "auto", "reference": "off",
           "test_images": 100, "attacks": {"pgd10": pgd}}  # fmt: skip
    row = parity.markdown(rep).splitlines()[-1]
    assert row.startswith("| pgd10 | 0.300, 0.310 | 0.500, 0.510 |") and "| NO (" in row


@pytest.mark.parametrize("script", ["throughput.py", "parity.py"])
def test_scripts_report_a_bad_setting_in_one_line(script, tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--fast", "bogus", "--device", "cpu",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "error: unknown fast-path switch 'bogus' in 'bogus'; valid: auto, off, all, resident, "
        "amp, channels_last, compile, fused (prefix - to turn one off)"
    ]
    assert not (tmp_path / "out").exists()
