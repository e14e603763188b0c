"""``bench rm``: which runs a selection names, and their removal from the run directories and
the index together (:meth:`harness.store.store.Store.remove`), each under its claim."""

from __future__ import annotations

from collections.abc import Callable

from harness.store.claims import Claimed
from harness.store.store import Store
from harness.utils.errors import UserError


def select_runs(
    store: Store,
    *,
    grid: str | None = None,
    method: str | None = None,
    kinds: tuple[str, ...] = (),
) -> list[str]:
    """The ids of the runs listed by ``grid`` (a grid's name; a path's stem), of ``method`` (a
    method or variant name) and of one of ``kinds``, as the index has them (None, empty: that
    filter is not given). An empty name is an error, not "any": ``bench rm --grid smoke
    --method "$M"`` with ``M`` unset must not select every run of the grid."""
    for flag, name in (("--grid", grid), ("--method", method)):
        if name == "":
            raise UserError(f"{flag} is empty; give a {flag[2:]}'s name (bench runs lists them)")
    runs = store.frame("runs", _grid_name(grid) if grid is not None else None)
    if method is not None:
        runs = runs[runs["method"] == method]
    if kinds:
        runs = runs[runs["kind"].isin(kinds)]
    return sorted(set(runs["run_id"]))


def _grid_name(grid: str) -> str:
    return grid[: -len(".toml")].rsplit("/", 1)[-1] if grid.endswith(".toml") else grid


def remove_runs(store: Store, run_ids: list[str], echo: Callable[[str], None] = print) -> int:
    """Remove ``run_ids``; returns how many. A run another live process holds is left; once
    the others are removed, a one-line error names it."""
    removed, held = 0, []
    for run_id in run_ids:
        try:
            claim = store.claim(run_id)
        except Claimed as exc:
            held.append(f"{run_id} ({exc})")
            continue
        with claim:
            store.remove(run_id)
        removed += 1
        echo(f"removed {run_id}")
    if held:
        raise UserError(
            f"removed {removed} run(s); {len(held)} held by a running process, remove once it is "
            f"done: {', '.join(held[:3])}{' ...' if len(held) > 3 else ''}"
        )
    return removed
