"""Downloaded teachers are checked by sha256 before torch reads them: RobustBench models (pinned
or trusted on first use) and checkpoints from a URL. No network: RobustBench's download is
replaced by one that writes a real state dict, and URLs are file:// or a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import threading

import numpy as np
import pytest
import torch
from torch import nn

import harness
import harness.utils.downloads
from harness.execution.teachers import load_teacher
from harness.models import load_robustbench
from harness.store.store import Store
from harness.utils.downloads import fetch_url, sidecar, url_path
from harness.utils.errors import UserError
from tests.helpers import robustbench_utils

NAME = "Tiny2099Offline"  # a zoo entry the tests add, so nothing real is ever fetched


def tiny_zoo_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 7), nn.ReLU(), nn.Linear(7, 10))


def saved(state: dict, wrap=lambda sd: sd) -> bytes:
    """``torch.save`` bytes, written once: two saves differ (a random serialization id)."""
    buffer = io.BytesIO()
    torch.save(wrap(state), buffer)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def zoo(monkeypatch):
    """robustbench with one tiny cifar10/Linf entry whose "download" writes ``zoo.payload``."""
    utils = robustbench_utils(monkeypatch)
    monkeypatch.setattr(harness.utils.downloads, "_warned", set())  # warnings are once per process
    torch.manual_seed(0)
    source = tiny_zoo_net()
    entries = utils.all_models[utils.BenchmarkDataset("cifar10")][utils.ThreatModel("Linf")]
    monkeypatch.setitem(entries, NAME, {"model": tiny_zoo_net, "gdrive_id": "tiny-gdrive-id"})

    class Zoo:
        rb_utils = utils
        weights = source.state_dict()
        # as RobustBench's own checkpoints often are: {"state_dict": {"module.<key>": ...}}
        payload = saved(
            weights, lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
        )
        downloads: list[str] = []

    def download(gdrive_id, path):
        Zoo.downloads.append(gdrive_id)
        with open(path, "wb") as fh:
            fh.write(Zoo.payload)

    monkeypatch.setattr(utils, "download_gdrive", download)
    return Zoo


def same_weights(model: nn.Module, weights: dict) -> bool:
    return all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), weights.values()))


def test_pinned_download_is_checked_then_loaded(zoo, tmp_path, capsys):
    digest = sha(zoo.payload)
    model = load_robustbench(NAME, model_dir=tmp_path, sha256=digest)
    path = tmp_path / "cifar10" / "Linf" / f"{NAME}.pt"  # RobustBench's own layout
    assert path.read_bytes() == zoo.payload and zoo.downloads == ["tiny-gdrive-id"]
    assert same_weights(model, zoo.weights) and not model.training
    assert model.weights_sha256 == {path.name: digest}
    assert not sidecar(path).exists() and "warning" not in capsys.readouterr().err
    load_robustbench(NAME, model_dir=tmp_path, sha256=digest)
    assert len(zoo.downloads) == 1  # in place and still matching: not fetched again


def test_mismatch_is_one_line_and_torch_never_reads_the_file(zoo, tmp_path, monkeypatch):
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a) or real_load(*a, **k))
    folder = tmp_path / "cifar10" / "Linf"
    wrong = "ab" * 32
    with pytest.raises(UserError) as info:
        load_robustbench(NAME, model_dir=tmp_path, sha256=wrong.upper())
    message = str(info.value)
    assert "\n" not in message and sha(zoo.payload) in message and wrong in message
    assert reads == [] and list(folder.iterdir()) == []  # no file, no temporary left behind
    with pytest.raises(UserError):
        load_robustbench(NAME, model_dir=tmp_path, sha256=wrong)
    assert len(zoo.downloads) == 2  # nothing kept, so the next try downloads again

    # a file already in place that does not match the pin is moved aside, unread
    load_robustbench(NAME, model_dir=tmp_path, sha256=sha(zoo.payload))
    reads.clear()
    with pytest.raises(UserError, match="moved it to .*rejected"):
        load_robustbench(NAME, model_dir=tmp_path, sha256=wrong)
    assert reads == [] and not (folder / f"{NAME}.pt").exists()


def test_unpinned_is_trusted_on_first_use_then_checked(zoo, tmp_path, capsys):
    path = tmp_path / "cifar10" / "Linf" / f"{NAME}.pt"
    digest = sha(zoo.payload)
    model = load_robustbench(NAME, model_dir=tmp_path)
    assert same_weights(model, zoo.weights) and model.weights_sha256 == {path.name: digest}
    assert sidecar(path).read_text().strip() == digest
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert "not pinned" in warning and f'sha256 = "{digest}"' in warning

    other = tiny_zoo_net()  # someone swaps the weights in the shared model dir
    path.write_bytes(saved(other.state_dict()))
    with pytest.raises(UserError) as info:
        load_robustbench(NAME, model_dir=tmp_path)
    assert "\n" not in str(info.value) and str(sidecar(path)) in str(info.value)
    assert not path.exists()
    again = load_robustbench(NAME, model_dir=tmp_path)  # downloaded again, the record holds
    assert same_weights(again, zoo.weights) and len(zoo.downloads) == 2


def test_grid_pin_reaches_the_robustbench_teacher(zoo, tmp_path):
    ref = {"name": "t", "model": "wrn34_10", "source": "robustbench", "robustbench": NAME}
    ref |= {"threat_model": "Linf", "sha256": "ab" * 32}
    args = {"num_classes": 10, "image_size": 32, "dataset": "cifar10", "model_dir": tmp_path}
    with pytest.raises(UserError, match="expected abab"):
        load_teacher(ref, Store(tmp_path / "store"), **args)
    teacher = load_teacher({**ref, "sha256": sha(zoo.payload)}, Store(tmp_path / "store"), **args)
    assert same_weights(teacher, zoo.weights)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_ensembles_cannot_take_one_pin(zoo, monkeypatch, tmp_path):
    rb = zoo.rb_utils
    entries = rb.all_models[rb.BenchmarkDataset("cifar10")][rb.ThreatModel("Linf")]
    monkeypatch.setitem(entries, "Pair2099", {"model": tiny_zoo_net, "gdrive_id": ["a", "b"]})
    with pytest.raises(UserError, match="ensemble of 2 files"):
        load_robustbench("Pair2099", model_dir=tmp_path, sha256=sha(zoo.payload))
    assert zoo.downloads == []


# -- URL teachers ---------------------------------------------------------------------------------
@pytest.fixture
def published(tmp_path):
    """A tiny_cnn checkpoint as a file to serve, with its weights and hash."""
    torch.manual_seed(1)
    net = harness.create_model("tiny_cnn", num_classes=10, image_size=32)
    data = saved(net.state_dict())
    path = tmp_path / "public" / "teacher weights.pt"
    path.parent.mkdir()
    path.write_bytes(data)
    return path, net.state_dict(), sha(data)


def test_url_teacher_is_downloaded_checked_and_loaded(published, tmp_path):
    path, weights, digest = published
    models = tmp_path / "models"
    ref = {"name": "t", "model": "tiny_cnn", "source": "url", "url": path.as_uri()}
    teacher = load_teacher(
        {**ref, "sha256": digest},
        Store(tmp_path / "store"),
        num_classes=10,
        image_size=32,
        dataset="cifar10",
        model_dir=models,
    )
    local = url_path(path.as_uri(), digest, models)
    assert (
        local.name == f"{digest[:16]}-teacher weights.pt"
        and local.read_bytes() == path.read_bytes()
    )
    assert same_weights(teacher, weights) and teacher.weights_sha256 == {local.name: digest}
    assert not any(p.requires_grad for p in teacher.parameters())


def test_url_mismatch_keeps_nothing(published, tmp_path):
    path, _, digest = published
    models = tmp_path / "models"
    wrong = "0" * 64
    with pytest.raises(UserError) as info:
        fetch_url(path.as_uri(), wrong, models)
    assert "\n" not in str(info.value) and digest in str(info.value) and wrong in str(info.value)
    assert list((models / "url").iterdir()) == []
    fetch_url(path.as_uri(), digest, models)
    local = url_path(path.as_uri(), digest, models)
    local.write_bytes(b"tampered")
    with pytest.raises(UserError, match="moved it to"):
        fetch_url(path.as_uri(), digest, models)
    assert not local.exists()


def test_url_over_http_and_a_dead_link(published, tmp_path):
    path, _, digest = published

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        local = fetch_url(base + "teacher%20weights.pt", digest, tmp_path / "models")
        assert local.read_bytes() == path.read_bytes()
        with pytest.raises(UserError) as info:
            fetch_url(base + "missing.pt", digest, tmp_path / "models")
        assert "\n" not in str(info.value) and "HTTPError" in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


def test_bench_run_with_a_url_teacher_records_its_hash(published, tmp_path, monkeypatch, capsys):
    """Grid -> run -> teacher fetched into ./models, checked, its hash in the run's provenance."""
    from harness.cli import main

    path, _, digest = published
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    arrays = {
        f"{kind}_{split}": torch.randint(0, 256 if kind == "x" else 10, shape, generator=g)
        .to(torch.uint8 if kind == "x" else torch.int64)
        .numpy()
        for split, n in (("train", 40), ("test", 20))
        for kind, shape in (("x", (n, 3, 32, 32)), ("y", (n,)))
    }
    np.savez(tmp_path / "tiny.npz", **arrays)
    grid = tmp_path / "g.toml"
    grid.write_text(
        'dataset = "npz"\ndataset_options = { path = "tiny.npz", num_classes = 10 }\n'
        'students = ["tiny_cnn"]\nmethods = ["rslad"]\nteachers = ["t"]\n'
        "[threat]\nsteps = 1\n[train]\nepochs = 1\nbatch_size = 32\nselect_steps = 1\n"
        '[eval]\nattacks = ["clean"]\n'
        f'[teacher.t]\nmodel = "tiny_cnn"\nurl = "{path.as_uri()}"\nsha256 = "{digest}"\n'
    )
    main(["run", "--grid", str(grid), "--store", "store", "--no-progress"])
    (run,) = (tmp_path / "store" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    local = url_path(path.as_uri(), digest)  # relative: under ./models
    assert (tmp_path / local).is_file()
    assert metrics["provenance"]["teacher_sha256"] == {local.name: digest}
    assert "warning" not in capsys.readouterr().err  # pinned: nothing to warn about
