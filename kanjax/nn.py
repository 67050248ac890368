"""Flax NNX networks: ``KAN`` (``KANLayer``s composed) and ``MLP``, each describing itself.

``model.config()`` is the network's structure as JSON data and ``Class.from_config`` rebuilds
it (under ``nnx.eval_shape`` for shapes only); :func:`model_config` and
:func:`model_from_config` do the same for any kanjax network through a fixed table of classes.
``KANLayer`` and its variable types live in :mod:`kanjax.kanlayer` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kanjax import layer_args as args
from kanjax import regrid, schema
from kanjax.kanlayer import EdgeMask, KANLayer, SplineGrid, SymbolicIndex, SymbolicMask

__all__ = ["KAN", "MLP", "EdgeMask", "KANLayer", "SplineGrid", "SymbolicIndex", "SymbolicMask",
           "model_config", "model_from_config", "refined_like", "warm_refine"]


class KAN(nnx.Module):
    """A Kolmogorov-Arnold network: ``KANLayer``s composed left to right.

    Args:
      widths: ``[n_0, n_1, ..., n_L]``, at least two entries. An entry is a number of nodes
        or, after the inputs, ``[n_sum, n_mult]``: ``n_sum`` nodes that add their incoming
        edges and ``n_mult`` multiplication nodes (KAN 2.0), each the product of
        ``mult_arity`` edge sums. ``model.widths`` holds the node counts
        (``n_sum + n_mult``), ``model.mult_nodes`` the multiplication nodes per entry.
      mult_arity: factors per multiplication node (default 2).
      basis, degree, grid_size, order, grid_range, squash, use_bias, dtype, param_dtype and
        the ``*_init`` scales: passed to every :class:`KANLayer`.
      rngs: ``nnx.Rngs``.

    ``KAN([2, 4, 4, 1], basis="taylor", degree=9)`` has the seed document's 336 trainable
    parameters (28 edges x (w_base + w_spline + 10 coefficients)).
    """

    def __init__(self, widths: Sequence[int], *, rngs: nnx.Rngs, mult_arity: int = 2,
                 **layer_kwargs):
        nodes, mult = args.check_kan_widths(widths)
        self.widths = tuple(nodes)
        args.check_layer_kwargs(layer_kwargs)
        arity = args.check_positive_int("mult_arity", mult_arity, minimum=2)
        self.layers = nnx.List(
            [
                KANLayer(n_in, n_out + (arity - 1) * m, mult_nodes=m, mult_arity=arity,
                         rngs=rngs, **layer_kwargs)
                for n_in, n_out, m in zip(nodes[:-1], nodes[1:], mult[1:])
            ]
        )

    @property
    def mult_nodes(self) -> tuple[int, ...]:
        """Multiplication nodes per entry of ``widths`` (0 for the inputs)."""
        return (0, *(layer.mult_nodes for layer in self.layers))

    def config(self) -> dict:
        """The network's structure as JSON data: ``{"widths": [...], "layers": [...]}``, each
        layer's entry from :meth:`KANLayer.config` (pruned widths, refined grids and symbolic
        edges included). :meth:`from_config` rebuilds the same structure."""
        return {"widths": list(self.widths), "layers": [layer.config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config, *, rngs: nnx.Rngs) -> KAN:
        """A KAN with the structure ``config`` describes (arrays freshly initialised);
        :class:`kanjax.schema.ConfigError` for a config that breaks the schema."""
        config = schema.check(config, {"widths": "list", "layers": "list"}, "KAN config")
        layers = [KANLayer.from_config(c, rngs=rngs) for c in config["layers"]]
        widths = config["widths"]
        chained = [layers[0].in_features] + [layer.out_nodes for layer in layers] if layers else []
        if widths != chained or any(a.out_nodes != b.in_features
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
            x = layer.combine(y)
        return x, penalty

    def update_grid(self, x: jax.Array, **kwargs) -> None:
        """:meth:`KANLayer.update_grid` on every layer, each on the activations it receives from ``x``."""
        for layer in self.layers:  # every check before the first change
            layer.require_bspline("update_grid")
        x = self.flat_samples(x)
        regrid.check_samples(x)
        inputs = regrid.layer_inputs_compiled(self, x)
        for layer, h in zip(self.layers, inputs):  # see refine: the function is kept
            layer.update_grid(h, **kwargs)

    def flat_samples(self, x) -> jax.Array:
        """``x`` as ``(samples, in_features)`` in the first layer's parameter dtype."""
        first = self.layers[0]
        return first.check_input(x).reshape(-1, first.in_features).astype(first.param_dtype)

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
        grid_size = args.check_positive_int("grid_size", grid_size)
        x = self.flat_samples(x)
        regrid.check_samples(x)
        options = dict(grid_eps=0.02, margin=0.0, ridge=1e-6)
        unknown = set(kwargs) - set(options)
        if unknown:
            raise TypeError(f"refine() got unexpected keyword arguments {sorted(unknown)}")
        options.update({k: float(v) for k, v in kwargs.items()})
        # Each layer's inputs come from the current model (refining keeps every function, so
        # they are also the refined layers' inputs up to the refit's error). A small refit
        # runs on the host from one compiled forward pass; a large one, all layers, in one
        # compiled program; nothing runs op by op.
        if regrid.refit_flops(self.layers, x.shape[0], grid_size) <= regrid.HOST_REFIT_MAX_FLOPS:
            inputs = [np.asarray(h, np.float64) for h in regrid.layer_inputs_compiled(self, x)]
            refits = regrid.regrid_layers(self.layers, inputs, [grid_size] * len(self.layers),
                                    options["grid_eps"], options["margin"], options["ridge"])
        else:
            graphdef, state = nnx.split(self)
            refits = regrid.refine_all(graphdef, state, x, grid_size, options["grid_eps"],
                                 options["margin"], options["ridge"])
        for layer, (grid, coef) in zip(self.layers, refits):
            if isinstance(grid, np.ndarray):  # host float64 -> the layer's dtype, on device
                dtype = jnp.dtype(layer.param_dtype)
                grid, coef = jnp.asarray(grid.astype(dtype)), jnp.asarray(coef.astype(dtype))
            layer.grid = SplineGrid(grid)
            layer.coef = nnx.Param(coef)
            layer.grid_size = grid_size
            layer.num_basis = grid_size + layer.order
            layer.uniform = regrid.is_uniform(grid)


def warm_refine(model: KAN, x, grid_size: int) -> None:
    """Compile what ``model.refine(grid_size, x)`` will compile (for a model with this
    structure), so that the refine itself runs without compiling."""
    x = model.flat_samples(x)
    regrid.check_samples(x)
    if regrid.refit_flops(model.layers, x.shape[0], grid_size) <= regrid.HOST_REFIT_MAX_FLOPS:
        regrid.layer_inputs_compiled(model, x)


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
        self.widths = tuple(args.check_widths(widths))
        if not callable(activation):
            raise TypeError(f"activation must be a function of an array, got {activation!r}; "
                            "pass e.g. activation=jax.nn.silu")
        args.check_float_dtype("dtype", dtype, optional=True)
        args.check_float_dtype("param_dtype", param_dtype)
        args.check_rngs(rngs)
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
    def from_config(cls, config, *, rngs: nnx.Rngs) -> MLP:
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
