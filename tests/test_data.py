"""Data sets on files written in their real on-disk layouts, splits, batching, augmentation."""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import harness
from harness.data import (
    ArraySet,
    DatasetSplits,
    augment_batch,
    batches,
    carve_val,
    data_root,
    draw_augment_params,
    torchvision_sets,
)
from harness.data import tinyimagenet as tiny_mod
from harness.data.digits import digits_images
from harness.utils.compat import import_torchvision
from harness.utils.errors import UserError

#: A real CIFAR-10 subset, kept outside the repository: named by $BENCH_CIFAR10_MINI.
MINI = Path(os.environ.get("BENCH_CIFAR10_MINI") or "cifar10_mini.npz-not-given")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def one_line_user_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def register_checksums(monkeypatch: pytest.MonkeyPatch, cls: type, folder: Path) -> None:
    """Point the class's checksum table at the files this test wrote.

    torchvision compares each file's md5 with the official release's; test files cannot match
    those, so the test registers theirs. Everything else, the md5 check included, runs as is.
    """
    monkeypatch.setattr(cls, "train_list", [[n, md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5(folder / n)] for n, _ in cls.test_list])
    if isinstance(getattr(cls, "meta", None), dict):
        meta = {**cls.meta, "md5": md5(folder / cls.meta["filename"])}
        monkeypatch.setattr(cls, "meta", meta)


def dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


# --------------------------------------------------------------------------- containers


def test_arrayset_validates_and_subsets():
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    s = ArraySet(x, torch.arange(4))
    assert len(s) == 4 and len(s.subset(torch.tensor([0, 2]))) == 2
    xb, yb = s.float_batch(slice(0, 2))
    assert xb.dtype == torch.float32 and yb.tolist() == [0, 1]
    with pytest.raises(ValueError):
        ArraySet(x.float(), torch.arange(4))
    with pytest.raises(ValueError):
        ArraySet(x, torch.arange(3))


def test_split_lookup_and_data_root(monkeypatch):
    s = ArraySet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    d = DatasetSplits("toy", s, None, s, 2, 4)
    assert d.split("test") is s
    with pytest.raises(UserError, match="no validation split"):
        d.split("val")
    with pytest.raises(UserError, match="unknown split"):
        d.split("dev")
    monkeypatch.delenv("BENCH_DATA", raising=False)
    assert data_root() == Path("data")
    monkeypatch.setenv("BENCH_DATA", "/somewhere")
    assert data_root() == Path("/somewhere")
    assert data_root("/explicit") == Path("/explicit")
    with pytest.raises(UserError) as info:  # every lookup under it would be an OSError
        data_root("a" * 300)
    assert str(info.value) == f"data root {'a' * 300}: File name too long"


def test_carve_val_is_stratified_seeded_and_exact():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    s = ArraySet(torch.zeros(100, 3, 2, 2, dtype=torch.uint8), y)
    train, val = carve_val(s, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert torch.bincount(val.y).tolist() == [5, 3, 2]
    again = carve_val(s, 0.1, seed=3)[1]
    assert torch.equal(again.y, val.y)
    assert carve_val(s, 0.0, seed=0) == (s, None)
    with pytest.raises(UserError):
        carve_val(s, 1.0, seed=0)


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_partition():
    d = harness.create_dataset("digits")
    assert d.num_classes == 10 and d.image_size == 32
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    for part in (d.train, d.val, d.test):
        assert part.x.dtype == torch.uint8 and part.x.shape[1:] == (3, 32, 32)
        assert part.y.dtype == torch.int64 and set(part.y.tolist()) == set(range(10))
        assert torch.equal(part.x[:, 0], part.x[:, 2])
    assert d.train.x.max() == 255 and d.train.x.min() == 0
    # Train, val and test together are the full set, each image exactly once.
    x_all, y_all = digits_images()
    whole = torch.cat([d.train.x, d.val.x, d.test.x]).flatten(1)
    labels = torch.cat([d.train.y, d.val.y, d.test.y])
    key = lambda x, y: sorted(zip((r.numpy().tobytes() for r in x), y.tolist()))  # noqa: E731
    assert key(whole, labels) == key(x_all.flatten(1), y_all)


def test_digits_seeds():
    a, b = harness.create_dataset("digits"), harness.create_dataset("digits")
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.val.y, b.val.y)
    c = harness.create_dataset("digits", split_seed=1)
    assert not torch.equal(a.test.x, c.test.x)
    v = harness.create_dataset("digits", val_seed=1)
    assert torch.equal(a.test.x, v.test.x) and not torch.equal(a.val.x, v.val.x)


