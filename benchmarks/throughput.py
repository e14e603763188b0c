"""Training images/s of every method, the harness's loop against a reference-style loop, side by
side in one process and one run; then the evaluation suite's wall time on a fixed model.

    python benchmarks/throughput.py                      # full sizes on CUDA, small on CPU
    python benchmarks/throughput.py --size small --methods dgad pgd-at
    python benchmarks/throughput.py --fast auto auto,-compile   # compile on and off
    python benchmarks/throughput.py --eval-checkpoint best.pt --eval-data npz:cifar10_mini.npz
    python benchmarks/throughput.py --eval-only --eval-attacks autoattack --eval-images 500

(a) ``harness``: the trainer's own code (:func:`harness.training.train.prepare` and
:func:`harness.training.train.train_steps`) under the fast path (``--fast``, default
``auto``; several settings give one row each, against the same reference measurement), with what
``torch.compile`` compiled and whether any call fell back to eager.
(b) ``reference``: the loop of the methods' official repositories: fp32, NCHW, a
``torch.utils.data.DataLoader`` whose workers apply torchvision's PIL transforms
(RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor), a plain per-tensor SGD, and
``loss.item()`` after every step. Both call the same method objects, so the ratio measures the
loop, not a different algorithm.

Each measurement warms up (``--warmup`` batches, which also absorb ``torch.compile``), then
times ``--steps`` batches between device synchronisations. Images are random uint8: speed does
not depend on what the pictures show. FLOPs per image come from
``torch.utils.flop_counter`` on one step; with ``--peak-tflops`` (default: the GPU's bf16 dense
peak when known) the table gives the fraction of peak reached.

Evaluation: clean, PGD-10, CW2 and AutoAttack (standard) through the harness's attacks, in true
fp32 (TF32 off, as the harness evaluates), on ``--eval-images`` images of ``--eval-data``
(random images by default) for the first student (random weights, or ``--eval-checkpoint``),
with the time extrapolated to 10,000 images. Labels are the model's own clean predictions, so
every image is attacked; on an untrained model the attacks succeed at once, so its AutoAttack
time is a lower bound: time a trained checkpoint for a real number.

Writes ``throughput.json`` and ``throughput.md`` to ``--out``; ``bench plan --throughput FILE``
projects GPU-hours from the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
from harness.attacks.base import build_attack  # noqa: E402
from harness.data import ArraySet, batches  # noqa: E402
from harness.evaluation.evaluate import correct_mask  # noqa: E402
from harness.grid.suites import PRESETS, resolve  # noqa: E402
from harness.training.compiling import RunCompiler  # noqa: E402
from harness.training.fast import FastPath  # noqa: E402
from harness.training.train import TrainConfig, prepare, train_steps  # noqa: E402
from harness.utils.compat import import_torchvision, load_checkpoint, resolve_device  # noqa: E402
from harness.utils.determinism import true_fp32  # noqa: E402
from harness.utils.errors import run_script  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "pairs": ["resnet18:wrn34_10", "mobilenet_v2:wrn34_10", "resnet18:wrn34_20"],
        "batch_size": 128,
        "steps": 20,
        "warmup": 5,
        "eval_images": 10_000,
        "eval_batch_size": 500,
    },
    "small": {
        "pairs": ["tiny_cnn:small_cnn"],
        "batch_size": 32,
        "steps": 3,
        "warmup": 1,
        "eval_images": 64,
        "eval_batch_size": 64,
    },
}
EVAL_ATTACKS = ["clean", "pgd10", "cw2", "autoattack"]
THREAT = {"eps": 8 / 255, "step_size": 2 / 255}
#: Dense bf16 tensor-core peaks (TFLOP/s) by a fragment of ``torch.cuda.get_device_name``, the
#: most specific first. NVIDIA's H100 and H200 datasheets give bf16 with 2:4 sparsity, dense is
#: half: H100 SXM 1,979 ("NVIDIA H100 80GB HBM3"), H100 NVL 1,671, H100 PCIe 1,513; H200 SXM
#: 1,979 ("NVIDIA H200"), H200 NVL 1,671 ("NVIDIA H200 NVL": lower clocks and power, so a lower
#: peak from the same chip). The A100 datasheet gives 312 dense.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200 NVL", 835.5),
    ("H200", 989.5),
    ("H100 NVL", 835.5),
    ("H100 PCIe", 756.5),
    ("H100 SXM", 989.5),
    ("H100 80GB HBM3", 989.5),
    ("A100", 312.0),
)


def synthetic_set(n: int, image_size: int = 32, seed: int = 0) -> ArraySet:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=g)
    return ArraySet(x, torch.randint(0, 10, (n,), generator=g))


def make_method(name: str, args: argparse.Namespace) -> Any:
    steps = {} if args.attack_steps is None else {"steps": args.attack_steps}
    return harness.create_method(name, **steps)


def build(name: str, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return harness.create_model(name, num_classes=10, image_size=32)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


# -- (a) the harness -----------------------------------------------------------------------------
def time_harness(
    method_name: str,
    pair: tuple[str, str],
    args: argparse.Namespace,
    device: torch.device,
    spec: str = "auto",
) -> dict[str, Any]:
    student, teacher = build(pair[0], 0), build(pair[1], 1)
    method = make_method(method_name, args)
    fast = FastPath.parse(spec, device)
    bs = args.batch_size
    data = synthetic_set(bs * (args.warmup + args.steps))
    data = data.to(device) if fast.resident else data
    cfg = TrainConfig(epochs=1, batch_size=bs, milestones=[], seed=0)
    first_x, _ = next(batches(data, bs, device=device))
    compiler = RunCompiler() if fast.compile else None
    opt = prepare(
        student, teacher, method, first_x, cfg, fast=fast, device=device, compiler=compiler
    )
    student.train()
    method.train()

    def stream(seed: int, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(seed)
        epoch = batches(data, bs, shuffle=True, augment=True, device=device, generator=gen)
        return itertools.islice(epoch, n)

    reset_peak(device)
    train_steps(student, teacher, method, opt, stream(0, args.warmup), epoch=1, fast=fast,
                device=device).raise_if_diverged(0)  # fmt: skip
    timed = stream(1, args.steps)  # stops after its last batch: nothing extra is timed
    sync(device)
    t0 = time.perf_counter()
    sums = train_steps(student, teacher, method, opt, timed, epoch=1, fast=fast, device=device)
    sums.raise_if_diverged(1)  # reads the device: the timing ends synchronised
    seconds = time.perf_counter() - t0
    return {
        "images_per_s": sums.images / seconds,
        "peak_gib": peak_gib(device),
        "fast_path": str(fast),
        "setting": spec,
        "compile": compiler.record().as_dict() if compiler is not None else None,
    }


# -- (b) the reference loop ----------------------------------------------------------------------
class PILDataset(torch.utils.data.Dataset):
    """HWC uint8 images served as PIL images through torchvision transforms, like
    ``torchvision.datasets.CIFAR10`` in the official training scripts."""

    def __init__(self, data: ArraySet) -> None:
        tv = import_torchvision()
        T = tv.transforms
        self.images = data.x.permute(0, 2, 3, 1).numpy()
        self.labels = data.y.numpy()
        self.transform = T.Compose(
            [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def plain_setup(
    method_name: str, pair: tuple[str, str], args: argparse.Namespace, x: torch.Tensor
) -> tuple[nn.Module, nn.Module, Any]:
    """Student, teacher (eval mode) and method on ``x``'s device, set up as the official
    scripts do: nothing frozen, converted or compiled."""
    student, teacher = build(pair[0], 0).to(x.device), build(pair[1], 1).to(x.device).eval()
    method = make_method(method_name, args).to(x.device)
    method.reseed(0)
    method.setup(student, teacher, x)
    return student, teacher, method


def time_reference(
    method_name: str, pair: tuple[str, str], args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    bs = args.batch_size
    data = synthetic_set(bs * (args.warmup + args.steps))
    first_x = data.float_batch(slice(0, bs), device)[0]
    student, teacher, method = plain_setup(method_name, pair, args, first_x)
    opt = torch.optim.SGD(
        list(student.parameters()) + method.parameters(),
        lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=False,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        PILDataset(data), batch_size=bs, shuffle=True, num_workers=args.ref_workers,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    reset_peak(device)
    student.train()
    method.train()
    running, images, t0 = 0.0, 0, 0.0
    for step, (x, y) in enumerate(loader):
        if step == args.warmup:
            sync(device)
            t0 = time.perf_counter()
        x, y = x.to(device), y.to(device)
        x_adv = method.perturb(student, teacher, x, y)
        loss, _ = method.loss(student, teacher, x, x_adv, y, epoch=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running += loss.item()
        if step >= args.warmup:
            images += len(y)
    sync(device)
    seconds = time.perf_counter() - t0
    return {"images_per_s": images / seconds, "peak_gib": peak_gib(device)}


class _FlopCount:
    """Counts matmul/convolution FLOPs with torch's own formulas (``flop_counter.flop_registry``)
    through a dispatch mode. ``FlopCounterMode`` itself tracks modules with hooks that
    ``torch.autograd.grad`` w.r.t. an input (every inner maximisation) does not support."""

    def __enter__(self) -> _FlopCount:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    counter.total += formula(*args, **kwargs, out_val=out)
                return out

        self.total = 0
        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)


def flops_per_image(
    method_name: str, pair: tuple[str, str], args: argparse.Namespace, device: torch.device
) -> float:
    """Forward + backward FLOPs of one training step (inner maximisation included), per image."""
    bs = min(args.batch_size, 16)
    x, y = synthetic_set(bs).float_batch(slice(0, bs), device)
    student, teacher, method = plain_setup(method_name, pair, args, x)
    with _FlopCount() as counter:
        x_adv = method.perturb(student, teacher, x, y)
        loss, _ = method.loss(student, teacher, x, x_adv, y, epoch=1)
        loss.backward()
    return counter.total / bs


# -- evaluation ----------------------------------------------------------------------------------
def eval_data(args: argparse.Namespace) -> ArraySet:
    if args.eval_data:
        name, _, path = args.eval_data.partition(":")
        splits = harness.create_dataset(name, **({"path": path} if path else {}))
        pool = splits.test
        if len(pool) < args.eval_images and splits.train is not None:
            pool = ArraySet(
                torch.cat([pool.x, splits.train.x]), torch.cat([pool.y, splits.train.y])
            )
        return ArraySet(pool.x[: args.eval_images].contiguous(), pool.y[: args.eval_images])
    return synthetic_set(args.eval_images, seed=2)


def time_evaluation(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    model = build(args.pairs[0][0], 0)
    if args.eval_checkpoint:
        state = load_checkpoint(args.eval_checkpoint)
        model.load_state_dict(state.get("student", state))
    model.to(device).eval()
    data = eval_data(args)
    with torch.no_grad():
        preds = torch.cat([model(x).argmax(1).cpu() for x, _ in batches(data, 500, device=device)])
    data = ArraySet(data.x, preds)  # every image starts correct: every image is attacked
    rows = []
    for name in args.eval_attacks:
        config = resolve(name, PRESETS[name], THREAT)
        attack = build_attack(config, seed=0) if config is not None else None
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        with true_fp32():
            bs = args.eval_batch_size
            mask = correct_mask(model, data, attack, batch_size=bs, device=device)
        sync(device)
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "attack": name,
                "images": len(data),
                "seconds": seconds,
                "seconds_per_10k": seconds * 10_000 / len(data),
                "accuracy": float(mask.float().mean()),
                "peak_gib": peak_gib(device),
            }
        )
        print(f"eval {name}: {rows[-1]['seconds']:.1f} s on {len(data)} images", flush=True)
    return rows


# -- report --------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict[str, Any]:
    from importlib.metadata import version

    env = {
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": version("torchvision"),
        "cuda": torch.version.cuda,
    }
    return env


def peak_for(gpu_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name (None when unknown)."""
    return next((v for k, v in BF16_PEAK_TFLOPS if k in gpu_name), None)


