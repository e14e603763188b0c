"""Executing a grid's runs: here (one after another, or ``workers`` in parallel with one GPU
each) or on Slurm through submitit. Teachers run first; a student never starts before its
teacher's run is complete; a failed run is recorded in the store and the others go on. A run
another process holds (:mod:`harness.claims`) is left to it; a teacher so held is waited for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from harness.claims import Claimed
from harness.config import coerce
from harness.errors import UserError
from harness.grid import Grid, RunSpec
from harness.store import Store

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
    """(teacher runs the selected students need, the students), in execution order."""
    needed = {r.needs for r in grid.runs if r.needs}
    teachers = [r for r in grid.teacher_runs.values() if r.run_id in needed]
    return teachers, list(grid.runs)


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
) -> str:
    """``execute`` with failure isolation: anything but a user error marks the run failed."""
    from harness.runner import ELSEWHERE, execute, record_crash

    try:
        return execute(
            spec,
            store,
            device=device,
            data_root=data_root,
            resume=resume,
            progress=progress,
            echo=echo,
            fast=fast,
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
) -> dict[str, int]:
    """Teachers, then students; ``workers`` > 1 runs each phase in parallel processes."""
    teachers, students = ordered_runs(grid, store)
    outcome: dict[str, int] = {}
    kw = {"data_root": data_root, "resume": resume, "fast": fast}
    for phase in (teachers, students):
        runnable = []
        for spec in phase:
            if spec.needs and not store.is_complete(spec.needs):
                echo(f"skip {spec.run_id}: its teacher run {spec.needs} is not complete")
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
            statuses = _wait_for_teachers(runnable, statuses, store, device, progress, echo, kw)
        for status in statuses:
            outcome[status] = outcome.get(status, 0) + 1
    return outcome


def _wait_for_teachers(
    specs: list[RunSpec],
    statuses: list[str],
    store: Store,
    device: torch.device,
    progress: bool,
    echo: Callable[[str], None],
    kw: dict[str, Any],
) -> list[str]:
    """``statuses`` with each teacher run that another process held waited for (and taken up
    here if that process died before finishing it)."""
    from harness.claims import wait_released
    from harness.runner import ELSEWHERE

    by_id = dict(zip([s.run_id for s in specs], statuses, strict=True))
    out = []
    for spec in specs:
        status = by_id[spec.run_id]
        while status == ELSEWHERE:
            echo(f"waiting for teacher run {spec.run_id}, which another process is training")
            wait_released(store.run_dir(spec.run_id))
            if store.status(spec.run_id) == "failed":
                status = "failed"
            else:
                status = run_one(spec, store, device=device, progress=progress, echo=echo, **kw)
        out.append(status)
    return out


def _devices(device: torch.device, workers: int) -> list[str]:
    if device.type == "cuda" and device.index is None:
        n = torch.cuda.device_count()
        return [f"cuda:{i % n}" for i in range(workers)]
    return [str(device)] * workers


_WORKER_DEVICE: str | None = None


def _init_worker(queue: Any) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = queue.get()
    torch.set_num_threads(max(1, torch.get_num_threads() // 2))


def _worker(
    run_id: str,
    config: dict,
    needs: str | None,
    root: str,
    data_root: str | None,
    resume: bool,
    fast: str,
) -> tuple[str, str, list[str]]:
    lines: list[str] = []
    spec = RunSpec(run_id=run_id, config=config, needs=needs)
    status = run_one(
        spec,
        Store(root),
        device=torch.device(_WORKER_DEVICE),
        data_root=data_root,
        resume=resume,
        progress=False,
        echo=lines.append,
        fast=fast,
    )
    return run_id, status, lines


def _parallel(
    specs: Iterable[RunSpec],
    store: Store,
    device: torch.device,
    workers: int,
    echo: Callable[[str], None],
    **kw: Any,
) -> list[str]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    specs = list(specs)
    if not specs:
        return []
    ctx = mp.get_context("spawn")
    queue = ctx.Manager().Queue()
    for name in _devices(device, workers):
        queue.put(name)
    statuses: dict[str, str] = {}
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(queue,)
    ) as pool:
        futures = [
            pool.submit(
                _worker,
                s.run_id,
                s.config,
                s.needs,
                str(store.root),
                kw["data_root"],
                kw["resume"],
                kw["fast"],
            )
            for s in specs
        ]
        for fut in as_completed(futures):
            run_id, status, lines = fut.result()
            for line in lines:
                echo(line)
            statuses[run_id] = status
    return [statuses[s.run_id] for s in specs]  # in the order of specs


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
) -> str:
    """What one Slurm (or submitit-local) job runs."""
    from harness.compat import default_device

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
) -> list[Any]:
    """Submit the grid through submitit: teachers first, each teacher's students as one job
    array that depends on it (``afterok``); with ``cluster="local"`` (tests, a workstation)
    the students are submitted once their teacher's job has finished."""
    try:
        import submitit
    except ImportError:
        raise UserError("the Slurm executor needs submitit: pip install submitit") from None

    folder = Path(folder or store.root / "submitit")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(name=f"bench-{grid.name}", **params)
    teachers, students = ordered_runs(grid, store)
    root = str(store.root)
    jobs, teacher_jobs = [], {}
    for spec in teachers:
        if store.status(spec.run_id) == "complete":
            continue
        job = executor.submit(_job, spec.run_id, spec.config, None, root, data_root, fast)
        teacher_jobs[spec.run_id] = job
        jobs.append(job)
        echo(f"submitted teacher {spec.run_id} as job {job.job_id}")
    groups: dict[str | None, list[RunSpec]] = {}
    for spec in students:
        if store.status(spec.run_id) != "complete":
            groups.setdefault(spec.needs, []).append(spec)
    for needs, specs in groups.items():
        dependency = teacher_jobs.get(needs) if needs else None
        extra = {}
        if dependency is not None:
            if cluster == "slurm":
                extra = {
                    "slurm_additional_parameters": {"dependency": f"afterok:{dependency.job_id}"}
                }
            else:
                dependency.result()  # local: wait here, there is no scheduler to do it
        executor.update_parameters(**extra)
        with executor.batch():
            array = [
                executor.submit(_job, s.run_id, s.config, s.needs, root, data_root, fast)
                for s in specs
            ]
        jobs.extend(array)
        echo(
            f"submitted {len(array)} run(s)"
            + (f" after teacher job {dependency.job_id}" if dependency is not None else "")
        )
        if extra:
            executor.update_parameters(slurm_additional_parameters={})
    return jobs
