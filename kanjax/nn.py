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
from kanjax import functions as functions_lib
from kanjax import grids as grids_lib
from kanjax import layer as layer_lib
from kanjax import schema
from kanjax._xla import fast_compile_jit
from kanjax.checks import check_int

__all__ = ["SplineGrid", "EdgeMask", "SymbolicMask", "SymbolicIndex", "KANLayer", "KAN", "MLP",
           "model_config", "model_from_config"]

_BASES = ("taylor", "bspline")


_uniform_block = functools.partial(fast_compile_jit, static_argnums=(1, 2))(
    lambda key, size, dtype: jax.random.uniform(key, (size,), dtype, -1.0, 1.0))


def _init_weights(key, n_in, n_out, num_basis, base_init, spline_init, coef_init, dtype):
    """Initial ``(w_base, w_spline, coef)`` of a layer.

    ``w_base ~ U(-1, 1) * base_init / sqrt(n_in)``, ``w_spline = spline_init / sqrt(n_in)``
    and ``coef`` uniform with zero mean and standard deviation ``coef_init / sqrt(K)``.

    XLA compiles a random-number program once per shape, which costs ~0.1-0.3 s on CPU; the
    numbers are therefore drawn in power-of-two blocks (one compiled program serves every
    layer of most networks) and cut to shape on the host (with ``jax.numpy`` when the
    constructor is traced, e.g. under ``nnx.vmap`` for an ensemble).
    """
    dtype = jnp.dtype(dtype)
    n_base = n_in * n_out
    n = n_base * (1 + num_basis)
    block = _uniform_block(key, max(1024, 1 << (n - 1).bit_length()), dtype)
    xp = jnp if isinstance(block, jax.core.Tracer) else np
    block = block if xp is jnp else np.asarray(block, np.float32)
    w_base = block[:n_base].reshape(n_in, n_out) * (base_init / math.sqrt(n_in))
    coef = block[n_base:n].reshape(n_in, n_out, num_basis) * (
        coef_init * math.sqrt(3.0 / num_basis))  # U(-1, 1) has std 1/sqrt(3)
    w_spline = xp.full((n_in, n_out), spline_init / math.sqrt(n_in), np.float32)
    if xp is np:  # cast on the host: jnp.asarray(a, dtype) would compile a conversion
        return tuple(jnp.asarray(a.astype(dtype)) for a in (w_base, w_spline, coef))
    return tuple(a.astype(dtype) for a in (w_base, w_spline, coef))


class EdgeMask(nnx.Variable):
    """Per-edge 0/1 mask of a layer, shape ``(n_in, n_out)``: state, not a trainable parameter."""


class SymbolicMask(nnx.Variable):
    """``(n_in, n_out)``: 1 where an edge is a closed-form function instead of its spline/series."""


class SymbolicIndex(nnx.Variable):
    """``(n_in, n_out)`` int32: which of the layer's ``sym_names`` a symbolic edge uses."""


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


