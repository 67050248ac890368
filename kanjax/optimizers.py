"""The optax transformation ``train`` runs, from its ``optimizer`` and ``schedule`` arguments.

Every optimizer is called the same way by the epoch program::

    updates, state = tx.update(grads, state, params, value=..., grad=..., value_fn=...,
                               residual_fn=..., samples=...)

:func:`with_training_args` adapts a transformation that takes fewer arguments (a plain
``GradientTransformation``, or a line search that takes ``value``/``grad``/``value_fn``);
the arguments it does not use are never traced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import optax

from kanjax import lm as lm_lib

__all__ = ["Optimizer", "adam_eps", "make_schedule", "resolve", "with_training_args"]

_LINE_SEARCH_ARGS = ("value", "grad", "value_fn")


class Optimizer(NamedTuple):
    """The transformation (taking the training arguments), its learning-rate schedule
    (``None`` when it has none to report), whether it runs on one flat vector, and whether
    its state reports the loss gradient at the parameters it was given (``state.grad``), so
    that the epoch does not differentiate the loss for its statistics."""

    tx: optax.GradientTransformationExtraArgs
    lr_fn: Callable | None
    flat: bool
    cost: float = 1.0  # gradient evaluations per step (line searches: more); 0: dense algebra
    reports_gradient: bool = False


def make_schedule(learning_rate, schedule, total_steps: int):
    if callable(schedule):
        return schedule
    if schedule == "cosine":
        return optax.cosine_decay_schedule(learning_rate, decay_steps=max(total_steps, 1))
    if schedule in ("constant", None):
        return optax.constant_schedule(learning_rate)
    raise ValueError(f"schedule must be 'cosine', 'constant', None or a callable, got {schedule!r}")


def with_training_args(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``tx`` taking (and ignoring what it does not need of) the epoch's extra arguments."""
    extra_args = isinstance(tx, optax.GradientTransformationExtraArgs)

    def update(updates, state, params=None, **kwargs):
        if not extra_args:
            return tx.update(updates, state, params)
        return tx.update(updates, state, params,
                         **{k: kwargs[k] for k in _LINE_SEARCH_ARGS if k in kwargs})

    return optax.GradientTransformationExtraArgs(tx.init, update)


def adam_eps(dtype) -> float:
    """Adam's ``eps`` for parameters of ``dtype``: optax's 1e-8 where that is a normal
    number of the dtype, else twice its smallest normal number (float16: ~1.2e-4), so
    that ``mu / (sqrt(nu) + eps)`` stays finite when ``nu`` underflows to zero."""
    return max(1e-8, 2.0 * float(jnp.finfo(dtype).tiny))


def resolve(config, total_steps: int, dtype=jnp.float32) -> Optimizer:
    """The optimizer of a :class:`kanjax.train_config.TrainConfig`.

    Default: Adam on ``config.schedule``, on one flat parameter vector (the same numbers as
    per-array Adam, one fused update for XLA to compile), with ``eps`` suited to the
    parameters' ``dtype`` (:func:`adam_eps`). ``"lbfgs"``: optax's L-BFGS with its zoom
    line search. ``"lm"``: :func:`kanjax.lm.levenberg_marquardt`, whose state has the
    gradient. A user's transformation sees the parameter pytree, as optax expects.
    """
    optimizer = config.optimizer
    if optimizer is None:
        lr_fn = make_schedule(config.learning_rate, config.schedule, total_steps)
        tx = optax.adam(lr_fn, eps=adam_eps(dtype))
        return Optimizer(with_training_args(tx), lr_fn, True)
    if optimizer == "lbfgs":
        return Optimizer(with_training_args(optax.lbfgs()), None, True, cost=3.0)
    if optimizer == "lm":
        return Optimizer(lm_lib.levenberg_marquardt(), None, True, cost=0.0,
                         reports_gradient=True)
    return Optimizer(with_training_args(optimizer), None, False)
