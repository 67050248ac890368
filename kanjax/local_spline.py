"""B-spline KAN layers evaluated on the active window of the basis only ("local" path).

Only ``k + 1`` of the ``G + k`` B-splines of order ``k`` are non-zero at any input, so the
spline part of a layer, ``y_q = sum_p sum_i B_i(x_p) c[p, i, q]``, needs for each input only
the rows ``c[p, first .. first + k, :]`` of its window (:func:`kanjax.basis.cardinal_window`).
The dense path (:mod:`kanjax.layer`) multiplies all ``G + k`` basis values, mostly zeros, and
its cost grows with ``G``; this path gathers ``k + 1`` rows per input and its cost does not.

The gathers run in a ``lax.scan`` over chunks of input features. On CPU each step touches a
small table (the chunk's coefficients, sized to stay in a core's cache) and small buffers:
reverse mode accumulates the coefficient gradient with a scatter-add into that chunk's
table, which XLA:CPU runs far faster than one scatter into the whole table. On GPU and TPU
the steps are as large as a memory cap allows, often one step for the whole layer, since
each step costs kernel launches there (:func:`chunk_features`). No tensor with a
``(batch, n_in, n_out)`` or larger shape is ever stored: the tangent's scan is
rematerialised, so reverse mode gathers its rows again instead of keeping them, and a
training step's working memory stays close to the forward pass's (measurements in
benchmarks/PERF.md). The derivative in ``x`` is analytic (a custom JVP, so forward mode,
reverse mode and higher orders all work); ``jax.vmap`` works as usual.

On uniform knots the window's values are cardinal B-splines of the grid coordinate
(:func:`local_spline_sum`). On any other knots (grids moved to the data, as grid updates and
grid extension make them) the table is first rewritten as one polynomial per knot interval
(:mod:`kanjax.spline_pieces`), whose ``k + 1`` rows are weighted by powers of the offset into
the interval (:func:`piece_spline_sum`): the same gathers, scan and derivative rule.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from kanjax import basis as basis_lib
from kanjax import spline_pieces

__all__ = ["local_spline_sum", "piece_spline_sum", "kan_layer_local", "kan_layer_pieces",
           "chunk_features", "use_local", "SPLINE_EVALS", "LOCAL_MIN_RATIO",
           "PIECES_MIN_RATIO", "LOCAL_MIN_BATCH"]

SPLINE_EVALS = ("auto", "dense", "local")
"""How a uniform B-spline layer evaluates its splines: chosen per layer, all basis functions
(``"dense"``), or only the window of active ones (``"local"``)."""

LOCAL_MIN_RATIO = 6
"""``"auto"`` takes the local path when a layer's ``G + k`` basis functions are at least this
many times its ``k + 1`` active ones (``G >= 21`` for cubic splines): on a 2-core CPU a
gathered row and its scatter-add cost several dense multiply-adds, and the training steps of
a [8, 64, 64, 1] network (batch 1024) on the two paths are equal within the noise at
G = 20; a [64, 256, 256, 10] network's cross lower, between G = 14 and G = 20
(benchmarks/PERF.md)."""

PIECES_MIN_RATIO = 5
"""As :data:`LOCAL_MIN_RATIO`, for B-splines on non-uniform knots (``G >= 17`` for cubic
splines), where the local path evaluates polynomial pieces (:func:`piece_spline_sum`) and the
dense one the Cox-de Boor recursion over all ``G + k`` functions: the training steps of a
[8, 64, 64, 1] network (batch 1024) are equal within the noise at G = 15 and those of a
[64, 256, 256, 10] network at G = 20; networks as small as [2, 5, 1] gain from G = 5
(benchmarks/PERF.md)."""

LOCAL_MIN_BATCH = 2
"""Rows a layer must be called on for ``"auto"`` to take the local path, on any knots. A
model called on one sample at a time under ``jax.vmap`` (per-sample Jacobians, as
Levenberg-Marquardt builds them) compiles programs several times larger through the local
path (1.3-1.6 s against 0.3 s for a [2, 5, 1] network's Jacobian on refined knots) and runs
them no faster, for work this small, so it keeps the dense basis (benchmarks/PERF.md)."""

# On CPU, elements of the per-step buffers (batch x chunk x n_out) the scan aims for: ~2 MB
# in float32, small enough to stay in cache, large enough that the loop runs few steps.
_CHUNK_ELEMENTS = 1 << 19
# On CPU, elements of one step's coefficient table (chunk x K x n_out) at most: 128 KB in
# float32, so that the rows a step gathers from and scatter-adds into stay in a core's L2.
_TABLE_ELEMENTS = 1 << 15
# On GPU and TPU there is no core cache to fit, and every scan step costs kernel launches:
# steps are as large as 64 MB per-step buffers in float32 allow, with no table cap.
_ACCELERATOR_CHUNK_ELEMENTS = 1 << 24


def use_local(spline_eval: str, num_basis: int, order: int, uniform: bool,
              batch: int | None = None) -> bool:
    """Whether a B-spline layer takes the local path.

    ``"dense"``: never; ``"local"``: always (uniform knots by :func:`local_spline_sum`, any
    other by :func:`piece_spline_sum`); ``"auto"``: when ``num_basis >= ratio * (order + 1)``,
    ``ratio`` :data:`LOCAL_MIN_RATIO` on uniform knots and :data:`PIECES_MIN_RATIO` on
    others, and ``batch`` (the rows the layer is called on, if known) reaches
    :data:`LOCAL_MIN_BATCH`.
    """
    if spline_eval not in SPLINE_EVALS:
        raise ValueError(f"spline_eval must be one of {SPLINE_EVALS}, got {spline_eval!r}")
    if spline_eval != "auto":
        return spline_eval == "local"
    if batch is not None and batch < LOCAL_MIN_BATCH:
        return False
    ratio = LOCAL_MIN_RATIO if uniform else PIECES_MIN_RATIO
    return num_basis >= ratio * (int(order) + 1)


def chunk_features(n_in: int, batch: int, n_out: int, num_basis: int,
                   backend: str = "cpu") -> int:
    """Input features per scan step: the largest divisor of ``n_in`` within the step sizes
    for ``backend`` (at least 1).

    On ``"cpu"`` the per-step buffers ``(batch, chunk, n_out)`` hold at most
    ``_CHUNK_ELEMENTS`` elements and the table ``(chunk, num_basis, n_out)`` at most
    ``_TABLE_ELEMENTS``; on any other backend the buffers hold at most
    ``_ACCELERATOR_CHUNK_ELEMENTS``.
    """
    if backend == "cpu":
        limit = min(_CHUNK_ELEMENTS // max(1, batch * n_out),
                    _TABLE_ELEMENTS // max(1, num_basis * n_out))
    else:
        limit = _ACCELERATOR_CHUNK_ELEMENTS // max(1, batch * n_out)
    limit = max(1, limit)
    return max(d for d in range(1, n_in + 1) if n_in % d == 0 and d <= limit)


def local_spline_sum(x: jax.Array, start: jax.Array, step: jax.Array, table: jax.Array,
                     order: int) -> jax.Array:
    """``sum_p sum_i B_i(x_p) table[p, i, :]`` over the active basis functions only.

    Args:
      x: inputs, shape ``(..., n_in)``.
      start: first knot per input, shape ``(n_in,)``.
      step: knot spacing per input, shape ``(n_in,)``, ``> 0``.
      table: coefficients, shape ``(n_in, K, n_out)`` with ``K = G + order`` functions.
      order: spline order ``k >= 0``.

    Returns:
      ``(..., n_out)``, equal to ``einsum("...pi,piq->...q", B(x), table)`` with ``B`` the
      uniform B-spline basis (:func:`kanjax.basis.uniform_bspline_basis`) up to rounding.
    """
    n_in, _, n_out = table.shape
    lead = (1,) * (x.ndim - 1)
    s = (x - start.reshape(lead + (n_in,))) / step.reshape(lead + (n_in,))
    return _window_sum(s.reshape(-1, n_in), table, int(order)).reshape(*x.shape[:-1], n_out)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _window_sum(s: jax.Array, table: jax.Array, order: int) -> jax.Array:
    """``(batch, n_in)`` grid coordinates -> ``(batch, n_out)``."""
    first, values = basis_lib.cardinal_window(s, table.shape[1], order)
    return _scan_windows(first, ((None, values, table),))


@functools.partial(_window_sum.defjvp, symbolic_zeros=True)
def _window_sum_jvp(order, primals, tangents):
    """Tangent ``window_sum(s, table_dot) + sum_p s_dot_p D_p``, with the spline slopes
    ``D_p = sum_l slope_l(s) table[first + l]``.

    Both terms are summed in one scan shaped like the value's: rows of ``table_dot``
    weighted by the basis values (reverse mode turns them into per-chunk scatter-adds) and
    each chunk's slope sums ``D_p`` scaled by ``s_dot``. The scan's body is
    rematerialised, so reverse mode gathers the ``table`` rows again and dots their slope
    sums with the output cotangent instead of storing them (or all of ``D``, a
    ``(batch, n_in, n_out)`` tensor): stored, they would be the bulk of a training step's
    working memory, which on CPU is mapped in again at every step once it is large
    (benchmarks/PERF.md).
    """
    s, table = primals
    s_dot, table_dot = tangents
    first, values, slopes = basis_lib.cardinal_window_slopes(s, table.shape[1], order)
    return _value_and_tangent(first, values, slopes if order > 0 else None, table, s_dot,
                              table_dot)


def _value_and_tangent(first, values, slopes, table, s_dot, table_dot):
    """The window sum and its tangent (see :func:`_window_sum_jvp`); ``slopes`` ``None``
    when they are zero."""
    y = _scan_windows(first, ((None, values, table),))
    terms = []
    if slopes is not None and not isinstance(s_dot, SymbolicZero):
        terms.append((s_dot, slopes, table))
    if not isinstance(table_dot, SymbolicZero):
        terms.append((None, values, table_dot))
    if not terms:
        return y, jnp.zeros_like(y)
    return y, _scan_windows(first, tuple(terms), remat=True)


def piece_spline_sum(x: jax.Array, knots: jax.Array, table: jax.Array, order: int) -> jax.Array:
    """``sum_p sum_i B_i(x_p) table[p, i, :]`` for B-splines on any knots, by their
    polynomial pieces (:mod:`kanjax.spline_pieces`): ``k + 1`` rows per input, as the uniform
    path.

    Args:
      x: inputs, shape ``(..., n_in)``.
      knots: non-decreasing knots, shape ``(n_in, n_knots)``.
      table: coefficients, shape ``(n_in, K, n_out)`` with ``K = n_knots - order - 1``.
      order: spline order ``k >= 0``.

    Returns:
      ``(..., n_out)``, equal to ``einsum("...pi,piq->...q", B(x), table)`` with ``B``
      :func:`kanjax.basis.bspline_basis` up to rounding.
    """
    n_in, _, n_out = table.shape
    pieces = spline_pieces.piece_table(knots, table, order)
    piece, v = spline_pieces.piece_index(x.reshape(-1, n_in), knots.astype(x.dtype))
    y = _powers_sum(v, piece * (int(order) + 1), pieces, int(order))
    return y.reshape(*x.shape[:-1], n_out)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _powers_sum(u: jax.Array, first: jax.Array, table: jax.Array, order: int) -> jax.Array:
    """``sum_p sum_d u_p^d table[p, first_p + d]``: ``(batch, n_in)`` offsets and rows."""
    return _scan_windows(first, ((None, basis_lib.power_basis(u, order), table),))


@functools.partial(_powers_sum.defjvp, symbolic_zeros=True)
def _powers_sum_jvp(order, primals, tangents):
    """As :func:`_window_sum_jvp`, with the powers ``u^d`` and their slopes ``d u^(d-1)``."""
    u, first, table = primals
    u_dot, _, table_dot = tangents  # ``first`` is an integer index
    powers, slopes = jax.jvp(lambda v: basis_lib.power_basis(v, order), (u,), (jnp.ones_like(u),))
    return _value_and_tangent(first, powers, slopes if order > 0 else None, table, u_dot,
                              table_dot)


def _chunked(a: jax.Array, chunk: int) -> jax.Array:
    """``(batch, n_in, ...) -> (n_in // chunk, batch, chunk, ...)``: scan steps first."""
    batch, n_in = a.shape[:2]
    return jnp.moveaxis(a.reshape(batch, n_in // chunk, chunk, *a.shape[2:]), 1, 0)


def _scan_windows(first, terms, remat: bool = False):
    """``sum_(a, w, T) sum_p a[:, p] sum_l w[:, p, l] T[p, first + l]`` over ``terms``,
    triples ``(a, w, T)`` (``a`` may be ``None``: ones), by a scan over input chunks.

    ``first`` ``(batch, n_in)``; each ``a`` ``(batch, n_in)``, each ``w``
    ``(batch, n_in, k + 1)``, each ``T`` ``(n_in, K, n_out)``; returns ``(batch, n_out)``.
    With ``remat`` the scan body is rematerialised (``jax.checkpoint``): reverse mode
    recomputes its gathers.

    A term with ``a`` scales its rows by ``a`` broadcast over ``n_out``, written as an outer
    product with ones (``einsum("bc,q->bcq")``): forward mode stays elementwise, and reverse
    mode turns the broadcast into a matrix-vector product over ``n_out``, which XLA:CPU runs
    several times faster than the reduction that a plain broadcast's transpose would be
    (benchmarks/PERF.md).
    """
    n_in, num_basis, n_out = terms[0][2].shape
    batch, width = first.shape[0], terms[0][1].shape[-1]
    chunk = chunk_features(n_in, batch, n_out, num_basis, jax.default_backend())
    # rows of the chunk's flat table (chunk * K, n_out) where each input's window begins
    offsets = (jnp.arange(n_in, dtype=jnp.int32) % chunk) * num_basis
    xs = (_chunked(first + offsets[None, :], chunk),
          tuple((None if a is None else _chunked(a, chunk), _chunked(w, chunk),
                 t.reshape(n_in // chunk, chunk * num_basis, n_out)) for a, w, t in terms))
    dtype = jnp.result_type(*[a for term in terms for a in term if a is not None])
    ones = jnp.ones((n_out,), dtype)

    def body(acc, step_args):
        r, triples = step_args  # (batch, chunk); (batch, chunk), (batch, chunk, k + 1), table
        for a, w, t in triples:
            rows = sum(jnp.take(t, r + l, axis=0, mode="clip") * w[..., l, None]
                       for l in range(width))
            acc = acc + (rows if a is None else rows * jnp.einsum("bc,q->bcq", a, ones))
        return acc, None

    acc = jnp.zeros((batch, chunk, n_out), dtype)
    acc, _ = jax.lax.scan(jax.checkpoint(body) if remat else body, acc, xs)
    return _sum_middle(acc)


def _sum_middle(a: jax.Array) -> jax.Array:
    """``a.sum(axis=1)`` for ``a`` of shape ``(batch, m, n_out)``, by adding halves.

    Elementwise adds of slices, ``log2(m)`` of them: XLA:CPU hands a ``reduce_sum`` over this
    axis, with the gathers feeding it, to a library fusion that ran 4x slower here
    (benchmarks/PERF.md).
    """
    while a.shape[1] > 1:
        half = a.shape[1] // 2
        summed = a[:, :half] + a[:, half:2 * half]
        if a.shape[1] % 2:  # the odd one out joins the first slot
            summed = summed.at[:, 0].add(a[:, -1])
        a = summed
    return a[:, 0]


def kan_layer_local(x, start, step, w_base, w_spline, coef, bias=None, *, order: int):
    """:func:`kanjax.layer.kan_layer` on a uniform B-spline basis, by the local path.

    Args:
      x: inputs, shape ``(..., n_in)``.
      start, step: the uniform knots, first knot and spacing per input, shape ``(n_in,)``.
      w_base, w_spline: shape ``(n_in, n_out)``.
      coef: shape ``(n_in, n_out, K)``.
      bias: ``(n_out,)`` or ``None``.
      order: spline order ``k``.

    Returns:
      ``(..., n_out)``: ``silu(x) @ w_base + sum_p w_spline[p] * (coef[p] @ B(x_p)) (+ bias)``.
    """
    return _layer(x, lambda table: local_spline_sum(x, start, step, table, order),
                  w_base, w_spline, coef, bias)


def kan_layer_pieces(x, knots, w_base, w_spline, coef, bias=None, *, order: int):
    """:func:`kanjax.layer.kan_layer` on B-splines with any knots ``(n_in, n_knots)``, by
    their polynomial pieces (:func:`piece_spline_sum`); arguments as :func:`kan_layer_local`.
    """
    return _layer(x, lambda table: piece_spline_sum(x, knots, table, order),
                  w_base, w_spline, coef, bias)


def _layer(x, spline_sum, w_base, w_spline, coef, bias):
    """``silu(x) @ w_base + spline_sum(table) (+ bias)``, ``table = coef * w_spline`` laid
    out ``(n_in, K, n_out)``."""
    table = jnp.moveaxis(coef * w_spline[..., None], -1, 1)
    y = jax.nn.silu(x) @ w_base + spline_sum(table)
    if bias is not None:
        y = y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)
    return y
