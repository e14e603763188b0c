"""Teachers from a harness-trained run, a local checkpoint, or RobustBench by name."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import harness
from harness.config import file_sha256
from harness.errors import UserError
from harness.store import Store


def load_teacher(
    ref: dict[str, Any], store: Store, *, num_classes: int, image_size: int, dataset: str
) -> nn.Module:
    """The frozen teacher a run's config names (eval mode, no gradients on its weights)."""
    from harness.models import load_weights

    source = ref["source"]
    if source == "run":
        run_id = ref["run_id"]
        if store.status(run_id) != "complete":
            raise UserError(f"teacher {ref['name']!r} (run {run_id}) has not finished training")
        model = harness.create_model(ref["model"], num_classes=num_classes, image_size=image_size)
        load_weights(
            model, _student_weights(store.checkpoint(run_id, "best")), what=f"teacher run {run_id}"
        )
    elif source == "checkpoint":
        if file_sha256(ref["path"]) != ref["sha256"]:
            raise UserError(f"teacher checkpoint {ref['path']} changed since the grid was expanded")
        model = harness.create_model(ref["model"], num_classes=num_classes, image_size=image_size)
        load_weights(model, ref["path"], what=f"checkpoint {ref['path']}")
    elif source == "robustbench":
        from harness.models.robustbench import load_robustbench

        model = load_robustbench(
            ref["robustbench"], dataset=dataset, threat_model=ref["threat_model"]
        )
    else:
        raise UserError(f"unknown teacher source {source!r}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _student_weights(path: Any) -> dict[str, torch.Tensor]:
    from harness.compat import load_checkpoint

    return load_checkpoint(path)["student"]
