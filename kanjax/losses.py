"""Per-sample losses used by ``kanjax.train``.

Each loss maps ``(pred, target)`` with a leading batch axis to one value per sample,
shape ``(batch,)``, so that ``train`` can mask the padded samples of the last minibatch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

__all__ = ["cross_entropy", "get", "mse"]


def _per_sample_mean(v: jax.Array) -> jax.Array:
    return v.reshape(v.shape[0], -1).mean(axis=1)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Squared error averaged over the output axes: ``(batch, ...) -> (batch,)``."""
    return _per_sample_mean(jnp.square(pred - target))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy on integer labels: ``(batch, C), (batch,) -> (batch,)``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


_NAMED = {"mse": mse, "cross_entropy": cross_entropy}


def get(loss: str | Callable) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Resolve ``loss`` (a name or a callable) to a per-sample loss function.

    A user callable may return per-sample values ``(batch, ...)`` (trailing axes are
    averaged) or a scalar, in which case it is applied to each sample separately.
    """
    if isinstance(loss, str):
        if loss not in _NAMED:
            raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(_NAMED)} or a callable")
        return _NAMED[loss]
    if not callable(loss):
        raise TypeError(f"loss must be a name or a callable, got {type(loss).__name__}")

    def per_sample(pred, target):
        out = jnp.asarray(loss(pred, target))
        if out.ndim == 0:
            out = jax.vmap(lambda p, t: loss(p[None], t[None]))(pred, target)
            out = jnp.reshape(out, (pred.shape[0], -1)).mean(axis=1)
            return out
        if out.shape[0] != pred.shape[0]:
            raise ValueError(
                f"loss returned shape {out.shape}; expected one value per sample "
                f"(leading axis {pred.shape[0]}) or a scalar"
            )
        return _per_sample_mean(out)

    return per_sample
