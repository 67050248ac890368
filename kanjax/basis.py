"""Pure basis functions for KAN edges.

Every function here is a pure function of arrays: no state, safe under ``jax.jit``,
``jax.vmap`` and ``jax.grad``. Shapes use ``...`` for any number of leading batch
dimensions; features sit on the last axis.

Two families are provided:

* the power ("Taylor") basis ``u -> [u^0, u^1, ..., u^degree]``, the basis of the seed
  document's Taylor KAN. The seed's ``grado_taylor=10`` means ten terms, i.e.
  ``degree=9`` here;
* the B-spline basis of order ``k`` on a knot vector, as in the KAN paper: a grid of
  ``G`` intervals extended by ``k`` knots on each side carries ``G + k`` basis functions.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "power_basis",
    "squash",
    "uniform_grid",
    "bspline_basis",
    "uniform_bspline_basis",
    "num_bspline_functions",
    "cardinal_window",
    "cardinal_window_slopes",
]


def power_basis(u: jax.Array, degree: int) -> jax.Array:
    """Powers ``[u^0, u^1, ..., u^degree]`` stacked on a new last axis.

    Args:
      u: array of shape ``(...,)``.
      degree: highest power, ``>= 0``. ``degree + 1`` terms are returned.

    Returns:
      Array of shape ``(..., degree + 1)`` with ``out[..., i] == u ** i``.

    The powers are built by repeated multiplication and differentiated analytically
    (``d/du u^i = i u^(i-1)``, a shifted copy of the same basis), so the derivative is
    exact and finite everywhere and costs one fused multiply instead of a chain.
    """
    degree = int(degree)
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    u = jnp.asarray(u)
    if u.ndim == 0:
        return power_basis_kmajor(u[None], degree)[:, 0]
    return jnp.swapaxes(power_basis_kmajor(u, degree), -1, -2)


# Implementation note: the basis internals work "k-major", shape (..., K, n), and the public
# functions swap to (..., n, K). In the backward pass the derivative is contracted over
# the K basis functions; XLA:CPU reduces a middle axis faster than a small minor one (see
# benchmarks/PERF.md), and back-to-back swaps cancel when the layer swaps back.


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def power_basis_kmajor(u: jax.Array, degree: int) -> jax.Array:
    """``(..., n) -> (..., degree + 1, n)``, ``out[..., i, :] = u ** i``."""
    # Binary exponentiation on the whole block at once: term i multiplies u^(2^b) for every
    # set bit b of i. About log2(degree) elementwise steps over one array, which XLA fuses
    # into a single kernel (a chain of per-term products plus a stack is one kernel each).
    k = degree + 1
    exponents = np.arange(k).reshape((1,) * (u.ndim - 1) + (k, 1))
    square = u[..., None, :]
    out = None
    for bit in range(max(degree, 1).bit_length()):
        factor = jnp.where((exponents >> bit) & 1 == 1, square, jnp.ones((), u.dtype))
        out = factor if out is None else out * factor
        square = square * square
    return out


@power_basis_kmajor.defjvp
def _power_basis_kmajor_jvp(degree, primals, tangents):
    (u,), (du,) = primals, tangents
    powers = power_basis_kmajor(u, degree)
    derivative = jnp.concatenate(  # d/du u^i = i u^(i-1)
        [jnp.zeros_like(powers[..., :1, :]), powers[..., :-1, :] * _exponents(u, degree)], axis=-2
    )
    return powers, derivative * du[..., None, :]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def positive_powers_kmajor(u: jax.Array, degree: int) -> jax.Array:
    """``(..., n) -> (..., degree, n)``: ``u^1 .. u^degree`` (the power basis without ``u^0``)."""
    return power_basis_kmajor(u, degree)[..., 1:, :]


@positive_powers_kmajor.defjvp
def _positive_powers_kmajor_jvp(degree, primals, tangents):
    # d/du u^i = i u^(i-1): the powers 0 .. degree-1, scaled; one elementwise expression
    # (no concatenation with the constant term's zero row), which XLA can fuse into the
    # backward kernels that consume it instead of writing it out.
    (u,), (du,) = primals, tangents
    value = positive_powers_kmajor(u, degree)
    if degree == 0:  # no terms
        return value, value
    return value, power_basis_kmajor(u, degree - 1) * _exponents(u, degree) * du[..., None, :]


def _exponents(u: jax.Array, degree: int) -> jax.Array:
    """``1 .. degree`` on the basis axis of the k-major layout, broadcastable against ``u``."""
    return jnp.arange(1, degree + 1, dtype=u.dtype).reshape((1,) * (u.ndim - 1) + (degree, 1))


def squash(x: jax.Array, kind: str | None) -> jax.Array:
    """Map inputs into a bounded domain before a polynomial is evaluated.

    ``"tanh"`` maps the real line onto ``(-1, 1)``; ``None`` (or ``"none"``) is the
    identity, which is exact but lets high powers grow without bound for ``|x| > 1``.
    """
    if kind is None or kind == "none":
        return x
    if kind == "tanh":
        return jnp.tanh(x)
    raise ValueError(f"unknown squash {kind!r}; expected 'tanh' or None")


def uniform_grid(
    grid_size: int,
    order: int,
    grid_range: tuple[float, float] = (-1.0, 1.0),
    *,
    num_inputs: int | None = None,
    dtype=jnp.float32,
) -> jax.Array:
    """Uniform knot vector of ``grid_size`` intervals extended by ``order`` knots per side.

    Args:
      grid_size: ``G``, number of intervals inside ``grid_range``.
      order: ``k``, spline order (3 = cubic).
      grid_range: ``(lo, hi)`` with ``lo < hi``.
      num_inputs: if given, the grid is repeated for that many input features.
      dtype: floating dtype of the knots.

    Returns:
      Knots of shape ``(G + 2k + 1,)``, or ``(num_inputs, G + 2k + 1)``; knot ``k`` is
      ``lo`` and knot ``G + k`` is ``hi``.
    """
    grid_size, order = int(grid_size), int(order)
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    lo, hi = (float(v) for v in grid_range)
    if not lo < hi:
        raise ValueError(f"grid_range must satisfy lo < hi, got {grid_range}")
    h = (hi - lo) / grid_size
    # Static numbers only: computed on the host, so no program is compiled per grid shape.
    knots = lo + h * np.arange(-order, grid_size + order + 1, dtype=np.float64)
    if num_inputs is not None:
        knots = np.broadcast_to(knots, (int(num_inputs), knots.shape[0]))
    return jnp.asarray(knots.astype(jnp.dtype(dtype)))


def num_bspline_functions(num_knots: int, order: int) -> int:
    """Number of order-``k`` B-spline functions on ``num_knots`` knots: ``num_knots - k - 1``."""
    return int(num_knots) - int(order) - 1


def bspline_basis(x: jax.Array, grid: jax.Array, order: int) -> jax.Array:
    """B-spline basis functions of order ``k`` evaluated by the Cox-de Boor recursion.

    Args:
      x: inputs of shape ``(..., n_in)``.
      grid: non-decreasing knots of shape ``(n_in, n_knots)`` (one knot vector per input
        feature) or ``(n_knots,)`` (shared).
      order: ``k >= 0``; ``k = 3`` gives cubic splines.

    Returns:
      Array of shape ``(..., n_in, n_knots - k - 1)``. Order-0 functions are the
      indicators of the half-open intervals ``[t_j, t_{j+1})``, so every function is zero
      outside ``[t_0, t_last)``; inside ``[t_k, t_{n_knots - k - 1}]`` the functions sum
      to one (partition of unity).

    This is the reference evaluation, valid for any non-decreasing knots (repeated knots
    give 0/0 terms, which are taken as 0). Given NumPy arrays for both ``x`` and ``grid``
    it computes with NumPy on the host (no compiled program) and returns a NumPy array.
    """
    order = int(order)
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    xp = array_namespace(x, grid)
    grid = xp.asarray(grid, dtype=x.dtype)
    if grid.ndim == 1:
        grid = xp.broadcast_to(grid, (x.shape[-1], grid.shape[0]))
    if grid.shape[-1] < order + 2:
        raise ValueError(
            f"a grid of {grid.shape[-1]} knots carries no order-{order} B-spline; "
            f"need at least {order + 2} knots"
        )
    if xp is np:  # the plain recursion: nothing to differentiate on the host
        return np.swapaxes(_cox_de_boor_kmajor(x, np.swapaxes(grid, 0, 1), order), -1, -2)
    return jnp.swapaxes(bspline_kmajor(x, grid, order), -1, -2)


def array_namespace(*arrays):
    """``numpy`` when every argument is a NumPy array (host maths, nothing compiled), else
    ``jax.numpy``: the grid maths is written once for both."""
    return np if all(isinstance(a, np.ndarray) for a in arrays) else jnp


def _inverse_spans(knots: jax.Array, p: int) -> jax.Array:
    """``1 / (t[j + p] - t[j])`` along axis 0 of ``knots``, ``0`` where the span is empty."""
    xp = array_namespace(knots)
    span = knots[p:] - knots[:-p]
    nonzero = span != 0
    return xp.where(nonzero, 1.0 / xp.where(nonzero, span, 1.0), 0.0)


def _cox_de_boor_kmajor(x: jax.Array, knots: jax.Array, order: int) -> jax.Array:
    """``(..., n_in) -> (..., n_knots - order - 1, n_in)`` for knots ``(n_knots, n_in)``.

    ``B_{j,p} = (x - t_j) B_{j,p-1} / (t_{j+p} - t_j) + (t_{j+p+1} - x) B_{j+1,p-1} /
    (t_{j+p+1} - t_{j+1})``; the reciprocal spans depend on the knots only, so the work
    on ``x`` (and its derivatives) is a few multiply-adds per level.
    """
    xe, t = x[..., None, :], _lead(knots, x)
    basis = ((xe >= t[..., :-1, :]) & (xe < t[..., 1:, :])).astype(x.dtype)
    for p in range(1, order + 1):
        basis = _cox_de_boor_level(xe, t, _lead(_inverse_spans(knots, p), x), p, basis)
    return basis


def _lead(a: jax.Array, x: jax.Array) -> jax.Array:
    """``a`` with unit axes in front for each batch axis of ``x`` (explicit broadcasting)."""
    return a.reshape((1,) * (x.ndim - 1) + a.shape)


def _cox_de_boor_level(xe, t, inv, p, lower):
    """Order-``p`` functions from the order ``p - 1`` ones (``inv``: reciprocal ``p``-spans)."""
    left = (xe - t[..., : -(p + 1), :]) * inv[..., :-1, :]
    right = (t[..., p + 1 :, :] - xe) * inv[..., 1:, :]
    return left * lower[..., :-1, :] + right * lower[..., 1:, :]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _bspline_kmajor_t(x: jax.Array, knots: jax.Array, order: int) -> jax.Array:
    return _cox_de_boor_kmajor(x, knots, order)


@functools.partial(_bspline_kmajor_t.defjvp, symbolic_zeros=True)
def _bspline_kmajor_t_jvp(order, primals, tangents):
    """Analytic ``d/dx B_{j,k} = k (B_{j,k-1} / (t_{j+k} - t_j) - B_{j+1,k-1} / (t_{j+k+1} - t_{j+1}))``."""
    x, knots = primals
    x_dot, knots_dot = tangents
    if order == 0:  # piecewise constant: zero derivative almost everywhere
        value, slope = _cox_de_boor_kmajor(x, knots, 0), None
    else:
        lower = _cox_de_boor_kmajor(x, knots, order - 1)  # (..., K + 1, n_in)
        inv = _lead(_inverse_spans(knots, order), x)
        value = _cox_de_boor_level(x[..., None, :], _lead(knots, x), inv, order, lower)
        slope = order * (inv[..., :-1, :] * lower[..., :-1, :] - inv[..., 1:, :] * lower[..., 1:, :])
    out = jnp.zeros_like(value)
    if slope is not None and not isinstance(x_dot, jax.custom_derivatives.SymbolicZero):
        out = slope * x_dot[..., None, :]
    if not isinstance(knots_dot, jax.custom_derivatives.SymbolicZero):  # trained knots
        out = out + jax.jvp(lambda t: _cox_de_boor_kmajor(x, t, order), (knots,), (knots_dot,))[1]
    return value, out


def bspline_kmajor(x: jax.Array, grid: jax.Array, order: int) -> jax.Array:
    """:func:`bspline_basis` in the layer layout ``(..., n_knots - order - 1, n_in)``.

    ``grid`` is ``(n_in, n_knots)``. The derivative in ``x`` is analytic (B-spline
    derivatives are lower-order B-splines); knot derivatives trace the recursion.
    """
    return _bspline_kmajor_t(x, jnp.swapaxes(grid, 0, 1), int(order))


def uniform_bspline_basis(
    x: jax.Array, start: jax.Array, step: jax.Array, num_basis: int, order: int
) -> jax.Array:
    """B-splines on a uniform knot vector, in closed form (fast path of :func:`bspline_basis`).

    On uniform knots ``t_j = start + j * step`` every basis function is a shifted cardinal
    B-spline: ``B_j(x) = M_k((x - start) / step - j)``. ``M_k`` is symmetric about the
    middle of its support ``[0, k + 1]`` and equals a short sum of truncated powers of the
    distance ``t`` to that middle, ``M_k = (1/k!) sum_l (-1)^l C(k+1, l) ((k+1)/2 - l - t)_+^k``;
    it is evaluated on one ``(..., n_in, num_basis)`` block, a handful of elementwise
    operations that XLA fuses into one kernel. The derivative is analytic (the same sum one
    power lower), not a trace through the evaluation.

    Args:
      x: inputs of shape ``(..., n_in)``.
      start: first knot per input, shape ``(n_in,)`` (or scalar).
      step: knot spacing per input, shape ``(n_in,)`` (or scalar), ``> 0``.
      num_basis: number of functions ``n_knots - order - 1``.
      order: ``k >= 0``.

    Returns:
      ``(..., n_in, num_basis)``, equal to ``bspline_basis(x, knots, order)`` up to rounding.
    """
    order, num_basis = int(order), int(num_basis)
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    if num_basis < 1:
        raise ValueError(f"num_basis must be >= 1, got {num_basis}")
    return jnp.swapaxes(uniform_bspline_kmajor(x, start, step, num_basis, order), -1, -2)


def uniform_bspline_kmajor(x, start, step, num_basis: int, order: int) -> jax.Array:
    """:func:`uniform_bspline_basis` in the internal ``(..., num_basis, n_in)`` layout."""
    x = jnp.asarray(x)
    shape = (1,) * (x.ndim - 1) + (-1,)
    start = jnp.broadcast_to(jnp.asarray(start, x.dtype), x.shape[-1:]).reshape(shape)
    step = jnp.broadcast_to(jnp.asarray(step, x.dtype), x.shape[-1:]).reshape(shape)
    return _cardinal_basis_kmajor((x - start) / step, num_basis, order)


def _centered_terms(order: int) -> tuple[tuple[float, float], ...]:
    """``(weight, offset)`` pairs with ``M_order(c + t) = sum weight * (offset - |t|)_+^order``.

    ``M_order`` is symmetric about ``c = (order + 1) / 2``; on either side it is the
    truncated-power sum ``(1 / order!) sum_l (-1)^l C(order + 1, l) (c - l - |t|)_+^order``,
    of which only the terms with ``c - l > 0`` can be nonzero.
    """
    c = (order + 1) / 2
    return tuple(
        ((-1) ** l * math.comb(order + 1, l) / math.factorial(order), c - l)
        for l in range(order + 2) if c - l > 0
    )


def _cardinal_value_slope(s: jax.Array, num_basis: int, order: int, slope: bool):
    """``M_order(s - j)`` for ``j = 0..num_basis-1`` in ``(..., num_basis, n)`` layout, and
    (if ``slope``) its derivative in ``s``; ``order >= 1``.

    Each function is evaluated in its centred form: ``t = |s - j - c|`` and a sum of
    ``ceil((order + 1) / 2)`` truncated powers of ``t``. No piece index, no select per
    polynomial coefficient: a cubic is two clamps, two cubes and a sum, which keeps the
    fused kernel short (the basis is evaluated over the whole ``(batch, K, n_in)`` block in
    every training step). The largest term, ``((order + 1) / 2)^order / order!`` at the
    centre, is 2x the value there for a cubic and ~7x at order 7, so little precision is
    lost to cancellation; the tests hold the result to 2e-6 of the recursion up to order 7.

    On a knot the derivative is the right-hand one, as the recursion's on half-open
    intervals. The sign of ``s - j - c`` is applied with a select rather than ``sign``: the
    same numbers off the centre, in a cheaper kernel (see benchmarks/PERF.md).
    """
    return _centered_value_slope(_shifted(s, num_basis, (order + 1) / 2), order, slope)


def _centered_value_slope(d: jax.Array, order: int, slope: bool):
    """``M_order(c + d)`` (and its derivative in ``d`` if ``slope``) for ``c = (order + 1) / 2``,
    elementwise; ``order >= 1``. The evaluation of :func:`_cardinal_value_slope`."""
    t = jnp.abs(d)
    value = derivative = None
    for weight, offset in _centered_terms(order):
        a = jnp.maximum(offset - t, 0)
        if order == 1:  # (offset - t)_+^0 on [-offset, offset): right-hand at the knots
            lower = ((d >= -offset) & (d < offset)).astype(d.dtype)
        else:
            lower = a ** (order - 1)
        term = weight * (lower * a)
        value = term if value is None else value + term
        if slope:  # d/dt (offset - t)_+^order = -order (offset - t)_+^(order - 1)
            dterm = (-order * weight) * lower
            derivative = dterm if derivative is None else derivative + dterm
    if slope:  # dt/ds = sign(s - j - c), as a select (cheaper than sign), +1 at 0
        derivative = jnp.where(d < 0, -derivative, derivative)
    return value, derivative


def _cardinal_indicator(s: jax.Array, num_basis: int) -> jax.Array:
    """Order 0: the indicators of ``[j, j + 1)``, ``(..., num_basis, n)``."""
    d = _shifted(s, num_basis, 0.0)
    return ((d >= 0) & (d < 1)).astype(s.dtype)


def _shifted(s: jax.Array, num_basis: int, shift: float) -> jax.Array:
    """``s - j - shift`` for ``j = 0..num_basis-1``, in ``(..., num_basis, n)`` layout."""
    j = np.arange(num_basis).reshape((1,) * (s.ndim - 1) + (num_basis, 1)) + shift
    return s[..., None, :] - j.astype(s.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _cardinal_basis_kmajor(s: jax.Array, num_basis: int, order: int) -> jax.Array:
    """``(..., n) -> (..., num_basis, n)``: ``M_order(s - j)`` for ``j = 0..num_basis-1``."""
    if order == 0:
        return _cardinal_indicator(s, num_basis)
    return _cardinal_value_slope(s, num_basis, order, slope=False)[0]


@_cardinal_basis_kmajor.defjvp
def _cardinal_basis_kmajor_jvp(num_basis, order, primals, tangents):
    (s,), (ds,) = primals, tangents
    if order == 0:  # piecewise constant: zero derivative almost everywhere
        value = _cardinal_indicator(s, num_basis)
        return value, jnp.zeros_like(value)
    value, slope = _cardinal_value_slope(s, num_basis, order, slope=True)
    return value, slope * ds[..., None, :]


def cardinal_window(s: jax.Array, num_basis: int, order: int) -> tuple[jax.Array, jax.Array]:
    """The ``order + 1`` cardinal B-splines that can be non-zero at ``s``: a window of the basis.

    Args:
      s: grid coordinates ``(x - start) / step``, shape ``(..., n)``.
      num_basis: number of functions ``K`` of the full basis (``G + order``).
      order: ``k >= 0``.

    Returns:
      ``(first, values)``: ``first`` of shape ``(..., n)`` (int32), the index of the first
      function of the window, in ``[0, K - order - 1]``; ``values`` of shape
      ``(..., n, order + 1)`` with ``values[..., l] = M_order(s - first - l)``, i.e. the
      full basis's function ``first + l``. Every function outside the window is zero at
      ``s``, so ``sum_l values[..., l] c[first + l]`` equals the full basis times ``c``;
      outside the grid the window sits at the nearest end and its values are zero (or the
      tails of the end functions), as in the full basis.

    ``first`` is piecewise constant (no derivative); ``values`` has the analytic derivative
    of :func:`uniform_bspline_basis`, to any order.
    """
    order, num_basis = int(order), int(num_basis)
    first = _window_first(s, num_basis, order)
    return first, _window_values(s - first.astype(s.dtype), order)


def cardinal_window_slopes(s: jax.Array, num_basis: int, order: int):
    """:func:`cardinal_window` and the derivatives of its values in ``s``: ``(first, values,
    slopes)``, ``slopes`` of the shape of ``values`` (zeros for ``order == 0``)."""
    order, num_basis = int(order), int(num_basis)
    first = _window_first(s, num_basis, order)
    t = s - first.astype(s.dtype)
    if order == 0:
        values = _window_values(t, 0)
        return first, values, jnp.zeros_like(values)
    return (first, *_centered_value_slope(_window_offsets(t, order), order, slope=True))


def _window_first(s: jax.Array, num_basis: int, order: int) -> jax.Array:
    """First function of the window at ``s`` (int32, ``0`` where ``s`` is not finite)."""
    if num_basis < order + 1:
        raise ValueError(f"num_basis must be >= order + 1 = {order + 1}, got {num_basis}")
    first = jnp.clip(jnp.floor(jax.lax.stop_gradient(s)) - order, 0, num_basis - order - 1)
    return jnp.where(jnp.isfinite(first), first, 0).astype(jnp.int32)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _window_values(t: jax.Array, order: int) -> jax.Array:
    """``(..., n) -> (..., n, order + 1)``: ``M_order(t - l)`` for ``l = 0..order``."""
    d = _window_offsets(t, order)
    if order == 0:  # the indicator of [0, 1), right-hand at the knots
        return ((d >= -0.5) & (d < 0.5)).astype(t.dtype)
    return _centered_value_slope(d, order, slope=False)[0]


@_window_values.defjvp
def _window_values_jvp(order, primals, tangents):
    (t,), (dt,) = primals, tangents
    if order == 0:
        value = _window_values(t, 0)
        return value, jnp.zeros_like(value)
    value, slope = _centered_value_slope(_window_offsets(t, order), order, slope=True)
    return value, slope * dt[..., None]


def _window_offsets(t: jax.Array, order: int) -> jax.Array:
    """``t - l - (order + 1) / 2`` for ``l = 0..order`` on a new last axis."""
    offsets = (np.arange(order + 1) + (order + 1) / 2).astype(t.dtype)
    return t[..., None] - offsets.reshape((1,) * t.ndim + (order + 1,))
