"""What ``train`` does between compiled epochs, as hooks of :func:`kanjax.driver.drive`.

Each hook takes the finished epoch (:class:`kanjax.driver.EpochResult`) and returns
``True`` to stop training. They run in the order ``train`` gives them: divergence check,
history, progress bar, checkpoint, user callback, convergence.
"""

from __future__ import annotations

import time

import numpy as np
from flax import nnx

from kanjax.history import History, TrainingDiverged

__all__ = [
    "CheckpointSaver",
    "ConvergenceCheck",
    "DivergenceCheck",
    "ProgressBar",
    "Recorder",
    "UserCallback",
    "one_or_all",
]


def one_or_all(histories: list[History], ensemble: bool):
    """What a user sees: the list of member histories for an ensemble, else the history."""
    return histories if ensemble else histories[0]


class DivergenceCheck:
    """Raise :class:`TrainingDiverged` when an epoch's loss was not finite (the epoch
    program then returned the previous epoch's state, which the driver hands to the model)."""

    def __init__(self, model, histories, ensemble: bool):
        self.model, self.histories, self.ensemble = model, histories, ensemble

    def __call__(self, result) -> None:
        if not result.stats[0].all():
            raise TrainingDiverged(result.completed, self.model,
                                   one_or_all(self.histories, self.ensemble))


class Recorder:
    """Append an epoch's statistics to the histories (one per ensemble member)."""

    def __init__(self, histories, group_names, has_val: bool, time_offset: float = 0.0):
        self.histories, self.group_names, self.has_val = histories, group_names, has_val
        self.time_offset = time_offset
        self.start = time.perf_counter()

    def __call__(self, result) -> None:
        _, train_loss, val, lr, norms, _, metrics = result.stats
        norms = norms.reshape(len(self.histories), len(self.group_names))
        now = time.perf_counter() - self.start + self.time_offset
        for i, h in enumerate(self.histories):
            h.train_loss.append(float(train_loss[i]))
            if self.has_val:
                h.val_loss.append(float(val[i]))
            h.learning_rate.append(float(lr[i]))
            h.wall_time.append(now)
            for name, v in zip(self.group_names, norms[i]):
                h.grad_norm.setdefault(name, []).append(float(v))
            for name, v in metrics.items():
                h.metrics.setdefault(name, []).append(float(v[i]))


class ProgressBar:
    """A rich progress bar (also in notebooks); a context manager around the driver."""

    def __init__(self, epochs: int, start: int, has_val: bool):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(TextColumn("[bold]epoch"), MofNCompleteColumn(), BarColumn(),
                            TextColumn("{task.fields[metrics]}"), TimeElapsedColumn())
        self.task = self.bar.add_task("train", total=epochs, completed=start, metrics="")
        self.has_val = has_val

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def __call__(self, result) -> None:
        _, train_loss, val = result.stats[:3]
        metrics = f"loss {np.mean(train_loss):.3e}" + (
            f"  val {np.mean(val):.3e}" if self.has_val else "")
        self.bar.update(self.task, advance=1, metrics=metrics)


class CheckpointSaver:
    """Save the run when its checkpoints are due (:class:`kanjax.checkpoint.TrainingCheckpoints`),
    between compiled epochs, before the next call donates the optimizer state's buffers."""

    def __init__(self, checkpoints, graphdef, history: History):
        self.checkpoints, self.graphdef, self.history = checkpoints, graphdef, history

    def __call__(self, result) -> None:
        if self.checkpoints.due(result.completed):
            self.checkpoints.save(self.graphdef, result.params, result.rest, result.opt_state,
                                  self.history, result.completed)


class UserCallback:
    """``callback(epochs_done, history)`` with the model holding this epoch's parameters."""

    def __init__(self, callback, model, histories, ensemble: bool):
        self.callback, self.model = callback, model
        self.histories, self.ensemble = histories, ensemble

    def __call__(self, result) -> bool:
        nnx.update(self.model, result.params, result.rest)
        if self.callback(result.completed, one_or_all(self.histories, self.ensemble)):
            for h in self.histories:
                h.config["stopped_at_epoch"] = result.completed
            return True
        return False


class ConvergenceCheck:
    """Stop when the optimizer reports convergence (a ``converged`` field in its state):
    further epochs would not move the parameters. ``config["converged"]`` records it."""

    def __init__(self, histories):
        self.histories = histories

    def __call__(self, result) -> bool:
        done = bool(result.stats[5].all())
        for h in self.histories:
            h.config["converged"] = done
            if done:
                h.config["stopped_at_epoch"] = result.completed
        return done
