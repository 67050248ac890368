"""Edge and node importance and feature attribution from data, and pruning a KAN to the
edges that matter.

Importance follows the KAN paper: an edge's score is the mean of ``|phi_qp(x_p)|`` over
samples; a hidden node is kept when its strongest incoming and strongest outgoing edges
both score above the threshold. Pruning returns a smaller model (removed nodes dropped,
weak edges masked through the layer's ``EdgeMask``) whose output equals the original with
the same edges masked.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kanjax import layer as layer_lib
from kanjax.nn import (
    KAN,
    EdgeMask,
    SplineGrid,
    SymbolicIndex,
    SymbolicMask,
)
from kanjax.regrid import inputs_of_layers

__all__ = ["edge_importance", "node_importance", "attribution", "prune", "layer_inputs"]


def _check_samples(what: str, model, x, *, finite: bool = True) -> np.ndarray:
    """``x`` as a host array of samples for ``model``, checked before anything is traced.

    Raises ``TypeError`` for a model that is not a :class:`~kanjax.KAN` or an ``x`` that is not
    real numbers, ``ValueError`` for a wrong shape, no samples or (``finite``) non-finite rows.
    """
    if not isinstance(model, KAN):
        raise TypeError(f"{what} needs a kanjax.KAN as model, got {type(model).__name__}; "
                        "build one with kanjax.KAN(widths, rngs=nnx.Rngs(0))")
    try:
        x = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what}: x must be an array of real numbers, got "
                        f"{type(x).__name__} ({err})") from None
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or \
            np.iscomplexobj(x):
        raise TypeError(f"{what}: x must hold real numbers, got dtype {x.dtype}; pass e.g. "
                        "np.asarray(x, np.float32)")
    if x.ndim < 1 or x.shape[-1] != model.in_features:
        raise ValueError(f"{what}: x must have {model.in_features} features on the last axis, "
                         f"got shape {tuple(x.shape)}")
    rows = x.reshape(-1, model.in_features)
    if rows.shape[0] == 0:
        raise ValueError(f"{what}: x has no samples (shape {tuple(x.shape)}); pass at least one "
                         f"row of {model.in_features} inputs, e.g. the training inputs")
    if finite:
        bad = int(np.count_nonzero(~np.all(np.isfinite(rows), axis=-1)))
        if bad:
            raise ValueError(f"{what}: x has {bad} of {rows.shape[0]} rows with nan or inf; "
                             "every sample must be finite. Drop them first, e.g. "
                             "x[np.isfinite(x).all(axis=-1)]")
    return x


def _as_input(model: KAN, x: np.ndarray) -> jax.Array:
    """Floating ``x`` as it is; integers and booleans as the model's parameter dtype."""
    return jnp.asarray(x if np.issubdtype(x.dtype, np.floating)
                       else x.astype(model.layers[0].param_dtype))


def edge_importance(model: KAN, x: jax.Array) -> list[np.ndarray]:
    """Per layer, ``A[p, q] = mean over samples of |phi_qp(x_p)|``, shape ``(n_in, n_out)``.

    ``x``: finite samples, shape ``(..., model.in_features)``, at least one.
    """
    x = _check_samples("edge_importance", model, x)
    views = layer_views(model, _as_input(model, x), jnp.zeros((1,)), "nearest")
    return [np.asarray(a) for a, _, _ in views]


@functools.partial(jax.jit, static_argnums=0)
def _inputs_of_state(graphdef, state, x):
    return inputs_of_layers(nnx.merge(graphdef, state), x)


def layer_inputs(model: KAN, x: jax.Array) -> list[jax.Array]:
    """What each layer of ``model`` receives when ``x`` goes in: one array per layer.

    ``layer_inputs(model, x)[l]`` has shape ``(..., model.widths[l])``: ``x`` itself for the
    first layer, the previous layer's output for the others. Use it to look at a hidden
    layer, e.g. ``kanjax.plot_layer(model.layers[1], kanjax.layer_inputs(model, x)[1])``.
    One compiled forward pass; ``model`` is not changed.
    """
    x = _check_samples("layer_inputs", model, x, finite=False)
    return list(_inputs_of_state(*nnx.split(model), _as_input(model, x)))


@functools.partial(nnx.jit, static_argnums=3)
def layer_views(model: KAN, h: jax.Array, q: jax.Array, method: str):
    """Per layer ``(A, points, phi)`` from one pass of the samples ``h`` through the model.

    ``A (n_in, n_out)`` is the edge importance (mean ``|phi_qp|`` over the samples);
    ``points (m, n_in)`` are the quantiles ``q`` (shape ``(m,)``, ``jnp.quantile``
    ``method``) of each input column of the layer; ``phi (m, n_in, n_out)`` are the edge
    values there. One compiled program per model structure, shared by importance, pruning,
    plots and symbolic fitting (eager execution would compile every small op on first use).
    """
    out = []
    for layer in model.layers:
        edges = layer.edge_activations(h)
        points = jnp.quantile(h, q.astype(h.dtype), axis=0, method=method)
        out.append((jnp.mean(jnp.abs(edges.reshape(-1, *edges.shape[-2:])), axis=0), points,
                    layer.edge_activations(points)))
        h = layer(h)
    return out