class _Default:
    """A constructor default that tells "not given" apart from "given" (and reads as the value)."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _given(value) -> bool:
    return not isinstance(value, _Default)


def _value(value):
    return value.value if isinstance(value, _Default) else value


# Options of one basis that the other ignores, and the basis they belong to.
_BASIS_ONLY = {"degree": "taylor", "squash": "taylor", "grid_size": "bspline",
               "order": "bspline", "grid_range": "bspline", "grid": "bspline"}


def _check_basis_options(basis: str, given: dict) -> None:
    """Refuse options of the other basis (they would be ignored), and ``grid`` with a scalar."""
    wrong = [name for name, value in given.items()
             if _given(value) and (value is not None or name != "grid")
             and _BASIS_ONLY[name] != basis]
    if wrong:
        other = "bspline" if basis == "taylor" else "taylor"
        own = [n for n, b in _BASIS_ONLY.items() if b == basis]
        raise ValueError(
            f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} for basis={other!r} and "
            f"would be ignored with basis={basis!r}; drop {'it' if len(wrong) == 1 else 'them'} "
            f"or pass basis={other!r} (basis={basis!r} takes {', '.join(own)})")
    grid = given["grid"]
    if grid is not None and np.ndim(grid) == 0:
        raise ValueError(
            f"grid={grid!r} is not a knot vector: grid takes explicit knots (shape (n_knots,) "
            f"or (n_in, n_knots)). For the number of grid intervals (pykan's grid=) pass "
            f"grid_size={grid!r}")
    if grid is not None:
        both = [n for n in ("grid_size", "grid_range") if _given(given[n])]
        if both:
            raise ValueError(f"grid gives the knots, so {' and '.join(both)} would be ignored; "
                             f"drop {' and '.join(both)} (or drop grid)")


def _check_grid_range(grid_range) -> tuple[float, float]:
    fix = "pass two finite numbers lo < hi, e.g. grid_range=(-1.0, 1.0)"
    try:
        values = [float(v) for v in grid_range]
    except (TypeError, ValueError):
        raise ValueError(f"grid_range must be (lo, hi), got {grid_range!r}; {fix}") from None
    if len(values) != 2:
        raise ValueError(f"grid_range must be (lo, hi), two numbers, got {len(values)}: "
                         f"{grid_range!r}; {fix}")
    lo, hi = values
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"grid_range must be finite, got {grid_range!r}; {fix}")
    if not lo < hi:
        raise ValueError(f"grid_range must satisfy lo < hi, got {grid_range!r}; {fix}")
    return lo, hi


def _check_finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a finite number, got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}; pass e.g. {name}=1.0")
    return float(value)


def _check_float_dtype(name: str, value, *, optional: bool = False):
    if value is None and optional:
        return None
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be a floating dtype such as jnp.float32, got "
                        f"{value!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating dtype (float16, bfloat16, float32, "
                         f"float64), got {dtype}; pass e.g. {name}=jnp.float32")
    return value


def _check_layer_settings(use_bias, base_init, spline_init, coef_init, dtype, param_dtype,
                          rngs) -> None:
    if not isinstance(use_bias, (bool, np.bool_)):
        raise TypeError(f"use_bias must be True or False, got {use_bias!r}")
    for name, value in (("base_init", base_init), ("spline_init", spline_init),
                        ("coef_init", coef_init)):
        _check_finite(name, value)
    _check_float_dtype("dtype", dtype, optional=True)
    _check_float_dtype("param_dtype", param_dtype)
    _check_rngs(rngs)


def _check_rngs(rngs) -> None:
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__} {rngs!r}; pass "
                        "e.g. rngs=nnx.Rngs(0)")


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


_LAYER_SCHEMA = {"in_features": "int", "out_features": "int", "basis": "str", "use_bias": "bool",
                 "dtype": "str?", "param_dtype": "str", "symbolic": "list"}
_BASIS_SCHEMA = {"taylor": {"degree": "int", "squash": "str?"},
                 "bspline": {"grid_size": "int", "order": "int", "uniform": "bool"}}


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
        degree: int = _Default(9),
        grid_size: int = _Default(5),
        order: int = _Default(3),
        grid_range: tuple[float, float] = _Default((-1.0, 1.0)),
        grid=None,
        squash: str | None = _Default("tanh"),
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
        if not isinstance(basis, str) or basis not in _BASES:
            raise ValueError(f"basis must be one of {_BASES}, got {basis!r}")
        _check_basis_options(basis, {"degree": degree, "squash": squash, "grid_size": grid_size,
                                     "order": order, "grid_range": grid_range, "grid": grid})
        degree, squash, grid_size, order, grid_range = (
            _value(v) for v in (degree, squash, grid_size, order, grid_range))
        _check_layer_settings(use_bias, base_init, spline_init, coef_init, dtype, param_dtype,
                              rngs)
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
                grid_range = _check_grid_range(grid_range)
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
        host_dtype = jnp.dtype(param_dtype)  # filled on the host: no program per shape
        self.bias = nnx.Param(jnp.asarray(np.zeros(n_out, host_dtype))) if use_bias else None
        self.mask = EdgeMask(jnp.asarray(np.ones((n_in, n_out), host_dtype)))
        # symbolic edges (kanjax.symbolic.fix_symbolic); absent until the first one is set
        self.sym_names: tuple[str, ...] = ()
        self.sym_mask = nnx.data(None)
        self.sym_index = nnx.data(None)
        self.sym_affine = nnx.data(None)

    # ---------------------------------------------------------------- config

    def config(self) -> dict:
        """This layer's structure as JSON-serialisable data (see :meth:`from_config`).

        Keys: ``in_features``, ``out_features``, ``basis``, ``use_bias``, ``dtype``,
        ``param_dtype``, ``symbolic`` (the names of the closed-form functions the layer
        holds) and, for Taylor layers, ``degree`` and ``squash``, for B-spline layers,
        ``grid_size``, ``order`` and ``uniform``. Array values (knots, masks,
        coefficients) are not part of it.
        """
        config = {"in_features": self.in_features, "out_features": self.out_features,
                  "basis": self.basis, "use_bias": self.bias is not None,
                  "dtype": schema.dtype_name(self.dtype),
                  "param_dtype": schema.dtype_name(self.param_dtype),
                  "symbolic": list(self.sym_names)}
        if self.basis == "taylor":
            config.update(degree=self.degree, squash=self.squash)
        else:
            config.update(grid_size=self.grid_size, order=self.order, uniform=bool(self.uniform))
        return config

    @classmethod
    def from_config(cls, config, *, rngs: nnx.Rngs) -> "KANLayer":
        """A layer with the structure ``config`` describes (arrays freshly initialised).

        Meant to run under ``nnx.eval_shape`` to obtain the abstract layer whose arrays a
        checkpoint restores. Raises :class:`kanjax.schema.ConfigError` for a config that
        does not follow the schema of :meth:`config`.
        """
        basis = config.get("basis") if isinstance(config, dict) else None
        config = schema.check(config, _LAYER_SCHEMA | _BASIS_SCHEMA.get(basis, {}), "layer config")
        names = config["symbolic"]
        if not all(isinstance(n, str) and n in functions_lib.LIBRARY for n in names):
            raise schema.ConfigError(f"layer config.symbolic has unknown functions {names}")
        kwargs = {k: config[k] for k in ("degree", "squash", "grid_size", "order") if k in config}
        try:
            layer = cls(config["in_features"], config["out_features"], basis=basis,
                        use_bias=config["use_bias"], rngs=rngs,
                        dtype=schema.dtype_of(config["dtype"], "layer config.dtype"),
                        param_dtype=schema.dtype_of(config["param_dtype"], "layer config.param_dtype"),
                        **kwargs)
        except (TypeError, ValueError) as err:
            raise schema.ConfigError(f"layer config: {err}") from None
        if basis == "bspline":
            layer.uniform = config["uniform"]
        if names:
            layer._reserve_symbolic(tuple(names))
        return layer

    def _reserve_symbolic(self, names: tuple[str, ...]) -> None:
        """Symbolic-edge variables for ``names``, all edges numeric (values to be replaced)."""
        shape = (self.in_features, self.out_features)
        self.sym_names = names
        self.sym_mask = SymbolicMask(jnp.zeros(shape, self.param_dtype))
        self.sym_index = SymbolicIndex(jnp.zeros(shape, jnp.int32))
        self.sym_affine = nnx.Param(jnp.zeros((*shape, 4), self.param_dtype))

    def basis_values(self, x: jax.Array) -> jax.Array:
        """The basis at ``x``: ``(..., n_in) -> (..., n_in, K)``."""
        return jnp.swapaxes(self._basis_kmajor(x), -1, -2)

    def _basis_kmajor(self, x: jax.Array) -> jax.Array:
        """The basis in the layer's compute layout: ``(..., n_in) -> (..., K, n_in)``."""
        if self.basis == "taylor":
            return basis_lib._power_basis_kmajor(basis_lib.squash(x, self.squash), self.degree)
        knots = self.grid[...].astype(x.dtype)
        if self.uniform:  # closed form with an analytic derivative (exact on uniform knots)
            step = (knots[:, -1] - knots[:, 0]) / (knots.shape[-1] - 1)
            return basis_lib._uniform_bspline_kmajor(
                x, knots[:, 0], step, self.num_basis, self.order)
        return basis_lib._bspline_kmajor(x, knots, self.order)

    # ---------------------------------------------------------------- grids (B-spline)

    def _require_bspline(self, what: str):
        if self.basis != "bspline":
            raise TypeError(f"{what} needs a B-spline layer; this layer's basis is {self.basis!r}")

    def update_grid(self, x: jax.Array, *, grid_eps: float = 0.02, margin: float = 0.0,
                    ridge: float = 1e-6) -> None:
        """Move the knots to follow samples ``x`` and refit ``coef`` so every edge keeps its function.

        The new knots blend the samples' percentiles with the uniform min-max grid
        (``grid_eps``, see :func:`kanjax.grids.grid_from_samples`); the coefficients are the
        ridge least-squares fit of the old spline values at ``x`` (well-posed even where an
        interval receives no samples). ``grid_size`` and ``order`` stay; the layer is
        updated in place.

        Args:
          x: inputs of this layer, shape ``(..., n_in)`` (flattened to samples).
        """
        self._require_bspline("update_grid")
        x = self._check_input(x).reshape(-1, self.in_features).astype(self.param_dtype)
        _check_samples(x)
        grid, coef = _regrid(x, self.grid[...], self.coef[...], self.grid_size, self.order,
                             float(grid_eps), float(margin), float(ridge), self.uniform)
        self.grid[...] = grid
        self.coef[...] = coef
        self.uniform = _is_uniform(grid)

    def refine(self, grid_size: int, x: jax.Array | None = None, *, grid_eps: float = 0.02,
               margin: float = 0.0, ridge: float = 1e-6) -> None:
        """Change the number of grid intervals to ``grid_size``, keeping each edge's function.

        Without ``x`` the new grid is uniform over the current grid's inner range and the
        coefficients are fitted on a dense uniform sample of it (exact when the new grid
        contains the old knots, e.g. 5 -> 10 intervals). With samples ``x`` the new grid
        follows them as in :meth:`update_grid`. ``coef`` changes shape (``n_in, n_out,
        grid_size + order``), so optimizer state for this layer must be re-initialised;
        ``kanjax.train`` does that at the start of every call.
        """
        self._require_bspline("refine")
        grid_size = _check_positive_int("grid_size", grid_size)
        knots = self.grid[...]
        if x is None:
            lo, hi = knots[None, :, self.order], knots[None, :, -self.order - 1]
            n = 8 * (grid_size + self.order) + 1
            t = jnp.linspace(0.0, 1.0, n, dtype=knots.dtype)[:, None]
            x = lo + (hi - lo) * t
            grid_eps, margin = 1.0, 0.0
        else:
            x = self._check_input(x).reshape(-1, self.in_features).astype(self.param_dtype)
            _check_samples(x)
        grid, coef = _regrid(x, knots, self.coef[...], grid_size, self.order, float(grid_eps),
                             float(margin), float(ridge), self.uniform)
        self.grid = SplineGrid(grid)
        self.coef = nnx.Param(coef)
        self.grid_size = grid_size
        self.num_basis = grid_size + self.order
        self.uniform = _is_uniform(grid)

    def _cast(self, x: jax.Array):
        dtype = self.dtype or self.param_dtype
        mask = self.mask[...]  # pruned edges contribute nothing (and get no gradient)
        if self.sym_names:  # symbolic edges replace their numeric function
            mask = mask * (1 - self.sym_mask[...])
        params = [self.w_base[...] * mask, self.w_spline[...] * mask, self.coef[...]]
        bias = None if self.bias is None else self.bias[...].astype(dtype)
        return x.astype(dtype), [p.astype(dtype) for p in params], bias

    def _check_input(self, x) -> jax.Array:
        dtype = x.dtype if isinstance(x, jax.Array) else np.asarray(x).dtype
        if not any(jnp.issubdtype(dtype, kind) for kind in (jnp.bool_, jnp.integer, jnp.floating)):
            raise TypeError(f"KANLayer input x must hold real numbers, got dtype {dtype} (pass "
                            "x.real, or real and imaginary parts as separate features)")
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
        if self.basis == "taylor":
            # u^0 = 1 on every edge: its terms add up to a constant per output, added after
            # the matmul instead of multiplying a column of ones (one basis function fewer).
            const = jnp.sum(coef[..., 0] * w_spline, axis=0)
            bias = const if bias is None else bias + const
            basis_fn, args, coef = _taylor_nonconstant(self.squash, self.degree), (), coef[..., 1:]
        elif self.uniform:  # closed form with an analytic derivative (exact on uniform knots)
            knots = self.grid[...].astype(x.dtype)
            step = (knots[:, -1] - knots[:, 0]) / (knots.shape[-1] - 1)
            basis_fn, args = _uniform_bspline(self.num_basis, self.order), (knots[:, 0], step)
        else:
            basis_fn, args = _bspline(self.order), (self.grid[...].astype(x.dtype),)
        y = layer_lib.kan_layer_from_basis(x, basis_fn, w_base, w_spline, coef, bias,
                                           basis_args=args)
        if self.sym_names:
            y = y + self._symbolic_edges(x).sum(axis=-2)
        return y

    def edge_activations(self, x: jax.Array) -> jax.Array:
        """Per-edge values ``phi_qp(x_p)``: ``(..., n_in) -> (..., n_in, n_out)``."""
        x, (w_base, w_spline, coef), _ = self._cast(self._check_input(x))
        edges = layer_lib.edge_activations(x, self.basis_values(x), w_base, w_spline, coef)
        if self.sym_names:
            edges = edges + self._symbolic_edges(x)
        return edges

    # ---------------------------------------------------------------- symbolic edges

    def _symbolic_edges(self, x: jax.Array) -> jax.Array:
        """Closed-form edges' values (zero elsewhere), ``(..., n_in, n_out)``; ``x`` cast."""
        fns = tuple(functions_lib.get_function(n).fn for n in self.sym_names)
        weight = (self.mask[...] * self.sym_mask[...]).astype(x.dtype)
        affine = self.sym_affine[...].astype(x.dtype)
        edges = layer_lib.symbolic_edges(x, self.sym_index[...], affine, fns)
        return edges * weight.reshape((1,) * (x.ndim - 1) + weight.shape)

    def set_symbolic(self, i: int, j: int, name: str, affine=(1.0, 0.0, 1.0, 0.0)) -> None:
        """Make edge ``(i, j)`` (input ``i``, output ``j``) the closed form
        ``c * f(a * x + b) + d`` with ``f`` the library function ``name`` and
        ``affine = (a, b, c, d)``. The affine parameters are trainable ``nnx.Param``s."""
        self._set_symbolic_edges([i], [j], [name], [affine])

    def _set_symbolic_edges(self, rows, cols, names, affines) -> None:
        """:meth:`set_symbolic` for many edges at once (one host round trip per array)."""
        for i, j in zip(rows, cols):
            self._check_edge(i, j)
        for name in names:
            functions_lib.get_function(name)  # a clear error for an unknown name
        affines = [np.asarray(a, dtype=np.float64).reshape(-1) for a in affines]
        for a in affines:
            if a.shape != (4,) or not np.isfinite(a).all():
                raise ValueError(f"affine must be 4 finite numbers (a, b, c, d), got {a}")
        n_in, n_out = self.in_features, self.out_features
        if self.sym_names:
            mask = np.array(self.sym_mask[...])
            index = np.array(self.sym_index[...])
            affine = np.array(self.sym_affine[...])
        else:
            mask = np.zeros((n_in, n_out))
            index = np.zeros((n_in, n_out), np.int32)
            affine = np.broadcast_to(np.array([1.0, 0.0, 0.0, 0.0]), (n_in, n_out, 4)).copy()
        sym_names = list(self.sym_names)
        for i, j, name, a in zip(rows, cols, names, affines):
            if name not in sym_names:
                sym_names.append(name)
            mask[i, j], index[i, j], affine[i, j] = 1, sym_names.index(name), a
        self.sym_names = tuple(sym_names)
        dtype = self.param_dtype
        if isinstance(self.sym_mask, SymbolicMask):
            self.sym_mask[...] = jnp.asarray(mask, dtype)
            self.sym_index[...] = jnp.asarray(index, jnp.int32)
            self.sym_affine[...] = jnp.asarray(affine, dtype)
        else:
            self.sym_mask = SymbolicMask(jnp.asarray(mask, dtype))
            self.sym_index = SymbolicIndex(jnp.asarray(index, jnp.int32))
            self.sym_affine = nnx.Param(jnp.asarray(affine, dtype))

    def unset_symbolic(self, i: int, j: int) -> None:
        """Give edge ``(i, j)`` back its numeric (spline or series) function."""
        self._check_edge(i, j)
        if self.sym_names:
            self.sym_mask[...] = self.sym_mask[...].at[i, j].set(0)

    def is_symbolic(self) -> np.ndarray:
        """``(n_in, n_out)`` booleans: which edges are closed-form functions."""
        if not self.sym_names:
            return np.zeros((self.in_features, self.out_features), bool)
        return np.asarray(self.sym_mask[...]) > 0

    def symbolic_edge(self, i: int, j: int) -> tuple[str, tuple[float, float, float, float]] | None:
        """``(name, (a, b, c, d))`` of a symbolic edge, ``None`` for a numeric one."""
        self._check_edge(i, j)
        if not self.is_symbolic()[i, j]:
            return None
        name = self.sym_names[int(self.sym_index[...][i, j])]
        return name, tuple(float(v) for v in np.asarray(self.sym_affine[...][i, j]))

    def _check_edge(self, i, j) -> None:
        check_int("i", i, 0), check_int("j", j, 0)
        if not (i < self.in_features and j < self.out_features):
            raise IndexError(
                f"edge ({i}, {j}) is outside this layer's {self.in_features} inputs x "
                f"{self.out_features} outputs"
            )


