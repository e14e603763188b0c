"""Run ids are the store's keys: every shipped grid keeps the ids it had (tests/golden/run_ids.py
says what is pinned: students, teachers, surrogates and ``bench eval``'s ids, under the CLI's
overrides)."""

from __future__ import annotations

import json

import pytest

from tests.golden.run_ids import GOLDEN, dump


@pytest.fixture(scope="module")
def now() -> dict:
    return dump()


def test_golden_covers_every_shipped_grid(now: dict) -> None:
    from harness.grid.load import list_grids

    golden = json.loads(GOLDEN.read_text())
    grids = {case.split("|")[0] for case in golden["cases"]}
    assert set(list_grids()) <= grids
    assert len(golden["cases"]) >= 90


def test_run_ids_of_every_shipped_grid_are_unchanged(now: dict) -> None:
    golden = json.loads(GOLDEN.read_text())
    assert sorted(now["cases"]) == sorted(golden["cases"])
    changed = [case for case in golden["cases"] if now["cases"][case] != golden["cases"][case]]
    assert not changed, f"run ids or configs changed in {len(changed)} case(s): {changed[:5]}"


def test_external_ids_are_unchanged(now: dict) -> None:
    golden = json.loads(GOLDEN.read_text())
    assert now["external"] == golden["external"]


def test_dependencies_are_unchanged(now: dict) -> None:
    """What each run waits for: a multi-teacher student for the grid's run of each teacher
    role (the smoke grid's MTARD: its natural and its PGD-AT small_cnn; the cifar10 grid's:
    the natural WRN-34-10 the grid trains, the robust one is a checkpoint), then its transfer
    surrogates."""
    golden = json.loads(GOLDEN.read_text())
    assert now["requires"] == golden["requires"]
    ((run, waits),) = now["requires"]["smoke|"].items()
    assert run.startswith("mtard-digits-tiny_cnn-small-nat+small-pgdat-")
    assert [w.split("-s0-")[0] for w in waits] == [
        "natural-digits-small_cnn-none",
        "pgd-at-digits-small_cnn-none",
    ]
    cifar = now["requires"]["cifar10|method=mtard"]
    assert len(cifar) == 4 and all(
        w[0].startswith("natural-cifar10-wrn34_10-") and len(w) == 3 for w in cifar.values()
    )
