"""Every GPU measurement of the fast path in one call, sized for a bare H100/H200 machine and
about 8 minutes; prints one summary table.

    python3 benchmarks/gpu_check.py --cifar10 data/cifar10_mini.npz --out "$OUT"
    python3 benchmarks/gpu_check.py --cifar10 tiny.npz --out /tmp/check --dry-run  # CPU, CI

The python that runs it needs torch, torchvision, numpy, pandas, click, jinja2, tabulate, tqdm,
scikit-learn, pytest and (for AutoAttack) pyautoattack; the project itself needs no install:
every phase runs with this repository first on ``PYTHONPATH``. Missing packages are named
before anything runs (README, "Measuring on a GPU", says how to carry a wheel).

Phases, each a subprocess with its share of the time budget (``--budget``); a phase that
overruns is stopped and reported as such, and the next ones still run on the time left:

1. ``pytest -m gpu``: the tests that need CUDA (no host sync per step, resident or not;
   deterministic runs repeat to the bit, compiled or not; workers pinned to their GPU).
2. ``throughput``: DGAD, AdaAD and RSLAD, ResNet-18 ← WRN-34-10 at batch 128: the harness with
   ``compile`` on (``auto``) and off (``auto,-compile``) and the reference-style loop, in one
   process (``benchmarks/throughput.py``).
3. ``parity``: DGAD on the CIFAR-10 subset (``--cifar10``), fast path vs plain fp32, a short
   schedule, two seeds (``benchmarks/parity.py``).
4. ``autoattack``: AutoAttack (standard) on ``--aa-images`` test images, on the student that
   phase 3 trained with the fast path, the time extrapolated to 10,000 images.

Writes under ``--out``: ``gpu_check.md`` (the table), ``gpu_check.json``, ``log.txt`` (every
phase's output), ``throughput.md``/``.json``, ``parity.md``/``.json``. Stores and checkpoints go
to ``--work`` (a temporary folder by default). ``--dry-run`` runs the same phases on the CPU at
tiny sizes (tiny CNNs, DGAD alone, ``amp`` standing in for ``compile``, PGD-10 for AutoAttack,
which on a model it cannot break would take minutes there), so the script cannot rot; its
numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.utils.errors import UserError, run_script  # noqa: E402

PHASES = ("pytest", "throughput", "parity", "autoattack")
#: Each phase's share of the time left when it starts (relative to the phases still to come).
SHARES = {"pytest": 0.2, "throughput": 0.35, "parity": 0.35, "autoattack": 0.1}
PACKAGES = ("torch", "torchvision", "numpy", "pandas", "click", "jinja2", "tabulate", "tqdm",
            "sklearn", "pytest", "pyautoattack")  # fmt: skip
METHODS = {False: ("dgad", "adaad", "rslad"), True: ("dgad",)}  # on a GPU, in a dry run
#: The fast-path settings compared: compile on, compile off (on a CPU: amp stands in).
SETTINGS = {False: ("auto", "auto,-compile"), True: ("amp", "off")}
#: The timed evaluation attack (in a dry run PGD-10 stands in).
EVAL_ATTACK = {False: "autoattack", True: "pgd10"}
PARITY_GRID = """\
# Written by benchmarks/gpu_check.py: cifar10-mini's DGAD cell on {npz}.
dataset = "npz"
students = ["{student}"]
teachers = ["t"]
methods = ["dgad"]
seeds = {seeds}
select_on = "val"
[dataset_options]
path = "{npz}"
[threat]
eps = "8/255"
step_size = "2/255"
steps = {steps}
[train]
epochs = {epochs}
batch_size = {batch_size}
lr = 0.1
milestones = []
[eval]
attacks = ["clean", "pgd20"]
[teacher.t]
model = "{teacher}"
train = {{ method = "trades", epochs = {epochs} }}
[method.dgad]
gamma = 5.0
"""
TARGETS = {"speedup": 4.0, "epoch_s": 60.0, "autoattack_min": 10.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cifar10", required=True, help="the CIFAR-10 subset .npz (cifar10-mini's)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="results folder (default $OUT)")
    p.add_argument("--work", help="stores and checkpoints (default: a temporary folder)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the plumbing")
    p.add_argument("--budget", type=float, default=470.0, help="seconds for all phases")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    p.add_argument("--steps", type=int, help="timed steps per throughput measurement")
    p.add_argument("--parity-epochs", type=int, default=1)
    p.add_argument("--parity-seeds", type=int, nargs="+")
    p.add_argument("--aa-images", type=int, help="AutoAttack images (default 500; dry run 4)")
    p.add_argument("--aa-checkpoint", help="a trained ResNet-18 for AutoAttack (default: parity's)")
    args = p.parse_args(argv)
    if not args.out:
        raise UserError("gpu_check: give --out or set $OUT")
    npz = Path(args.cifar10).expanduser()
    if not npz.is_file():
        raise UserError(f"gpu_check: --cifar10 {npz} is not a file")
    args.cifar10 = npz.resolve()
    args.steps = args.steps or (1 if args.dry_run else 10)
    args.parity_seeds = args.parity_seeds or ([0] if args.dry_run else [0, 1])
    args.aa_images = args.aa_images or (4 if args.dry_run else 500)
    return args


def missing_packages() -> list[str]:
    return [name for name in PACKAGES if importlib.util.find_spec(name) is None]


def gpu_test_files() -> list[str]:
    """The test files that hold ``gpu`` tests (collecting only them keeps the phase short)."""
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if "pytest.mark.gpu" in p.read_text()
    )


class Runner:
    """Runs the phases as subprocesses within the budget, every line into ``log.txt``."""

    def __init__(self, args: argparse.Namespace, log: Path) -> None:
        self.args = args
        self.log = log
        self.start = time.monotonic()
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }
        if args.dry_run:
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU even on a machine with a GPU

    def timeout(self, phase: str, phases: list[str]) -> float:
        left = self.args.budget - (time.monotonic() - self.start)
        later = phases[phases.index(phase) :]
        return max(0.0, left * SHARES[phase] / sum(SHARES[p] for p in later))

    def run(self, phase: str, cmd: list[str], timeout: float) -> dict[str, Any]:
        """Run ``cmd``; its outcome (ok, failed, timed out), seconds and the output's tail."""
        t0 = time.monotonic()
        with open(self.log, "a") as log:
            log.write(f"\n=== {phase}: {' '.join(cmd)} (timeout {timeout:.0f} s)\n")
            log.flush()
            if timeout < 1:
                log.write("skipped: no time left\n")
                return {"status": "skipped: no time left", "seconds": 0.0, "tail": ""}
            try:
                done = subprocess.run(
                    cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True, timeout=timeout,
                )  # fmt: skip
                output, status = done.stdout, "ok" if done.returncode == 0 else "failed"
                if done.returncode:
                    status += f" (exit code {done.returncode})"
            except subprocess.TimeoutExpired as exc:
                output = exc.stdout if isinstance(exc.stdout, str) else ""
                status = f"timed out after {timeout:.0f} s"
            log.write(output)
            log.write(f"--- {phase}: {status}\n")
        tail = "\n".join(output.strip().splitlines()[-3:])
        return {"status": status, "seconds": time.monotonic() - t0, "tail": tail}


