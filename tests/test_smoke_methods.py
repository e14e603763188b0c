"""Every method trains the smoke grid (digits, 3 epochs) to a student better than chance
under PGD-10, through the same ``bench run`` a user types."""

from __future__ import annotations

import json

import pytest

import harness
from harness.cli import main

CHANCE = 0.1  # digits has 10 balanced classes


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("smoke-store")
    main(
        ["run", "--grid", "smoke", "--store", str(store), "--no-progress"]
    )  # exits only on failure
    return store


# ``natural`` (standard training, for transfer surrogates) is not meant to be robust.
ROBUST_METHODS = [m for m in harness.list_methods() if m != "natural"]


def test_smoke_grid_lists_every_robust_method():
    from harness.grid.load import load_grid

    listed = {r.config["method"]["name"] for r in load_grid("smoke").runs}
    assert listed == set(ROBUST_METHODS)


@pytest.mark.parametrize("method", ROBUST_METHODS)
def test_method_beats_chance_under_pgd(smoke_store, method):
    (run,) = [
        p
        for p in (smoke_store / "runs").iterdir()
        if p.name.startswith(f"{method}-") and "tiny_cnn" in p.name
    ]
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    results = json.loads((run / "metrics.json").read_text())["results"]
    acc = {name: row["accuracy"] for name, row in results.items()}
    assert acc["pgd10"] > 2 * CHANCE, acc
    assert acc["clean"] >= acc["pgd10"]
