"""The method registry and the hyperparameter contract (methods/base.py, methods/*.py)."""

from __future__ import annotations

import pytest

import harness
from harness.utils.errors import UserError

THREAT = {"eps": 8 / 255, "step_size": 2 / 255, "steps": 10}

# every hyperparameter the methods' docstrings name, with the default they give; where issue 12
# made the official code the default (PGD-AT's start, DGAD's MobileNetV2 branch, the extra BN
# passes), the official value
SPEC_DEFAULTS = {
    "pgd-at": {"init": "normal", "extra_passes": True},
    "trades": {"beta": 6.0, "extra_passes": True},
    "mart": {"beta": 6.0},
    "ard": {"alpha": 1.0, "temperature": 30.0, "kl_reduction": "elementwise"},
    "iad": {
        "alpha": 1.0,
        "temperature": 1.0,
        "beta": 0.1,
        "warmup_epochs": 60,
        "extra_passes": True,
    },
    "rslad": {"adv_weight": 5 / 6, "clean_weight": 1 / 6, "kl_reduction": "elementwise"},
    "akd": {"alpha": 0.9},
    "adaad": {"alpha": 1.0, "kl_reduction": "elementwise"},
    "dgad": {
        "gamma": 5.0,
        "map": True,
        "els_clean": True,
        "els_adv": True,
        "pcr": True,
        "label_fix": "swap",
        "smoothing": 0.1,
        "mix": 0.5,
        "mobilenet_weighting": "literal",
    },
    "gacd": {
        "feat_dim": 128,
        "nce_t": 0.07,
        "queue_size": 4096,
        "weighting": "prob",
        "ce_weight": 1.0,
        "beta": 0.8,
        "kd_weight": 0.0,
    },
}
NEEDS_TEACHER = {name: name not in ("pgd-at", "trades", "mart") for name in SPEC_DEFAULTS}

# (method, hyperparameter, a value outside its documented choices)
BAD_CHOICES = [
    ("pgd-at", "init", "gaussian"),
    ("ard", "kl_reduction", "mean"),
    ("rslad", "kl_reduction", "none"),
    ("adaad", "kl_reduction", "batch"),
    ("dgad", "label_fix", "relabel"),
    ("dgad", "mobilenet_weighting", "yes"),
    ("gacd", "weighting", "uniform"),
]

# values of the right name but the wrong kind
BAD_TYPES = [
    ("dgad", "map", "yes"),
    ("dgad", "gamma", "five"),
    ("iad", "warmup_epochs", 1.5),
    ("gacd", "queue_size", "big"),
    ("trades", "steps", "10"),
]


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg, msg
    return msg


def test_all_ten_methods_are_registered():
    names = harness.list_methods()
    assert set(SPEC_DEFAULTS) <= set(names)
    assert names == sorted(names)
    ad = harness.list_methods("*ad")
    assert {"adaad", "dgad", "iad", "rslad"} <= set(ad) and all(n.endswith("ad") for n in ad)


@pytest.mark.parametrize("name", sorted(SPEC_DEFAULTS))
def test_needs_teacher(name):
    assert harness.create_method(name).needs_teacher is NEEDS_TEACHER[name]


@pytest.mark.parametrize("name", sorted(SPEC_DEFAULTS))
def test_spec_defaults_are_attributes_and_hparams(name):
    m = harness.create_method(name)
    for key, value in {**THREAT, **SPEC_DEFAULTS[name]}.items():
        got = getattr(m, key)
        assert type(got) is type(value), (key, got)
        assert got == pytest.approx(value, rel=1e-15) if isinstance(value, float) else got == value
        assert m.hparams[key] == got


@pytest.mark.parametrize("name", sorted(SPEC_DEFAULTS))
def test_hparams_round_trip(name):
    m = harness.create_method(name)
    again = harness.create_method(name, **m.hparams)
    assert again.hparams == m.hparams
    # non-default values survive too
    changed = {"eps": 4 / 255, "steps": 3}
    for key, value in SPEC_DEFAULTS[name].items():
        if isinstance(value, bool):
            changed[key] = not value
        elif isinstance(value, float):
            changed[key] = value / 2 + 0.01
        elif isinstance(value, int):
            changed[key] = value + 1
    m2 = harness.create_method(name, **changed)
    for key, value in changed.items():
        assert getattr(m2, key) == value
    assert harness.create_method(name, **m2.hparams).hparams == m2.hparams
    assert m2.hparams != m.hparams


