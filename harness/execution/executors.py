"""Executing a grid's runs: here (one after another, or ``workers`` in parallel with one GPU
each) or on Slurm through submitit. Teachers run first; a student never starts before its
teacher's run is complete; a failed run is recorded in the store and the others go on. A run
another process holds (:mod:`harness.store.claims`) is left to it; a teacher so held is waited for.
"""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.grid.load import Grid, RunSpec
from harness.store.claims import Claimed
from harness.store.store import Store
from harness.utils.determinism import deterministic as deterministic_mode
from harness.utils.errors import UserError
from harness.utils.threads import cpu_cores, set_threads  # noqa: F401  (cpu_cores: re-exported)
from harness.utils.values import coerce

SLURM_KEYS = {
    "partition": "slurm_partition",
    "time": "timeout_min",
    "gpus_per_node": "gpus_per_node",
    "cpus_per_task": "cpus_per_task",
    "mem_gb": "mem_gb",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "array_parallelism": "slurm_array_parallelism",
}
#: The integer keys of [slurm] and their least values; the others are strings.
SLURM_MINIMA = {
    "time": 1,
    "gpus_per_node": 0,
    "cpus_per_task": 1,
    "mem_gb": 1,
    "array_parallelism": 1,
}


def ordered_runs(grid: Grid, store: Store) -> tuple[list[RunSpec], list[RunSpec]]:
    """(teacher and surrogate runs the selected students need, the students), in execution
    order: every run of the first phase is complete before a student that needs it starts."""
    return grid.prerequisites(), list(grid.runs)


def blocker(spec: RunSpec, store: Store) -> str | None:
    """Why ``spec`` cannot start yet (a teacher or surrogate run not complete), else None."""
    for run_id in spec.teacher_needs:
        if not store.is_complete(run_id):
            return f"its teacher run {run_id} is not complete"
    for run_id in spec.surrogates:
        if not store.is_complete(run_id):
            return f"its transfer surrogate run {run_id} is not complete"
    return None


def run_one(
    spec: RunSpec,
    store: Store,
    *,
    device: torch.device,
    data_root: str | None,
    resume: bool,
    progress: bool,
    echo: Callable[[str], None],
    fast: str = "auto",
    deterministic: bool = False,
) -> str:
    """``execute`` with failure isolation (anything but a user error marks the run failed), in
    the deterministic mode when asked for (:func:`harness.utils.determinism.deterministic`)."""
    from harness.execution.runner import ELSEWHERE, execute, record_crash

    try:
        with deterministic_mode(deterministic) as determinism:
            return execute(
                spec,
                store,
                device=device,
                data_root=data_root,
                resume=resume,
                progress=progress,
                echo=echo,
                fast=fast,
                determinism=determinism,
            )
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a crash before the run was claimed (execute records the others)
        if not store.run_dir(spec.run_id).joinpath("status.json").exists():
            raise
        try:
            with store.claim(spec.run_id):
                return record_crash(store, spec.run_id, exc, echo)
        except Claimed:
            echo(
                f"skip {spec.run_id}: crashed here ({type(exc).__name__}), held by another process"
            )
            return ELSEWHERE


def run_local(
    grid: Grid,
    store: Store,
    *,
    device: torch.device,
    data_root: str | None = None,
    resume: bool = True,
    progress: bool = True,
    workers: int = 1,
    echo: Callable[[str], None] = print,
    fast: str = "auto",
    deterministic: bool = False,
) -> dict[str, int]:
    """Teachers and surrogates, then students; ``workers`` > 1 runs each phase in parallel, one
    process per run, each pinned to one device (:func:`pin_worker`). Two processes never train
    the same run: each run is claimed (:mod:`harness.store.claims`), and a teacher or surrogate
    another process holds is waited for."""
    teachers, students = ordered_runs(grid, store)
    outcome: dict[str, int] = {}
    kw = {"data_root": data_root, "resume": resume, "fast": fast, "deterministic": deterministic}
    for phase in (teachers, students):
        runnable = []
        for spec in phase:
            why = blocker(spec, store)
            if why is not None:
                echo(f"skip {spec.run_id}: {why}")
                outcome["blocked"] = outcome.get("blocked", 0) + 1
            else:
                runnable.append(spec)
        if workers <= 1:
            statuses = [
                run_one(s, store, device=device, progress=progress, echo=echo, **kw)
                for s in runnable
            ]
        else:
            statuses = _parallel(runnable, store, device, workers, echo, **kw)
        if phase is teachers:  # the students need them: wait for those another process runs
            statuses = _wait_for_prerequisites(
                runnable, statuses, store, device, progress, echo, kw
            )
        for status in statuses:
            outcome[status] = outcome.get(status, 0) + 1
    return outcome


