"""``KANLayer``: one KAN layer as a thin Flax NNX module over the pure core.

It holds ``w_base``, ``w_spline``, ``coef`` (and optionally ``bias``) as ``nnx.Param`` and, for
the B-spline basis, its knots as a non-trainable ``SplineGrid`` variable; the maths lives in
:mod:`kanjax.basis` and :mod:`kanjax.layer`. Features are on the last axis and any leading
batch dimensions are allowed. ``config()`` describes the layer as JSON data.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kanjax import basis as basis_lib
from kanjax import functions as functions_lib
from kanjax import init as init_lib
from kanjax import layer as layer_lib
from kanjax import layer_args as args
from kanjax import local_spline, regrid, schema
from kanjax.checks import check_int

__all__ = ["KANLayer", "EdgeMask", "SymbolicMask", "SymbolicIndex", "SplineGrid"]



class EdgeMask(nnx.Variable):
    """Per-edge 0/1 mask of a layer, shape ``(n_in, n_out)``: state, not a trainable parameter."""


class SymbolicMask(nnx.Variable):
    """``(n_in, n_out)``: 1 where an edge is a closed-form function instead of its spline/series."""


class SymbolicIndex(nnx.Variable):
    """``(n_in, n_out)`` int32: which of the layer's ``sym_names`` a symbolic edge uses."""


class SplineGrid(nnx.Variable):
    """Knots of a B-spline layer, shape ``(n_in, G + 2k + 1)``: state, not a trainable parameter."""


_LAYER_SCHEMA = {"in_features": "int", "out_features": "int", "mult_nodes": "int",
                 "mult_arity": "int", "basis": "str", "use_bias": "bool",
                 "dtype": "str?", "param_dtype": "str", "symbolic": "list"}
