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
        """A history from :meth:`to_dict`'s form; absent fields are empty.

        Raises ``ValueError`` naming the field when ``d`` is not a dict, has a key that is no
        field, or a field of the wrong type (see the attributes).
        """
        _check_fields(d)
        return cls(**{f.name: d.get(f.name, f.default_factory()) for f in dataclasses.fields(cls)})

    def save(self, path: str | os.PathLike) -> None:
        """Write the history as JSON (atomically: a temporary file, then a rename)."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path) or not os.path.isdir(folder):
            raise FileNotFoundError(f"History.save: {path!r} " + (
                "is a folder; give a file name, e.g. history.json" if os.path.isdir(path)
                else f"is in a folder that does not exist ({folder!r}); create it first"))
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1, allow_nan=True)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> History:
        """The history :meth:`save` wrote to ``path``.

        Raises ``ValueError`` naming the file and the field when the file is not JSON, lacks
        ``train_loss`` or ``config``, or holds a field of the wrong type.
        """
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"History.load: {os.fspath(path)!r} is not a JSON history file "
                                 f"({err}); pass a file written by History.save") from None
        try:
            missing = [k for k in _REQUIRED if isinstance(d, dict) and k not in d]
            if missing:
                raise ValueError(f"no field {missing[0]!r} (History.save writes "
                                 f"{', '.join(_FIELD_KINDS)})")
            return cls.from_dict(d)
        except ValueError as err:
            raise ValueError(f"History.load: {os.fspath(path)!r}: {err}") from None

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


# Every field of History and the JSON form it must have.
_FIELD_KINDS = {"train_loss": "numbers", "val_loss": "numbers", "learning_rate": "numbers",
                "wall_time": "numbers", "grad_norm": "named numbers",
                "metrics": "named numbers", "config": "settings"}
_REQUIRED = ("train_loss", "config")


def _numbers(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _check_fields(d) -> None:
    if not isinstance(d, dict):  # a malformed file, like the checks below: ValueError
        raise ValueError(f"a history must be a dict of its fields, got "  # noqa: TRY004
                         f"{type(d).__name__}")
    unknown = sorted(str(k) for k in d if k not in _FIELD_KINDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}; a history has "
                         f"{', '.join(_FIELD_KINDS)}")
    for name, value in d.items():
        kind = _FIELD_KINDS[name]
        if kind == "numbers":
            ok = _numbers(value)
            want = "a list of numbers"
        elif kind == "named numbers":
            ok = isinstance(value, dict) and all(
                isinstance(k, str) and _numbers(v) for k, v in value.items())
            want = "a dict of name -> list of numbers"
        else:
            ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
            want = "a dict of name -> setting"
        if not ok:
            raise ValueError(f"field {name!r} must be {want}, got {_describe(value)}")


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


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