def _wait_for_prerequisites(
    specs: list[RunSpec],
    statuses: list[str],
    store: Store,
    device: torch.device,
    progress: bool,
    echo: Callable[[str], None],
    kw: dict[str, Any],
) -> list[str]:
    """``statuses`` with each teacher or surrogate run that another process held waited for
    (and taken up here if that process died before finishing it)."""
    from harness.execution.runner import ELSEWHERE
    from harness.store.claims import wait_released

    by_id = dict(zip([s.run_id for s in specs], statuses, strict=True))
    out = []
    for spec in specs:
        status = by_id[spec.run_id]
        while status == ELSEWHERE:
            echo(f"waiting for {spec.kind} run {spec.run_id}, which another process is training")
            wait_released(store.run_dir(spec.run_id))
            if store.status(spec.run_id) == "failed":
                status = "failed"
            else:
                status = run_one(spec, store, device=device, progress=progress, echo=echo, **kw)
        out.append(status)
    return out


# -- parallel workers: one process per run, one device per worker ------------------------------
def worker_devices(device: torch.device, workers: int) -> list[str]:
    """The device of each of ``workers`` slots: with ``cuda`` (no index), the visible GPUs in
    turn; else ``device`` for every slot."""
    if device.type == "cuda" and device.index is None:
        n = torch.cuda.device_count()
        if n == 0:
            raise UserError("--workers with device cuda: no CUDA device is visible")
        return [f"cuda:{i % n}" for i in range(workers)]
    return [str(device)] * workers


