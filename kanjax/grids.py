"""Pure grid maths for B-spline edges: grids from samples and function-preserving refits.

Everything here is a pure function of arrays (jit-, vmap- and grad-safe, no loop over
edges). Given NumPy arrays the same code runs with NumPy on the host (float64, nothing
compiled), which is how small refits avoid a compile per grid shape. The module-level
operations built on them (``KANLayer.update_grid``, ``KANLayer.refine``, ``KAN.update_grid``,
``KAN.refine``) live in :mod:`kanjax.kanlayer` and :mod:`kanjax.nn`.

* :func:`grid_from_samples` - knots that follow the data: a blend of the per-input
  percentile grid and the uniform min-max grid (the KAN paper's ``grid_eps``), extended by
  ``k`` uniform knots on each side.
* :func:`fit_coefficients` - least-squares spline coefficients for target edge values, one
  ridge-regularised normal-equation solve per input feature, batched over features and
  shared by all outputs of that feature. The ridge term keeps the system well-posed when a
  basis function sees no samples (its coefficient then stays near zero instead of blowing
  up or failing with a singular matrix).
"""

from __future__ import annotations

import jax
import numpy as np

from kanjax import basis as basis_lib

__all__ = ["grid_from_samples", "fit_coefficients"]


def grid_from_samples(
    x: jax.Array, grid_size: int, order: int, *, grid_eps: float = 0.02, margin: float = 0.0
) -> jax.Array:
    """Knots per input feature from samples ``x``.

    Args:
      x: samples of shape ``(n, n_in)``.
      grid_size: ``G`` intervals between the smallest and largest sample.
      order: ``k``; ``k`` extra knots are added on each side with the spacing of the
        uniform grid, ``(max - min) / G``.
      grid_eps: ``0`` puts the inner knots at the data's percentiles (equal counts per
        interval); ``1`` spaces them uniformly from min to max; values between blend the two.
      margin: widen ``[min, max]`` by this fraction of its width on each side.

    Returns:
      Non-decreasing knots of shape ``(n_in, G + 2k + 1)``; knot ``k`` is the (widened)
      minimum and knot ``G + k`` the maximum of each column.
    """
    grid_size, order = int(grid_size), int(order)
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n_samples, n_in), got {x.shape}")
    xp = basis_lib.array_namespace(x)
    xs = xp.sort(x, axis=0)
    lo, hi = xs[0], xs[-1]
    width = hi - lo
    lo, hi = lo - margin * width, hi + margin * width
    # Degenerate column (all samples equal): give it a unit-width grid around the value.
    flat = width <= 0
    lo = xp.where(flat, lo - 0.5, lo)
    hi = xp.where(flat, hi + 0.5, hi)
    levels = xp.linspace(0.0, 1.0, grid_size + 1, dtype=x.dtype)
    # inner percentiles of the sorted samples (linear interpolation, as numpy's default)
    position = levels[1:-1] * (x.shape[0] - 1)
    below = xp.floor(position).astype(np.int32)
    above = xp.minimum(below + 1, x.shape[0] - 1)
    frac = (position - below)[:, None]
    percentiles = xs[below] * (1 - frac) + xs[above] * frac  # (G - 1, n_in)
    lo, hi = lo[None, :], hi[None, :]  # (1, n_in)
    adaptive = xp.concatenate([lo, percentiles, hi], axis=0)  # (G + 1, n_in)
    uniform = lo + (hi - lo) * levels[:, None]
    inner = grid_eps * uniform + (1.0 - grid_eps) * adaptive
    h = (hi - lo) / grid_size
    steps = xp.arange(1, order + 1, dtype=x.dtype)[:, None]  # (k, 1)
    left = lo - h * steps[::-1]
    right = hi + h * steps
    return xp.concatenate([left, inner, right], axis=0).T


def fit_coefficients(
    x: jax.Array, targets: jax.Array, grid: jax.Array, order: int, *, ridge: float = 1e-6
) -> jax.Array:
    """Spline coefficients that best reproduce ``targets`` at ``x``.

    Solves, for every input ``p``, ``min_c sum_n |B_p(x_np) c_pq - t_npq|^2 + ridge * s_p |c_pq|^2``
    for all outputs ``q`` at once, where ``s_p`` is the mean diagonal of ``B_p^T B_p`` (so
    the ridge is scale-free).

    Args:
      x: ``(n, n_in)`` samples.
      targets: ``(n, n_in, n_out)`` wanted values of each edge's spline at the samples.
      grid: ``(n_in, n_knots)`` knots (any non-decreasing knots).
      order: spline order ``k``.
      ridge: relative Tikhonov strength, ``> 0``.

    Returns:
      ``(n_in, n_out, n_knots - k - 1)`` coefficients.
    """
    xp = basis_lib.array_namespace(x, targets, grid)
    b = basis_lib.bspline_basis(x, grid, order)  # (n, in, K)
    bt = xp.transpose(b, (1, 2, 0))  # (in, K, n): batched matmuls (BLAS on the host too)
    gram = bt @ xp.transpose(b, (1, 0, 2))  # (in, K, K)
    rhs = bt @ xp.transpose(targets, (1, 0, 2))  # (in, K, out)
    k = gram.shape[-1]
    scale = xp.trace(gram, axis1=-2, axis2=-1) / k
    eye = xp.eye(k, dtype=gram.dtype)[None]
    reg = (ridge * xp.maximum(scale, 1e-12))[:, None, None] * eye
    if xp is np:  # on the host (numpy has no batched Cholesky solve)
        coef = np.linalg.solve(gram + reg, rhs)
    else:  # symmetric positive definite: a Cholesky solve (cheaper to compile than LU)
        coef = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram + reg), rhs)
    return xp.swapaxes(coef, 1, 2)
