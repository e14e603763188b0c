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


# -- benchmarks/gpu_check.py ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_check():
    return load_script("gpu_check")


def _mini_cifar(path: Path) -> Path:
    import numpy as np

    g = np.random.default_rng(0)  # 8x8 images: the CIFAR layout at a 16th of the cost
    np.savez(path, x_train=g.integers(0, 256, (60, 3, 8, 8), dtype=np.uint8),
             y_train=g.integers(0, 10, 60), x_test=g.integers(0, 256, (16, 3, 8, 8),
             dtype=np.uint8), y_test=g.integers(0, 10, 16))  # fmt: skip
    return path


def test_gpu_check_dry_run_runs_every_phase_on_the_cpu(tmp_path):
    """The whole GPU check, on the CPU at tiny sizes, as a subprocess the way a GPU session
    starts it: every phase ok, the files a device call brings back (at most 8, one folder
    deep), and the table printed last."""
    import subprocess
    import sys

    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run",
         "--cifar10", str(_mini_cifar(tmp_path / "mini.npz")), "--out", str(out),
         "--work", str(tmp_path / "work")],
        capture_output=True, text=True, cwd=tmp_path, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.json", "gpu_check.md", "log.txt", "parity.json", "parity.md",
        "throughput.json", "throughput.md",
    ]  # fmt: skip
    results = json.loads((out / "gpu_check.json").read_text())
    assert {name: p["status"] for name, p in results["phases"].items()} == dict.fromkeys(
        ("pytest", "throughput", "parity", "autoattack"), "ok"
    )
    checks = {row[0]: row for row in results["rows"]}
    assert "skipped" in checks["pytest -m gpu"][1]  # no CUDA here: the gpu tests skip
    assert {"dgad tiny_cnn ← tiny_cnn, amp", "dgad tiny_cnn ← tiny_cnn, off"} <= set(checks)
    assert checks["pgd10 (parity's student)"][1].startswith("4 images in ")
    assert "parity dgad: amp vs off, clean" in checks
    table = (out / "gpu_check.md").read_text()
    assert table.startswith("GPU check on CPU (dry run)") and "DRY RUN" in table
    assert done.stdout.rstrip().endswith(table.rstrip())


def _gpu_results(speedup: float, epoch_s: float, aa_s: float, within: bool) -> dict:
    variant = {
        "setting": "auto",
        "fast_path": "resident,amp,channels_last,compile,fused",
        "images_per_s": 50_000 / epoch_s,
        "speedup": speedup,
        "epoch_s_50k": epoch_s,
        "fraction_of_peak": 0.3,
        "compile": {"graphs": 14, "fell_back": False},
    }
    off = {**variant, "setting": "auto,-compile", "compile": None, "fraction_of_peak": None}
    parity = {
        "method": "dgad",
        "fast": "auto",
        "reference": "off",
        "attacks": {
            "pgd20": {
                "fast": [0.4, 0.41],
                "fast_mean": 0.405,
                "reference_mean": 0.40,
                "difference": 0.005,
                "tolerance": 0.02,
                "within_noise": within,
            }
        },
    }
    return {
        "phases": {"pytest": {"status": "ok", "tail": "14 passed in 80.0s", "seconds": 80}},
        "throughput": {"training": [{"method": "dgad", "student": "resnet18",
                                     "teacher": "wrn34_10", "variants": [variant, off],
                                     "reference": {"images_per_s": 300.0}}]},
        "autoattack": {"evaluation": [{"attack": "autoattack", "images": 500, "seconds": aa_s,
                                       "accuracy": 0.45, "seconds_per_10k": aa_s * 20}]},
        "autoattack_model": "parity's student",
        "parity": parity,
    }  # fmt: skip


def test_gpu_check_judges_each_target(gpu_check):
    """DGAD ResNet-18 ← WRN-34-10 with compile: ≥ 4× the reference and < 60 s per epoch;
    AutoAttack < 10 minutes for 10,000 images; the fast path within seed noise."""
    met = {r[0]: r for r in gpu_check.summary_rows(_gpu_results(4.5, 40, 25, True), False)}
    main = "dgad resnet18 ← wrn34_10, auto"
    assert met["pytest -m gpu"][1:] == ("14 passed", "all pass", "yes")
    assert met[main][1:] == (
        "1250 img/s = 4.50× the reference (300 img/s); 14 graphs",
        "≥ 4×",
        "yes",
    )
    assert met[f"{main}: CIFAR-10 epoch"][1:] == ("40 s; 30.0% of the bf16 peak", "< 60 s", "yes")
    assert met["dgad resnet18 ← wrn34_10, auto,-compile"][2:] == ("–", "–")
    assert met["AutoAttack standard (parity's student)"][1:] == (
        "500 images in 25.0 s → 10,000 in 8.3 min; robust accuracy 0.450",
        "< 10 min",
        "yes",
    )
    assert met["parity dgad: auto vs off, pgd20"][3] == "yes"
    missed = {r[0]: r[3] for r in gpu_check.summary_rows(_gpu_results(3.9, 61, 31, False), False)}
    assert missed[main] == missed[f"{main}: CIFAR-10 epoch"] == "NO"
    assert missed["AutoAttack standard (parity's student)"] == "NO"
    assert missed["parity dgad: auto vs off, pgd20"] == "NO"


def test_gpu_check_stops_a_phase_at_its_share_of_the_budget(gpu_check, tmp_path):
    import argparse
    import sys

    args = argparse.Namespace(budget=100.0, dry_run=True)
    runner = gpu_check.Runner(args, tmp_path / "log.txt")
    phases = list(gpu_check.PHASES)
    assert runner.timeout("pytest", phases) == pytest.approx(20.0, abs=1.0)
    assert runner.timeout("autoattack", ["autoattack"]) == pytest.approx(100.0, abs=1.0)
    slow = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    outcome = runner.run("parity", slow, timeout=3)
    assert outcome["status"] == "timed out after 3 s"
    assert "=== parity:" in (tmp_path / "log.txt").read_text()
    assert runner.run("autoattack", slow, timeout=0)["status"] == "skipped: no time left"