def pin_worker(
    device: str, workers: int, environ: MutableMapping[str, str] = os.environ
) -> torch.device:
    """Pin a fresh worker process to ``device`` and its share of the CPU; the device to use.

    Before CUDA starts in the process, the GPU becomes the only one it sees
    (``CUDA_VISIBLE_DEVICES`` narrowed to that entry of the parent's list) and the current
    device, so compiled kernels, cuDNN, cuBLAS and anything else that uses "the current device"
    land on it rather than on GPU 0; the worker then runs on ``cuda:0``. Intra-op threads:
    this process's cores divided by the number of workers, or ``$BENCH_THREADS``
    (:mod:`harness.utils.threads`).
    """
    set_threads(workers)
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev
    index = dev.index or 0
    if not torch.cuda.is_initialized():
        visible = [v.strip() for v in environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
        visible = [v for v in visible if v]
        environ["CUDA_VISIBLE_DEVICES"] = visible[index] if visible else str(index)
        dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    return dev


def worker_main(
    conn: Any,
    device: str,
    workers: int,
    run_id: str,
    config: dict,
    needs: str | None,
    root: str,
    data_root: str | None,
    resume: bool,
    fast: str,
    deterministic: bool,
) -> None:
    """One run in a worker process: its output lines, then ``("done", status)``, go back over
    ``conn``; a user error comes back as ``("error", message)``, any other crash as
    ``("crash", message)``."""
    try:
        dev = pin_worker(device, workers)
        spec = RunSpec(run_id=run_id, config=config, needs=needs)
        status = run_one(
            spec,
            Store(root),
            device=dev,
            data_root=data_root,
            resume=resume,
            progress=False,
            echo=lambda line: conn.send(("line", line)),
            fast=fast,
            deterministic=deterministic,
        )
        conn.send(("done", status))
    except UserError as exc:
        conn.send(("error", str(exc)))
    except Exception as exc:  # before the run's directory existed: the parent records it
        traceback.print_exc()
        conn.send(("crash", f"{type(exc).__name__}: {exc}".splitlines()[0]))
    finally:
        conn.close()


def _death(exitcode: int | None) -> str:
    """Why a worker process ended without reporting, in words."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"worker process killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"worker process killed by signal {-exitcode}"
    return f"worker process exited with code {exitcode} without reporting"


def _record_failure(spec: RunSpec, store: Store, reason: str, echo: Callable[[str], None]) -> str:
    """Mark ``spec`` failed for ``reason`` (creating its directory if the worker had not),
    under the run's claim: the dead worker's is taken over at once (its pid is gone)."""
    from harness.execution.runner import ELSEWHERE

    if store.is_complete(spec.run_id):  # it finished, then its process died: the run is done
        return "complete"
    try:
        with store.claim(spec.run_id):
            if store.status(spec.run_id) is None:
                store.begin(spec.run_id, spec.config)
            store.log(spec.run_id, reason)
            store.fail(spec.run_id, reason)
    except Claimed:  # a live process of another bench run took the run up meanwhile
        echo(f"skip {spec.run_id}: {reason}; another process holds it now")
        return ELSEWHERE
    echo(f"failed {spec.run_id}: {reason}")
    return "failed"


@dataclass
class _Job:
    spec: RunSpec
    process: Any
    slot: int
    status: str | None = None  # what the run reported
    crash: str | None = None  # why it crashed before its run directory existed
    user_error: bool = False


def _ended(job: _Job, statuses: dict[str, str], store: Store, echo: Callable[[str], None]) -> None:
    """A worker process is gone: its run's status is what it reported, else it failed (unless
    a user error, raised once the others end, stopped it)."""
    if job.status is not None:
        statuses[job.spec.run_id] = job.status
    elif not job.user_error:
        reason = job.crash or _death(job.process.exitcode)
        statuses[job.spec.run_id] = _record_failure(job.spec, store, reason, echo)


def _message(
    job: _Job, kind: str, payload: str, echo: Callable[[str], None], error: str | None
) -> str | None:
    """Take one message of a worker (see :func:`worker_main`); returns the first user error."""
    if kind == "line":
        echo(payload)
    elif kind == "done":
        job.status = payload
    elif kind == "crash":
        job.crash = payload
    elif kind == "error":
        job.user_error = True
        return error or payload
    return error


def _parallel(
    specs: Iterable[RunSpec],
    store: Store,
    device: torch.device,
    workers: int,
    echo: Callable[[str], None],
    **kw: Any,
) -> list[str]:
    """Each run in a fresh process (spawned, so CUDA starts clean in it), at most ``workers`` at
    a time, each on its own slot's device. A process that dies without reporting (abort,
    segfault, a CUDA error that kills it, the OOM killer) marks its run failed and the others go
    on; a user error stops new runs from starting and is raised once the running ones end.
    Returns the statuses in the order of ``specs``."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    specs = list(specs)
    pending = list(specs)
    if not pending:
        return []
    n = min(workers, len(pending))
    slots = worker_devices(device, n)
    ctx = mp.get_context("spawn")
    free = list(range(n))
    running: dict[Any, _Job] = {}
    statuses: dict[str, str] = {}
    error: str | None = None
    try:
        while pending or running:
            while pending and free and error is None:
                slot, spec = free.pop(0), pending.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                process = ctx.Process(
                    target=worker_main,
                    args=(send, slots[slot], n, spec.run_id, spec.config, spec.needs,
                          str(store.root), kw["data_root"], kw["resume"], kw["fast"],
                          kw["deterministic"]),
                    name=f"bench-worker-{slot}",
                )  # fmt: skip
                process.start()
                send.close()  # the child holds the only writer: its exit ends the stream
                running[receive] = _Job(spec, process, slot)
            if not running:
                break
            for conn in wait(list(running)):
                job = running[conn]
                try:
                    kind, payload = conn.recv()
                except EOFError:  # the process is gone and everything it sent has been read
                    conn.close()
                    job.process.join()
                    del running[conn]
                    free.append(job.slot)
                    _ended(job, statuses, store, echo)
                    continue
                error = _message(job, kind, payload, echo, error)
    finally:
        for job in running.values():  # interrupted: stop the workers this call started
            if job.process.is_alive():
                job.process.terminate()
            job.process.join()
    if error is not None:
        raise UserError(error)
    return [statuses[s.run_id] for s in specs]


