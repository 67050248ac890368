"""``TrainConfig``: the arguments of :func:`kanjax.train`, typed, validated once and frozen.

Every check here runs before the model is touched or anything is traced. The config is
what ``History.config`` records (with the facts of the data: samples, steps per epoch)
and what a resumed run must match (:meth:`TrainConfig.run_options`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import optax

from kanjax.checks import check_int, check_number

__all__ = ["OPTIMIZER_NAMES", "TrainConfig"]

OPTIMIZER_NAMES = ("lbfgs", "lm")


def _check_schedule(schedule) -> None:
    if not (callable(schedule) or schedule in ("cosine", "constant", None)):
        raise ValueError(f"schedule must be 'cosine', 'constant', None or a callable, got {schedule!r}")


def _check_optimizer(optimizer) -> None:
    if optimizer is None or isinstance(optimizer, optax.GradientTransformation):
        return
    if isinstance(optimizer, str) and optimizer in OPTIMIZER_NAMES:
        return
    raise TypeError("optimizer must be an optax.GradientTransformation, 'lbfgs' or 'lm', got "
                    f"{optimizer!r}")


def _check_grid_schedule(grid_schedule) -> tuple[tuple[int, int], ...]:
    if grid_schedule is None:
        return ()
    try:
        stages = tuple((int(g), int(e)) for g, e in grid_schedule)
    except (TypeError, ValueError):
        raise TypeError("grid_schedule must be a sequence of (grid_size, epochs) pairs, got "
                        f"{grid_schedule!r}") from None
    if any(g < 1 or e < 0 for g, e in stages):
        raise ValueError(f"grid_schedule needs grid sizes >= 1 and epochs >= 0, got {list(stages)}")
    return stages


def _name(fn) -> str:
    return getattr(fn, "__name__", "custom")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The arguments of :func:`kanjax.train` (see there), validated.

    ``grid_update_until=None`` means every epoch; ``batch_size=None`` means full batch;
    ``objective`` replaces ``loss`` when given.
    """

    epochs: int = 200
    batch_size: int | None = 64
    learning_rate: float = 2e-2
    optimizer: optax.GradientTransformation | str | None = None
    schedule: str | Callable | None = "cosine"
    loss: str | Callable = "mse"
    objective: Callable | None = None
    seed: int = 0
    progress: bool = True
    l1: float = 0.0
    entropy: float = 0.0
    grid_update_every: int = 0
    grid_update_until: int | None = None
    grid_eps: float = 0.02
    grid_margin: float = 0.0
    grid_schedule: tuple[tuple[int, int], ...] = ()
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = 0
    resume: bool = False
    mesh: Any = "auto"
    callback: Callable | None = None
    shared_order: bool = False

    def __post_init__(self):
        put = _setter(self)
        put("epochs", check_int("epochs", self.epochs, 0))
        if self.batch_size is not None:
            put("batch_size", check_int("batch_size", self.batch_size, 1))
        put("seed", check_int("seed", self.seed, 0))
        _check_optimizer(self.optimizer)
        if self.optimizer is None:
            put("learning_rate", check_number("learning_rate", self.learning_rate, positive=True))
        _check_schedule(self.schedule)
        self._check_loss()
        for name in ("l1", "entropy"):
            put(name, check_number(name, getattr(self, name)))
        put("grid_update_every", check_int("grid_update_every", self.grid_update_every, 0))
        if self.grid_update_until is not None:
            put("grid_update_until", check_int("grid_update_until", self.grid_update_until, 0))
        for name in ("grid_eps", "grid_margin"):
            put(name, check_number(name, getattr(self, name)))
        put("grid_schedule", _check_grid_schedule(self.grid_schedule))
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir,
                                                              (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a folder path (str or os.PathLike) or None, "
                            f"got {type(self.checkpoint_dir).__name__} {self.checkpoint_dir!r}; "
                            "pass e.g. checkpoint_dir='runs/kan'")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable(epochs_done, history), got {self.callback!r}")
        for name in ("progress", "shared_order"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.grid_schedule and (self.checkpoint_dir is not None or self.callback is not None):
            raise ValueError("grid_schedule is not combined with checkpoint_dir or callback")
        self._check_lm()

    def _check_loss(self) -> None:
        if self.objective is not None:
            if not callable(self.objective):
                raise TypeError("objective must be a callable fn(model, batch) -> loss or "
                                f"(loss, metrics), got {self.objective!r}")
            if self.l1 or self.entropy:
                raise ValueError("l1/entropy penalties belong inside a custom objective; pass "
                                 "them only with loss=")
            return
        if isinstance(self.loss, str):
            if self.loss not in ("mse", "cross_entropy"):
                raise ValueError(f"unknown loss {self.loss!r}; expected one of "
                                 "['cross_entropy', 'mse'] or a callable")
        elif not callable(self.loss):
            raise TypeError(f"loss must be a name or a callable, got {type(self.loss).__name__}")

    def _check_lm(self) -> None:
        if self.optimizer != "lm":
            return
        if self.objective is not None or self.loss != "mse":
            raise ValueError("optimizer='lm' fits least squares: it needs loss='mse', got "
                             f"{self.objective if self.objective is not None else self.loss!r}")
        if self.l1 or self.entropy:
            raise ValueError("optimizer='lm' does not support the l1/entropy penalties; use "
                             "'lbfgs' or Adam for sparsity training")

    # ------------------------------------------------------------------ derived facts

    @property
    def optimizer_name(self) -> str:
        if self.optimizer is None:
            return "adam"
        return self.optimizer if isinstance(self.optimizer, str) else "custom"

    @property
    def loss_name(self) -> str:
        if self.objective is not None:
            return _name(self.objective)
        return self.loss if isinstance(self.loss, str) else _name(self.loss)

    @property
    def schedule_name(self) -> str | None:
        if self.optimizer is None and isinstance(self.schedule, (str, type(None))):
            return self.schedule
        return "custom"

    def until(self) -> int:
        """The epoch before which grid updates run."""
        return self.epochs if self.grid_update_until is None else self.grid_update_until

    def record(self, *, n_samples: int, batch_size: int, steps: int) -> dict[str, Any]:
        """The settings of the run, as ``History.config`` starts."""
        return dict(epochs=self.epochs, batch_size=batch_size, steps_per_epoch=steps,
                    n_samples=n_samples,
                    learning_rate=self.learning_rate if self.optimizer is None else None,
                    schedule=self.schedule_name, loss=self.loss_name, seed=self.seed)

    def run_options(self, *, n_samples: int, batch_size: int, steps: int,
                    validation: bool) -> dict[str, Any]:
        """What defines the run's numbers (not the hardware it runs on): a resumed run must
        have the same, so that it continues the checkpointed one exactly."""
        options = self.record(n_samples=n_samples, batch_size=batch_size, steps=steps)
        options.update(optimizer=self.optimizer_name, l1=self.l1, entropy=self.entropy,
                       grid_update_every=self.grid_update_every,
                       grid_update_until=self.until(), grid_eps=self.grid_eps,
                       validation=validation)
        if self.grid_margin:  # only when used, so that runs without it match older ones
            options["grid_margin"] = self.grid_margin
        return options

    def stage(self, epochs: int) -> TrainConfig:
        """This config for one later stage of a grid schedule (``epochs`` epochs)."""
        return dataclasses.replace(self, epochs=epochs, grid_schedule=())


def _setter(obj):
    """A setter for the fields of frozen ``obj`` (for normalising them in ``__post_init__``)."""
    return lambda name, value: object.__setattr__(obj, name, value)