def node_columns(layer) -> list[np.ndarray]:
    """For each node a layer outputs, the columns of its edge arrays that feed it: one
    for a sum node, ``mult_arity`` for a multiplication node."""
    return layer_lib.node_columns(layer.out_features, layer.mult_nodes, layer.mult_arity)


def node_importance(model: KAN, x: jax.Array) -> list[np.ndarray]:
    """Per hidden layer of nodes, ``min(max incoming score, max outgoing score)`` (incoming:
    over every edge into the node, the factors' edges for a multiplication node)."""
    scores = edge_importance(model, x)
    out = []
    for i in range(len(scores) - 1):
        incoming = np.array([scores[i][:, cols].max() for cols in node_columns(model.layers[i])])
        out.append(np.minimum(incoming, scores[i + 1].max(axis=1)))
    return out


def attribution(model: KAN, x: jax.Array) -> list[np.ndarray]:
    """Feature attribution: how much of the outputs each node (inputs included) accounts for.

    Every output node gets importance 1. Going backwards, a node ``q`` of layer ``l + 1``
    hands its importance to its inputs ``p`` in proportion to their edges' scores
    ``A_l[p, q]`` (:func:`edge_importance`), so
    ``I_l[p] = sum_q A_l[p, q] / sum_p' A_l[p', q] * I_{l+1}[q]``. Every layer's scores sum
    to the number of outputs; an input whose edges carry nothing scores ~0.

    Returns:
      One array per layer of nodes, inputs first: ``[I_0 (n_0,), I_1 (n_1,), ..., I_L (n_L,)]``.
    """
    scores = edge_importance(model, x)
    out = [np.ones(model.widths[-1])]
    for layer, a in zip(reversed(model.layers), reversed(scores)):
        a = np.asarray(a, np.float64)
        share = a / np.maximum(a.sum(axis=0, keepdims=True), 1e-30)
        # a product depends on each factor fully: every factor gets its node's importance
        per_column = np.zeros(layer.out_features)
        for node, cols in enumerate(node_columns(layer)):
            per_column[cols] = out[-1][node]
        out.append(share @ per_column)
    return out[::-1]


def _submatrix(a, *, rows, cols):
    return jnp.asarray(a)[rows][:, cols]


def prune(model: KAN, x: jax.Array, *, threshold: float = 1e-2) -> KAN:
    """A copy of ``model`` without the hidden nodes and edges whose importance is below ``threshold``.

    Returns a new :class:`~kanjax.KAN` (the original is untouched) with smaller hidden
    widths; every remaining edge keeps its parameters, weak ones are masked. A hidden layer
    keeps at least its most important node.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) \
            or not 0 <= threshold < float("inf"):
        raise ValueError(f"prune: threshold must be a finite number >= 0, got {threshold!r}; "
                         "pass e.g. threshold=1e-2")
    x = _check_samples("prune", model, x)
    scores = edge_importance(model, x)
    keep = [np.arange(model.widths[0])]
    for nodes in node_importance(model, x):
        kept = np.nonzero(nodes > threshold)[0]
        keep.append(kept if kept.size else np.array([int(np.argmax(nodes))]))
    keep.append(np.arange(model.widths[-1]))

    pruned = nnx.clone(model)
    for i, layer in enumerate(pruned.layers):
        groups = node_columns(layer)
        rows = keep[i]
        cols = np.concatenate([groups[node] for node in keep[i + 1]]).astype(int)
        layer.mult_nodes = int(sum(len(groups[node]) > 1 for node in keep[i + 1]))
        sub = functools.partial(_submatrix, rows=rows, cols=cols)
        layer.w_base = nnx.Param(sub(layer.w_base[...]))
        layer.w_spline = nnx.Param(sub(layer.w_spline[...]))
        layer.coef = nnx.Param(sub(layer.coef[...]))
        if layer.bias is not None:
            layer.bias = nnx.Param(layer.bias[...][cols])
        strong = jnp.asarray(scores[i][rows][:, cols] > threshold, layer.param_dtype)
        layer.mask = EdgeMask(sub(layer.mask[...]) * strong)
        if layer.grid is not None:
            layer.grid = SplineGrid(layer.grid[...][rows])
        if layer.sym_names:  # symbolic edges keep their formulas
            layer.sym_mask = SymbolicMask(sub(layer.sym_mask[...]))
            layer.sym_index = SymbolicIndex(sub(layer.sym_index[...]))
            layer.sym_affine = nnx.Param(sub(layer.sym_affine[...]))
        layer.in_features, layer.out_features = int(rows.size), int(cols.size)
    pruned.widths = tuple(int(k.size) for k in keep)
    return pruned
