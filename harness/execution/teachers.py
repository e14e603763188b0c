"""Teachers from a harness-trained run, a local checkpoint, a URL, or RobustBench by name.

Weights from outside the store are checked by sha256 before they are loaded: a checkpoint
against the hash the grid was expanded with, a URL's against its required pin, RobustBench's
against its pin or the hash recorded at first download (:mod:`harness.utils.downloads`). The model's
``weights_sha256`` (file name -> hash) goes into the run's provenance.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import harness
from harness.schema import TeacherRef
from harness.store.store import Store
from harness.utils.downloads import MODEL_DIR
from harness.utils.errors import UserError
from harness.utils.values import file_sha256


def load_teacher(
    ref: TeacherRef | Mapping[str, Any],
    store: Store,
    *,
    num_classes: int,
    image_size: int,
    dataset: str,
    model_dir: str | Path = MODEL_DIR,
) -> nn.Module:
    """The frozen teacher a run's config names (eval mode, no gradients on its weights)."""
    from harness.models import load_weights

    if not isinstance(ref, TeacherRef):
        ref = TeacherRef.from_json(ref)
    source = ref.source
    if source == "run":
        run_id = ref.run_id
        if store.status(run_id) != "complete":
            raise UserError(f"teacher {ref.name!r} (run {run_id}) has not finished training")
        model = harness.create_model(ref.model, num_classes=num_classes, image_size=image_size)
        load_weights(
            model, _student_weights(store.checkpoint(run_id, "best")), what=f"teacher run {run_id}"
        )
    elif source == "checkpoint":
        digest = file_sha256(ref.path)
        if digest != ref.sha256:
            raise UserError(f"teacher checkpoint {ref.path} changed since the grid was expanded")
        model = harness.create_model(ref.model, num_classes=num_classes, image_size=image_size)
        load_weights(model, ref.path, what=f"checkpoint {ref.path}")
        model.weights_sha256 = {Path(ref.path).name: digest}
    elif source == "url":
        from harness.utils.downloads import fetch_url

        path = fetch_url(ref.url, ref.sha256, model_dir)
        model = harness.create_model(ref.model, num_classes=num_classes, image_size=image_size)
        load_weights(model, path, what=f"teacher {ref.name!r} checkpoint")
        model.weights_sha256 = {path.name: ref.sha256}
    elif source == "robustbench":
        from harness.models.robustbench import check_classes, load_robustbench, zoo_dataset

        board = zoo_dataset(dataset, num_classes, ref.zoo)
        model = load_robustbench(
            ref.robustbench,
            dataset=board,
            threat_model=ref.threat_model or "Linf",
            model_dir=model_dir,
            sha256=ref.sha256,
        )
        check_classes(model, num_classes, f"teacher {ref.name!r} ({board})", dataset)
    else:
        raise UserError(f"unknown teacher source {source!r}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _student_weights(path: Any) -> dict[str, torch.Tensor]:
    from harness.utils.compat import load_checkpoint

    return load_checkpoint(path)["student"]
