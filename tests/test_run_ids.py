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
