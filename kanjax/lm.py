"""Levenberg-Marquardt for small least-squares fits (the KAN paper's regime).

:func:`levenberg_marquardt` is an ``optax.GradientTransformationExtraArgs`` on one flat
parameter vector ``theta`` of size ``P``; ``kanjax.train(..., optimizer="lm")`` runs it once
per (full-batch) epoch. Its ``update`` receives the residual function of one sample
(``residual_fn``) and the batch's samples (``samples``) as extra arguments, besides the
loss (``value_fn``). :func:`lm_update` is the same iteration as a pure function.

One iteration forms the Gauss-Newton normal equations ``A = J^T J``, ``g = J^T r`` of the
residuals ``r`` (``loss = r . r``), then tries steps ``(A + lam * diag(A + eps)) delta = -g``
(Marquardt's scaling), shrinking ``lam`` after a step that lowers the loss and growing it
after one that does not, up to ``max_trials`` times. The iteration reports convergence
when no trial lowers the loss by more than a fraction ``ftol`` of it (MINPACK's relative
reduction test, with its recommended ``ftol = sqrt(machine epsilon)`` of the parameters'
dtype, ~3e-4 in float32); a step that lowers the loss is still taken. ``J`` is built
from per-sample Jacobians (``vmap`` over samples of ``jacrev`` of one sample's residuals),
in chunks of samples so that no more than about ``2**22`` Jacobian entries exist at once:
the model's prediction for a sample must depend on that sample only, as for ``kanjax.KAN``
and ``kanjax.MLP``. Cost per iteration: ``O(m P^2)`` for ``A`` and ``O(P^3)`` per trial for the
Cholesky solve, which is why this is for models of up to a few thousand parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "MAX_PARAMS",
    "LMState",
    "levenberg_marquardt",
    "lm_init",
    "lm_update",
    "normal_equations",
]

MAX_PARAMS = 20_000  # a P x P Cholesky per trial: beyond this, use L-BFGS or Adam


class LMState(NamedTuple):
    damping: jax.Array  # lam, scalar
    converged: jax.Array  # bool: the last iteration lowered the loss by at most ftol of it
    grad: jax.Array  # (P,): the loss gradient 2 J^T r at the last iteration's start (0 before)


def lm_init(theta: jax.Array, damping: float = 1e-2) -> LMState:
    return LMState(jnp.asarray(damping, theta.dtype), jnp.asarray(False), jnp.zeros_like(theta))


def normal_equations(
    residual_one: Callable, theta: jax.Array, *samples, max_entries: int = 2**22,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(J^T J, J^T r, r . r)`` over all samples.

    Args:
      residual_one: ``residual_one(theta, *sample) -> (n_out,)``, one sample's residuals
        (weighted and scaled so that their squares sum to the loss).
      theta: ``(P,)``.
      samples: pytrees of arrays with a leading sample axis ``m`` (e.g. inputs, targets,
        weights); ``residual_one`` gets one sample of each.
      max_entries: Jacobian entries formed at once (samples are taken in chunks).
    """
    m = jax.tree.leaves(samples)[0].shape[0]
    n_par = theta.shape[0]
    first = jax.tree.map(lambda a: a[0], samples)
    n_out = jax.eval_shape(residual_one, theta, *first).shape[0]
    chunk = int(max(1, min(m, max_entries // max(1, n_par * n_out))))
    n_chunks = -(-m // chunk)
    pad = n_chunks * chunk - m

    def padded(a):  # padded samples are zeros (weight 0: their residuals and rows of J are 0)
        a = jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)]) if pad else a
        return a.reshape(n_chunks, chunk, *a.shape[1:])

    with_aux = jax.jacrev(lambda t, *s: (residual_one(t, *s),) * 2, has_aux=True)
    per_sample = jax.vmap(with_aux, in_axes=(None, *[0] * len(samples)))

    def products(batch):  # (J^T J, J^T r, r . r) of one chunk of samples
        jac, res = per_sample(theta, *batch)  # (chunk, n_out, P), (chunk, n_out)
        jac, res = jac.reshape(-1, n_par), res.reshape(-1)
        return jac.T @ jac, jac.T @ res, res @ res

    if n_chunks == 1:  # all samples at once: no loop to compile
        return products(samples)

    def accumulate(carry, batch):
        return tuple(c + p for c, p in zip(carry, products(batch))), None

    zero = jnp.zeros((), theta.dtype)
    init = (jnp.zeros((n_par, n_par), theta.dtype), jnp.zeros_like(theta), zero)
    (a, g, loss), _ = jax.lax.scan(accumulate, init, jax.tree.map(padded, samples))
    return a, g, loss


def lm_update(
    loss_fn: Callable[[jax.Array], jax.Array],
    normal_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array, jax.Array]],
    theta: jax.Array,
    state: LMState,
    *,
    max_trials: int = 8,
    ftol: float | None = None,
) -> tuple[jax.Array, LMState, jax.Array, jax.Array]:
    """One Levenberg-Marquardt iteration.

    Args:
      loss_fn: ``theta -> r . r``.
      normal_fn: ``theta -> (J^T J, J^T r, r . r)`` (:func:`normal_equations`).
      theta: ``(P,)``.
      state: :class:`LMState`.
      max_trials: damping values tried before the iteration gives up (``converged``).
      ftol: relative loss reduction at or below which the iteration counts as converged
        (default ``sqrt(eps)`` of ``theta``'s dtype). Near a minimum in float32 the loss can
        go on falling by a few parts in 1e5 per iteration for as long as one lets it.

    Returns:
      ``(theta, state, loss, grad)``: the new parameters (unchanged if no trial lowered
      the loss), the new state, the loss at the old ``theta`` and its gradient ``2 J^T r``.
    """
    delta, state, loss, grad = _lm_step(loss_fn, normal_fn, theta, state, max_trials, ftol)
    return theta + delta, state, loss, grad


