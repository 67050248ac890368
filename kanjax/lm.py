"""Levenberg-Marquardt for small least-squares fits (the KAN paper's regime).

Pure functions on one flat parameter vector ``theta`` of size ``P``; ``kanjax.train(...,
optimizer="lm")`` runs :func:`lm_update` once per (full-batch) epoch inside its compiled
program.

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

__all__ = ["LMState", "lm_init", "lm_update", "normal_equations", "MAX_PARAMS"]

MAX_PARAMS = 20_000  # a P x P Cholesky per trial: beyond this, use L-BFGS or Adam


class LMState(NamedTuple):
    damping: jax.Array  # lam, scalar
    converged: jax.Array  # bool: the last iteration lowered the loss by at most ftol of it


def lm_init(theta: jax.Array, damping: float = 1e-2) -> LMState:
    return LMState(jnp.asarray(damping, theta.dtype), jnp.asarray(False))


def normal_equations(
    residual_one: Callable, theta: jax.Array, xs: jax.Array, ys: jax.Array, ws: jax.Array,
    *, max_entries: int = 2**22,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(J^T J, J^T r, r . r)`` over all samples.

    Args:
      residual_one: ``residual_one(theta, x_i, y_i, w_i) -> (n_out,)``, one sample's
        residuals (weighted and scaled so that their squares sum to the loss).
      theta: ``(P,)``.
      xs, ys, ws: the samples (leading axis ``m``), their targets and weights.
      max_entries: Jacobian entries formed at once (samples are taken in chunks).
    """
    m, n_par = xs.shape[0], theta.shape[0]
    n_out = jax.eval_shape(residual_one, theta, xs[0], ys[0], ws[0]).shape[0]
    chunk = int(max(1, min(m, max_entries // max(1, n_par * n_out))))
    n_chunks = -(-m // chunk)
    pad = n_chunks * chunk - m

    def padded(a, fill):
        a = jnp.concatenate([a, jnp.full((pad, *a.shape[1:]), fill, a.dtype)]) if pad else a
        return a.reshape(n_chunks, chunk, *a.shape[1:])

    with_aux = jax.jacrev(lambda t, x, y, w: (residual_one(t, x, y, w),) * 2, has_aux=True)
    per_sample = jax.vmap(with_aux, in_axes=(None, 0, 0, 0))

    def products(batch):  # (J^T J, J^T r, r . r) of one chunk of samples
        jac, res = per_sample(theta, *batch)  # (chunk, n_out, P), (chunk, n_out)
        jac, res = jac.reshape(-1, n_par), res.reshape(-1)
        return jac.T @ jac, jac.T @ res, res @ res

    if n_chunks == 1:  # all samples at once: no loop to compile
        return products((xs, ys, ws))

    def accumulate(carry, batch):
        return tuple(c + p for c, p in zip(carry, products(batch))), None

    zero = jnp.zeros((), theta.dtype)
    init = (jnp.zeros((n_par, n_par), theta.dtype), jnp.zeros_like(theta), zero)
    # padded samples get weight 0, so their residuals (and rows of J) are 0
    (a, g, loss), _ = jax.lax.scan(
        accumulate, init, (padded(xs, 0), padded(ys, 0), padded(ws, 0)))
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
    a, g, loss = normal_fn(theta)
    diag = jnp.diagonal(a)
    # Marquardt's scaling, floored so that directions the data do not constrain stay put
    scale = diag + 1e-6 * jnp.max(diag) + jnp.finfo(theta.dtype).tiny

    def trial(carry):
        k, lam, best, best_loss, _ = carry
        system = a + jnp.diag(lam * scale)
        delta = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(system), -g)
        candidate = theta + delta
        new_loss = loss_fn(candidate)
        good = jnp.isfinite(new_loss) & (new_loss < loss) & jnp.all(jnp.isfinite(delta))
        return (k + 1, jnp.where(good, lam / 3, lam * 4), jnp.where(good, candidate, best),
                jnp.where(good, new_loss, best_loss), good)

    _, lam, new_theta, new_loss, accepted = jax.lax.while_loop(
        lambda c: (~c[4]) & (c[0] < max_trials), trial,
        (jnp.asarray(0), state.damping, theta, loss, jnp.asarray(False)))
    lam = jnp.clip(lam, 1e-12, 1e12).astype(theta.dtype)
    if ftol is None:
        ftol = float(jnp.finfo(theta.dtype).eps) ** 0.5
    stalled = ~accepted | ((loss - new_loss) <= ftol * loss)
    return new_theta, LMState(lam, stalled), loss, 2 * g
