"""Objectives: what ``train`` minimises, as ``loss(model, batch, weights) -> (value, metrics)``.

A user objective is ``fn(model, batch) -> loss`` or ``(loss, {name: metric})``; ``batch``
has the structure of the data given to ``train`` (any pytree of arrays sharing a leading
sample axis). It may differentiate ``model`` with respect to its inputs. The short forms
``loss="mse"``, ``"cross_entropy"`` or ``fn(pred, target)`` are objectives on
``(x, y)`` pairs with a per-sample loss; only they can mask the padded samples of a last,
partial minibatch (``weights``), and only ``"mse"`` has residuals for Levenberg-Marquardt.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from kanjax import losses as losses_lib

__all__ = ["Objective", "from_function", "from_loss"]


class Objective(NamedTuple):
    """What the epoch program evaluates.

    Attributes:
      loss: ``loss(model, batch, weights) -> (scalar, {name: scalar})``; ``weights`` is
        ``None`` (every sample counts) or one weight per sample of ``batch``.
      validation: ``validation(model, batch) -> scalar``, the loss reported on validation
        data (without regularization penalties).
      residuals: ``None``, or ``residuals(model, sample, weight, total_weight) -> (k,)``
        for one sample (no leading axis): residuals whose squares, summed over the samples
        of a batch, give ``loss`` (for least-squares optimizers).
      per_sample: whether ``loss`` honours ``weights`` (padded samples then count zero).
    """

    loss: Callable
    validation: Callable
    residuals: Callable | None
    per_sample: bool


@functools.lru_cache(maxsize=64)  # the same objective for the same loss: programs are reused
def from_loss(loss: str | Callable, *, l1: float = 0.0, entropy: float = 0.0) -> Objective:
    """The objective of a per-sample loss on ``(x, y)`` batches (plus the KAN paper's
    sparsity penalty when ``l1`` or ``entropy`` is set)."""
    per_example = losses_lib.get(loss)
    penalized = l1 > 0 or entropy > 0

    def value(model, batch, weights):
        x, y = batch
        if penalized:
            pred, penalty = model.forward_with_penalty(x, l1=l1, entropy=entropy)
        else:
            pred, penalty = model(x), 0.0
        per = per_example(pred, y)
        if weights is None:  # every weight is 1: the plain mean
            return jnp.mean(per) + penalty, {}
        return jnp.sum(per * weights) / jnp.sum(weights) + penalty, {}

    def validation(model, batch):
        x, y = batch
        return jnp.mean(per_example(model(x), y))

    residuals = _squared_error_residuals if loss == "mse" and not penalized else None
    return Objective(value, validation, residuals, per_sample=True)


def _squared_error_residuals(model, sample, weight, total_weight):
    """One sample's residuals, scaled so that their squares sum to the weighted MSE."""
    x, y = sample
    scale = 1.0 / (total_weight * math.prod(y.shape))
    pred = model(x[None])[0]
    return ((pred - y) * jnp.sqrt(weight * scale)).reshape(-1)


@functools.lru_cache(maxsize=64)
def from_function(fn: Callable[[Any, Any], Any]) -> Objective:
    """The objective of a user function ``fn(model, batch) -> loss | (loss, metrics)``."""

    def value(model, batch, weights):
        del weights  # a whole-batch objective: padded samples count like the others
        return split_output(fn(model, batch))

    def validation(model, batch):
        return split_output(fn(model, batch))[0]

    return Objective(value, validation, None, per_sample=False)


def split_output(out) -> tuple[jax.Array, dict]:
    """``(loss, metrics)`` of an objective's return value (a scalar or a pair)."""
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], dict):
            raise TypeError("an objective returns a scalar loss or (loss, {name: metric}), got a "
                            f"tuple of {len(out)}")
        loss, metrics = out
    else:
        loss, metrics = out, {}
    loss = jnp.asarray(loss)
    if loss.shape != ():
        raise ValueError(f"an objective must return a scalar loss, got shape {loss.shape}")
    return loss, {str(k): jnp.asarray(v, jnp.float32).reshape(()) for k, v in metrics.items()}
