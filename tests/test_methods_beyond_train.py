"""The trainer with the methods beyond the paper: one teacher per role (MTARD), the epoch
hooks in their order with the LR schedule's factor, and method state (MTARD's weights, Fair-*'s
class weights, ABSLD's temperatures, PeerAiD's peer and its optimiser state) saved in the
checkpoint and restored on resume, so a killed run continues exactly."""

from __future__ import annotations

import pytest
import torch

import harness
from harness.training.train import TrainConfig, train
from harness.utils.compat import load_checkpoint
from harness.utils.errors import UserError
from methods.base import Method
from tests.helpers import synthetic_splits, tiny_net
from tests.test_train import KillAt, Killed

pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(**kw) -> TrainConfig:
    base = {
        "epochs": 3,
        "batch_size": 32,
        "lr": 0.1,
        "milestones": [1],
        "select_steps": 1,
        "eval_batch_size": 64,
        "seed": 0,
    }
    return TrainConfig(**{**base, **kw})


def teachers_for(name: str):
    m = harness.create_method(name)
    if m.teacher_roles:
        return {role: tiny_net(seed=10 + i) for i, role in enumerate(m.teacher_roles)}
    return tiny_net(seed=10) if m.needs_teacher else None


def run(name: str, ckpt, method=None, student=None, **kw):
    student = tiny_net() if student is None else student
    method = harness.create_method(name, steps=2) if method is None else method
    res = train(
        student,
        method,
        synthetic_splits(),
        cfg(**kw),
        ckpt_dir=ckpt,
        teacher=teachers_for(name),
        progress=False,
        log=lambda _: None,
    )
    return student, method, res


# -- one teacher per role -------------------------------------------------------------------------
def test_mtard_trains_with_one_teacher_per_role(tmp_path):
    student, m, res = run("mtard", tmp_path, epochs=2)
    assert len(res.history) == 2
    assert 0 < float(m.w_nat) < 1 and float(m.w_nat) != 0.5
    assert "train_w_nat" in res.history[0]
    saved = load_checkpoint(tmp_path / "last.pt")["method"]["state"]
    assert float(saved["w_nat"]) == float(m.w_nat)
    assert torch.isfinite(saved["init_losses"]).all()


@pytest.mark.parametrize(
    ("teacher", "got"),
    [
        ({"natural": "n"}, "got roles natural"),
        ({"natural": "n", "robust": "r", "extra": "e"}, "got roles extra, natural, robust"),
        ({"clean": "n", "robust": "r"}, "got roles clean, robust"),
        ("one", "got one network"),
        (None, "got no teacher"),
    ],
)
def test_a_wrong_set_of_roles_is_one_line(tmp_path, teacher, got):
    nets = {"n": tiny_net(1), "r": tiny_net(2), "e": tiny_net(3), "one": tiny_net(4)}
    if isinstance(teacher, dict):
        teacher = {role: nets[key] for role, key in teacher.items()}
    elif teacher is not None:
        teacher = nets[teacher]
    with pytest.raises(UserError) as err:
        train(
            tiny_net(),
            harness.create_method("mtard", steps=1),
            synthetic_splits(),
            cfg(epochs=1),
            ckpt_dir=tmp_path,
            teacher=teacher,
            progress=False,
            log=lambda _: None,
        )
    message = str(err.value)
    assert "\n" not in message and got in message
    assert message.startswith("method 'mtard' needs one teacher per role (natural, robust)")
    assert not (tmp_path / "last.pt").exists()


def test_a_single_teacher_method_refuses_a_role_map(tmp_path):
    with pytest.raises(UserError, match=r"^method 'ard' takes one teacher, not one per role"):
        train(
            tiny_net(),
            harness.create_method("ard", steps=1),
            synthetic_splits(),
            cfg(epochs=1),
            ckpt_dir=tmp_path,
            teacher={"robust": tiny_net(1)},
            progress=False,
            log=lambda _: None,
        )


# -- the epoch hooks ------------------------------------------------------------------------------
class HookSpy(Method):
    """PGD-AT's attack and loss, recording the hooks and counting epochs in its state."""

    needs_teacher = False
    registry_name = "hook-spy"

    def __init__(self, **hp) -> None:
        super().__init__(**hp)
        self.calls: list[tuple[str, int, float]] = []
        self.register_state("ends", torch.zeros((), dtype=torch.long))

    def perturb(self, student, teacher, x, y):
        return x.clone()

    def loss(self, student, teacher, x, x_adv, y, epoch=0):
        self.calls.append(("step", epoch, 0.0))
        return torch.nn.functional.cross_entropy(student(x_adv), y), {}

    def start_epoch(self, epoch, lr_scale=1.0):
        self.calls.append(("start", epoch, lr_scale))

    def end_epoch(self, epoch, lr_scale=1.0):
        self.calls.append(("end", epoch, lr_scale))
        self.ends += 1


