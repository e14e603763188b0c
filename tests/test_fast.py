"""The fast path: its switches, what each changes in a training step, and what it must not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

import harness
from harness.data import batches
from harness.models.base import Classifier
from harness.training.compiling import RunCompiler
from harness.training.fast import SWITCHES, FastPath
from harness.training.train import TrainConfig, train, train_steps
from harness.utils.compat import load_checkpoint
from harness.utils.errors import TrainingDiverged, UserError
from tests.helpers import synthetic_splits, tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")

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
    net, plain = tiny_net(), tiny_net()
    keys = list(net.state_dict())
    fast = FastPath(channels_last=True, compile=True)
    fast.prepare(net, RunCompiler("eager"))
    assert net.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert list(net.state_dict()) == keys
    x = fast.inputs(torch.rand(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(net(x), plain(x), atol=1e-6)


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
    import harness.training.train as train_mod

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


def test_host_batches_reach_a_gpu_through_pinned_non_blocking_copies(monkeypatch):
    """CUDA mocked: a set kept on the host reaches the GPU only through pinned memory and
    non-blocking copies (a copy from pageable memory makes the host wait); the epoch's random
    draws move once, then each batch its images and labels."""
    moved: list[tuple[str, tuple[int, ...]]] = []
    real_to = torch.Tensor.to

    def pin_memory(tensor, *args, **kw):
        moved.append(("pin", tuple(tensor.shape)))
        return tensor

    def to(tensor, *args, **kw):
        target = args[0] if args else kw.get("device")
        if isinstance(target, (str, torch.device)) and torch.device(target).type == "cuda":
            kind = "non-blocking" if kw.get("non_blocking") else "blocking"
            moved.append((kind, tuple(tensor.shape)))
            return tensor  # stays on the CPU, so the rest of the epoch runs here
        return real_to(tensor, *args, **kw)

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    data = synthetic_splits().train  # 96 images of 3x8x8
    epoch = batches(data, 40, shuffle=True, augment=True, device="cuda",
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    sizes = [len(y) for _, y in epoch]
    assert sizes == [40, 40, 16]
    draws = [("pin", (96,)), ("non-blocking", (96,))] * 3
    per_batch = [
        step
        for n in sizes
        for shape in ((n, 3, 8, 8), (n,))
        for step in (("pin", shape), ("non-blocking", shape))
    ]
    assert moved == draws + per_batch


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("resident", [True, False], ids=["resident", "host"])
@pytest.mark.parametrize(
    "method", ["dgad", "adaad", "trades", "gacd", "mtard", "fair-ard", "absld", "peeraid"]
)
def test_cuda_training_steps_never_synchronise(method, resident):
    """CUDA's own detector: any host synchronisation inside the steps raises, the making of
    each batch included (the epoch's draws and, for a set on the host, every batch's copy:
    ``batches`` runs only as ``train_steps`` draws from it)."""
    device = torch.device("cuda")
    data = synthetic_splits().train
    data = data.to(device) if resident else data
    student, teacher = tiny_net().to(device), tiny_net(1).to(device).eval().requires_grad_(False)
    fast = FastPath.parse("auto,-compile", device)
    m = harness.create_method(method, steps=2).to(device)
    if m.teacher_roles:
        teacher = {role: teacher for role in m.teacher_roles}
    m.reseed(0)
    m.setup(student, teacher, next(batches(data, 32, device=device))[0])
    opt = torch.optim.SGD(list(student.parameters()) + m.parameters(), lr=0.01, fused=True)
    stream = batches(data, 32, shuffle=True, augment=True, device=device,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sums = train_steps(student, teacher, m, opt, stream, epoch=0, fast=fast, device=device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    sums.raise_if_diverged(0)
    assert sums.images == len(data)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", ["auto", "auto,-compile"])
def test_cuda_deterministic_runs_repeat_to_the_bit(tmp_path, spec):
    """Two runs with ``deterministic`` on one GPU end with identical weights (with Inductor
    too), and the compiled one compiled every call: nothing fell back to eager."""
    from harness.utils.determinism import deterministic

    weights, records = [], []
    for name in ("a", "b"):
        net = tiny_net()
        cfg = TrainConfig(epochs=2, batch_size=32, milestones=[1], select_steps=2, seed=1)
        with deterministic():
            result = train(net, harness.create_method("dgad", steps=3), synthetic_splits(), cfg,
                           ckpt_dir=tmp_path / name, teacher=tiny_net(1), device="cuda",
                           progress=False, log=lambda _: None,
                           fast=FastPath.parse(spec, "cuda"))  # fmt: skip
        weights.append({k: v.cpu() for k, v in net.state_dict().items()})
        records.append(result.compile)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    for compiled in records:
        if "-compile" not in spec:
            assert compiled["graphs"] > 0 and not compiled["fell_back"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_workers_are_pinned_to_their_gpu(tmp_path):
    from harness.execution.executors import run_local
    from harness.grid.load import load_grid
    from harness.store.store import Store
    from tests.test_executors import grid_file

    grid = load_grid(grid_file(tmp_path, students=["tiny_cnn", "small_cnn"]))
    store = Store(tmp_path / "store")
    outcome = run_local(grid, store, device=torch.device("cuda"), progress=False, workers=2,
                        echo=lambda _: None, fast="auto,-compile")  # fmt: skip
    assert outcome == {"complete": 2}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [v.strip() for v in visible.split(",")] if visible else None
    gpus = gpus or [str(i) for i in range(torch.cuda.device_count())]
    for spec in grid.runs:  # each worker saw one GPU of the parent's, as its cuda:0
        provenance = store.metrics(spec.run_id)["provenance"]
        assert provenance["device"] == "cuda:0" and provenance["cuda_visible_devices"] in gpus


def test_a_run_records_its_fast_path_and_is_evaluated_as_a_plain_model(tmp_path, monkeypatch):
    import harness.execution.runner as runner_mod
    from harness.execution.executors import run_local
    from harness.grid.load import load_grid
    from harness.store.store import Store
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


# -- torch.compile: every run of a grid compiled, and the record of what ran eager -------------
class MicroCNN(Classifier):
    """An architecture of its own that, like every harness network, inherits ``forward``."""

    def __init__(self, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)
        self.num_features = 8

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean((2, 3))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)


@pytest.fixture
def micro_cnn():
    from harness.registry import MODELS

    MODELS.register("micro_cnn")(MicroCNN)
    yield "micro_cnn"
    MODELS._entries.pop("micro_cnn")


COMPILE_GRID = """
dataset = "digits"
dataset_options = { test_fraction = 0.8 }
students = ["tiny_cnn", "small_cnn", "micro_cnn"]
methods = ["gacd"]
teachers = ["t"]
[threat]
steps = 2
[train]
epochs = 2
batch_size = 64
milestones = [1]
select_steps = 2
eval_batch_size = 128
[eval]
attacks = ["clean"]
[teacher.t]
model = "tiny_cnn"
train = { method = "pgd-at", epochs = 1 }
"""


def _dynamo_counts() -> dict:
    from collections import Counter

    from torch._dynamo.utils import counters

    return {k: Counter(v) for k, v in counters.items()}


def test_every_run_of_a_grid_is_compiled(tmp_path, monkeypatch, micro_cnn):
    """A teacher and three students of different architectures train in one process, as
    ``bench run`` trains a grid; GACD calls ``forward_features``/``forward_head`` itself and runs
    its teacher twice per step. torch's own counters: no frame failed to compile, none hit the
    recompile limit, nothing broke a graph, and every run compiled graphs of its own; each run
    recorded what it compiled and that no call ran eager. (With ``nn.Module.compile()`` all of
    them shared ``Classifier.forward``'s 8 graphs: the first run spent them and the rest ran
    eager.) Dynamo's guards and caches are what is counted, the same for every backend: the
    cheap ``eager`` backend stands in for Inductor, which the test above runs."""
    from collections import Counter

    import harness.training.compiling as compiling
    from harness.execution.executors import run_local
    from harness.grid.load import load_grid
    from harness.store.store import Store

    monkeypatch.setattr(compiling, "BACKEND", "eager")
    path = tmp_path / "g.toml"
    path.write_text(COMPILE_GRID)
    grid = load_grid(str(path))
    store = Store(tmp_path / "store")
    before = _dynamo_counts()
    outcome = run_local(grid, store, device=torch.device("cpu"), progress=False,
                        echo=lambda _: None, fast="compile")  # fmt: skip
    after = _dynamo_counts()
    assert outcome == {"complete": 4}

    def delta(group: str) -> dict:
        return dict(after.get(group, Counter()) - before.get(group, Counter()))

    frames = delta("frames")
    assert frames["total"] == frames["ok"] > 0
    assert not [m for m in delta("unimplemented") if "recompile limit" in m.lower()]
    assert delta("graph_break") == {}
    records = [
        store.metrics(r.run_id)["provenance"]["compile"]
        for r in [*grid.teacher_runs.values(), *grid.runs]
    ]
    assert sum(r["graphs"] for r in records) == delta("stats")["unique_graphs"]
    for record in records:
        assert record["backend"] == "eager" and record["graphs"] > 0
        assert record["eager_calls"] == record["recompile_limit_hits"] == 0
        assert record["failed_frames"] == 0 and record["fell_back"] is False
        assert all(n < record["recompile_limit"] for n in record["entry_graphs"].values())
        assert record["entry_graphs"]["student.forward"] > 0
    for record in records[1:]:  # GACD's direct calls were compiled, not run eager
        graphs = record["entry_graphs"]
        assert graphs["student.forward_features"] > 0 and graphs["student.forward_head"] > 0
        assert graphs["teacher.forward_features"] > 0 and graphs["teacher.forward"] > 0
    log = (store.run_dir(grid.runs[-1].run_id) / "log.txt").read_text()
    assert f"torch.compile (eager): {records[-1]['graphs']} graph(s)\n" in log


def test_a_call_that_falls_back_to_eager_is_counted_and_recorded():
    """The record can say "fell back": with room for one graph per entry point, the second
    BatchNorm mode runs eager, and torch's counters and the trampoline both see it."""
    compiler = RunCompiler("eager")
    net = compiler.compile(tiny_net(), "student")
    x = torch.rand(4, 3, 8, 8)
    with torch._dynamo.config.patch(recompile_limit=1):
        net(x)
        net.eval()
        net(x), net(x)
        record = compiler.record()
    assert record.recompile_limit_hits == 1 and record.eager_calls == 2
    assert record.fell_back and record.entry_graphs["student.forward"] == 1
    assert "FELL BACK TO EAGER: 2 eager call(s), 1 recompile-limit hit(s)" in record.summary()


