"""torch's thread count per process: the cores the process may use, shared among workers, or
what $BENCH_THREADS / $OMP_NUM_THREADS say."""

from __future__ import annotations

import pytest
import torch

import harness.utils.threads as threads
from harness.cli import main
from harness.utils.errors import UserError


def test_thread_count_shares_the_affinity_mask_among_workers(monkeypatch):
    monkeypatch.setattr(threads, "cpu_cores", lambda: 16)
    assert threads.thread_count(1, {}) == 16
    assert threads.thread_count(4, {}) == 4
    assert threads.thread_count(3, {}) == 5
    assert threads.thread_count(32, {}) == 1


def test_environment_overrides_in_order(monkeypatch):
    monkeypatch.setattr(threads, "cpu_cores", lambda: 16)
    assert threads.thread_count(4, {"OMP_NUM_THREADS": "3"}) == 3
    assert threads.thread_count(4, {"BENCH_THREADS": "2", "OMP_NUM_THREADS": "3"}) == 2
    assert threads.thread_count(4, {"BENCH_THREADS": " ", "OMP_NUM_THREADS": "6"}) == 6
    for bad in ("0", "-1", "two"):
        with pytest.raises(UserError) as info:
            threads.thread_count(1, {"BENCH_THREADS": bad})
        assert str(info.value) == f"BENCH_THREADS must be a positive integer, got {bad!r}"


def test_cpu_cores_is_the_affinity_mask():
    import os

    assert threads.cpu_cores() == len(os.sched_getaffinity(0))


def test_bench_run_sets_the_threads_of_its_process(monkeypatch, tmp_path, capsys):
    """The count reaches torch (and the run's provenance records it)."""
    before = torch.get_num_threads()
    monkeypatch.setenv("BENCH_THREADS", "1")
    try:
        torch.set_num_threads(2)
        with pytest.raises(SystemExit):  # an unknown grid: stops after the threads are set
            main(["run", "--grid", str(tmp_path / "none.toml"), "--store", str(tmp_path / "s")])
        assert torch.get_num_threads() == 1
        capsys.readouterr()
        monkeypatch.setenv("BENCH_THREADS", "zero")
        with pytest.raises(SystemExit) as info:
            main(["run", "--grid", "smoke", "--store", str(tmp_path / "s")])
        assert info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            "error: BENCH_THREADS must be a positive integer, got 'zero'"
        ]
    finally:
        torch.set_num_threads(before)
