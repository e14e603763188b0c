"""The fast path: its switches, what each changes in a training step, and what it must not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import harness
from harness.compat import load_checkpoint
from harness.data import batches
from harness.errors import TrainingDiverged, UserError
from harness.fast import SWITCHES, FastPath
from harness.train import TrainConfig, train, train_steps
from tests.helpers import synthetic_splits, tiny_net

ALL_ON = dict.fromkeys(SWITCHES, True)
ALL_OFF = dict.fromkeys(SWITCHES, False)


@pytest.mark.parametrize(
    ("spec", "device", "expected"),
    [
        ("auto", "cpu", ALL_OFF),
        ("auto", "cuda", ALL_ON),
        ("auto", "cuda:1", ALL_ON),
        ("off", "cuda", ALL_OFF),
        ("all", "cpu", ALL_ON),
        ("auto,-compile", "cuda", {**ALL_ON, "compile": False}),
        ("amp, channels_last", "cpu", {**ALL_OFF, "amp": True, "channels_last": True}),
        ("all,-amp,+amp,-fused", "cpu", {**ALL_ON, "fused": False}),
    ],
)
def test_parse(spec, device, expected):
    assert FastPath.parse(spec, device).as_dict() == expected


@pytest.mark.parametrize("spec", ["bf16", "auto,-nope", "", "amp;compile"])
def test_parse_refuses_unknown_switches_in_one_line(spec):
    with pytest.raises(UserError) as info:
        FastPath.parse(spec, "cpu")
    message = str(info.value)
    assert "\n" not in message and "unknown fast-path switch" in message
    assert "resident, amp, channels_last, compile, fused" in message


def test_str_names_the_switches_that_are_on():
    assert str(FastPath()) == "off"
    assert str(FastPath.parse("amp,fused", "cpu")) == "amp,fused"


def test_fused_optimiser_only_on_cuda():
    fast = FastPath(fused=True)
    assert fast.optimizer_options("cuda") == {"fused": True}
    assert fast.optimizer_options("cpu") == {}
    assert FastPath().optimizer_options("cuda") == {}


def test_channels_last_and_compile_keep_checkpoint_keys():
    net = tiny_net()
    keys = list(net.state_dict())
    FastPath(channels_last=True).prepare(net)
    assert net.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert list(net.state_dict()) == keys
    x = FastPath(channels_last=True).inputs(torch.rand(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)


def _config(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=32, lr=0.1, milestones=[1], select_steps=2,
                eval_batch_size=64, seed=0)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _train(tmp, fast: FastPath, method: str = "dgad", **kw):
    net = tiny_net()
    result = train(
        net,
        harness.create_method(method, steps=2),
        synthetic_splits(),
        _config(**kw),
        ckpt_dir=tmp,
        teacher=tiny_net(1),
        progress=False,
        log=lambda _: None,
        fast=fast,
    )
    return net, result


class DtypeProbe:
    """Records the dtype of the first conv's output, labelled by the phase set from outside."""

    def __init__(self, net: nn.Module) -> None:
        self.phase = "train"
        self.seen: dict[str, set[torch.dtype]] = {}
        net.body[0].register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, out) -> None:
        self.seen.setdefault(self.phase, set()).add(out.dtype)


def test_amp_runs_the_step_in_bf16_and_selection_in_fp32(tmp_path, monkeypatch):
    import harness.train as train_mod

    net = tiny_net()
    probe = DtypeProbe(net)
    real_accuracy = train_mod.accuracy

    def accuracy(*args, **kw):  # the per-epoch selection (clean and PGD)
        probe.phase = "select"
        try:
            return real_accuracy(*args, **kw)
        finally:
            probe.phase = "train"

    monkeypatch.setattr(train_mod, "accuracy", accuracy)
    result = train(
        net,
        harness.create_method("dgad", steps=2),
        synthetic_splits(),
        _config(),
        ckpt_dir=tmp_path,
        teacher=tiny_net(1),
        progress=False,
        log=lambda _: None,
        fast=FastPath(amp=True),
    )
    assert probe.seen == {"train": {torch.bfloat16}, "select": {torch.float32}}
    assert all(p.dtype == torch.float32 for p in net.parameters())  # weights stay fp32
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    assert load_checkpoint(tmp_path / "best.pt")["student"]["fc.weight"].dtype == torch.float32


def test_channels_last_follows_the_fp32_trajectory(tmp_path):
    plain, plain_res = _train(tmp_path / "plain", FastPath())
    nhwc, nhwc_res = _train(tmp_path / "nhwc", FastPath(channels_last=True, resident=True))
    assert nhwc.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    for (name, a), b in zip(plain.state_dict().items(), nhwc.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4), name
    assert [h["train_loss"] for h in plain_res.history] == pytest.approx(
        [h["train_loss"] for h in nhwc_res.history], abs=1e-5
    )


def test_compiled_run_matches_eager_and_keeps_checkpoints_plain(tmp_path):
    eager, _ = _train(tmp_path / "eager", FastPath(), epochs=1)
    compiled, _ = _train(tmp_path / "compiled", FastPath(compile=True), epochs=1)
    state = load_checkpoint(tmp_path / "compiled" / "last.pt")["student"]
    assert list(state) == list(tiny_net().state_dict())  # no "_orig_mod." prefixes
    fresh = tiny_net(5)
    fresh.load_state_dict(state)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4), name


