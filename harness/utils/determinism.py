"""Bit-repeatable runs when asked for, and true fp32 for every decision the harness makes.

On a CPU two runs of the same config agree to the bit. On CUDA they do not by default: cuDNN
picks convolution algorithms (some accumulate with atomics, in whatever order the threads
finish), cuBLAS splits its work over a workspace, and Inductor may choose kernels by timing
them. :func:`deterministic` switches all of that to the repeatable choices for the length of a
run (``bench run --deterministic`` or ``deterministic = true`` in a grid), at some cost in speed.
An operation that has no deterministic CUDA implementation does not stop the run: torch warns,
and the run records the operation's name, so a record never claims more than was done.

Independently of that, TF32 (a 10-bit mantissa that Ampere and later GPUs use for "fp32"
convolutions and matrix products unless told otherwise; cuDNN's default allows it) never
touches checkpoint selection or evaluation: :func:`true_fp32` turns it off around both.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

#: cuBLAS needs a fixed workspace for repeatable results (CUDA's reproducibility notes); it
#: must be set before cuBLAS starts, which is why ``bench run`` sets it at once when asked.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_ALERT = " does not have a deterministic implementation"


def request_cublas_workspace() -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` unless the user did (call before CUDA starts)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)


@dataclass
class DeterminismRecord:
    """How a run was made repeatable (kept in its provenance)."""

    enabled: bool
    settings: dict[str, Any] = field(default_factory=dict)
    nondeterministic_ops: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            **self.settings,
            "nondeterministic_ops": sorted(self.nondeterministic_ops),
        }


def _inductor_config() -> Any | None:
    try:
        import torch._inductor.config as config
    except ImportError:  # pragma: no cover - a torch without Inductor
        return None
    return config if hasattr(config, "deterministic") else None


@contextmanager
def deterministic(enabled: bool = True) -> Iterator[DeterminismRecord]:
    """Within the block (when ``enabled``): ``torch.use_deterministic_algorithms(True,
    warn_only=True)``, cuDNN deterministic with its benchmark mode off, Inductor's deterministic
    mode and a fixed cuBLAS workspace. Every setting is put back afterwards; the yielded record
    collects the operations torch warned had no deterministic implementation."""
    record = DeterminismRecord(enabled)
    if not enabled:
        yield record
        return
    request_cublas_workspace()
    inductor = _inductor_config()
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        inductor.deterministic if inductor is not None else None,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    if inductor is not None:
        inductor.deterministic = True
    record.settings = {
        "use_deterministic_algorithms": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "inductor_deterministic": inductor is not None,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    with warnings.catch_warnings():
        # Every occurrence reaches the hook (not once per call site and process: a second run
        # in the process must see its own), which shows each operation once per run.
        warnings.filterwarnings("always", message=f".*{_ALERT}")
        shown = warnings.showwarning

        def showwarning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
            text = str(message)
            if _ALERT in text:
                op = text.split(_ALERT)[0].strip()
                if op in record.nondeterministic_ops:
                    return
                record.nondeterministic_ops.append(op)
            shown(message, category, *args, **kwargs)

        warnings.showwarning = showwarning
        try:
            yield record
        finally:
            torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
            torch.backends.cudnn.deterministic = saved[2]
            torch.backends.cudnn.benchmark = saved[3]
            if inductor is not None:
                inductor.deterministic = saved[4]


def tf32_state() -> dict[str, Any]:
    """Whether cuBLAS matrix products and cuDNN convolutions may use TF32 right now."""
    return {
        "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


@contextmanager
def true_fp32() -> Iterator[None]:
    """fp32 arithmetic for fp32 tensors within the block: TF32 off for cuBLAS and cuDNN, and
    matrix products at the ``highest`` precision; the previous settings afterwards."""
    saved = tf32_state()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved["matmul_tf32"]
        torch.backends.cudnn.allow_tf32 = saved["cudnn_tf32"]
        torch.set_float32_matmul_precision(saved["float32_matmul_precision"])
