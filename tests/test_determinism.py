"""Deterministic mode (``--deterministic``, ``deterministic = true``) and true fp32 for
selection and evaluation: which settings they make, that they put everything back, and what a
run records. Bit-repeatability on a GPU is checked by the ``gpu`` tests in tests/test_fast.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch._prims_common import alert_not_deterministic

import harness
from harness.cli import bench
from harness.grid.load import load_grid
from harness.training.fast import FastPath
from harness.training.train import TrainConfig, train
from harness.utils.determinism import CUBLAS_WORKSPACE_CONFIG, deterministic, tf32_state, true_fp32
from harness.utils.errors import UserError
from tests.helpers import synthetic_splits, tiny_net
from tests.test_executors import grid_file

pytestmark = pytest.mark.usefixtures("one_thread")


def _flags() -> tuple:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch._inductor.config.deterministic,
    )


@pytest.fixture
def cudnn_benchmark_on():
    """A user who had cuDNN's benchmark mode on: it must come back after a deterministic run."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    yield
    torch.backends.cudnn.benchmark = before


def test_deterministic_mode_sets_every_switch_and_puts_them_back(monkeypatch, cudnn_benchmark_on):
    import torch._inductor.config  # noqa: F401

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _flags()
    assert before == (False, False, False, True, False)
    with deterministic() as record:
        assert _flags() == (True, True, True, False, True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE_CONFIG
    assert _flags() == before
    assert record.as_dict() == {
        "enabled": True,
        "use_deterministic_algorithms": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "inductor_deterministic": True,
        "cublas_workspace_config": CUBLAS_WORKSPACE_CONFIG,
        "nondeterministic_ops": [],
    }
    with deterministic(False) as off:
        assert _flags() == before
    assert off.as_dict() == {"enabled": False, "nondeterministic_ops": []}


def test_a_users_cublas_workspace_is_kept(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic() as record:
        pass
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert record.settings["cublas_workspace_config"] == ":16:8"


def test_operations_without_a_deterministic_kernel_are_recorded_once_per_run():
    """torch warns (warn_only) instead of stopping the run; the run lists the operations, each
    once, and a second run in the same process sees its own."""
    for _ in range(2):
        alert = "does not have a deterministic implementation"
        with pytest.warns(UserWarning, match=alert), deterministic() as record:
            for _ in range(3):
                alert_not_deterministic("scatter_add_cuda_kernel")
            alert_not_deterministic("index_put_ with accumulate")
        assert record.nondeterministic_ops == [
            "scatter_add_cuda_kernel",
            "index_put_ with accumulate",
        ]


def _train(tmp: Path, fast: FastPath) -> dict:
    net = tiny_net()
    cfg = TrainConfig(epochs=1, batch_size=32, milestones=[], select_steps=1, seed=3)
    train(net, harness.create_method("dgad", steps=2), synthetic_splits(), cfg, ckpt_dir=tmp,
          teacher=tiny_net(1), progress=False, log=lambda _: None, fast=fast)  # fmt: skip
    return net.state_dict()


def test_deterministic_training_repeats_to_the_bit(tmp_path):
    runs = []
    for name in ("a", "b"):
        with deterministic():
            runs.append(_train(tmp_path / name, FastPath()))
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_selection_and_evaluation_run_in_true_fp32(tmp_path, monkeypatch):
    """cuDNN's default lets "fp32" convolutions run in TF32; selection and evaluation turn it
    off (and put it back), training keeps the user's setting, and the run records it."""
    import harness.execution.run_evaluation as run_eval
    import harness.training.train as train_mod
    from harness.execution.executors import run_local
    from harness.store.store import Store

    seen: dict[str, set] = {}

    def spy(phase, real):
        def wrapper(*args, **kw):
            seen.setdefault(phase, set()).add(tf32_state()["cudnn_tf32"])
            return real(*args, **kw)

        return wrapper

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(train_mod, "train_steps", spy("train", train_mod.train_steps))
    monkeypatch.setattr(train_mod, "accuracy", spy("select", train_mod.accuracy))
    monkeypatch.setattr(run_eval, "evaluate_suite", spy("eval", run_eval.evaluate_suite))
    grid = load_grid(grid_file(tmp_path))
    store = Store(tmp_path / "store")
    run_local(grid, store, device=torch.device("cpu"), progress=False, echo=lambda _: None,
              deterministic=True)  # fmt: skip
    assert seen == {"train": {True}, "select": {False}, "eval": {False}}
    assert torch.backends.cudnn.allow_tf32 is True and not _flags()[0]
    provenance = store.metrics(grid.runs[0].run_id)["provenance"]
    assert provenance["training_precision"]["cudnn_tf32"] is True
    assert provenance["deterministic"]["enabled"] is True
    assert provenance["deterministic"]["cudnn_deterministic"] is True


def test_true_fp32_turns_tf32_off_and_puts_it_back():
    before = tf32_state()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        with true_fp32():
            assert tf32_state() == {
                "matmul_tf32": False,
                "cudnn_tf32": False,
                "float32_matmul_precision": "highest",
            }
        assert tf32_state() == {
            "matmul_tf32": True,
            "cudnn_tf32": True,
            "float32_matmul_precision": "high",
        }
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before["matmul_tf32"]
        torch.backends.cudnn.allow_tf32 = before["cudnn_tf32"]
        torch.set_float32_matmul_precision(before["float32_matmul_precision"])


def test_grid_key_and_flag_ask_for_determinism(tmp_path, monkeypatch):
    import harness.execution.executors as executors

    calls = []

    def fake_run_local(grid, store, **kw):
        calls.append((kw["deterministic"], os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
        return {"complete": 0}

    monkeypatch.setattr(executors, "run_local", fake_run_local)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    plain = Path(grid_file(tmp_path))
    keyed = tmp_path / "keyed.toml"
    keyed.write_text("deterministic = true\n" + plain.read_text())
    store = str(tmp_path / "store")
    runner = CliRunner()
    for path, flags in ((plain, []), (plain, ["--deterministic"]), (keyed, [])):
        args = ["run", "--grid", str(path), "--store", store, "--device", "cpu", *flags]
        result = runner.invoke(bench, args)
        assert result.exit_code == 0, result.output
    assert calls == [
        (False, None),
        (True, CUBLAS_WORKSPACE_CONFIG),
        (True, CUBLAS_WORKSPACE_CONFIG),
    ]
    assert load_grid(str(keyed)).deterministic and not load_grid(str(plain)).deterministic


def test_a_bad_deterministic_value_is_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('deterministic = "yes"\n' + Path(grid_file(tmp_path)).read_text())
    with pytest.raises(UserError) as info:
        load_grid(str(path))
    assert str(info.value) == f"{path}: deterministic must be true or false, got 'yes'"
