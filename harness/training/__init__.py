"""The trainer (knows no method: ``perturb`` then ``loss``), its fast path and torch.compile
per run."""
