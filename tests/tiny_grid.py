"""A grid whose runs train and evaluate in seconds: an ``.npz`` of 48 training and 16 test images
(8×8, two classes), one epoch, clean and FGSM; for tests that need real runs in a store."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_grid(tmp_path: Path, methods: list[str], name: str = "tiny", extra: str = "") -> Path:
    g = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    if not data.exists():
        y_train, y_test = np.arange(48) % 2, np.arange(16) % 2
        x_train = (y_train[:, None, None, None] * 120 + g.integers(0, 100, (48, 3, 8, 8))).astype(
            np.uint8
        )
        x_test = (y_test[:, None, None, None] * 120 + g.integers(0, 100, (16, 3, 8, 8))).astype(
            np.uint8
        )
        np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    path = tmp_path / f"{name}.toml"
    listed = ", ".join(f'"{m}"' for m in methods)
    path.write_text(
        f'dataset = "npz"\nstudents = ["tiny_cnn"]\nmethods = [{listed}]\nseeds = [0]\n'
        f"{extra}"
        f'[dataset_options]\npath = "{data}"\nval_fraction = 0.25\n'
        "[train]\nepochs = 1\nbatch_size = 16\nselect_steps = 1\neval_batch_size = 16\n"
        '[eval]\nattacks = ["clean", "fgsm"]\n'
    )
    return path