def inputs_of_layers(model, x):
    """The inputs each layer of ``model`` receives from ``x``: a list, ``x`` first."""
    inputs = [x]
    for layer in model.layers[:-1]:
        inputs.append(layer(inputs[-1]))
    return inputs


@functools.partial(jax.jit, static_argnums=0)
def _layer_inputs_of_state(graphdef, state, x):
    return inputs_of_layers(nnx.merge(graphdef, state), x)


def _layer_inputs(model, x):
    """``inputs_of_layers`` as one compiled forward pass, for the host side.

    A pure function of the split state: unlike ``nnx.jit`` it writes nothing back into
    ``model``, so a background thread may call it on a model that shares variables with
    one being trained.
    """
    return _layer_inputs_of_state(*nnx.split(model), x)


@functools.partial(fast_compile_jit, static_argnums=(0, 3, 4, 5, 6))
def _refine_all(graphdef, state, x, grid_size, grid_eps, margin, ridge):
    """``[(grid, coef)]`` of every layer of a B-spline KAN refined on the inputs from ``x``."""
    model = nnx.merge(graphdef, state)
    return regrid_layers(model.layers, inputs_of_layers(model, x), [grid_size] * len(model.layers),
                          grid_eps, margin, ridge)


def regrid_layers(layers, inputs, grid_sizes, grid_eps, margin, ridge):
    """:func:`_regrid` of several B-spline layers (``[(grid, coef)]``), traced once per kind.

    Layers with the same order, knot count, uniform flag and new grid size are regridded
    as one: their inputs are stacked as columns (grids and fits are per input column
    anyway) and their outputs zero-padded to the widest. A [2, 5, 1] KAN then compiles one
    refit instead of one per layer.
    """
    host = all(isinstance(h, np.ndarray) for h in inputs)  # NumPy in: refit on the host
    regrid = _regrid_arrays if host else _regrid
    values = (lambda a: np.asarray(a, np.float64)) if host else (lambda a: a)  # noqa: E731
    groups: dict[tuple, list[int]] = {}
    for i, (layer, size) in enumerate(zip(layers, grid_sizes)):
        key = (layer.grid.shape[-1], layer.order, layer.uniform, size)
        groups.setdefault(key, []).append(i)
    out = [None] * len(layers)
    for (_, order, uniform, size), members in groups.items():
        xp = np if host else jnp
        n_out = max(layers[i].out_features for i in members)
        coef = xp.concatenate([
            xp.pad(values(layers[i].coef[...]),
                   ((0, 0), (0, n_out - layers[i].out_features), (0, 0)))
            for i in members])
        grid, coef = regrid(xp.concatenate([inputs[i] for i in members], axis=-1),
                            xp.concatenate([values(layers[i].grid[...]) for i in members]),
                            coef, size, order, grid_eps, margin, ridge, uniform)
        start = 0
        for i in members:
            n_in, n_o = layers[i].in_features, layers[i].out_features
            out[i] = grid[start:start + n_in], coef[start:start + n_in, :n_o]
            start += n_in
    return out