def parity_grid(args: argparse.Namespace, work: Path) -> Path:
    tiny = args.dry_run
    path = work / "parity.toml"
    path.write_text(
        PARITY_GRID.format(
            npz=str(args.cifar10).replace("\\", "/"),
            student="tiny_cnn" if tiny else "resnet18",
            teacher="small_cnn" if tiny else "preact_resnet18",
            seeds=json.dumps(args.parity_seeds),
            steps=1 if tiny else 10,
            epochs=args.parity_epochs,
            batch_size=32 if tiny else 128,
        )
    )
    return path


def commands(args: argparse.Namespace, work: Path) -> dict[str, list[str]]:
    """Each phase's command line."""
    py, bench = sys.executable, str(ROOT / "benchmarks")
    device = "cpu" if args.dry_run else "cuda"
    if args.dry_run:
        sizes = ["--pairs", "tiny_cnn:tiny_cnn", "--batch-size", "8", "--warmup", "1",
                 "--attack-steps", "1", "--ref-workers", "0"]  # fmt: skip
    else:
        sizes = ["--pairs", "resnet18:wrn34_10", "--batch-size", "128", "--warmup", "3"]
    fast, reference = SETTINGS[args.dry_run]
    return {
        "pytest": [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                   *gpu_test_files()],
        "throughput": [py, f"{bench}/throughput.py", "--device", device,
                       "--methods", *METHODS[args.dry_run], *sizes, "--steps", str(args.steps),
                       "--fast", fast, reference, "--eval-attacks",
                       "--out", str(work / "throughput")],
        "parity": [py, f"{bench}/parity.py", "--grid", str(parity_grid(args, work)),
                   "--method", "dgad", "--seeds", *map(str, args.parity_seeds), "--fast", fast,
                   "--reference", "off", "--device", device, "--store",
                   str(work / "parity_store"), "--out", str(work / "parity")],
    }  # fmt: skip


