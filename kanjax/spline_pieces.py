"""B-splines on any knots as piecewise polynomials: one polynomial per knot interval.

On the interval ``[t_m, t_{m+1})`` only the ``k + 1`` B-splines ``B_{m-k} .. B_m`` of order
``k`` are non-zero, and each is a polynomial of degree ``k`` in the relative offset
``v = (x - t_m) / (t_{m+1} - t_m)`` in ``[0, 1)``. A spline ``sum_j B_j(x) c_j`` is therefore,
on that interval, ``sum_d v^d a[m, d]`` with ``a[m, d] = sum_l P[m, l, d] c_{m-k+l}``, where
``P`` depends on the knots only (:func:`piece_polynomials`) and stays of the order of one
whatever the knot spacing, so that low-precision coefficients keep their range. Evaluating a
spline then takes the interval's ``k + 1`` rows of ``a`` and the powers of ``v``: the same
window of ``k + 1`` rows per input as the uniform local path (:mod:`kanjax.local_spline`),
whatever the knots.

Conventions follow :func:`kanjax.basis.bspline_basis`: intervals are half-open, every
function is zero outside ``[t_0, t_last)``, and repeated knots (empty intervals) are never
selected. Pure functions of arrays, differentiable in ``x``, the knots and the coefficients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["piece_index", "piece_polynomials", "piece_table"]


def piece_index(x: jax.Array, knots: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The polynomial piece each input lies on, and its relative offset into it.

    Args:
      x: inputs ``(batch, n_in)``.
      knots: non-decreasing knots ``(n_in, n_knots)``.

    Returns:
      ``(piece, v)``, both ``(batch, n_in)``: ``piece = m + 1`` for ``t_m <= x < t_{m+1}``,
      ``0`` below ``t_0`` and ``n_knots`` from ``t_last`` on (or for a non-finite ``x``): the
      row of :func:`piece_table` to use (int32). ``v = (x - t_m) / (t_{m+1} - t_m)``, and
      ``0 * x`` outside the knots, where the piece is zero.
    """
    n_knots = knots.shape[-1]
    # number of knots <= x, per input (a binary search along each knot vector)
    count = jax.vmap(lambda t, v: jnp.searchsorted(t, v, side="right"), in_axes=(0, 1),
                     out_axes=1)(knots, jax.lax.stop_gradient(x))
    piece = jnp.where(jnp.isfinite(x), count, n_knots).astype(jnp.int32)
    inside = (piece > 0) & (piece < n_knots)
    left = jnp.clip(piece - 1, 0, n_knots - 2)
    t_left = jnp.take_along_axis(knots.T, left, axis=0)
    width = jnp.take_along_axis(knots.T, left + 1, axis=0) - t_left  # > 0 where inside
    v = (x - t_left) / jnp.where(inside, width, 1)
    return piece, jnp.where(inside, v, 0 * x)


