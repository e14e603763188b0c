"""The store queries the leaderboards and the paper's report share (harness/store/queries.py)."""

from __future__ import annotations

import json

import pandas as pd

from harness.store.queries import evaluations_of, failed_checks, run_configs, same_weights

SHA = "ab" * 32


def test_same_weights_by_robustbench_name_else_by_sha256():
    assert same_weights({"robustbench": "Chen2021"}, {"robustbench": "Chen2021"})
    assert not same_weights({"robustbench": "Chen2021"}, {"robustbench": "Other"})
    assert same_weights({"path": "/a.pt", "sha256": SHA}, {"path": "/b.pt", "sha256": SHA})
    assert not same_weights({"sha256": SHA}, {"sha256": "cd" * 32})
    assert not same_weights({}, {"robustbench": None, "sha256": None})  # nothing to match on


def test_evaluations_of_a_teachers_weights():
    configs = {
        "eval-a": {"kind": "checkpoint", "dataset": {"name": "cifar10"}, "source": {"sha256": SHA}},
        "eval-b": {
            "kind": "checkpoint",
            "dataset": {"name": "cifar100"},
            "source": {"sha256": SHA},
        },
        "eval-c": {
            "kind": "robustbench",
            "dataset": {"name": "cifar10"},
            "source": {"robustbench": "R"},
        },
        "student": {"kind": "student", "dataset": {"name": "cifar10"}, "source": {"sha256": SHA}},
    }
    assert evaluations_of(configs, {"sha256": SHA}, "cifar10") == ["eval-a"]
    assert evaluations_of(configs, {"robustbench": "R"}, "cifar10") == ["eval-c"]
    assert evaluations_of(configs, {"robustbench": "R"}, "cifar100") == []


def test_run_configs_and_failed_checks_from_index_columns():
    runs = pd.DataFrame({"run_id": ["r1", "r2"], "config": [json.dumps({"seed": 1}), ""]})
    assert run_configs(runs) == {"r1": {"seed": 1}, "r2": {}}
    flags = [json.dumps({"grad_mask": True, "eps_bound": False}), None, '{"restarts": false}']
    assert failed_checks(flags) == ["eps_bound", "restarts"]