def autoattack_command(args: argparse.Namespace, work: Path) -> tuple[list[str], str]:
    """The AutoAttack phase's command line, and whose weights it attacks."""
    student = "tiny_cnn" if args.dry_run else "resnet18"
    checkpoint, whose = args.aa_checkpoint, "--aa-checkpoint"
    if checkpoint is None:
        checkpoint, whose = parity_checkpoint(work / "parity_store" / "fast"), "parity's student"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--eval-only",
           "--device", "cpu" if args.dry_run else "cuda", "--pairs", f"{student}:{student}",
           "--eval-attacks", EVAL_ATTACK[args.dry_run], "--eval-images", str(args.aa_images),
           "--eval-batch-size", str(min(args.aa_images, 500)),
           "--eval-data", f"npz:{args.cifar10}", "--out", str(work / "autoattack")]  # fmt: skip
    if checkpoint is None:
        return cmd, "random weights (parity trained no student): a lower bound"
    return cmd + ["--eval-checkpoint", str(checkpoint)], whose


def parity_checkpoint(store_root: Path) -> Path | None:
    """The best checkpoint of the first student the fast-path store completed, if any."""
    from harness.store.store import Store

    store = Store(store_root)
    for run_id in store.run_ids():
        if store.status(run_id) == "complete" and store.config(run_id)["kind"] == "student":
            return store.checkpoint(run_id, "best")
    return None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=30,
            ).stdout.strip()  # fmt: skip
    return env


# -- the summary ---------------------------------------------------------------------------------
def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "NO")


