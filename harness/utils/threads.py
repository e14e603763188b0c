"""How many CPU threads torch uses in a process of the harness.

torch's default is one intra-op thread per core of the machine, whatever share of it the
process may use: on a machine shared with other jobs, or with several ``--workers``, the threads
of every process then compete for the same cores and spin waiting for each other (CPU time grew
20x under load). The harness sets the count once per process instead: ``$BENCH_THREADS`` when
set, else ``$OMP_NUM_THREADS`` when set (as torch itself would), else the cores this process may
run on (its affinity mask: a Slurm allocation, ``taskset``) divided among the workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from harness.utils.errors import UserError


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def thread_count(workers: int = 1, environ: Mapping[str, str] = os.environ) -> int:
    """Intra-op threads for one of ``workers`` processes sharing this process's cores."""
    for var in ("BENCH_THREADS", "OMP_NUM_THREADS"):
        value = environ.get(var, "").strip()
        if value:
            try:
                n = int(value)
            except ValueError:
                n = 0
            if n < 1:
                raise UserError(f"{var} must be a positive integer, got {value!r}")
            return n
    return max(1, cpu_cores() // max(1, workers))


def set_threads(workers: int = 1, environ: Mapping[str, str] = os.environ) -> int:
    """Set torch's intra-op thread count for this process (:func:`thread_count`); returns it."""
    import torch

    n = thread_count(workers, environ)
    torch.set_num_threads(n)
    return n
