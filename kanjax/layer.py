"""Pure KAN layer maths.

A KAN layer maps ``x_p -> y_q = sum_p phi_qp(x_p)`` with one learnable 1-D function
per edge (input ``p``, output ``q``)::

    phi_qp(x) = w_base[p, q] * silu(x) + w_spline[p, q] * sum_i coef[p, q, i] * B_i(x)

where ``B_i`` is any basis evaluated per input (powers for the Taylor variant,
B-splines for the paper's). The basis is evaluated once per input feature, not per
edge, and the edge sum becomes one matrix multiply: ``(..., n_in * K) @ (n_in * K,
n_out)``. No ``(..., n_in, n_out, K)`` tensor is ever formed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

__all__ = ["kan_layer", "kan_layer_kmajor", "kan_layer_from_basis", "edge_activations",
           "symbolic_edges", "combine_nodes", "node_columns"]


def kan_layer(
    x: jax.Array,
    basis_values: jax.Array,
    w_base: jax.Array,
    w_spline: jax.Array,
    coef: jax.Array,
    bias: jax.Array | None = None,
) -> jax.Array:
    """Output of one KAN layer.

    Args:
      x: inputs, shape ``(..., n_in)``; enters the residual ``silu`` branch.
      basis_values: the basis evaluated at ``x``, shape ``(..., n_in, K)``.
      w_base: residual weights, shape ``(n_in, n_out)``.
      w_spline: per-edge scale of the basis expansion, shape ``(n_in, n_out)``.
      coef: basis coefficients, shape ``(n_in, n_out, K)``.
      bias: optional output bias, shape ``(n_out,)``.

    Returns:
      ``y`` of shape ``(..., n_out)`` with
      ``y[..., q] = sum_p w_base[p, q] silu(x[..., p])
      + w_spline[p, q] sum_i coef[p, q, i] basis_values[..., p, i] (+ bias[q])``.

    ``silu(x)`` is treated as one more basis function with coefficient ``w_base``, so the
    whole layer is a single ``(..., n_in * (K + 1)) @ (n_in * (K + 1), n_out)`` matmul.
    """
    return kan_layer_kmajor(
        x, jnp.swapaxes(basis_values, -1, -2), w_base, w_spline, coef, bias
    )


def kan_layer_kmajor(
    x: jax.Array,
    basis_kmajor: jax.Array,
    w_base: jax.Array,
    w_spline: jax.Array,
    coef: jax.Array,
    bias: jax.Array | None = None,
) -> jax.Array:
    """:func:`kan_layer` with the basis laid out basis-major, ``(..., K, n_in)``.

    This is the layout the layer computes in (and the one ``KANLayer`` produces): the
    backward pass contracts over the ``K`` basis functions, which XLA:CPU does faster over a
    middle axis than over a small minor one.
    """
    features = jnp.concatenate([jax.nn.silu(x)[..., None, :], basis_kmajor], axis=-2)
    y = _flat(features) @ _stacked_weights(w_base, w_spline, coef)
    if bias is not None:
        y = y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)
    return y


def kan_layer_from_basis(
    x: jax.Array,
    basis_fn: Callable[..., jax.Array],
    w_base: jax.Array,
    w_spline: jax.Array,
    coef: jax.Array,
    bias: jax.Array | None = None,
    *,
    basis_args: tuple = (),
) -> jax.Array:
    """:func:`kan_layer_kmajor` with the basis given as a function, and a derivative rule for it.

    Args:
      x: inputs, shape ``(..., n_in)``.
      basis_fn: ``basis_fn(x, *basis_args) -> (..., K, n_in)``, the basis in k-major layout.
        It must act on each input feature separately (the value at ``x[..., p]`` depends on
        that feature only), as every KAN basis does. A static Python callable.
      w_base, w_spline, coef, bias: as in :func:`kan_layer`, ``coef`` of shape
        ``(n_in, n_out, K)``.
      basis_args: arrays ``basis_fn`` needs (knots, for instance).

    Returns:
      ``(..., n_out)``, equal to ``kan_layer_kmajor(x, basis_fn(x, *basis_args), ...)``.

    The value is the same; the derivative is organised for speed. The features
    ``F = [silu(x), B_1(x), ..., B_K(x)]`` and their derivatives ``D = dF/dx`` come from one
    forward-mode pass through ``basis_fn``, and the layer's tangent is
    ``(D * dx) @ W + F @ dW``: one elementwise product and two matmuls over the same
    ``(..., (K + 1) * n_in)`` layout, which reverse mode transposes into ``dW = F^T g`` and
    ``dx = sum_k D_k * (g W^T)_k`` with no slicing of the features and no concatenation in
    the backward pass. Inputs that carry no tangent (the data entering the first layer,
    knots that are not trained) cost nothing: their terms are skipped, not multiplied by
    zero. Forward mode and higher derivatives (``jax.hessian`` in ``x``) work as usual.

    Layers with at most :data:`_OUT_MAJOR_MAX` outputs keep ``W`` output-major (as ``W^T``),
    so that reverse mode forms ``dW^T = g^T F`` instead of ``F^T g``: the same numbers, but
    XLA:CPU runs the first faster for a narrow ``g``. Wider layers keep ``W``, whose
    ``g W^T`` is the faster one there (measurements in benchmarks/PERF.md).
    """
    out_major = coef.shape[1] <= _OUT_MAJOR_MAX
    weights = _stacked_weights(w_base, w_spline, coef, out_major=out_major)
    y = _features_matmul(basis_fn, out_major, x, tuple(basis_args), weights)
    if bias is not None:
        y = y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)
    return y


def _features(basis_fn, x, basis_args):
    """``(..., n_in) -> (..., K + 1, n_in)``: ``silu(x)`` stacked on the basis."""
    return jnp.concatenate([jax.nn.silu(x)[..., None, :], basis_fn(x, *basis_args)], axis=-2)


def _flat(f):
    return f.reshape(*f.shape[:-2], f.shape[-2] * f.shape[-1])


def _stacked_weights(w_base, w_spline, coef, *, out_major: bool = False):
    """``((K + 1) * n_in, n_out)``: ``w_base`` over ``coef * w_spline``, rows k-major.

    With ``out_major``, its transpose ``(n_out, (K + 1) * n_in)``, built in that layout.
    """
    n_in, n_out, k = coef.shape
    rows = jnp.concatenate([w_base[None], jnp.moveaxis(coef * w_spline[..., None], -1, 0)])
    if out_major:
        return jnp.transpose(rows, (2, 0, 1)).reshape(n_out, (k + 1) * n_in)
    return rows.reshape((k + 1) * n_in, n_out)


# Layers with at most this many outputs keep their stacked weights output-major (see
# kan_layer_from_basis).
_OUT_MAJOR_MAX = 16


def _times(a, weights, out_major):
    """``a @ W`` for ``W`` given as itself, or as ``W^T`` when ``out_major``."""
    if out_major:
        return jax.lax.dot_general(a, weights, (((a.ndim - 1,), (1,)), ((), ())))
    return a @ weights


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _features_matmul(basis_fn, out_major, x, basis_args, weights):
    """``features(x) @ W`` for ``W = weights`` (or ``weights.T`` when ``out_major``)."""
    return _times(_flat(_features(basis_fn, x, basis_args)), weights, out_major)


def _features_matmul_jvp(basis_fn, out_major, primals, tangents):
    x, basis_args, weights = primals
    x_dot, args_dot, w_dot = tangents
    if isinstance(x_dot, SymbolicZero):
        features = _flat(_features(basis_fn, x, basis_args))
        y_dot = None
    else:  # the features and their derivative in x from one forward-mode pass
        f, d = jax.jvp(lambda v: _features(basis_fn, v, basis_args), (x,), (jnp.ones_like(x),))
        features = _flat(f)
        y_dot = _times(_flat(_scale_rows(d, x_dot)), weights, out_major)
    y = _times(features, weights, out_major)
    if not isinstance(w_dot, SymbolicZero):
        term = _times(features, w_dot, out_major)
        y_dot = term if y_dot is None else y_dot + term
    if not all(isinstance(t, SymbolicZero) for t in jax.tree.leaves(
            args_dot, is_leaf=lambda t: isinstance(t, SymbolicZero))):
        args_dot = tuple(jnp.zeros_like(a) if isinstance(t, SymbolicZero) else t
                         for a, t in zip(basis_args, args_dot))
        _, f_dot = jax.jvp(lambda a: _features(basis_fn, x, a), (basis_args,), (args_dot,))
        term = _times(_flat(f_dot), weights, out_major)
        y_dot = term if y_dot is None else y_dot + term
    return y, jnp.zeros_like(y) if y_dot is None else y_dot


_features_matmul.defjvp(_features_matmul_jvp, symbolic_zeros=True)

# Up to this many basis rows, _scale_rows is unrolled (see there); beyond, it broadcasts.
_UNROLL_ROWS = 16


def _scale_rows(d: jax.Array, x_dot: jax.Array) -> jax.Array:
    """``d * x_dot[..., None, :]`` for ``d`` of shape ``(..., K + 1, n_in)``.

    Written as one product per basis row, stacked. The value is the same as the
    broadcast; what changes is reverse mode. The transpose of a broadcast is a
    ``reduce_sum`` over the ``K + 1`` rows of ``d * g``, and XLA:CPU hands that reduction
    (with the products feeding it, and on layers after the first the matmul producing ``g``)
    to a library fusion that is slower than plain code. The transpose of a stack is
    slicing, and the ``K + 1`` contributions to ``x``'s cotangent are summed by plain adds,
    which XLA fuses into one elementwise loop on every backend (measurements in
    benchmarks/PERF.md). Long bases (fine grids) keep the broadcast so the traced program
    does not grow with ``K``.
    """
    rows = d.shape[-2]
    if rows > _UNROLL_ROWS:
        return d * x_dot[..., None, :]
    return jnp.stack([d[..., r, :] * x_dot for r in range(rows)], axis=-2)


def edge_activations(
    x: jax.Array,
    basis_values: jax.Array,
    w_base: jax.Array,
    w_spline: jax.Array,
    coef: jax.Array,
) -> jax.Array:
    """Every edge function's value ``phi_qp(x_p)``, shape ``(..., n_in, n_out)``.

    This forms the per-edge tensor on purpose (for plots, importance scores and
    regularisers); ``kan_layer`` equals its sum over ``n_in`` plus the bias.
    """
    spline = jnp.einsum("...pi,pqi->...pq", basis_values, coef * w_spline[..., None])
    base = jnp.einsum("...p,pq->...pq", jax.nn.silu(x), w_base)
    return base + spline


def symbolic_edges(
    x: jax.Array,
    index: jax.Array,
    affine: jax.Array,
    fns: tuple,
) -> jax.Array:
    """Closed-form edge values ``c * f_k(a * x_p + b) + d``, shape ``(..., n_in, n_out)``.

    Args:
      x: inputs, shape ``(..., n_in)``.
      index: which of ``fns`` each edge uses, integer, shape ``(n_in, n_out)``.
      affine: ``(a, b, c, d)`` per edge, shape ``(n_in, n_out, 4)``.
      fns: elementwise functions (a static tuple); edge ``(p, q)`` uses ``fns[index[p, q]]``.

    Each function is evaluated once over all edges and selected per edge, so the cost is
    ``len(fns)`` elementwise passes over a ``(..., n_in, n_out)`` tensor.
    """
    a, b, c, d = (affine[..., i] for i in range(4))
    lead = (1,) * (x.ndim - 1)
    u = x[..., :, None] * a.reshape(lead + a.shape) + b.reshape(lead + b.shape)
    z = jnp.zeros_like(u)
    for k, fn in enumerate(fns):
        z = jnp.where((index == k).reshape(lead + index.shape), fn(u), z)
    return c.reshape(lead + c.shape) * z + d.reshape(lead + d.shape)


def combine_nodes(y, n_mult: int, arity: int = 2):
    """Multiplication nodes (KAN 2.0): the last ``arity * n_mult`` outputs multiplied in groups.

    Args:
      y: a layer's summed outputs, shape ``(..., n_sum + arity * n_mult)``; a JAX or NumPy
        array (NumPy in, NumPy out).
      n_mult: number of multiplication nodes (static).
      arity: inputs per multiplication node (static, >= 2).

    Returns:
      ``(..., n_sum + n_mult)``: ``y[..., :n_sum]`` unchanged (sum nodes), then node ``j``
      = ``prod_r y[..., n_sum + arity * j + r]``.
    """
    if n_mult == 0:
        return y
    xp = np if isinstance(y, np.ndarray) else jnp
    n_sum = y.shape[-1] - arity * n_mult
    groups = y[..., n_sum:].reshape(*y.shape[:-1], n_mult, arity)
    return xp.concatenate([y[..., :n_sum], xp.prod(groups, axis=-1)], axis=-1)


def node_columns(n_out: int, n_mult: int, arity: int = 2) -> list[np.ndarray]:
    """For each node :func:`combine_nodes` returns, the columns of ``y`` (``n_out`` edge sums)
    it is made of: one for a sum node, ``arity`` consecutive ones for a product node."""
    n_sum = n_out - arity * n_mult
    return ([np.array([q]) for q in range(n_sum)]
            + [n_sum + arity * j + np.arange(arity) for j in range(n_mult)])