# Basis functions in the layer's k-major layout, ``(..., n_in) -> (..., K, n_in)``: one
# function object per configuration, so a compiled program sees the same static callable.


@functools.lru_cache(maxsize=None)
def _taylor_nonconstant(squash, degree: int):
    def basis(x):  # powers u^1 .. u^degree of u = squash(x)
        return basis_lib._positive_powers_kmajor(basis_lib.squash(x, squash), degree)
    return basis


@functools.lru_cache(maxsize=None)
def _uniform_bspline(num_basis: int, order: int):
    def basis(x, start, step):
        return basis_lib._uniform_bspline_kmajor(x, start, step, num_basis, order)
    return basis


@functools.lru_cache(maxsize=None)
def _bspline(order: int):
    def basis(x, knots):
        return basis_lib._bspline_kmajor(x, knots, order)
    return basis


def _check_samples(x) -> None:
    if x.shape[0] == 0:
        raise ValueError("need at least one sample to place a grid")
    if not bool(jnp.isfinite(x).all()):
        raise ValueError("grid samples contain non-finite values (nan or inf)")


def _is_uniform(grid) -> bool:
    steps = np.diff(np.asarray(grid, np.float64), axis=-1)
    return bool(np.all(steps > 0) and np.allclose(steps, steps[:, :1], rtol=1e-5, atol=0.0))


