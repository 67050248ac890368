"""``History``: what :func:`kanjax.train` records per epoch, and ``TrainingDiverged``."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

__all__ = ["History", "TrainingDiverged"]


@dataclasses.dataclass
class History:
    """What ``train`` records, one entry per completed epoch.

    Attributes:
      train_loss: mean minibatch loss over the epoch (weighted by samples).
      val_loss: loss on ``validation_data`` after the epoch (empty without it).
      learning_rate: learning rate at the last step of the epoch (``nan`` when a custom
        optimizer hides it).
      wall_time: seconds since training started (after compiling), at the end of each
        epoch; with ``grid_schedule``, since ``train`` was called (so later stages include
        their refits and compilation).
      grad_norm: per layer (``"layers.0"``, ...), the L2 norm of that layer's gradient,
        averaged over the epoch's steps.
      metrics: the auxiliary metrics an objective returns (``(loss, {name: value})``),
        per name, averaged over the epoch's steps (weighted by samples).
      config: the settings of the run (epochs, batch size, steps per epoch, seed, ...).
    """

    train_loss: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    learning_rate: list[float] = dataclasses.field(default_factory=list)
    wall_time: list[float] = dataclasses.field(default_factory=list)
    grad_norm: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    metrics: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(**{f.name: d.get(f.name, f.default_factory()) for f in dataclasses.fields(cls)})

    def save(self, path: str | os.PathLike) -> None:
        """Write the history as JSON (atomically: a temporary file, then a rename)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1, allow_nan=True)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> History:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def extend(self, other: History) -> None:
        """Append ``other``'s epochs (a later stage of the same run) to this history."""
        self.train_loss += other.train_loss
        self.val_loss += other.val_loss
        self.learning_rate += other.learning_rate
        self.wall_time += other.wall_time
        for name, values in other.grad_norm.items():
            self.grad_norm.setdefault(name, []).extend(values)
        for name, values in other.metrics.items():
            self.metrics.setdefault(name, []).extend(values)


class TrainingDiverged(FloatingPointError):
    """The loss became non-finite.

    Attributes:
      epoch: the (1-based) epoch whose loss was not finite.
      model: the model at the end of the last finite epoch (the same object that was
        passed to ``train``, updated in place).
      history: the history up to the last finite epoch.
    """

    def __init__(self, epoch: int, model, history):
        self.epoch, self.model, self.history = epoch, model, history
        super().__init__(
            f"training diverged: the loss became non-finite (nan or inf) in epoch {epoch}; "
            f"the model holds the parameters after epoch {epoch - 1}, the last finite one. "
            "Try a smaller learning rate, inputs scaled to the grid range, or squash='tanh'."
        )