# --------------------------------------------------------------------------- CIFAR / STL-10


def write_cifar(root: Path, hundred: bool, n: int = 4) -> tuple[np.ndarray, ...]:
    """A few random images in the official pickled layout; returns NCHW train/test + labels."""
    g = rng(1)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    label_key, k = ("fine_labels", 100) if hundred else ("labels", 10)
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    out = {}
    for split, files in (("train", names), ("test", ["test" if hundred else "test_batch"])):
        xs, ys = [], []
        for name in files:
            data = g.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = g.integers(0, k, n).tolist()
            entry = {"data": data, label_key: labels}
            if hundred:
                entry["coarse_labels"] = [lab // 5 for lab in labels]
            dump(folder / name, entry)
            xs.append(data.reshape(-1, 3, 32, 32))
            ys += labels
        out[split] = (np.concatenate(xs), np.array(ys))
    if hundred:
        dump(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    else:
        dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return (*out["train"], *out["test"])


@pytest.mark.parametrize("name, cls_name", [("cifar10", "CIFAR10"), ("cifar100", "CIFAR100")])
def test_cifar_round_trip(tmp_path, monkeypatch, name, cls_name):
    x_tr, y_tr, x_te, y_te = write_cifar(tmp_path, hundred=name == "cifar100")
    cls = getattr(import_torchvision().datasets, cls_name)
    register_checksums(monkeypatch, cls, tmp_path / cls.base_folder)
    d = harness.create_dataset(name, root=str(tmp_path), download=False, val_fraction=0.0)
    assert d.num_classes == (100 if name == "cifar100" else 10) and d.image_size == 32
    assert torch.equal(d.train.x, torch.from_numpy(x_tr)) and d.train.y.tolist() == y_tr.tolist()
    assert torch.equal(d.test.x, torch.from_numpy(x_te)) and d.test.y.tolist() == y_te.tolist()
    assert d.train.x.is_contiguous()


def test_cifar_checksum_mismatch_is_reported(tmp_path):
    write_cifar(tmp_path, hundred=False)
    with pytest.raises(UserError) as exc:
        harness.create_dataset("cifar10", root=str(tmp_path), download=False)
    assert "checksum" in one_line_user_error(exc)


def write_stl10(root: Path, n_train: int = 5, n_test: int = 3) -> tuple[np.ndarray, ...]:
    """The binary layout: column-major 96x96 planes, labels 1..10 in the files."""
    g = rng(2)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        x = g.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        y = g.integers(0, 10, n)
        x.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        (y + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        out += [x, y]
    return tuple(out)


def test_stl10_round_trip_and_resize(tmp_path, monkeypatch):
    x_tr, y_tr, x_te, y_te = write_stl10(tmp_path)  # no unlabeled_X.bin: not needed
    cls = torchvision_sets.stl10_class()
    register_checksums(monkeypatch, cls, tmp_path / "stl10_binary")
    d = harness.create_dataset("stl10", root=str(tmp_path), download=False, val_fraction=0.0)
    assert d.image_size == 96 and d.num_classes == 10
    assert torch.equal(d.train.x, torch.from_numpy(x_tr)) and d.train.y.tolist() == y_tr.tolist()
    assert torch.equal(d.test.x, torch.from_numpy(x_te)) and d.test.y.tolist() == y_te.tolist()
    small = harness.create_dataset(
        "stl10", root=str(tmp_path), download=False, val_fraction=0.0, image_size=32
    )
    assert small.image_size == 32 and small.test.x.shape == (3, 3, 32, 32)
    ref = F.interpolate(
        torch.from_numpy(x_te).float(), size=(32, 32), mode="bilinear", antialias=True
    )
    assert torch.equal(small.test.x, ref.round().clamp(0, 255).to(torch.uint8))


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10"])
def test_missing_without_download(tmp_path, name):
    with pytest.raises(UserError) as exc:
        harness.create_dataset(name, root=str(tmp_path / "none"), download=False)
    msg = one_line_user_error(exc)
    assert f"'{name}' not found under" in msg and "download=False" in msg
    assert "--data-root" in msg


@pytest.mark.parametrize("stage", ["probe", "download"])
def test_missing_and_no_network(tmp_path, monkeypatch, stage):
    cls = import_torchvision().datasets.CIFAR10

    def fail(*args, **kwargs):
        raise urllib.error.URLError(f"{stage} failed: no network")

    if stage == "probe":
        monkeypatch.setattr(torchvision_sets, "probe", fail)
    else:
        monkeypatch.setattr(torchvision_sets, "probe", lambda url: None)
    monkeypatch.setattr(cls, "download", fail)  # never reaches the network either way
    root = tmp_path / "fresh"
    with pytest.raises(UserError) as exc:
        harness.create_dataset("cifar10", root=str(root), download=True)
    msg = one_line_user_error(exc)
    assert "could not be downloaded" in msg and f"{stage} failed" in msg
    assert not root.exists()  # nothing half-made left behind


def test_probe_fails_fast_on_a_closed_port_and_honours_proxies(monkeypatch):
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        torchvision_sets.probe(f"http://127.0.0.1:{port}/x.tar.gz", timeout=2)
    with socket.create_server(("127.0.0.1", 0)) as server:
        listening = server.getsockname()[1]
        torchvision_sets.probe(f"http://127.0.0.1:{listening}/", timeout=2)
        # Behind a proxy only the proxy must be reachable (the host is never resolved).
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{listening}")
        torchvision_sets.probe("https://host.invalid/archive.tar.gz", timeout=2)


# --------------------------------------------------------------------------- Tiny ImageNet


def write_tiny(root: Path) -> tuple[Path, list[str]]:
    from PIL import Image

    g = rng(3)
    base = root / "tiny-imagenet-200"
    wnids = ["n0300", "n0100", "n0200"]  # wnids.txt is not sorted in the real data either
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")

    def jpeg(path: Path, grey: bool = False) -> None:
        pixels = g.integers(0, 256, (64, 64) if grey else (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels, "L" if grey else "RGB").save(path, "JPEG")

    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(3):
            jpeg(base / "train" / w / "images" / f"{w}_{i}.JPEG", grey=(w, i) == ("n0200", 1))
    lines = []
    for i in range(6):
        w = wnids[i % 3]
        jpeg(base / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base, wnids


def decoded(path: Path) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def test_tinyimagenet_layout_fixup_and_cache(tmp_path, monkeypatch):
    base, wnids = write_tiny(tmp_path)
    val = base / "val"
    # An earlier run interrupted half way: one file already moved.
    (val / "n0100" / "images").mkdir(parents=True)
    (val / "images" / "val_1.JPEG").rename(val / "n0100" / "images" / "val_1.JPEG")

    d = harness.create_dataset("tinyimagenet", root=str(tmp_path), val_fraction=0.0)
    assert d.num_classes == 3 and d.image_size == 64 and (len(d.train), len(d.test)) == (9, 6)
    assert not (val / "images").exists() and (val / tiny_mod.MARKER).exists()
    labels = {w: i for i, w in enumerate(sorted(wnids))}
    for i in range(6):
        w = wnids[i % 3]
        moved = val / w / "images" / f"val_{i}.JPEG"
        assert moved.is_file()
        assert torch.equal(d.test.x[i], decoded(moved)) and d.test.y[i] == labels[w]
    train_files = [
        (base / "train" / w / "images" / f"{w}_{i}.JPEG", labels[w])
        for w in sorted(wnids)
        for i in range(3)
    ]
    for k, (path, label) in enumerate(train_files):
        assert torch.equal(d.train.x[k], decoded(path)) and d.train.y[k] == label
    grey = train_files[3 * labels["n0200"] + 1][0]
    assert grey.exists() and d.train.x.shape[1] == 3
    k = 3 * labels["n0200"] + 1
    assert torch.equal(d.train.x[k, 0], d.train.x[k, 1]) and torch.equal(
        d.train.x[k, 0], d.train.x[k, 2]
    )

    # Second load: from the cache, no decoding at all, identical tensors.
    assert (base / tiny_mod.CACHE).is_file()

    def no_decode(path):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(tiny_mod, "decode", no_decode)
    again = harness.create_dataset("tinyimagenet", root=str(tmp_path), val_fraction=0.0)
    assert torch.equal(again.train.x, d.train.x) and torch.equal(again.test.y, d.test.y)
    monkeypatch.undo()

    # A changed file set invalidates the cache.
    train_files[0][0].unlink()
    fewer = harness.create_dataset("tinyimagenet", root=str(tmp_path))
    assert len(fewer.train) + len(fewer.val) == 8


def test_tinyimagenet_missing(tmp_path):
    with pytest.raises(UserError) as exc:
        harness.create_dataset("tinyimagenet", root=str(tmp_path), download=True)
    msg = one_line_user_error(exc)
    assert "'tinyimagenet' not found" in msg and "cs231n.stanford.edu" in msg


# --------------------------------------------------------------------------- npz


def base_images(n: int = 6) -> np.ndarray:
    return rng(4).integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "float", "grey", "grey_nhwc1"])
def test_npz_layouts(tmp_path, layout):
    xtr, xte = base_images(), base_images(4)
    convert = {
        "nchw": lambda x: x,
        "nhwc": lambda x: x.transpose(0, 2, 3, 1),
        "float": lambda x: x.astype(np.float32) / 255,
        "grey": lambda x: x[:, 0],
        "grey_nhwc1": lambda x: x[:, 0, :, :, None],
    }[layout]
    expect = (lambda x: np.repeat(x[:, :1], 3, axis=1)) if "grey" in layout else (lambda x: x)
    path = tmp_path / "d.npz"
    ytr, yte = np.array([0, 1, 2, 3, 4, 0]), np.array([1, 1, 2, 0])
    np.savez(path, x_train=convert(xtr), y_train=ytr, x_test=convert(xte), y_test=yte)
    d = harness.create_dataset("npz", path=str(path), val_fraction=0.0)
    assert d.num_classes == 5 and d.image_size == 8
    assert torch.equal(d.train.x, torch.from_numpy(expect(xtr)))
    assert torch.equal(d.test.x, torch.from_numpy(expect(xte)))
    assert d.test.y.tolist() == yte.tolist() and d.train.y.dtype == torch.int64


def test_npz_errors(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=base_images(), y_train=np.zeros(6, dtype=np.int64))
    with pytest.raises(UserError) as exc:
        harness.create_dataset("npz", path=str(path))
    assert "x_test, y_test" in one_line_user_error(exc)
    with pytest.raises(UserError, match="not found"):
        harness.create_dataset("npz", path=str(tmp_path / "absent.npz"))
    np.savez(path, x_train=base_images(), y_train=np.zeros(6), x_test=base_images(2) * 1.0,
             y_test=np.zeros(2))  # fmt: skip
    with pytest.raises(UserError, match=r"not in \[0, 1\]"):
        harness.create_dataset("npz", path=str(path))


BAD_NPZ = {
    "float label 1e300": (
        dict(y_train=np.array([0, 1, 1e300, 0, 1, 0])),
        "y_train holds label 1e+300; labels are class indices below 100000",
    ),
    "label 2**40": (
        dict(y_train=np.array([0, 1, 2**40, 0, 1, 0])),
        "y_train holds label 1099511627776; labels are class indices below 100000",
    ),
    "nan label": (
        dict(y_test=np.array([0.0, np.nan])),
        "y_test must hold integer class labels, got non-integral float64",
    ),
    "empty x_test": (
        dict(x_test=np.zeros((0, 3, 8, 8), np.uint8), y_test=np.zeros(0, np.int64)),
        "dataset 'npz:d' has an empty test set",
    ),
    "empty x_train": (
        dict(x_train=np.zeros((0, 3, 8, 8), np.uint8), y_train=np.zeros(0, np.int64)),
        "dataset 'npz:d' has 0 training image(s); at least 2 are needed",
    ),
    "one training image": (
        dict(x_train=base_images(1), y_train=np.zeros(1, np.int64)),
        "dataset 'npz:d' has 1 training image(s); at least 2 are needed",
    ),
    "two, one to val": (
        dict(x_train=base_images(2), y_train=np.zeros(2, np.int64)),
        "dataset 'npz:d' has 1 training image(s) after 1 went to the validation split",
    ),
}


def bad_npz(path: Path, case: str) -> None:
    arrays = dict(
        x_train=base_images(),
        y_train=np.arange(6) % 2,
        x_test=base_images(2),
        y_test=np.arange(2),
    )
    np.savez(path, **(arrays | BAD_NPZ[case][0]))


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_npz_values_are_checked_before_any_run(tmp_path, case, capsys):
    """Out-of-range labels are refused before the cast; empty or too-small splits before a
    run's directory exists (``bench run`` ends with one line and writes nothing)."""
    path = tmp_path / "d.npz"
    bad_npz(path, case)
    with pytest.raises(UserError) as exc:
        harness.create_dataset("npz", path=str(path))
    assert BAD_NPZ[case][1] in one_line_user_error(exc)
    from harness.cli import main

    store = tmp_path / "store"
    with pytest.raises(SystemExit) as end:
        main(["run", "--grid", "smoke", "--method", "pgd-at", "--dataset", f"npz:{path}",
              "--store", str(store), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert end.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert BAD_NPZ[case][1] in err
    assert not (store / "runs").exists() or not any((store / "runs").iterdir())


def test_a_single_image_batch_is_refused_before_the_run(tmp_path):
    """BatchNorm cannot train on one image: a training set of 33 with batch_size 32 fails
    before the run starts, not in its last step."""
    from harness.training.train import TrainConfig, check_trainable

    path = tmp_path / "d.npz"
    np.savez(path, x_train=base_images(33), y_train=np.arange(33) % 2, x_test=base_images(2),
             y_test=np.arange(2))  # fmt: skip
    data = harness.create_dataset("npz", path=str(path), val_fraction=0.0)
    with pytest.raises(UserError, match=r"would hold a single image \(33 images, batch_size 32\)"):
        check_trainable(data, TrainConfig(batch_size=32, select_on="test"))
    check_trainable(data, TrainConfig(batch_size=11, select_on="test"))
    with pytest.raises(UserError, match="has no validation split"):
        check_trainable(data, TrainConfig(batch_size=11, select_on="val"))


@pytest.mark.skipif(not MINI.is_file(), reason="BENCH_CIFAR10_MINI names no file")
def test_npz_real_cifar10_mini():
    d = harness.create_dataset("npz", path=str(MINI))
    assert d.num_classes == 10 and d.image_size == 32
    assert len(d.train) + len(d.val) == 5085 and len(d.test) == 1017
    assert torch.bincount(d.val.y, minlength=10).min() > 0


# --------------------------------------------------------------------------- batches


def toy(n: int = 23, size: int = 6) -> ArraySet:
    x = torch.from_numpy(rng(5).integers(1, 256, (n, 3, size, size), dtype=np.uint8))
    return ArraySet(x, torch.arange(n))  # labels = index, to follow samples


def test_batches_cover_each_sample_once_and_repeat_for_a_seed():
    data = toy()
    seen = [
        y for _, y in batches(data, 5, shuffle=True, generator=torch.Generator().manual_seed(0))
    ]
    order = torch.cat(seen)
    assert [len(y) for y in seen] == [5, 5, 5, 5, 3]
    assert sorted(order.tolist()) == list(range(23)) and order.tolist() != list(range(23))
    again = torch.cat(
        [y for _, y in batches(data, 5, shuffle=True, generator=torch.Generator().manual_seed(0))]
    )
    other = torch.cat(
        [y for _, y in batches(data, 5, shuffle=True, generator=torch.Generator().manual_seed(1))]
    )
    assert torch.equal(order, again) and not torch.equal(order, other)
    dropped = list(batches(data, 5, shuffle=True, drop_last=True, generator=torch.Generator()))
    assert [len(y) for _, y in dropped] == [5, 5, 5, 5]


def test_batches_plain_is_exact_and_typed():
    data = toy()
    xs, ys = zip(*batches(data, 7))
    x = torch.cat(xs)
    assert x.dtype == torch.float32 and ys[0].dtype == torch.int64 and x.device.type == "cpu"
    assert torch.equal(x, data.x.float() / 255) and torch.equal(torch.cat(ys), data.y)
    y0 = ys[0].clone()
    ys[0].add_(100)  # a batch is never a view into the data set
    assert torch.equal(data.y[:7], y0)


def reference_augment(img: torch.Tensor, top: int, left: int, flip: bool, p: int) -> torch.Tensor:
    """One image at a time, the obvious way."""
    h, w = img.shape[-2:]
    out = F.pad(img, (p, p, p, p))[:, top : top + h, left : left + w]
    return torch.flip(out, dims=[-1]) if flip else out


@pytest.mark.parametrize("padding", [4, 2])
def test_augmentation_matches_per_image_reference(padding):
    data = toy(n=40, size=8)
    got = list(
        batches(data, 16, shuffle=True, augment=True, padding=padding,
                generator=torch.Generator().manual_seed(7))
    )  # fmt: skip
    replay = torch.Generator().manual_seed(7)
    order = torch.randperm(len(data), generator=replay)
    tops, lefts, flips_all = draw_augment_params(len(data), replay, padding)  # the whole epoch
    flips = 0
    for start, (x, y) in zip(range(0, 40, 16), got):
        idx = order[start : start + 16]
        assert torch.equal(y, idx)
        top, left, flip = (t[start : start + 16] for t in (tops, lefts, flips_all))
        for j, i in enumerate(idx.tolist()):
            ref = reference_augment(data.x[i], int(top[j]), int(left[j]), bool(flip[j]), padding)
            assert torch.equal(x[j], ref.float() / 255)
            # Inputs have no zeros: the zeros are exactly the pixels shifted in from the padding.
            dy, dx = abs(int(top[j]) - padding), abs(int(left[j]) - padding)
            assert int((x[j] == 0).sum()) == 3 * (64 - (8 - dy) * (8 - dx))
        flips += int(flip.sum())
    assert 0 < flips < 40


def test_augment_batch_any_dtype():
    x = toy(n=5).x
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x.float(), torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and torch.equal(a.float(), b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_on_cuda_match_cpu():
    data = toy(n=40, size=8)
    runs = [
        list(batches(source, 16, shuffle=True, augment=True, device="cuda" if i else "cpu",
                     generator=torch.Generator().manual_seed(3)))
        for i, source in enumerate([data, data, data.to("cuda")])  # on the host, then resident
    ]  # fmt: skip
    for (xc, yc), *on_gpu in zip(*runs):
        for xg, yg in on_gpu:
            assert xg.device.type == "cuda"
            assert torch.equal(xc, xg.cpu()) and torch.equal(yc, yg.cpu())


def test_arrayset_to_keeps_the_data_and_its_device():
    data = toy(n=6, size=4)
    assert data.to("cpu") is data and data.device == torch.device("cpu")
    with pytest.raises(ValueError, match="share a device"):
        ArraySet(data.x, data.y.to("meta"))


def test_global_rng_untouched(tmp_path):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    d = harness.create_dataset("digits")
    path = tmp_path / "d.npz"
    np.savez(path, x_train=base_images(), y_train=np.arange(6) % 2, x_test=base_images(2),
             y_test=np.arange(2))  # fmt: skip
    harness.create_dataset("npz", path=str(path))
    for _ in batches(d.train, 256, shuffle=True, augment=True, generator=torch.Generator()):
        pass
    for _ in batches(d.train, 256, shuffle=True, augment=True):  # its own fresh generator
        pass
    assert torch.equal(torch.get_rng_state(), torch_state)
    new_np = np.random.get_state()
    assert new_np[0] == np_state[0] and np.array_equal(new_np[1], np_state[1])