_BASIS_SCHEMA = {"taylor": {"degree": "int", "squash": "str?"},
                 "bspline": {"grid_size": "int", "order": "int", "uniform": "bool",
                             "spline_eval": "str"}}


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
      spline_eval: B-spline basis only; ``"dense"`` multiplies all ``G + k`` basis values,
        ``"local"`` only the ``k + 1`` non-zero ones (cost flat in ``G``), ``"auto"`` picks per
        layer (:func:`kanjax.local_spline.use_local`). Same values, on any knots.
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
      mult_nodes: multiplication nodes (KAN 2.0): the last ``mult_arity * mult_nodes`` of the
        ``out_features`` edge sums are multiplied in groups of ``mult_arity``, so the layer
        returns ``out_nodes = out_features - (mult_arity - 1) * mult_nodes`` values (sums
        first, then products). Edge arrays keep ``out_features`` columns.
      mult_arity: factors per multiplication node (default 2).
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        basis: str = "bspline",
        degree: int = args.Default(9),
        grid_size: int = args.Default(5),
        order: int = args.Default(3),
        grid_range: tuple[float, float] = args.Default((-1.0, 1.0)),
        grid=None,
        spline_eval: str = args.Default("auto"),
        squash: str | None = args.Default("tanh"),
        use_bias: bool = False,
        base_init: float = 1.0,
        spline_init: float = 1.0,
        coef_init: float = 0.1,
        dtype=None,
        param_dtype=jnp.float32,
        mult_nodes: int = 0,
        mult_arity: int = 2,
        rngs: nnx.Rngs,
    ):
        self.in_features = args.check_positive_int("in_features", in_features)
        self.out_features = args.check_positive_int("out_features", out_features)
        self.mult_nodes, self.mult_arity = args.check_mult_nodes(self.out_features, mult_nodes,
                                                                 mult_arity)
        if not isinstance(basis, str) or basis not in args.BASES:
            raise ValueError(f"basis must be one of {args.BASES}, got {basis!r}")
        args.check_basis_options(basis, {"degree": degree, "squash": squash, "grid_size": grid_size,
                                     "order": order, "grid_range": grid_range, "grid": grid,
                                     "spline_eval": spline_eval})
        degree, squash, grid_size, order, grid_range = (
            args.value_of(v) for v in (degree, squash, grid_size, order, grid_range))
        args.check_layer_settings(use_bias, base_init, spline_init, coef_init, dtype, param_dtype,
                              rngs)
        self.basis = basis
        self.dtype = dtype
        self.param_dtype = param_dtype
        n_in, n_out = self.in_features, self.out_features

        if basis == "taylor":
            self.degree = args.check_positive_int("degree", degree, minimum=0)
            if squash not in (None, "none", "tanh"):
                raise ValueError(f"unknown squash {squash!r}; expected 'tanh' or None")
            self.squash = squash
            num_basis = self.degree + 1
            self.grid = None
        else:
            self.order = args.check_positive_int("order", order, minimum=0)
            self.spline_eval = args.check_spline_eval(args.value_of(spline_eval))
            if grid is None:
                self.grid_size = args.check_positive_int("grid_size", grid_size)
                grid_range = args.check_grid_range(grid_range)
                knots = basis_lib.uniform_grid(
                    self.grid_size, self.order, grid_range, num_inputs=n_in, dtype=param_dtype
                )
                self.uniform = True
            else:
                knots, self.uniform = args.check_knots(grid, n_in, self.order, param_dtype)
                self.grid_size = knots.shape[-1] - 2 * self.order - 1
            self.grid = SplineGrid(knots)
            num_basis = self.grid_size + self.order

        self.num_basis = num_basis
        w_base, w_spline, coef = init_lib.init_weights(
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
        holds), ``mult_nodes`` and ``mult_arity`` and, for Taylor layers, ``degree`` and
        ``squash``, for B-spline layers, ``grid_size``, ``order``, ``uniform`` and
        ``spline_eval``. Array values (knots, masks, coefficients) are not part of it.
        """
        config = {"in_features": self.in_features, "out_features": self.out_features,
                  "mult_nodes": self.mult_nodes, "mult_arity": self.mult_arity,
                  "basis": self.basis, "use_bias": self.bias is not None,
                  "dtype": schema.dtype_name(self.dtype),
                  "param_dtype": schema.dtype_name(self.param_dtype),
                  "symbolic": list(self.sym_names)}
        if self.basis == "taylor":
            config.update(degree=self.degree, squash=self.squash)
        else:
            config.update(grid_size=self.grid_size, order=self.order, uniform=bool(self.uniform),
                          spline_eval=self.spline_eval)
        return config

    @classmethod
    def from_config(cls, config, *, rngs: nnx.Rngs) -> KANLayer:
        """A layer with the structure ``config`` describes (arrays freshly initialised).

        Meant to run under ``nnx.eval_shape`` to obtain the abstract layer whose arrays a
        checkpoint restores. Raises :class:`kanjax.schema.ConfigError` for a config that
        does not follow the schema of :meth:`config`.
        """
        basis = config.get("basis") if isinstance(config, dict) else None
        if basis == "bspline":  # configs written before the option existed: the default
            config = {"spline_eval": "auto", **config}
        config = schema.check(config, _LAYER_SCHEMA | _BASIS_SCHEMA.get(basis, {}), "layer config")
        names = config["symbolic"]
        if not all(isinstance(n, str) and n in functions_lib.LIBRARY for n in names):
            raise schema.ConfigError(f"layer config.symbolic has unknown functions {names}")
        kwargs = {k: config[k] for k in ("degree", "squash", "grid_size", "order", "spline_eval")
                  if k in config}
        try:
            layer = cls(config["in_features"], config["out_features"], basis=basis,
                        use_bias=config["use_bias"], rngs=rngs,
                        mult_nodes=config["mult_nodes"], mult_arity=config["mult_arity"],
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
            return basis_lib.power_basis_kmajor(basis_lib.squash(x, self.squash), self.degree)
        knots = self.grid[...].astype(x.dtype)
        if self.uniform:  # closed form with an analytic derivative (exact on uniform knots)
            step = (knots[:, -1] - knots[:, 0]) / (knots.shape[-1] - 1)
            return basis_lib.uniform_bspline_kmajor(
                x, knots[:, 0], step, self.num_basis, self.order)
        return basis_lib.bspline_kmajor(x, knots, self.order)

    # ---------------------------------------------------------------- grids (B-spline)

    def require_bspline(self, what: str):
        """Raise ``TypeError`` naming ``what`` unless this is a B-spline layer."""
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
        self.require_bspline("update_grid")
        x = self.check_input(x).reshape(-1, self.in_features).astype(self.param_dtype)
        regrid.check_samples(x)
        grid, coef = regrid.regrid_compiled(x, self.grid[...], self.coef[...], self.grid_size, self.order,
                             float(grid_eps), float(margin), float(ridge), self.uniform)
        self.grid[...] = grid
        self.coef[...] = coef
        self.uniform = regrid.is_uniform(grid)

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
        self.require_bspline("refine")
        grid_size = args.check_positive_int("grid_size", grid_size)
        knots = self.grid[...]
        if x is None:
            lo, hi = knots[None, :, self.order], knots[None, :, -self.order - 1]
            n = 8 * (grid_size + self.order) + 1
            t = jnp.linspace(0.0, 1.0, n, dtype=knots.dtype)[:, None]
            x = lo + (hi - lo) * t
            grid_eps, margin = 1.0, 0.0
        else:
            x = self.check_input(x).reshape(-1, self.in_features).astype(self.param_dtype)
            regrid.check_samples(x)
        grid, coef = regrid.regrid_compiled(x, knots, self.coef[...], grid_size, self.order, float(grid_eps),
                             float(margin), float(ridge), self.uniform)
        self.grid = SplineGrid(grid)
        self.coef = nnx.Param(coef)
        self.grid_size = grid_size
        self.num_basis = grid_size + self.order
        self.uniform = regrid.is_uniform(grid)

    def _cast(self, x: jax.Array):
        dtype = self.dtype or self.param_dtype
        mask = self.mask[...]  # pruned edges contribute nothing (and get no gradient)
        if self.sym_names:  # symbolic edges replace their numeric function
            mask = mask * (1 - self.sym_mask[...])
        params = [self.w_base[...] * mask, self.w_spline[...] * mask, self.coef[...]]
        bias = None if self.bias is None else self.bias[...].astype(dtype)
        return x.astype(dtype), [p.astype(dtype) for p in params], bias

    def check_input(self, x) -> jax.Array:
        """``x`` as an array of real numbers with ``in_features`` on the last axis, or a
        clear error (works on traced arrays too)."""
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

    @property
    def out_nodes(self) -> int:
        """Values the layer returns: ``out_features`` minus what multiplication merges."""
        return self.out_features - (self.mult_arity - 1) * self.mult_nodes

    def combine(self, y):
        """Edge sums ``(..., out_features)`` -> node values ``(..., out_nodes)``."""
        return layer_lib.combine_nodes(y, self.mult_nodes, self.mult_arity)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(..., n_in) -> (..., out_nodes)`` (``out_features`` without multiplication nodes)."""
        x, (w_base, w_spline, coef), bias = self._cast(self.check_input(x))
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
        if self.basis == "bspline" and local_spline.use_local(
                self.spline_eval, self.num_basis, self.order, self.uniform,
                batch=math.prod(x.shape[:-1])):
            local = _kan_layer_local if self.uniform else _kan_layer_pieces
            y = local(x, *args, w_base, w_spline, coef, bias, order=self.order)
        else:
            y = _kan_layer_from_basis(x, basis_fn, w_base, w_spline, coef, bias,
                                      basis_args=args)
        if self.sym_names:
            y = y + self._symbolic_edges(x).sum(axis=-2)
        return self.combine(y)

    def edge_activations(self, x: jax.Array) -> jax.Array:
        """Per-edge values ``phi_qp(x_p)``: ``(..., n_in) -> (..., n_in, n_out)``."""
        x, (w_base, w_spline, coef), _ = self._cast(self.check_input(x))
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
        self.set_symbolic_edges([i], [j], [name], [affine])

    def set_symbolic_edges(self, rows, cols, names, affines) -> None:
        """:meth:`set_symbolic` for many edges at once (one host round trip per array)."""
        for i, j in zip(rows, cols):
            self.check_edge(i, j)
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
        self.check_edge(i, j)
        if self.sym_names:
            self.sym_mask[...] = self.sym_mask[...].at[i, j].set(0)

    def is_symbolic(self) -> np.ndarray:
        """``(n_in, n_out)`` booleans: which edges are closed-form functions."""
        if not self.sym_names:
            return np.zeros((self.in_features, self.out_features), bool)
        return np.asarray(self.sym_mask[...]) > 0

    def symbolic_edge(self, i: int, j: int) -> tuple[str, tuple[float, float, float, float]] | None:
        """``(name, (a, b, c, d))`` of a symbolic edge, ``None`` for a numeric one."""
        self.check_edge(i, j)
        if not self.is_symbolic()[i, j]:
            return None
        name = self.sym_names[int(self.sym_index[...][i, j])]
        return name, tuple(float(v) for v in np.asarray(self.sym_affine[...][i, j]))

    def check_edge(self, i, j) -> None:
        """Raise unless ``(i, j)`` are integer indices of an edge of this layer."""
        check_int("i", i, 0), check_int("j", j, 0)
        if not (i < self.in_features and j < self.out_features):
            raise IndexError(
                f"edge ({i}, {j}) is outside this layer's {self.in_features} inputs x "
                f"{self.out_features} outputs"
            )