def summary_rows(results: dict[str, Any], dry_run: bool) -> list[tuple[str, str, str, str]]:
    """(check, measured, target, met) rows from the phases' outputs."""
    rows = []
    pytest_phase = results["phases"].get("pytest")
    if pytest_phase:
        counts = re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)",
                            pytest_phase["tail"])  # fmt: skip
        measured = ", ".join(f"{n} {what}" for n, what in counts) or pytest_phase["status"]
        failed = any(what in ("failed", "error", "errors") for _, what in counts)
        ok = None if dry_run else (pytest_phase["status"] == "ok" and not failed)
        rows.append(("pytest -m gpu", measured, "all pass", _verdict(ok)))
    for row in (results.get("throughput") or {}).get("training", []):
        ref = row["reference"]["images_per_s"]
        for v in row["variants"]:
            name = f"{row['method']} {row['student']} ← {row['teacher']}, {v['setting']}"
            record = v.get("compile")
            compiled = (
                f"; {record['graphs']} graphs"
                + (", FELL BACK to eager" if record["fell_back"] else "")
                if record
                else ""
            )
            main = row["method"] == "dgad" and v["setting"] == "auto" and not dry_run
            peak = v.get("fraction_of_peak")
            rows.append((
                name,
                f"{v['images_per_s']:.0f} img/s = {v['speedup']:.2f}× the reference "
                f"({ref:.0f} img/s)" + compiled,
                f"≥ {TARGETS['speedup']:.0f}×" if main else "–",
                _verdict(v["speedup"] >= TARGETS["speedup"] if main else None),
            ))  # fmt: skip
            rows.append((
                f"{name}: CIFAR-10 epoch",
                f"{v['epoch_s_50k']:.0f} s"
                + (f"; {100 * peak:.1f}% of the bf16 peak" if peak else ""),
                f"< {TARGETS['epoch_s']:.0f} s" if main else "–",
                _verdict(v["epoch_s_50k"] < TARGETS["epoch_s"] if main else None),
            ))  # fmt: skip
    for row in (results.get("autoattack") or {}).get("evaluation", []):
        minutes = row["seconds_per_10k"] / 60
        attack = "AutoAttack standard" if row["attack"] == "autoattack" else row["attack"]
        rows.append((
            f"{attack} ({results.get('autoattack_model', '?')})",
            f"{row['images']} images in {row['seconds']:.1f} s → 10,000 in {minutes:.1f} min; "
            f"robust accuracy {row['accuracy']:.3f}",
            f"< {TARGETS['autoattack_min']:.0f} min",
            _verdict(None if dry_run else minutes < TARGETS["autoattack_min"]),
        ))  # fmt: skip
    parity = results.get("parity") or {}
    for attack, c in parity.get("attacks", {}).items():
        rows.append((
            f"parity {parity['method']}: {parity['fast']} vs {parity['reference']}, {attack}",
            f"{c['fast_mean']:.3f} vs {c['reference_mean']:.3f} ({c['difference']:+.3f}, "
            f"noise ±{c['tolerance']:.3f}, {len(c['fast'])} seed(s))",
            "within seed noise",
            _verdict(None if dry_run else c["within_noise"]),
        ))  # fmt: skip
    return rows


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    where = env.get("gpu") or "CPU (dry run)"
    lines = [
        f"GPU check on {where}, torch {env['torch']} (CUDA {env['cuda']}), {env['date']}"
        + (" — DRY RUN: tiny sizes, nothing here is a GPU figure" if results["dry_run"] else ""),
        "",
        "| check | measured | target | met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in results["rows"]]
    lines += ["", "| phase | outcome | seconds |", "|---|---|---|"]
    lines += [
        f"| {name} | {phase['status']} | {phase['seconds']:.0f} |"
        for name, phase in results["phases"].items()
    ]
    if results["missing"]:
        lines += ["", f"missing packages: {', '.join(results['missing'])}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    log.write_text(f"gpu_check {' '.join(sys.argv[1:])}\n")
    runner = Runner(args, log)
    missing = missing_packages()
    results: dict[str, Any] = {
        "dry_run": args.dry_run,
        "environment": environment(),
        "missing": missing,
        "phases": {},
    }
    cmds = commands(args, work)
    phases = list(args.phases)
    for phase in phases:
        timeout = runner.timeout(phase, phases)
        if phase == "autoattack":
            cmd, results["autoattack_model"] = autoattack_command(args, work)
        else:
            cmd = cmds[phase]
        print(f"gpu_check: {phase} (up to {timeout:.0f} s)", flush=True)
        results["phases"][phase] = runner.run(phase, cmd, timeout)
    results["throughput"] = read_json(work / "throughput" / "throughput.json")
    results["parity"] = read_json(work / "parity" / "parity.json")
    results["autoattack"] = read_json(work / "autoattack" / "throughput.json")
    for name in ("throughput/throughput.md", "throughput/throughput.json",
                 "parity/parity.md", "parity/parity.json"):  # fmt: skip
        if (work / name).exists():
            shutil.copy(work / name, out / Path(name).name)
    results["rows"] = summary_rows(results, args.dry_run)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = markdown(results)
    (out / "gpu_check.md").write_text(text)
    print(text)
    failed = [n for n, p in results["phases"].items() if p["status"] != "ok"]
    if failed:
        print(f"gpu_check: phase(s) not ok: {', '.join(failed)} (see {log})", file=sys.stderr)
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    run_script(main)