def default_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return peak_for(torch.cuda.get_device_name(device))


def _compiled(result: dict[str, Any]) -> str:
    record = result.get("compile")
    if not record:
        return "–"
    return f"{record['graphs']}" + (" FELL BACK" if record["fell_back"] else "")


def markdown(report: dict[str, Any]) -> str:
    env, cfg = report["environment"], report["config"]
    where = env["gpu"] or f"CPU ({env['threads']} threads)"
    lines = [
        f"Training throughput on {where}, torch {env['torch']}, {env['date']}; batch "
        f"{cfg['batch_size']}, {cfg['steps']} timed steps after {cfg['warmup']}; harness fast "
        f"path settings: {', '.join(cfg['fast'])}.",
        "",
        "| method | student ← teacher | fast path | harness img/s | reference img/s | speed-up "
        "| epoch (50k) | GFLOP/img | % of peak | graphs compiled | peak GiB (harness / ref) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["training"]:
        for v in r["variants"]:
            frac = f"{100 * v['fraction_of_peak']:.1f}" if v.get("fraction_of_peak") else "–"
            mem = " / ".join(f"{x:.1f}" if x is not None else "–" for x in
                             (v["peak_gib"], r["reference"]["peak_gib"]))  # fmt: skip
            lines.append(
                f"| {r['method']} | {r['student']} ← {r['teacher']} | {v['setting']} "
                f"({v['fast_path']}) | {v['images_per_s']:.1f} "
                f"| {r['reference']['images_per_s']:.1f} | {v['speedup']:.2f}× "
                f"| {v['epoch_s_50k']:.0f} s | {r['gflop_per_image']:.3g} | {frac} "
                f"| {_compiled(v)} | {mem} |"
            )
    if report["evaluation"]:
        lines += [
            "",
            "| attack | images | seconds | per 10,000 images | accuracy | peak GiB |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["evaluation"]:
            mem = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "–"
            lines.append(
                f"| {r['attack']} | {r['images']} | {r['seconds']:.1f} "
                f"| {r['seconds_per_10k'] / 60:.1f} min | {r['accuracy']:.3f} | {mem} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", choices=sorted(SIZES), help="default: full on CUDA, small otherwise")
    p.add_argument("--methods", nargs="+", help="default: every registered method but natural")
    p.add_argument("--pairs", nargs="+", help="STUDENT:TEACHER model pairs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument(
        "--fast", nargs="+", default=["auto"], help="harness fast path settings (see bench run)"
    )
    p.add_argument(
        "--attack-steps", type=int, help="inner-maximisation steps (default: each method's own)"
    )
    p.add_argument("--ref-workers", type=int, default=4, help="reference DataLoader workers")
    p.add_argument("--eval-only", action="store_true", help="time the evaluation alone")
    p.add_argument("--eval-attacks", nargs="*", default=EVAL_ATTACKS, choices=sorted(PRESETS))
    p.add_argument("--eval-images", type=int)
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--eval-data", help="DATASET[:PATH] (e.g. npz:cifar10_mini.npz)")
    p.add_argument("--eval-checkpoint", help="weights for the evaluated student")
    p.add_argument("--peak-tflops", type=float, help="bf16 peak for the fraction-of-peak column")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    for spec in args.fast:  # every typo caught before anything is timed
        FastPath.parse(spec, device)
    size = SIZES[args.size or ("full" if device.type == "cuda" else "small")]
    for key, value in size.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.pairs = [tuple(p.split(":")) for p in args.pairs]
    args.methods = args.methods or sorted(m for m in harness.list_methods() if m != "natural")
    if args.eval_only:
        args.methods = []
    args.device = device
    return args


def time_method(
    method: str, pair: tuple[str, str], args: argparse.Namespace, peak: float | None
) -> dict[str, Any]:
    """One training row: the harness under each fast-path setting, the reference loop once."""
    device = args.device
    variants = [time_harness(method, pair, args, device, spec) for spec in args.fast]
    ref = time_reference(method, pair, args, device)
    flop = flops_per_image(method, pair, args, device)
    for v in variants:
        achieved = flop * v["images_per_s"] / 1e12
        v.update(
            speedup=v["images_per_s"] / ref["images_per_s"],
            epoch_s_50k=50_000 / v["images_per_s"],
            achieved_tflops=achieved,
            fraction_of_peak=achieved / peak if peak else None,
        )
        print(
            f"{method} {pair[0]}<-{pair[1]} [{v['setting']}]: harness "
            f"{v['images_per_s']:.1f} img/s, reference {ref['images_per_s']:.1f} img/s "
            f"({v['speedup']:.2f}x); compiled: {_compiled(v)}",
            flush=True,
        )
    first = variants[0]
    return {
        "method": method,
        "student": pair[0],
        "teacher": pair[1],
        "harness": first,
        "reference": ref,
        "variants": variants,
        "gflop_per_image": flop / 1e9,
        **{k: first[k] for k in ("speedup", "epoch_s_50k", "achieved_tflops", "fraction_of_peak")},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = args.device
    peak = args.peak_tflops or default_peak(device)
    training = [
        time_method(method, (student, teacher), args, peak)
        for student, teacher in args.pairs
        for method in args.methods
    ]
    report = {
        "environment": environment(device),
        "config": {k: getattr(args, k) for k in ("batch_size", "steps", "warmup", "attack_steps",
                                                 "fast", "ref_workers", "eval_batch_size")}
        | {"peak_tflops": peak},
        "training": training,
        "evaluation": time_evaluation(args, device) if args.eval_attacks else [],
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(report, indent=2, default=_plain) + "\n")
    (out / "throughput.md").write_text(markdown(report))
    print(markdown(report))
    return report


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    run_script(main)