def _lm_step(loss_fn, normal_fn, theta, state, max_trials, ftol):
    """``(delta, state, loss, grad)``: :func:`lm_update` with the step instead of the
    new parameters (``theta + delta`` is the accepted trial point exactly; 0 if none)."""
    a, g, loss = normal_fn(theta)
    diag = jnp.diagonal(a)
    # Marquardt's scaling, floored so that directions the data do not constrain stay put
    scale = diag + 1e-6 * jnp.max(diag) + jnp.finfo(theta.dtype).tiny

    def trial(carry):
        k, lam, best, best_loss, _ = carry
        system = a + jnp.diag(lam * scale)
        delta = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(system), -g)
        new_loss = loss_fn(theta + delta)
        good = jnp.isfinite(new_loss) & (new_loss < loss) & jnp.all(jnp.isfinite(delta))
        return (k + 1, jnp.where(good, lam / 3, lam * 4), jnp.where(good, delta, best),
                jnp.where(good, new_loss, best_loss), good)

    _, lam, delta, new_loss, accepted = jax.lax.while_loop(
        lambda c: (~c[4]) & (c[0] < max_trials), trial,
        (jnp.asarray(0), state.damping, jnp.zeros_like(theta), loss, jnp.asarray(False)))
    lam = jnp.clip(lam, 1e-12, 1e12).astype(theta.dtype)
    if ftol is None:
        ftol = float(jnp.finfo(theta.dtype).eps) ** 0.5
    stalled = ~accepted | ((loss - new_loss) <= ftol * loss)
    return delta, LMState(lam, stalled, 2 * g), loss, 2 * g


def levenberg_marquardt(
    *, damping: float = 1e-2, max_trials: int = 8, ftol: float | None = None,
    max_entries: int = 2**22,
) -> optax.GradientTransformationExtraArgs:
    """Levenberg-Marquardt as an optax transformation on a flat parameter vector.

    ``update(grads, state, params, *, value_fn, residual_fn, samples)``: ``value_fn(theta)``
    is the loss, ``residual_fn(theta, *sample)`` one sample's residuals (their squares
    summed over ``samples`` give the loss) and ``samples`` a tuple of pytrees with a leading
    sample axis. ``grads`` are not used (the step solves the damped normal equations). The
    state is :class:`LMState`: ``state.converged`` says that the last iteration lowered the
    loss by at most ``ftol`` of it (see :func:`lm_update` for the arguments), and
    ``state.grad`` is the loss gradient at the parameters the update was given, ``2 J^T r``
    from the normal equations: the caller need not differentiate the loss again.
    """

    def init(params):
        return lm_init(params, damping)

    def update(updates, state, params=None, *, value_fn, residual_fn, samples, **extra):
        del updates, extra  # the step comes from the normal equations, not the gradient

        def normal_fn(theta):
            return normal_equations(residual_fn, theta, *samples, max_entries=max_entries)

        delta, state, _, _ = _lm_step(value_fn, normal_fn, params, state, max_trials, ftol)
        return delta, state

    return optax.GradientTransformationExtraArgs(init, update)