def piece_polynomials(knots: jax.Array, order: int) -> jax.Array:
    """Power-basis coefficients of the non-zero B-splines on every knot interval.

    Args:
      knots: ``(n_in, n_knots)``, non-decreasing.
      order: ``k >= 0``.

    Returns:
      ``P`` of shape ``(n_in, n_knots - 1, k + 1, k + 1)``, in float32 or wider: on interval
      ``m``, ``B_{m-k+l}(t_m + v (t_{m+1} - t_m)) = sum_d P[:, m, l, d] v^d``. Functions with
      ``m - k + l`` outside ``0 .. n_knots - k - 2`` do not exist; their rows are finite and
      must be weighted by 0. Rows of empty intervals are finite and never used.
    """
    order = int(order)
    knots = knots.astype(jnp.promote_types(knots.dtype, jnp.float32))
    n_in, n_knots = knots.shape
    # knots t_{m+o} for o = -k .. k + 1 around every interval m (edges repeated beyond the ends)
    padded = jnp.concatenate([jnp.repeat(knots[:, :1], order, axis=1), knots,
                              jnp.repeat(knots[:, -1:], order, axis=1)], axis=1)
    t = jnp.stack([padded[:, o:o + n_knots - 1] for o in range(2 * order + 2)], axis=-1)
    base = t[..., order, None]  # t_m, broadcast over the rows of a level
    width = t[..., order + 1, None] - base  # t_{m+1} - t_m
    # level 0: B_{m,0} = 1 on interval m (polynomials as coefficient vectors over v^0..v^k)
    poly = jnp.zeros((n_in, n_knots - 1, 1, order + 1), knots.dtype).at[..., 0, 0].set(1.0)
    for p in range(1, order + 1):
        # rows l = 0..p of level p are B_{j,p}, j = m - p + l, with t_j at t[..., first + l];
        # all rows at once: B_{j,p} = rising(B_{j,p-1}) + falling(B_{j+1,p-1})
        lower = jnp.pad(poly, ((0, 0), (0, 0), (1, 1), (0, 0)))  # B_{m-p..m+1, p-1}, ends zero
        first = order - p
        poly = (_ratio_times(lower[..., :p + 1, :], t[..., first:first + p + 1],
                             t[..., first + p:first + 2 * p + 1], base, width, rising=True)
                + _ratio_times(lower[..., 1:, :], t[..., first + 1:first + p + 2],
                               t[..., first + p + 1:first + 2 * p + 2], base, width,
                               rising=False))
    return poly


def _ratio_times(b, t_lo, t_hi, base, width, rising: bool):
    """``b * (x - t_lo) / (t_hi - t_lo)`` (``rising``) or ``b * (t_hi - x) / (t_hi - t_lo)``
    as coefficient vectors in ``v``, ``x = base + width * v``; ``0`` where ``t_hi == t_lo``.
    ``b`` ``(..., rows, k + 1)``; the knots ``(..., rows)``, ``base`` and ``width`` ``(..., 1)``.
    Each factor is at most one in size on the interval, so the coefficients stay bounded."""
    span = t_hi - t_lo
    inv = jnp.where(span != 0, 1.0 / jnp.where(span != 0, span, 1.0), 0.0)
    shifted = jnp.concatenate([jnp.zeros_like(b[..., :1]), b[..., :-1]], axis=-1)  # v * b
    slope = (width * inv)[..., None] * shifted
    if rising:  # ((base - t_lo) + width v) b / span
        return ((base - t_lo) * inv)[..., None] * b + slope
    return ((t_hi - base) * inv)[..., None] * b - slope


def piece_table(knots: jax.Array, table: jax.Array, order: int) -> jax.Array:
    """Per-piece power coefficients of the splines ``sum_j B_j(x) table[p, j, :]``.

    Args:
      knots: ``(n_in, n_knots)``; ``table``: ``(n_in, K, n_out)`` with ``K = n_knots - k - 1``.

    Returns:
      ``(n_in, (n_knots + 1) * (k + 1), n_out)``: rows ``piece * (k + 1) + d`` hold the
      coefficient of ``u^d`` on that piece (:func:`piece_index`); pieces ``0`` and
      ``n_knots`` (outside the knots) are zero.
    """
    order = int(order)
    n_in, num_basis, n_out = table.shape
    n_knots = knots.shape[-1]
    poly = piece_polynomials(knots, order).astype(table.dtype)  # (n_in, n_knots - 1, k+1, k+1)
    padded = jnp.pad(table, ((0, 0), (order, order), (0, 0)))  # c_{m-k+l} at row m + l
    # sum_l P[m, l, d] c_{m-k+l} as k + 1 broadcast products and adds: XLA:CPU runs this
    # tiny batched contraction (and its transpose) far faster than as a dot
    pieces = sum(poly[:, :, l, :, None] * padded[:, l:l + n_knots - 1, None, :]
                 for l in range(order + 1))  # (n_in, n_knots - 1, k + 1, n_out)
    pieces = jnp.pad(pieces, ((0, 0), (1, 1), (0, 0), (0, 0)))  # zero pieces outside
    return pieces.reshape(n_in, (n_knots + 1) * (order + 1), n_out)
