"""Registries: lookup, wildcards, clear errors, entry-point plugins, broken plugins skipped."""

from __future__ import annotations

import warnings
from importlib.metadata import EntryPoint

import pytest

import harness
from harness import registry as reg
from harness.utils.errors import UserError


def test_builtins_are_listed():
    assert {"dgad", "adaad", "trades", "pgd-at"} <= set(harness.list_methods())
    assert {"resnet18", "wrn34_10", "small_cnn"} <= set(harness.list_models())
    assert {"digits", "cifar10", "npz", "tinyimagenet"} <= set(harness.list_datasets())
    assert {"fgsm", "pgd"} <= set(harness.list_attacks())


def test_wildcard():
    assert harness.list_models("wrn*") == ["wrn34_10", "wrn34_20"]


@pytest.mark.parametrize(
    ("create", "name"),
    [
        (harness.create_method, "dgadd"),
        (harness.create_model, "resnet19"),
        (harness.create_dataset, "cifar11"),
        (harness.create_attack, "pgdd"),
    ],
)
def test_unknown_name_lists_valid_ones(create, name):
    with pytest.raises(UserError) as info:
        create(name)
    msg = str(info.value)
    assert name in msg and "valid" in msg and "\n" not in msg


def test_unknown_kwargs_list_valid_ones():
    with pytest.raises(UserError, match=r"unknown parameter\(s\) stepz .*steps"):
        harness.create_attack("pgd", stepz=3)
    with pytest.raises(UserError, match="unknown hyperparameter.*gamma"):
        harness.create_method("dgad", gama=3.0)


def test_duplicate_registration_is_refused():
    r = reg.Registry("thing", "bench.things.test", [])
    r.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        r.register("a")(lambda: 2)


def _fake_entry_points(*eps):
    def entry_points(group):
        return [ep for ep in eps if ep.group == group]

    return entry_points


def test_entry_point_object_and_broken_plugin(monkeypatch):
    good = EntryPoint("good-thing", "collections:OrderedDict", "bench.things.test")
    bad = EntryPoint("bad-thing", "no_such_module_xyz:thing", "bench.things.test")
    monkeypatch.setattr(reg, "entry_points", _fake_entry_points(good, bad))
    r = reg.Registry("thing", "bench.things.test", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = r.names()
    assert names == ["good-thing"]
    assert any("bad-thing" in str(w.message) for w in caught)
    assert isinstance(r.create("good-thing"), dict)


def test_entry_point_module_registers_through_decorator(monkeypatch, tmp_path):
    (tmp_path / "my_plugin_mod.py").write_text(
        "from harness.registry import Registry\n"
        "import tests_registry_target as t\n"
        "@t.R.register('from-module')\n"
        "def make():\n    return 42\n"
    )
    (tmp_path / "tests_registry_target.py").write_text(
        "from harness.registry import Registry\nR = Registry('thing', 'bench.things.mod', [])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import tests_registry_target as t

    monkeypatch.setattr(
        reg,
        "entry_points",
        _fake_entry_points(EntryPoint("m", "my_plugin_mod", "bench.things.mod")),
    )
    assert t.R.names() == ["from-module"]
    assert t.R.create("from-module") == 42


def test_unhashable_name_is_an_unknown_name():
    # a grid may put a list where a name goes
    with pytest.raises(UserError) as info:
        harness.create_method(["dgad"])
    assert str(info.value).startswith("unknown method ['dgad']; valid methods: absld, adaad, ")
    assert ["dgad"] not in reg.METHODS


def test_missing_required_parameter_is_named():
    with pytest.raises(UserError) as info:
        harness.create_dataset("npz")
    assert str(info.value) == "missing parameter(s) path for dataset 'npz'"


def test_user_error_messages_are_one_line():
    assert str(UserError("grid file not found: a\nb\r\x1b[31m")) == (
        "grid file not found: a\\nb\\r\\x1b[31m"
    )