# Basis functions in the layer's k-major layout, ``(..., n_in) -> (..., K, n_in)``: one
# function object per configuration, so a compiled program sees the same static callable.


# The layer maths as compiled programs: a model called outside any trace (``model(x)`` in a
# notebook) compiles one program per layer instead of one per operation; inside a caller's
# jit, grad or vmap they are inlined as nested calls. The basis functions are cached
# factories, so the static argument hashes the same on every call.
_kan_layer_from_basis = jax.jit(layer_lib.kan_layer_from_basis, static_argnums=(1,))
_kan_layer_local = jax.jit(local_spline.kan_layer_local, static_argnames=("order",))
_kan_layer_pieces = jax.jit(local_spline.kan_layer_pieces, static_argnames=("order",))


@functools.cache
def _taylor_nonconstant(squash, degree: int):
    def basis(x):  # powers u^1 .. u^degree of u = squash(x)
        return basis_lib.positive_powers_kmajor(basis_lib.squash(x, squash), degree)
    return basis


@functools.cache
def _uniform_bspline(num_basis: int, order: int):
    def basis(x, start, step):
        return basis_lib.uniform_bspline_kmajor(x, start, step, num_basis, order)
    return basis


@functools.cache
def _bspline(order: int):
    def basis(x, knots):
        return basis_lib.bspline_kmajor(x, knots, order)
    return basis