def _regrid_arrays(x, old_grid, old_coef, grid_size, order, grid_eps, margin, ridge, old_uniform):
    """New knots from ``x`` and coefficients refitted to the old splines.

    The fit uses the samples ``x`` together with a dense uniform sample of the new grid's
    span (4 points per basis function and input). The old spline is known everywhere, so
    every new coefficient is pinned down by it: fitting at the data alone left the
    coefficients of sparsely sampled intervals to the ridge, and a refined [2, 5, 1] model
    lost an order of magnitude of test accuracy to wiggles between samples (G 20 -> 50).

    Runs with NumPy on the host when given NumPy arrays (:data:`_HOST_REFIT_MAX_FLOPS`),
    else with ``jax.numpy`` (:func:`_regrid`, compiled).
    """
    xp = basis_lib._namespace(x, old_grid, old_coef)
    grid = grids_lib.grid_from_samples(x, grid_size, order, grid_eps=grid_eps, margin=margin)
    lo, hi = grid[:, order], grid[:, -order - 1]
    t = xp.linspace(0.0, 1.0, 4 * (grid_size + order) + 1, dtype=x.dtype)[:, None]
    points = xp.concatenate([x, lo[None, :] + (hi - lo)[None, :] * t])
    if old_uniform and xp is jnp:
        step = (old_grid[:, -1] - old_grid[:, 0]) / (old_grid.shape[-1] - 1)
        old_basis = basis_lib.uniform_bspline_basis(points, old_grid[:, 0], step,
                                                    old_coef.shape[-1], order)
    else:  # (on the host the general recursion, exact on uniform knots too)
        old_basis = basis_lib.bspline_basis(points, old_grid, order)
    # targets[n, p, q] = sum_i old_basis[n, p, i] old_coef[p, q, i], as a batched matmul
    targets = xp.transpose(xp.transpose(old_basis, (1, 0, 2)) @ xp.swapaxes(old_coef, 1, 2),
                           (1, 0, 2))
    return grid, grids_lib.fit_coefficients(points, targets, grid, order, ridge=ridge)


