"""Speed costs no accuracy: the same runs trained with the fast path and in plain fp32, compared.

    BENCH_CIFAR10_MINI=cifar10_mini.npz python benchmarks/parity.py   # cifar10-mini, dgad, s0-2
    python benchmarks/parity.py --grid smoke --epochs 2 --seeds 0 1 --fast amp  # quick, on CPU

Each seed's run of ``--method`` on ``--grid`` is trained twice, teacher included, into two
stores: once with ``--fast`` (default ``auto``) and once with ``--reference`` (default ``off``,
the fp32 loop). Both are evaluated by the harness's fp32 suite (the grid's attacks). The table
gives each seed's clean and robust accuracy, the mean ± std over seeds and the mean difference;
a difference is "within noise" when it is no larger than twice the standard error of the
difference of the two means (seed-to-seed spread of both settings), or than one test image when
every seed agrees exactly. Writes ``parity.json`` and ``parity.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.execution.executors import run_local  # noqa: E402
from harness.grid.load import load_grid  # noqa: E402
from harness.store.store import Store  # noqa: E402
from harness.training.fast import FastPath  # noqa: E402
from harness.utils.compat import resolve_device  # noqa: E402
from harness.utils.errors import run_script  # noqa: E402


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare(fast: list[float], ref: list[float], n_test: int) -> dict[str, Any]:
    """Mean ± std of each setting over seeds, their difference, and whether it is noise."""
    (mf, sf), (mr, sr) = mean_std(fast), mean_std(ref)
    k = len(fast)
    se = (sf**2 / k + sr**2 / k) ** 0.5
    tolerance = max(2 * se, 1 / n_test)
    return {
        "fast": fast,
        "reference": ref,
        "fast_mean": mf,
        "fast_std": sf,
        "reference_mean": mr,
        "reference_std": sr,
        "difference": mf - mr,
        "tolerance": tolerance,
        "within_noise": abs(mf - mr) <= tolerance + 1e-12,
    }


def train_both(args: argparse.Namespace) -> tuple[dict[str, dict[int, dict[str, float]]], int]:
    """Accuracy per setting, seed and attack, and the number of test images."""
    device = resolve_device(args.device)
    settings = {"fast": args.fast, "reference": args.reference}
    for spec in settings.values():  # both typos caught before the first run trains
        FastPath.parse(spec, device)
    grid = load_grid(args.grid, method=args.method, student=args.student, epochs=args.epochs,
                     teacher_epochs=args.epochs, seeds=args.seeds,
                     dataset=args.dataset)  # fmt: skip
    accuracies: dict[str, dict[int, dict[str, float]]] = {}
    n_test = 0
    for label, spec in settings.items():
        store = Store(Path(args.store) / label)
        outcome = run_local(grid, store, device=device, progress=False, fast=spec)
        if outcome.get("failed") or outcome.get("blocked"):
            raise SystemExit(f"{label}: {outcome}")
        accuracies[label] = {}
        for run in grid.runs:
            results = store.metrics(run.run_id)["results"]
            accuracies[label][run.config["seed"]] = {a: r["accuracy"] for a, r in results.items()}
            n_test = max(n_test, *(r["n"] for r in results.values()))
    return accuracies, n_test


def report(args: argparse.Namespace, accuracies: dict[str, Any], n_test: int) -> dict[str, Any]:
    seeds = sorted(accuracies["fast"])
    attacks = list(accuracies["fast"][seeds[0]])
    return {
        "grid": args.grid,
        "method": args.method,
        "seeds": seeds,
        "fast": args.fast,
        "reference": args.reference,
        "test_images": n_test,
        "attacks": {
            a: compare([accuracies["fast"][s][a] for s in seeds],
                       [accuracies["reference"][s][a] for s in seeds], n_test)
            for a in attacks
        },
    }  # fmt: skip


def markdown(rep: dict[str, Any]) -> str:
    lines = [
        f"{rep['method']} on grid {rep['grid']}, seeds {', '.join(map(str, rep['seeds']))}: "
        f"fast path `{rep['fast']}` vs `{rep['reference']}` ({rep['test_images']} test images).",
        "",
        "| attack | fast (per seed) | reference (per seed) | fast mean ± std | reference mean ± "
        "std | difference | within noise |",
        "|---|---|---|---|---|---|---|",
    ]
    for attack, c in rep["attacks"].items():
        per = [", ".join(f"{v:.3f}" for v in c[k]) for k in ("fast", "reference")]
        lines.append(
            f"| {attack} | {per[0]} | {per[1]} | {c['fast_mean']:.3f} ± {c['fast_std']:.3f} "
            f"| {c['reference_mean']:.3f} ± {c['reference_std']:.3f} | {c['difference']:+.3f} "
            f"| {'yes' if c['within_noise'] else 'NO'} (±{c['tolerance']:.3f}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default="cifar10-mini")
    p.add_argument("--method", default="dgad")
    p.add_argument("--student", help="override the grid's student")
    p.add_argument("--dataset", help="override the grid's data set (npz:FILE for an .npz)")
    p.add_argument("--epochs", type=int, help="shorter schedule (teacher included)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fast", default="auto")
    p.add_argument("--reference", default="off")
    p.add_argument("--device", default="auto")
    p.add_argument("--store", default="results/parity", help="two stores go under it")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    accuracies, n_test = train_both(args)
    rep = report(args, accuracies, n_test)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "parity.json").write_text(json.dumps(rep, indent=2) + "\n")
    (out / "parity.md").write_text(markdown(rep))
    print(markdown(rep))
    return rep


if __name__ == "__main__":
    run_script(main)
