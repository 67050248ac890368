"""Checkpoints of a ``kanjax.train`` run: periodic saves and resuming from the newest one.

The run's checkpoint directory is an ``orbax.checkpoint.CheckpointManager`` directory in
the :mod:`kanjax.checkpoint` format (``kanjax.load`` reads it): the model's state, the
optimizer state, the ``History``, and a ``train`` item with the completed epoch count, the
options that define the run's numbers, the shuffling key and a digest of the model the run
started from. Only the newest step is kept; an interrupted save leaves the previous one.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from flax import nnx

from kanjax import checkpoint as checkpoint_lib
from kanjax import nn as nn_lib
from kanjax import schema
from kanjax.checks import check_int
from kanjax.history import History

__all__ = ["TrainingCheckpoints", "training_checkpoints"]

_TRAIN_SCHEMA = {"epoch": "int", "options": "dict", "key": "dict", "start": "dict"}


def training_checkpoints(model, checkpoint_dir, checkpoint_every, resume, members):
    """Validate ``train``'s checkpoint arguments (before any work); ``None`` without a dir."""
    every = check_int("checkpoint_every", checkpoint_every, 0)
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {resume!r}")
    if checkpoint_dir is None:
        if every or resume:
            raise ValueError("checkpoint_every and resume need a checkpoint_dir")
        return None
    if members is not None:
        raise ValueError("checkpoint_dir is not supported by train_ensemble")
    directory = checkpoint_lib.absolute_path(checkpoint_dir)
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"checkpoint_dir {directory} exists and is not a directory")
    checkpoint_lib.check_destination(directory, overwrite=True)
    return TrainingCheckpoints(directory, every, _start_digest(model))


def _start_digest(model) -> dict[str, Any]:
    """What must match for a resume: the model's structure and its non-trainable arrays."""
    return {"model": nn_lib.model_config(model),
            "variables": checkpoint_lib.array_digests(nnx.state(model, nnx.Not(nnx.Param)))}


class TrainingCheckpoints:
    """The checkpoints of one ``train`` run in ``directory`` (the driver's checkpoint hook)."""

    def __init__(self, directory: str, every: int, start: dict[str, Any]):
        self.directory = directory
        self.every = every
        self.start = start
        self.epochs = 0
        self.options: dict[str, Any] = {}
        self.key: dict[str, Any] = {}

    def configure(self, *, epochs: int, key, options: dict[str, Any]) -> None:
        self.epochs = epochs
        self.options = json.loads(json.dumps(options))  # as read back from the file
        self.key = {"impl": str(jax.random.key_impl(key)),
                    "data": np.asarray(jax.random.key_data(key)).tolist()}

    def due(self, completed: int) -> bool:
        return completed == self.epochs or bool(self.every and completed % self.every == 0)

    def save(self, graphdef, params, rest, opt_state, history, completed: int) -> None:
        model = nnx.merge(graphdef, params, rest)
        train = {"epoch": completed, "options": self.options, "key": self.key, "start": self.start}
        items = {"config": {"model": nn_lib.model_config(model), "members": None},
                 "history": json.loads(json.dumps(history.to_dict(), allow_nan=True)),
                 "metadata": {}, "train": train}
        checkpoint_lib.write(self.directory, items,
                             {"state": nnx.state(model), "optimizer": opt_state})

    def restore(self, graphdef, params, rest, opt_state):
        """``(params, rest, opt_state, history, epoch)`` from the newest checkpoint, or ``None``
        when there is none. ``params``, ``rest`` and ``opt_state`` of the fresh run give the
        structures the checkpoint is restored into."""
        if not os.path.isdir(self.directory) or not any(
                n.isdigit() for n in os.listdir(self.directory)):
            return None
        with checkpoint_lib.reading(self.directory) as reader:
            epoch, history = self._check(reader)
            model = nnx.merge(graphdef, params, rest)
            restored = reader.restore("state", nnx.state(model))
            _, params, rest = nnx.split(nnx.merge(graphdef, restored), nnx.Param, ...)
            return params, rest, reader.restore("optimizer", opt_state), history, epoch

    def _check(self, reader) -> tuple[int, Any]:
        """The checkpoint's epoch and history, after checking it continues this run."""
        train, history = reader.items["train"], reader.items["history"]
        if train is None or history is None:
            raise reader.error("was not written by kanjax.train (no training state)")
        try:
            train = schema.check(train, _TRAIN_SCHEMA, "train")
            history = History.from_dict(history)
        except (TypeError, ValueError, KeyError) as err:
            raise reader.error(f"invalid training state: {err}") from None
        saved = train["options"]
        extends = self._extends(saved, train["epoch"])
        if extends:
            saved = dict(saved, epochs=self.epochs,
                         grid_update_until=self.options.get("grid_update_until"))
        _compare(reader, "options", saved, self.options)
        if train["key"] != self.key:
            raise _incompatible(reader, f"its shuffling key {train['key']} differs from this "
                                        f"run's {self.key}")
        if train["start"]["model"] != self.start["model"]:
            raise _incompatible(reader, "its model's structure (widths, basis, grid sizes, "
                                        "symbolic edges, ...) differs from `model`'s")
        _compare(reader, "non-trainable variables (grids, masks, symbolic edges)",
                 train["start"]["variables"], self.start["variables"], values=False)
        epoch = train["epoch"]
        if not 0 <= epoch <= self.epochs or history.epochs != epoch:
            raise reader.error(f"invalid epoch counter {epoch} (history has {history.epochs})")
        return epoch, history

    def _extends(self, saved: dict, epoch) -> bool:
        """Whether this run continues a finished run to more epochs: the checkpoint is from
        the last epoch of its run, this run is longer, and neither run set its own
        ``grid_update_until`` (it defaults to the run's length)."""
        old = saved.get("epochs")
        return (isinstance(old, int) and epoch == old < self.epochs
                and saved.get("grid_update_until") == old
                and self.options.get("grid_update_until") == self.epochs)


def _incompatible(reader, problem: str) -> ValueError:
    return ValueError(f"cannot resume from checkpoint {reader.path}: {problem}; build `model` "
                      "and call train as for the checkpointed run")


def _compare(reader, what: str, saved: dict, now: dict, *, values: bool = True) -> None:
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        shown = [f"{k}: {saved.get(k, '<unset>')!r} in the checkpoint, "
                 f"{now.get(k, '<unset>')!r} now" if values else k for k in diff[:5]]
        raise _incompatible(reader, f"its {what} differ from this run's (" + "; ".join(shown) + ")")
