"""Errors a user can cause: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user asked for (bad name, bad file, missing data), not a bug."""

    exit_code = 2


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; records where, so the grid can report it and move on."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at epoch {epoch}, step {step}")
        self.epoch = epoch
        self.step = step
        self.value = value