def test_short_last_batches_reuse_the_graphs_of_full_ones():
    compiler = RunCompiler("eager")
    net = compiler.compile(tiny_net(), "student")
    for n in (64, 40, 17):  # every size from 16 on: one graph (smaller batches may get one more)
        net(torch.rand(n, 3, 8, 8))
    record = compiler.record()
    assert record.entry_graphs["student.forward"] == 1 and not record.fell_back


def test_a_foreign_models_hooked_features_stay_right_under_compile():
    """A RobustBench-style model's ``forward_features`` reads what a forward hook saw: dynamo
    ignores hooks added after it compiled, so those calls run the eager forward (counted apart)
    while its own calls stay compiled."""
    from harness.models import features, with_feature_api

    def foreign() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return with_feature_api(nn.Sequential(
                nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                nn.Flatten(), nn.Linear(4, 3),
            ).eval())  # fmt: skip

    compiler, plain = RunCompiler("eager"), foreign()
    model = compiler.compile(foreign(), "teacher")
    x = torch.rand(20, 3, 8, 8)
    for _ in range(3):
        with torch.inference_mode():
            f, logits = features(model, x), model(x)
        assert torch.allclose(f, features(plain, x)) and torch.allclose(logits, plain(x))
    record = compiler.record()
    assert record.hooked_calls == 3 and record.eager_calls == 0 and not record.fell_back
    assert record.entry_graphs == {"teacher.forward": 1}