def slurm_parameters(grid: Grid, overrides: dict[str, Any]) -> dict[str, Any]:
    """submitit parameters from the grid's ``[slurm]`` table, then the command-line flags."""
    table = grid.raw.get("slurm", {})
    if not isinstance(table, dict):
        raise UserError(f"{grid.path}: [slurm] must be a table")
    merged = {**table, **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(merged) - set(SLURM_KEYS))
    if unknown:
        raise UserError(
            f"{grid.path}: unknown [slurm] key(s) {', '.join(unknown)}; "
            f"valid: {', '.join(SLURM_KEYS)}"
        )
    for key, value in merged.items():
        what = f"{grid.path}: [slurm] {key}"
        if key in SLURM_MINIMA:
            if coerce(value, 0, what) < SLURM_MINIMA[key]:
                raise UserError(f"{what} must be >= {SLURM_MINIMA[key]}, got {value}")
        else:
            coerce(value, "", what)
    params = {SLURM_KEYS[k]: v for k, v in merged.items()}
    params.setdefault("timeout_min", 24 * 60)
    params.setdefault("gpus_per_node", 1)
    return params


def _job(
    run_id: str,
    config: dict,
    needs: str | None,
    root: str,
    data_root: str | None,
    fast: str = "auto",
    deterministic: bool = False,
) -> str:
    """What one Slurm (or submitit-local) job runs (Slurm gives it its GPU)."""
    from harness.utils.compat import default_device

    spec = RunSpec(run_id=run_id, config=config, needs=needs)
    return run_one(
        spec,
        Store(root),
        device=default_device(),
        data_root=data_root,
        resume=True,
        progress=False,
        echo=print,
        fast=fast,
        deterministic=deterministic,
    )


def require_submitit(cluster: str) -> None:
    """One line when submitit, or for ``cluster="slurm"`` Slurm's ``sbatch``, is missing here
    (before anything is reset or submitted)."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("submitit") is None:
        raise UserError("--executor slurm and submitit-local need submitit: pip install submitit")
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if cluster == "slurm" and missing:
        raise UserError(
            f"--executor slurm needs Slurm: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not on PATH here; "
            "run bench on a Slurm login node, or use --executor local (--workers N) or "
            "submitit-local"
        )


def run_submitit(
    grid: Grid,
    store: Store,
    *,
    cluster: str,
    params: dict[str, Any],
    data_root: str | None = None,
    folder: Path | None = None,
    echo: Callable[[str], None] = print,
    fast: str = "auto",
    deterministic: bool = False,
) -> list[Any]:
    """Submit the grid through submitit: teachers first, the students needing the same
    teachers and surrogates as one job array that depends on all of their jobs (``afterok``;
    a multi-teacher student on every one of its teachers); with ``cluster="local"`` (tests, a
    workstation) the students are submitted once those jobs have finished."""
    require_submitit(cluster)
    import submitit

    folder = Path(folder or store.root / "submitit")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(name=f"bench-{grid.name}", **params)
    first, students = ordered_runs(grid, store)
    args = (str(store.root), data_root, fast, deterministic)
    jobs, first_jobs = [], {}
    for spec in first:
        if store.status(spec.run_id) == "complete":
            continue
        job = executor.submit(_job, spec.run_id, spec.config, None, *args)
        first_jobs[spec.run_id] = job
        jobs.append(job)
        echo(f"submitted {spec.kind} {spec.run_id} as job {job.job_id}")
    groups: dict[tuple[str, ...], list[RunSpec]] = {}
    for spec in students:
        if store.status(spec.run_id) != "complete":
            groups.setdefault(spec.requires, []).append(spec)
    for requires, specs in groups.items():
        after = [first_jobs[r] for r in requires if r in first_jobs]
        jobs.extend(_submit_array(executor, cluster, specs, after, args, echo))
    return jobs


def _submit_array(
    executor: Any,
    cluster: str,
    specs: list[RunSpec],
    after: list[Any],
    args: tuple[Any, ...],
    echo: Callable[[str], None],
) -> list[Any]:
    """``specs`` (students needing the same teacher and surrogates) as one job array that
    starts once every job of ``after`` succeeded (Slurm ``afterok``; locally: waited for here,
    as there is no scheduler to do it)."""
    extra = {}
    if after and cluster == "slurm":
        ids = ":".join(str(job.job_id) for job in after)
        extra = {"slurm_additional_parameters": {"dependency": f"afterok:{ids}"}}
    else:
        for job in after:
            job.result()
    executor.update_parameters(**extra)
    with executor.batch():
        array = [executor.submit(_job, s.run_id, s.config, s.needs, *args) for s in specs]
    after_text = f" after job(s) {', '.join(str(j.job_id) for j in after)}" if after else ""
    echo(f"submitted {len(array)} run(s){after_text}")
    if extra:
        executor.update_parameters(slurm_additional_parameters={})
    return array
