"""``bench run --force``: rerun the selected runs that are already complete; ``--stale``: only
those whose method's code changed since they were trained (marked ‡ on the leaderboard).

The runs are reset under their claims (:meth:`harness.store.store.Store.reset`: results,
checkpoints, evaluation state and log removed, config kept) before the grid runs, so every
executor (here, workers, Slurm) trains them again exactly as a new run. A run another live process
holds is left to it. Only the grid's student runs are forced: the teachers it trains and the
transfer surrogates are kept (``bench rm`` them to train them again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.grid.load import Grid
from harness.store.claims import Claimed
from harness.store.listing import stale
from harness.store.store import Store


def force_rerun(
    grid: Grid, store: Store, echo: Callable[[str], None] = print, *, only_stale: bool = False
) -> list[str]:
    """Reset every complete student run of ``grid`` (``only_stale``: each whose method code
    differs from the code installed now); returns the ids reset."""
    flag = "--stale" if only_stale else "--force"
    hashes: dict[str, Any] = {}
    reset = []
    for spec in grid.runs:
        if not store.is_complete(spec.run_id):
            continue
        if only_stale and not _is_stale(store, spec.run_id, hashes):
            continue
        try:
            claim = store.claim(spec.run_id)
        except Claimed as exc:
            echo(f"skip {spec.run_id}: {exc} (running there; not rerun)")
            continue
        with claim:
            if store.is_complete(spec.run_id):
                store.reset(spec.run_id)
                reset.append(spec.run_id)
                echo(f"rerun {spec.run_id} ({flag}): its old results are removed")
    return reset


def _is_stale(store: Store, run_id: str, hashes: dict[str, Any]) -> bool:
    provenance = store.metrics(run_id).get("provenance") or {}
    return stale(store.config(run_id), provenance, hashes)
