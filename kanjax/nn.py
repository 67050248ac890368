"""Flax NNX modules: thin owners of parameters that call the pure core.

``KANLayer`` holds ``w_base``, ``w_spline``, ``coef`` (and optionally ``bias``) as
``nnx.Param`` and, for the B-spline basis, its knots as a non-trainable ``SplineGrid``
variable; the maths lives in :mod:`kanjax.basis` and :mod:`kanjax.layer`. Features are on
the last axis and any leading batch dimensions are allowed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kanjax import basis as basis_lib
from kanjax import layer as layer_lib

__all__ = ["SplineGrid", "KANLayer", "KAN", "MLP"]

_BASES = ("taylor", "bspline")


@functools.partial(jax.jit, static_argnums=(1, 2))
def _uniform_block(key, size, dtype):
    return jax.random.uniform(key, (size,), dtype, -1.0, 1.0)


@functools.partial(jax.jit, static_argnums=tuple(range(1, 8)))
def _shape_weights(block, n_in, n_out, num_basis, base_scale, coef_scale, spline_value, dtype):
    n_base = n_in * n_out
    w_base = block[:n_base].reshape(n_in, n_out) * base_scale
    coef = block[n_base : n_base * (1 + num_basis)].reshape(n_in, n_out, num_basis) * coef_scale
    w_spline = jnp.full((n_in, n_out), spline_value, dtype)
    return w_base.astype(dtype), w_spline, coef.astype(dtype)


def _init_weights(key, n_in, n_out, num_basis, base_init, spline_init, coef_init, dtype):
    """Initial ``(w_base, w_spline, coef)`` of a layer.

    ``w_base ~ U(-1, 1) * base_init / sqrt(n_in)``, ``w_spline = spline_init / sqrt(n_in)``
    and ``coef`` uniform with zero mean and standard deviation ``coef_init / sqrt(K)``.

    XLA compiles a random-number program once per shape, which costs ~0.2-0.3 s each on
    CPU; the numbers are therefore drawn in power-of-two blocks (one compiled program
    serves every layer of most networks) and cut to shape by a small jitted function.
    """
    dtype = jnp.dtype(dtype)
    n = n_in * n_out * (1 + num_basis)
    block = _uniform_block(key, max(1024, 1 << (n - 1).bit_length()), dtype)
    return _shape_weights(
        block, n_in, n_out, num_basis,
        base_init / math.sqrt(n_in),
        coef_init * math.sqrt(3.0 / num_basis),  # U(-1, 1) has std 1/sqrt(3)
        spline_init / math.sqrt(n_in),
        dtype,
    )


class SplineGrid(nnx.Variable):
    """Knots of a B-spline layer, shape ``(n_in, G + 2k + 1)``: state, not a trainable parameter."""


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_knots(grid, n_in: int, order: int, dtype) -> tuple[jax.Array, bool]:
    knots = np.asarray(grid, dtype=np.float64)
    if knots.ndim == 1:
        knots = np.broadcast_to(knots, (n_in, knots.shape[0]))
    if knots.ndim != 2 or knots.shape[0] != n_in:
        raise ValueError(
            f"grid must have shape (n_knots,) or ({n_in}, n_knots), got {np.shape(grid)}"
        )
    if not np.all(np.isfinite(knots)):
        raise ValueError("grid contains non-finite knots (nan or inf)")
    if np.any(np.diff(knots, axis=-1) < 0):
        raise ValueError("grid knots must be sorted in non-decreasing order along the last axis")
    if knots.shape[-1] < 2 * order + 2:
        raise ValueError(
            f"an order-{order} grid needs at least {2 * order + 2} knots (one interval plus "
            f"{order} extension knots per side), got {knots.shape[-1]}"
        )
    steps = np.diff(knots, axis=-1)
    uniform = bool(np.all(steps > 0) and np.allclose(steps, steps[:, :1], rtol=1e-6, atol=0.0))
    return jnp.asarray(knots, dtype=dtype), uniform


class KANLayer(nnx.Module):
    """One KAN layer: ``y_q = sum_p w_b[p,q] silu(x_p) + w_s[p,q] sum_i c[p,q,i] B_i(x_p)``.

    Args:
      in_features: number of inputs ``n_in``.
      out_features: number of outputs ``n_out``.
      basis: ``"bspline"`` (the KAN paper's) or ``"taylor"`` (the seed document's power
        series).
      degree: Taylor basis only; highest power, so ``degree + 1`` coefficients per edge
        (the seed's ``grado_taylor=10`` is ``degree=9``).
      grid_size: B-spline basis only; ``G`` intervals over ``grid_range``.
      order: B-spline basis only; spline order ``k`` (3 = cubic). ``G + k`` functions.
      grid_range: B-spline knots span ``grid_range`` (extended by ``k`` knots per side).
      grid: B-spline basis only; explicit knots instead of the uniform grid, shape
        ``(n_knots,)`` or ``(n_in, n_knots)``, non-decreasing, ``n_knots >= 2k + 2``;
        ``grid_size`` is then ``n_knots - 2k - 1``.
      squash: Taylor basis only; the map applied to ``x`` before the powers. ``"tanh"``
        (default) keeps every power in ``(-1, 1)`` whatever the input, so deep Taylor KANs
        and inputs beyond ``[-1, 1]`` stay finite; ``None`` evaluates raw powers of ``x``
        (exact polynomials, but ``|x| > 1`` grows like ``|x|^degree``).
      use_bias: add a learnable output bias (off by default, as in the seed and paper).
      base_init: ``w_base ~ U(-1, 1) * base_init / sqrt(n_in)``.
      spline_init: ``w_spline = spline_init / sqrt(n_in)``.
      coef_init: ``coef`` uniform with zero mean and standard deviation
        ``coef_init / sqrt(K)``.
      dtype: compute dtype (``None``: that of the parameters).
      param_dtype: dtype of parameters and grid (default float32).
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        basis: str = "bspline",
        degree: int = 9,
        grid_size: int = 5,
        order: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        grid=None,
        squash: str | None = "tanh",
        use_bias: bool = False,
        base_init: float = 1.0,
        spline_init: float = 1.0,
        coef_init: float = 0.1,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_features = _check_positive_int("in_features", in_features)
        self.out_features = _check_positive_int("out_features", out_features)
        if basis not in _BASES:
            raise ValueError(f"basis must be one of {_BASES}, got {basis!r}")
        self.basis = basis
        self.dtype = dtype
        self.param_dtype = param_dtype
        n_in, n_out = self.in_features, self.out_features

        if basis == "taylor":
            self.degree = _check_positive_int("degree", degree, minimum=0)
            if squash not in (None, "none", "tanh"):
                raise ValueError(f"unknown squash {squash!r}; expected 'tanh' or None")
            self.squash = squash
            num_basis = self.degree + 1
            self.grid = None
        else:
            self.order = _check_positive_int("order", order, minimum=0)
            if grid is None:
                self.grid_size = _check_positive_int("grid_size", grid_size)
                knots = basis_lib.uniform_grid(
                    self.grid_size, self.order, grid_range, num_inputs=n_in, dtype=param_dtype
                )
                self.uniform = True
            else:
                knots, self.uniform = _check_knots(grid, n_in, self.order, param_dtype)
                self.grid_size = knots.shape[-1] - 2 * self.order - 1
            self.grid = SplineGrid(knots)
            num_basis = self.grid_size + self.order

        self.num_basis = num_basis
        w_base, w_spline, coef = _init_weights(
            rngs.params(), n_in, n_out, num_basis, base_init, spline_init, coef_init, param_dtype
        )
        self.w_base = nnx.Param(w_base)
        self.w_spline = nnx.Param(w_spline)
        self.coef = nnx.Param(coef)
        self.bias = nnx.Param(jnp.zeros((n_out,), param_dtype)) if use_bias else None

    def basis_values(self, x: jax.Array) -> jax.Array:
        """The basis at ``x``: ``(..., n_in) -> (..., n_in, K)``."""
        if self.basis == "taylor":
            return basis_lib.power_basis(basis_lib.squash(x, self.squash), self.degree)
        knots = self.grid[...].astype(x.dtype)
        if self.uniform:  # closed form with an analytic derivative (exact on uniform knots)
            step = (knots[:, -1] - knots[:, 0]) / (knots.shape[-1] - 1)
            return basis_lib.uniform_bspline_basis(x, knots[:, 0], step, self.num_basis, self.order)
        return basis_lib.bspline_basis(x, knots, self.order)

    def _cast(self, x: jax.Array):
        dtype = self.dtype or self.param_dtype
        params = [self.w_base[...], self.w_spline[...], self.coef[...]]
        bias = None if self.bias is None else self.bias[...].astype(dtype)
        return x.astype(dtype), [p.astype(dtype) for p in params], bias

    def _check_input(self, x) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"KANLayer expects inputs with {self.in_features} features on the last axis, "
                f"got shape {tuple(x.shape)}"
            )
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(..., n_in) -> (..., n_out)``."""
        x, (w_base, w_spline, coef), bias = self._cast(self._check_input(x))
        return layer_lib.kan_layer(x, self.basis_values(x), w_base, w_spline, coef, bias)

    def edge_activations(self, x: jax.Array) -> jax.Array:
        """Per-edge values ``phi_qp(x_p)``: ``(..., n_in) -> (..., n_in, n_out)``."""
        x, (w_base, w_spline, coef), _ = self._cast(self._check_input(x))
        return layer_lib.edge_activations(x, self.basis_values(x), w_base, w_spline, coef)


def _check_widths(widths) -> list[int]:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"widths must be a sequence of integers, got {widths!r}")
    if len(widths) < 2:
        raise ValueError(
            f"widths needs at least 2 entries (inputs and outputs), got {list(widths)}"
        )
    out = []
    for i, w in enumerate(widths):
        try:
            out.append(_check_positive_int(f"widths[{i}]", w))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{err} (widths={list(widths)})") from None
    return out


class KAN(nnx.Module):
    """A Kolmogorov-Arnold network: ``KANLayer``s composed left to right.

    Args:
      widths: ``[n_0, n_1, ..., n_L]``, at least two positive integers.
      basis, degree, grid_size, order, grid_range, squash, use_bias, dtype, param_dtype and
        the ``*_init`` scales: passed to every :class:`KANLayer`.
      rngs: ``nnx.Rngs``.

    ``KAN([2, 4, 4, 1], basis="taylor", degree=9)`` has the seed document's 336 trainable
    parameters (28 edges x (w_base + w_spline + 10 coefficients)).
    """

    def __init__(self, widths: Sequence[int], *, rngs: nnx.Rngs, **layer_kwargs):
        self.widths = tuple(_check_widths(widths))
        self.layers = nnx.List(
            [
                KANLayer(n_in, n_out, rngs=rngs, **layer_kwargs)
                for n_in, n_out in zip(self.widths[:-1], self.widths[1:])
            ]
        )

    @property
    def in_features(self) -> int:
        return self.widths[0]

    @property
    def out_features(self) -> int:
        return self.widths[-1]

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(..., widths[0]) -> (..., widths[-1])``."""
        for layer in self.layers:
            x = layer(x)
        return x


class MLP(nnx.Module):
    """Multi-layer perceptron baseline with the same ``widths`` convention as :class:`KAN`.

    ``activation`` follows every hidden layer, not the last one.
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        activation: Callable[[jax.Array], jax.Array] = jax.nn.silu,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.widths = tuple(_check_widths(widths))
        self.activation = activation
        self.layers = nnx.List(
            [
                nnx.Linear(n_in, n_out, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                for n_in, n_out in zip(self.widths[:-1], self.widths[1:])
            ]
        )

    @property
    def in_features(self) -> int:
        return self.widths[0]

    @property
    def out_features(self) -> int:
        return self.widths[-1]

    def __call__(self, x: jax.Array) -> jax.Array:
        if jnp.ndim(x) == 0 or jnp.shape(x)[-1] != self.in_features:
            raise ValueError(
                f"MLP expects inputs with {self.in_features} features on the last axis, "
                f"got shape {tuple(jnp.shape(x))}"
            )
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)