class Conversions:
    """Counts tensor-to-Python conversions: on a GPU each one waits for the device."""

    NAMES = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.active = False
        for name in self.NAMES:
            real = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(real))

    def _wrap(self, real):
        def wrapper(tensor, *args, **kw):
            if self.active:
                self.count += 1
            return real(tensor, *args, **kw)

        return wrapper


def test_conversion_counter_sees_each_kind_of_read(monkeypatch):
    conversions = Conversions(monkeypatch)
    conversions.active = True
    t = torch.ones(())
    t.item(), bool(t), int(t), float(t), t.tolist(), [0, 1][t.long()]
    assert conversions.count == 6


@pytest.mark.parametrize("method", sorted(harness.list_methods()))
def test_a_training_step_never_reads_the_device(method, monkeypatch):
    data = synthetic_splits()
    student, teacher = tiny_net(), tiny_net(1).eval().requires_grad_(False)
    m = harness.create_method(method, steps=2)
    if m.teacher_roles:  # one teacher per role (MTARD's natural and robust)
        teacher = {role: tiny_net(i + 1).eval() for i, role in enumerate(m.teacher_roles)}
    m.reseed(0)
    first_x, _ = next(batches(data.train, 32))
    m.setup(student, teacher, first_x)
    opt = torch.optim.SGD(list(student.parameters()) + m.parameters(), lr=0.01)
    stream = list(batches(data.train, 32, shuffle=True, augment=True,
                          generator=torch.Generator().manual_seed(0)))  # fmt: skip
    conversions = Conversions(monkeypatch)
    conversions.active = True
    sums = train_steps(
        student, teacher, m, opt, stream, epoch=1, fast=FastPath(), device=torch.device("cpu")
    )
    conversions.active = False
    assert conversions.count == 0
    assert sums.images == len(data.train) and set(sums.sums) >= {"loss"}
    sums.raise_if_diverged(1)  # the one read, after the epoch


def test_non_finite_loss_is_reported_at_its_first_step():
    class NaNFromStep2:
        def __init__(self):
            self.m = harness.create_method("pgd-at", steps=1)
            self.calls = 0

        def __getattr__(self, name):
            return getattr(self.m, name)

        def loss(self, *args, **kw):
            loss, logs = self.m.loss(*args, **kw)
            self.calls += 1
            return (loss * float("inf") if self.calls >= 3 else loss), logs

    student = tiny_net()
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    stream = batches(synthetic_splits().train, 16)
    sums = train_steps(
        student, None, NaNFromStep2(), opt, stream, epoch=4, fast=FastPath(), device="cpu"
    )
    with pytest.raises(TrainingDiverged) as info:
        sums.raise_if_diverged(4)
    assert (info.value.epoch, info.value.step) == (4, 2)
    assert "inf" in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "method", ["dgad", "adaad", "trades", "gacd", "mtard", "fair-ard", "absld", "peeraid"]
)
def test_cuda_training_steps_never_synchronise(method):
    """CUDA's own detector: any host synchronisation inside the steps raises."""
    device = torch.device("cuda")
    data = synthetic_splits().train.to(device)
    student, teacher = tiny_net().to(device), tiny_net(1).to(device).eval().requires_grad_(False)
    fast = FastPath.parse("auto,-compile", device)
    m = harness.create_method(method, steps=2).to(device)
    if m.teacher_roles:
        teacher = {role: teacher for role in m.teacher_roles}
    m.reseed(0)
    m.setup(student, teacher, next(batches(data, 32, device=device))[0])
    opt = torch.optim.SGD(list(student.parameters()) + m.parameters(), lr=0.01, fused=True)
    stream = list(batches(data, 32, shuffle=True, augment=True, device=device,
                          generator=torch.Generator().manual_seed(0)))  # fmt: skip
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sums = train_steps(student, teacher, m, opt, stream, epoch=0, fast=fast, device=device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    sums.raise_if_diverged(0)


def test_a_run_records_its_fast_path_and_is_evaluated_as_a_plain_model(tmp_path, monkeypatch):
    import harness.runner as runner_mod
    from harness.executors import run_local
    from harness.grid import load_grid
    from harness.store import Store
    from tests.test_executors import grid_file

    evaluated = []
    real = runner_mod.evaluate_run

    def spy(model, *args, **kw):
        evaluated.append(model)
        return real(model, *args, **kw)

    monkeypatch.setattr(runner_mod, "evaluate_run", spy)
    grid = load_grid(grid_file(tmp_path))
    store = Store(tmp_path / "store")
    run_local(grid, store, device=torch.device("cpu"), progress=False, echo=lambda _: None,
              fast="amp,channels_last")  # fmt: skip
    (spec,) = grid.runs
    fast = store.metrics(spec.run_id)["provenance"]["fast_path"]
    assert fast == {**ALL_OFF, "amp": True, "channels_last": True}
    (model,) = evaluated
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous() and not conv.weight.is_contiguous(
        memory_format=torch.channels_last
    )  # the trained student was NHWC; evaluation gets a fresh NCHW copy of its best weights
    best = load_checkpoint(store.checkpoint(spec.run_id, "best"))["student"]
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())