_regrid = functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8))(_regrid_arrays)

# A refit this small (estimated flops) runs with NumPy in float64 on the host: compiling it
# would cost ~0.5-1 s of XLA:CPU time per new shape (every refine of a grid extension),
# while the host does it in milliseconds. Larger refits are compiled and run on the device.
_HOST_REFIT_MAX_FLOPS = 2e8


def _refit_flops(layers, n_samples, grid_size) -> float:
    total = 0.0
    for layer in layers:
        k_new, k_old = grid_size + layer.order, layer.num_basis
        n = n_samples + 4 * k_new + 1
        total += n * layer.in_features * (k_new * k_new + (k_new + k_old) * layer.out_features)
    return 2.0 * total


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


# pykan's names for KAN options, and kanjax's.
_PYKAN_NAMES = {"k": "order", "width": "widths", "seed": "rngs=nnx.Rngs(seed)",
                "base_fun": "the fixed silu base", "noise_scale": "coef_init",
                "scale_base_mu": "base_init", "scale_sp": "spline_init"}
_LAYER_OPTIONS = ("basis", "degree", "grid_size", "order", "grid_range", "grid", "squash",
                  "use_bias", "base_init", "spline_init", "coef_init", "dtype", "param_dtype")


def _check_layer_kwargs(layer_kwargs) -> None:
    unknown = [name for name in layer_kwargs if name not in _LAYER_OPTIONS]
    if unknown:
        hints = [f"{n} -> {_PYKAN_NAMES[n]}" for n in unknown if n in _PYKAN_NAMES]
        raise TypeError(f"KAN got unknown option(s) {', '.join(map(repr, unknown))}"
                        + (f" (pykan's names; kanjax's: {'; '.join(hints)})" if hints else "")
                        + f"; KAN takes widths, rngs and {', '.join(_LAYER_OPTIONS)}")


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
        _check_layer_kwargs(layer_kwargs)
        self.layers = nnx.List(
            [
                KANLayer(n_in, n_out, rngs=rngs, **layer_kwargs)
                for n_in, n_out in zip(self.widths[:-1], self.widths[1:])
            ]
        )

    def config(self) -> dict:
        """The network's structure as JSON data: ``{"widths": [...], "layers": [...]}``, each
        layer's entry from :meth:`KANLayer.config` (pruned widths, refined grids and symbolic
        edges included). :meth:`from_config` rebuilds the same structure."""
        return {"widths": list(self.widths), "layers": [layer.config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config, *, rngs: nnx.Rngs) -> "KAN":
        """A KAN with the structure ``config`` describes (arrays freshly initialised);
        :class:`kanjax.schema.ConfigError` for a config that breaks the schema."""
        config = schema.check(config, {"widths": "list", "layers": "list"}, "KAN config")
        layers = [KANLayer.from_config(c, rngs=rngs) for c in config["layers"]]
        widths = config["widths"]
        chained = [layers[0].in_features] + [layer.out_features for layer in layers] if layers else []
        if widths != chained or any(a.out_features != b.in_features
                                    for a, b in zip(layers, layers[1:])):
            raise schema.ConfigError(f"KAN config: widths {widths} do not chain the layers' "
                                     f"features {chained}")
        model = cls(widths, rngs=rngs, basis=layers[0].basis)
        model.layers = nnx.List(layers)
        return model

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

    def forward_with_penalty(self, x: jax.Array, *, l1: float = 0.0, entropy: float = 0.0):
        """``(model(x), penalty)`` with the KAN paper's sparsity penalty computed in the same pass.

        For every layer, ``A[p, q] = mean over the batch of |phi_qp(x_p)|`` and
        ``P = A / sum(A)``; the penalty is ``sum over layers of l1 * sum(A) + entropy *
        (-sum P log P)``. The layer outputs are formed from the per-edge activations here,
        so this costs one ``(batch, n_in, n_out)`` tensor per layer; use plain ``model(x)``
        when no penalty is needed.
        """
        penalty = jnp.zeros((), self.layers[0].param_dtype)
        for layer in self.layers:
            edges = layer.edge_activations(x)  # (..., in, out)
            y = edges.sum(axis=-2)
            if layer.bias is not None:
                y = y + layer.bias[...].reshape((1,) * (y.ndim - 1) + (-1,))
            a = jnp.mean(jnp.abs(edges.reshape(-1, *edges.shape[-2:])), axis=0)
            total = jnp.sum(a)
            p = a / (total + 1e-12)
            penalty = penalty + l1 * total - entropy * jnp.sum(p * jnp.log(p + 1e-12))
            x = y
        return x, penalty

    def update_grid(self, x: jax.Array, **kwargs) -> None:
        """:meth:`KANLayer.update_grid` on every layer, each on the activations it receives from ``x``."""
        for layer in self.layers:  # every check before the first change
            layer._require_bspline("update_grid")
        x = self._samples(x)
        _check_samples(x)
        inputs = _layer_inputs(self, x)
        for layer, h in zip(self.layers, inputs):  # see refine: the function is kept
            layer.update_grid(h, **kwargs)

    def _samples(self, x) -> jax.Array:
        first = self.layers[0]
        return first._check_input(x).reshape(-1, first.in_features).astype(first.param_dtype)

    def refine(self, grid_size: int, x: jax.Array | None = None, **kwargs) -> None:
        """:meth:`KANLayer.refine` on every layer (grid extension, e.g. 5 -> 10 -> 20 intervals).

        With samples ``x`` each layer's new grid follows the activations it receives;
        without, each layer keeps its range with ``grid_size`` uniform intervals.
        """
        if x is None or any(layer.basis != "bspline" for layer in self.layers):
            for layer in self.layers:  # (a Taylor layer raises its own clear error)
                layer.refine(grid_size, x, **kwargs)
                if x is not None:
                    x = layer(x)
            return
        grid_size = _check_positive_int("grid_size", grid_size)
        x = self._samples(x)
        _check_samples(x)
        options = dict(grid_eps=0.02, margin=0.0, ridge=1e-6)
        unknown = set(kwargs) - set(options)
        if unknown:
            raise TypeError(f"refine() got unexpected keyword arguments {sorted(unknown)}")
        options.update({k: float(v) for k, v in kwargs.items()})
        # Each layer's inputs come from the current model (refining keeps every function, so
        # they are also the refined layers' inputs up to the refit's error). A small refit
        # runs on the host from one compiled forward pass; a large one, all layers, in one
        # compiled program; nothing runs op by op.
        if _refit_flops(self.layers, x.shape[0], grid_size) <= _HOST_REFIT_MAX_FLOPS:
            inputs = [np.asarray(h, np.float64) for h in _layer_inputs(self, x)]
            refits = regrid_layers(self.layers, inputs, [grid_size] * len(self.layers),
                                    options["grid_eps"], options["margin"], options["ridge"])
        else:
            graphdef, state = nnx.split(self)
            refits = _refine_all(graphdef, state, x, grid_size, options["grid_eps"],
                                 options["margin"], options["ridge"])
        for layer, (grid, coef) in zip(self.layers, refits):
            if isinstance(grid, np.ndarray):  # host float64 -> the layer's dtype, on device
                dtype = jnp.dtype(layer.param_dtype)
                grid, coef = jnp.asarray(grid.astype(dtype)), jnp.asarray(coef.astype(dtype))
            layer.grid = SplineGrid(grid)
            layer.coef = nnx.Param(coef)
            layer.grid_size = grid_size
            layer.num_basis = grid_size + layer.order
            layer.uniform = _is_uniform(grid)


def warm_refine(model: KAN, x, grid_size: int) -> None:
    """Compile what ``model.refine(grid_size, x)`` will compile (for a model with this
    structure), so that the refine itself runs without compiling."""
    x = model._samples(x)
    _check_samples(x)
    if _refit_flops(model.layers, x.shape[0], grid_size) <= _HOST_REFIT_MAX_FLOPS:
        _layer_inputs(model, x)


def refined_like(model: KAN, grid_size: int, uniform: bool) -> KAN:
    """A stand-in with the structure ``model.refine(grid_size, x)`` gives, arrays all zero.

    For compiling a refined model's programs before its values exist (grid schedules);
    it must change what :meth:`KAN.refine` changes. Built on the host: no compiled program.
    """
    stand_in = nnx.merge(*nnx.split(model))  # new modules sharing the arrays: no copies
    for layer in stand_in.layers:
        n_in, n_out, order = layer.in_features, layer.out_features, layer.order
        layer.grid = SplineGrid(jnp.asarray(np.zeros((n_in, grid_size + 2 * order + 1),
                                                     layer.grid[...].dtype)))
        layer.coef = nnx.Param(jnp.asarray(np.zeros((n_in, n_out, grid_size + order),
                                                    layer.coef[...].dtype)))
        layer.grid_size, layer.num_basis, layer.uniform = grid_size, grid_size + order, uniform
    return stand_in


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
        if not callable(activation):
            raise TypeError(f"activation must be a function of an array, got {activation!r}; "
                            "pass e.g. activation=jax.nn.silu")
        _check_float_dtype("dtype", dtype, optional=True)
        _check_float_dtype("param_dtype", param_dtype)
        _check_rngs(rngs)
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

    def config(self) -> dict:
        """The network's structure as JSON data (see :meth:`from_config`)."""
        first = self.layers[0]
        return {"widths": list(self.widths), "activation": schema.activation_name(self.activation),
                "dtype": schema.dtype_name(first.dtype),
                "param_dtype": schema.dtype_name(first.param_dtype)}

    @classmethod
    def from_config(cls, config, *, rngs: nnx.Rngs) -> "MLP":
        """An MLP with the structure ``config`` describes (arrays freshly initialised)."""
        config = schema.check(config, {"widths": "list", "activation": "str", "dtype": "str?",
                                       "param_dtype": "str"}, "MLP config")
        try:
            return cls(config["widths"], rngs=rngs,
                       activation=schema.activation_of(config["activation"], "MLP config.activation"),
                       dtype=schema.dtype_of(config["dtype"], "MLP config.dtype"),
                       param_dtype=schema.dtype_of(config["param_dtype"], "MLP config.param_dtype"))
        except (TypeError, ValueError) as err:
            raise schema.ConfigError(f"MLP config: {err}") from None

    def __call__(self, x: jax.Array) -> jax.Array:
        if jnp.ndim(x) == 0 or jnp.shape(x)[-1] != self.in_features:
            raise ValueError(
                f"MLP expects inputs with {self.in_features} features on the last axis, "
                f"got shape {tuple(jnp.shape(x))}"
            )
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


_MODELS = {"KAN": KAN, "MLP": MLP}


def model_config(model) -> dict:
    """``{"class": "KAN" | "MLP", "config": model.config()}`` for a kanjax model (exact class)."""
    for name, cls in _MODELS.items():
        if type(model) is cls:
            return {"class": name, "config": model.config()}
    raise TypeError(f"expected a kanjax.KAN or kanjax.MLP, got {type(model).__name__}")


def model_from_config(config, *, rngs: nnx.Rngs):
    """The model :func:`model_config` described; use under ``nnx.eval_shape`` for shapes only."""
    config = schema.check(config, {"class": "str", "config": "dict"}, "model config")
    if config["class"] not in _MODELS:
        raise schema.ConfigError(f"model config.class must be one of {list(_MODELS)}, "
                                 f"got {config['class']!r}")
    return _MODELS[config["class"]].from_config(config["config"], rngs=rngs)