@pytest.mark.parametrize("name", sorted(SPEC_DEFAULTS))
def test_unknown_hparam_lists_the_valid_ones(name):
    with pytest.raises(UserError) as exc:
        harness.create_method(name, gama=1.0)
    msg = one_line(exc)
    assert "gama" in msg
    for key in (*THREAT, *SPEC_DEFAULTS[name]):
        assert key in msg


@pytest.mark.parametrize(("name", "key", "value"), BAD_CHOICES)
def test_bad_choice_is_a_one_line_user_error(name, key, value):
    with pytest.raises(UserError) as exc:
        harness.create_method(name, **{key: value})
    msg = one_line(exc)
    assert key in msg and repr(value) in msg


@pytest.mark.parametrize(("name", "key", "value"), BAD_TYPES)
def test_bad_type_is_a_one_line_user_error(name, key, value):
    with pytest.raises(UserError) as exc:
        harness.create_method(name, **{key: value})
    assert key in one_line(exc)


@pytest.mark.parametrize("key", ["eps", "step_size"])
def test_pixel_units_refused(key):
    with pytest.raises(UserError) as exc:
        harness.create_method("dgad", **{key: 8})
    assert "255" in one_line(exc)
    m = harness.create_method("dgad", **{key: "8/255"})
    assert getattr(m, key) == pytest.approx(8 / 255)


def test_documented_choices_are_accepted():
    for red in ("batchmean", "elementwise", "sum"):
        for name in ("ard", "rslad", "adaad"):
            assert harness.create_method(name, kl_reduction=red).kl_reduction == red
    for fix in ("swap", "smooth", "mix"):
        assert harness.create_method("dgad", label_fix=fix).label_fix == fix
    for w in ("intended", "literal", "off"):
        assert harness.create_method("dgad", mobilenet_weighting=w).mobilenet_weighting == w
    for w in ("prob", "correct", "none"):
        assert harness.create_method("gacd", weighting=w).weighting == w
    for init in ("uniform", "normal"):
        assert harness.create_method("pgd-at", init=init).init == init
    assert harness.create_method("gacd", queue_size=0).queue_size == 0


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UserError) as exc:
        harness.create_method("dgda")
    msg = one_line(exc)
    assert "dgda" in msg and all(name in msg for name in SPEC_DEFAULTS)


def test_methods_without_own_modules_have_no_parameters():
    for name in SPEC_DEFAULTS:
        m = harness.create_method(name)
        assert list(m.parameters()) == []


@pytest.mark.parametrize(
    ("name", "bad", "text"),
    [
        ("gacd", {"queue_size": -1}, ">= 0"),
        ("gacd", {"nce_t": 0.0}, "> 0"),
        ("ard", {"temperature": 0.0}, "> 0"),
        ("akd", {"alpha": 2.0}, "in [0, 1]"),
        ("dgad", {"smoothing": 1.5}, "in [0, 1]"),
        ("dgad", {"gamma": -1.0}, ">= 0"),
        ("iad", {"warmup_epochs": -5}, ">= 0"),
        ("pgd-at", {"steps": -1}, ">= 0"),
    ],
)
def test_out_of_range_hyperparameters_are_refused(name, bad, text):
    with pytest.raises(UserError) as info:
        harness.create_method(name, **bad)
    (key,) = bad
    assert f"{name}.{key} must be {text}" in str(info.value)


@pytest.mark.parametrize("key", ["name", "self"])
def test_hyperparameters_named_like_arguments_are_unknown_not_a_type_error(key):
    # a grid's [method.dgad] table may hold any key: these used to collide with the arguments
    with pytest.raises(UserError) as info:
        harness.create_method("dgad", **{key: 1})
    assert str(info.value) == (
        f"unknown hyperparameter(s) {key} for method 'dgad'; valid: els_adv, els_clean, eps, "
        "gamma, label_fix, map, mix, mobilenet_weighting, pcr, smoothing, step_size, steps"
    )
    with pytest.raises(UserError, match=f"unknown hyperparameter\\(s\\) {key} for method 'gacd'"):
        harness.create_method("gacd", **{key: 1})


def test_integer_too_large_for_a_float():
    with pytest.raises(UserError) as info:
        harness.create_method("dgad", gamma=10**400)
    assert str(info.value) == "dgad.gamma is too large: an integer of 1329 bits"