def test_epoch_hooks_order_and_lr_scale(tmp_path):
    spy = HookSpy(steps=0)
    train(
        tiny_net(),
        spy,
        synthetic_splits(),
        cfg(epochs=3, milestones=[1, 2]),
        ckpt_dir=tmp_path,
        progress=False,
        log=lambda _: None,
    )
    hooks = [c for c in spy.calls if c[0] != "step"]
    expected = [
        ("start", 0, 1.0),  # the factor the epoch trains with
        ("end", 0, 0.1),  # after the scheduler's step: the next epoch's factor
        ("start", 1, 0.1),
        ("end", 1, 0.01),
        ("start", 2, 0.01),
        ("end", 2, 0.01),
    ]
    assert [(k, e) for k, e, _ in hooks] == [(k, e) for k, e, _ in expected]
    assert [s for *_, s in hooks] == pytest.approx([s for *_, s in expected])
    assert [c[0] for c in spy.calls] == (["start"] + ["step"] * 3 + ["end"]) * 3  # 3 steps each
    # end_epoch ran before the checkpoint was written
    assert int(load_checkpoint(tmp_path / "last.pt")["method"]["state"]["ends"]) == 3


# -- method state across a kill -------------------------------------------------------------------
STATE = {
    "mtard": ["w_nat", "init_losses"],
    "fair-ard": ["class_weight", "kappa", "seen"],
    "absld": ["temp_adv", "temp_nat", "loss_adv", "loss_nat"],
    "peeraid": [],  # the peer: a module the method owns
}


def method_state(m) -> dict[str, torch.Tensor]:
    state = m.state_dict()
    flat = dict(state.get("state", {}))
    for i, module_state in ((k, v) for k, v in state.items() if k != "state"):
        flat.update({f"module{i}.{k}": v for k, v in module_state.items()})
    return flat


@pytest.mark.parametrize("name", sorted(STATE))
def test_state_dict_round_trip(name):
    data = synthetic_splits()
    x = data.train.x[:8].float() / 255
    m = harness.create_method(name, steps=1)
    m.reseed(0)
    m.setup(tiny_net(), teachers_for(name), x)
    assert set(STATE[name]) <= set(m.state_dict().get("state", {}))
    for key in STATE[name]:  # values no fresh method has
        value = getattr(m, key)
        m.register_state(
            key, torch.arange(3, 3 + value.numel(), dtype=value.dtype).reshape(value.shape)
        )
    if name == "peeraid":
        with torch.no_grad():
            for p in m.peer.parameters():
                p.add_(1.0)
    saved = m.state_dict()
    fresh = harness.create_method(name, steps=1)
    fresh.reseed(1)
    fresh.setup(tiny_net(), teachers_for(name), x)
    before = method_state(fresh)
    assert any(not torch.equal(before[k], v) for k, v in method_state(m).items())
    fresh.load_state_dict(saved)
    after = method_state(fresh)
    assert after.keys() == method_state(m).keys()
    for key, value in method_state(m).items():
        assert torch.equal(after[key], value), key
        assert after[key].dtype == value.dtype, key


def test_a_checkpoint_without_the_state_is_refused():
    m = harness.create_method("absld")
    m.setup(tiny_net(), tiny_net(1), synthetic_splits().train.x[:4].float() / 255)
    with pytest.raises(
        UserError, match="lacks absld's state temp_adv, temp_nat, loss_adv, loss_nat$"
    ):
        m.load_state_dict({})


@pytest.mark.parametrize("name", sorted(STATE))
def test_killed_mid_epoch_then_resumed_is_identical(tmp_path, name):
    """Killed in epoch 1 after a step, resumed from epoch 0's checkpoint with a fresh student,
    method and teachers: the same student, method state and history as an unbroken run (state
    not restored would restart from its initial value: other weights)."""
    ref, ref_m, ref_res = run(name, tmp_path / "ref")
    with pytest.raises(Killed):
        run(name, tmp_path / "k", method=KillAt(harness.create_method(name, steps=2), 1, 2))
    assert load_checkpoint(tmp_path / "k" / "last.pt")["epoch"] == 0
    resumed, m, res = run(name, tmp_path / "k", student=tiny_net(seed=123))
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    ref_state, state = method_state(ref_m), method_state(m)
    assert ref_state.keys() == state.keys()
    for key in ref_state:
        assert torch.equal(ref_state[key], state[key]), key
    assert [h["val_pgd1"] for h in res.history] == [h["val_pgd1"] for h in ref_res.history]


def test_resume_restores_the_peers_optimiser_state(tmp_path):
    """PeerAiD's peer is in the trainer's optimiser: its momentum buffers are in last.pt."""
    _, m, _ = run("peeraid", tmp_path, epochs=1)
    opt = load_checkpoint(tmp_path / "last.pt")["optimizer"]
    n_student = len(list(tiny_net().parameters()))
    n_peer = len(list(m.peer.parameters()))
    assert len(opt["param_groups"][0]["params"]) == n_student + n_peer
    assert all("momentum_buffer" in opt["state"][i] for i in range(n_student + n_peer))