def test_transfer_surrogates_train_with_the_runs_fast_path(tmp_path):
    """A surrogate first needed by a run's transfer evaluation is trained the way that run
    was (``--fast``, ``--deterministic``), not with the defaults."""
    from harness.execution.executors import run_local
    from harness.grid.load import load_grid
    from harness.store.store import Store
    from tests.test_executors import grid_file

    path = Path(grid_file(tmp_path))
    path.write_text(
        path.read_text()
        + '[eval.transfer]\nsurrogates = ["tiny_cnn"]\nattacks = ["fgsm"]\nepochs = 1\n'
    )
    store = Store(tmp_path / "store")
    run_local(load_grid(str(path)), store, device=torch.device("cpu"), progress=False,
              echo=lambda _: None, fast="amp", deterministic=True)  # fmt: skip
    (surrogate,) = [r for r in store.run_ids() if store.config(r)["kind"] == "surrogate"]
    provenance = store.metrics(surrogate)["provenance"]
    assert provenance["fast_path"] == {**ALL_OFF, "amp": True}
    assert provenance["deterministic"]["enabled"] is True


#: The methods that train networks of their own beside the student.
OWNS_NETWORKS = {"gacd", "peeraid"}


@pytest.mark.parametrize("method", sorted(harness.list_methods()))
def test_every_method_trains_compiled_without_falling_back(tmp_path, monkeypatch, method):
    """Each method's passes (BN modes, grad modes, fp32 teacher targets under bf16 autocast,
    short batches, selection) fit in the graphs an entry point may hold: nothing ran eager."""
    import harness.training.compiling as compiling

    monkeypatch.setattr(compiling, "BACKEND", "eager")
    net = tiny_net()
    cfg = _config(batch_size=40, eval_batch_size=24)
    m = harness.create_method(method, steps=2)
    teacher = {r: tiny_net(i + 1) for i, r in enumerate(m.teacher_roles)} or tiny_net(1)
    if method == "fair-rslad":  # its official weights (no 1e-5) are NaN on a class never right
        m = harness.create_method(method, steps=2, fair_eps=1e-5)
    result = train(net, m, synthetic_splits(), cfg,
                   ckpt_dir=tmp_path, teacher=teacher, progress=False, log=lambda _: None,
                   fast=FastPath(compile=True, amp=True))  # fmt: skip
    record = result.compile
    assert record["graphs"] > 0 and not record["fell_back"] and record["graph_breaks"] == 0
    assert 0 < record["entry_graphs"]["student.forward"] < record["recompile_limit"]
    owned = list(m.modules())  # a peer (PeerAiD), heads (GACD): compiled with the run
    for i, module in enumerate(owned):
        key = f"method-{i}.forward"
        if type(module).forward is nn.Module.forward:  # called through its parts only
            assert key not in record["entry_graphs"]
        else:
            assert 0 < record["entry_graphs"][key] < record["recompile_limit"]
    assert bool(owned) == (method in OWNS_NETWORKS)
