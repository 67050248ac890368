"""The epoch program of ``train``: a pure function of (graph, objective, optax transform).

:func:`build_epoch` returns ``run_epoch(p, s, r, epoch, key, arrays)``, meant for
``jax.jit``: it shuffles the samples with a JAX PRNG key, ``jax.lax.scan``s the optimizer
step over the minibatches, optionally regrids a B-spline KAN first, evaluates the
validation loss, and keeps the last finite state if the epoch diverged. Every optimizer
is called through the same ``tx.update`` (:mod:`kanjax.optimizers`); the epoch knows
none of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from kanjax.regrid import inputs_of_layers, regrid_layers

__all__ = ["EpochSpec", "batch_indices", "build_epoch", "flattener", "layer_groups", "shuffle"]


@dataclasses.dataclass(frozen=True)
class EpochSpec:
    """The static facts an epoch program is built for."""

    n: int  # samples
    batch_size: int
    steps: int  # minibatches per epoch
    full_batch: bool  # one step on all samples, no shuffle or gather
    every_batch_full: bool  # no padded last minibatch: the plain batch mean
    has_val: bool
    grid_update_every: int = 0
    grid_update_until: int = 0
    grid_eps: float = 0.02
    grid_margin: float = 0.0


def layer_name(path) -> str:
    """``layers.0`` for a leaf under a list of layers, else its parent module's path."""
    keys = [getattr(e, "key", getattr(e, "name", getattr(e, "idx", None))) for e in path]
    keys = [k for k in keys if k != "value"]
    for i, key in enumerate(keys):
        if isinstance(key, int):
            return ".".join(str(k) for k in keys[: i + 1])
    return ".".join(str(k) for k in keys[:-1]) or "params"


def layer_groups(params) -> tuple[list[str], list[int]]:
    """Layer names (first-seen order) and, for every parameter leaf, its layer's index."""
    leaf_names = [layer_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    names = list(dict.fromkeys(leaf_names))
    return names, [names.index(name) for name in leaf_names]


def flattener(tree):
    """``(ravel, unravel)`` between ``tree``'s structure and one flat vector."""
    leaves, treedef = jax.tree.flatten(tree)
    shapes = [leaf.shape for leaf in leaves]
    dtypes = [leaf.dtype for leaf in leaves]
    bounds = np.cumsum([0] + [math.prod(shape) for shape in shapes]).tolist()
    dtype = jnp.result_type(*dtypes)

    def ravel(t):
        return jnp.concatenate([jnp.ravel(leaf).astype(dtype) for leaf in jax.tree.leaves(t)])

    def unravel(v):
        parts = [v[a:b].reshape(shape).astype(d)
                 for a, b, shape, d in zip(bounds[:-1], bounds[1:], shapes, dtypes)]
        return jax.tree.unflatten(treedef, parts)

    return ravel, unravel


def shuffle(key: jax.Array, n: int) -> jax.Array:
    """A random permutation of ``0 .. n-1`` (int32) from ``key``, without sorting.

    A 4-round Feistel network on ``2b``-bit integers (``4**b >= n``), with round keys from
    ``key``, is a bijection; "cycle walking" (re-encrypting values ``>= n``) restricts it
    to ``0 .. n-1``. Elementwise integer maths only (``jax.random.permutation`` sorts).
    The order it gives is a fine shuffle for minibatches, not a cryptographic one.
    """
    n = int(n)
    if n <= 1:
        return jnp.zeros((n,), jnp.int32)
    half = max(1, -(-(n - 1).bit_length() // 2))
    mask = jnp.uint32((1 << half) - 1)
    round_keys = jax.random.bits(key, (4,), jnp.uint32)

    def mix(right, round_key):  # a multiply-xorshift hash of the right half
        h = (right ^ round_key) * jnp.uint32(0x9E3779B1)
        h = (h ^ (h >> 15)) * jnp.uint32(0x85EBCA77)
        return (h ^ (h >> 13)) & mask

    def encrypt(v):
        left, right = v >> half, v & mask
        for i in range(4):
            left, right = right, left ^ mix(right, round_keys[i])
        return (left << half) | right

    out = encrypt(jnp.arange(n, dtype=jnp.uint32))
    out = jax.lax.while_loop(lambda v: jnp.any(v >= n),
                             lambda v: jnp.where(v >= n, encrypt(v), v), out)
    return out.astype(jnp.int32)


def batch_indices(spec: EpochSpec, key, epoch, dtype):
    """``(idx, mask)`` of shape ``(steps, batch_size)``: the epoch's shuffled minibatches,
    the last one filled from the start of the order and masked (weight 0) there."""
    n, steps, batch_size = spec.n, spec.steps, spec.batch_size
    if spec.full_batch:  # one step on all samples: their order does not matter
        return jnp.zeros((1, 0), jnp.int32), jnp.ones((1, n), dtype)
    perm = shuffle(jax.random.fold_in(key, epoch), n)
    pad = steps * batch_size - n
    idx = jnp.concatenate([perm, perm[:pad]]).reshape(steps, batch_size)
    mask = (jnp.arange(steps * batch_size) < n).astype(dtype).reshape(steps, batch_size)
    return idx, mask


def _make_regrid(graphdef, ravel, unravel, spec: EpochSpec):
    def regrid(p, r, x):
        """Every layer's grid from the activations of all training inputs; coef refitted."""
        m = nnx.merge(graphdef, unravel(p), r)
        refits = regrid_layers(m.layers, inputs_of_layers(m, x),
                               [layer.grid_size for layer in m.layers], float(spec.grid_eps),
                               float(spec.grid_margin), 1e-6)
        for layer, (grid, coef) in zip(m.layers, refits):
            layer.grid[...], layer.coef[...] = grid, coef
        _, new_params, new_rest = nnx.split(m, nnx.Param, ...)
        return ravel(new_params), new_rest

    return regrid


def _grad_norms(tree_grads, group_of_leaf, n_groups):
    sq = [jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree_grads)]
    return jnp.stack([jnp.sqrt(sum(v for v, gi in zip(sq, group_of_leaf) if gi == g))
                      for g in range(n_groups)])


def _weight_dtype(data):
    """The dtype of the per-sample weights: the first data array's, if floating."""
    dtype = jax.tree.leaves(data)[0].dtype
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32


def _make_step(graphdef, objective, tx, spec, ravel, unravel, groups, placement,
               reports_gradient):
    """One optimizer step on one minibatch: ``((p, s), (idx, w)) -> ((p, s), stats)``.

    With ``reports_gradient`` the loss gradient for the statistics is ``tx``'s state's
    ``grad`` after the update (see :class:`kanjax.optimizers.Optimizer`), and the loss
    is not differentiated here."""
    group_of_leaf, n_groups = groups

    def step(r, data, carry, batch):
        p, s = carry
        idx, wb = placement.split_batch(batch)
        xb = data if spec.full_batch else jax.tree.map(lambda a: a[idx], data)
        weights = None if spec.every_batch_full else wb

        def loss(tree):
            return objective.loss(nnx.merge(graphdef, tree, r), xb, weights)

        def value_fn(q):
            return loss(unravel(q))[0]

        total = jnp.sum(wb)

        def residual_fn(q, sample, w):
            return objective.residuals(nnx.merge(graphdef, unravel(q), r), sample, w, total)

        args = dict(value_fn=value_fn, residual_fn=residual_fn, samples=(xb, wb))
        if reports_gradient:  # the update's own algebra has the gradient: read it back
            value, metrics = loss(unravel(p))
            updates, s = tx.update(jnp.zeros_like(p), s, p, value=value, **args)
            tree_grads = unravel(optax.tree_utils.tree_get(s, "grad"))
        else:
            (value, metrics), tree_grads = jax.value_and_grad(loss, has_aux=True)(unravel(p))
            grads = ravel(tree_grads)
            updates, s = tx.update(grads, s, p, value=value, grad=grads, **args)
        p = optax.apply_updates(p, updates)
        # each step counts as its real samples (the padded ones have weight 0)
        metrics = {k: v * total for k, v in metrics.items()}
        return (p, s), (value * total, _grad_norms(tree_grads, group_of_leaf, n_groups), metrics)

    return step


def build_epoch(graphdef, objective, tx, spec: EpochSpec, *, params_like, flat: bool,
                lr_fn: Callable | None, placement, reports_gradient: bool = False) -> Callable:
    """The epoch program ``run_epoch(p, s, r, epoch, key, arrays)``.

    ``p``: the parameters (one flat vector if ``flat``, else the ``nnx.Param`` state);
    ``s``: ``tx``'s state; ``r``: the other variables; ``arrays = (data, validation)``.
    Returns ``(p, s, stats, params, r)``, ``params`` as an ``nnx.Param`` state and
    ``stats = (finite, train_loss, val_loss, lr, grad_norms, converged, metrics)``.
    """
    ravel, unravel = flattener(params_like) if flat else (lambda t: t, lambda t: t)
    names, group_of_leaf = layer_groups(params_like)
    step = _make_step(graphdef, objective, tx, spec, ravel, unravel,
                      (group_of_leaf, len(names)), placement, reports_gradient)
    regrid = _make_regrid(graphdef, ravel, unravel, spec)

    def run_epoch(p, s, r, epoch, key, arrays):
        # The data are arguments, not constants baked into the program: no copy of the data
        # set inside the executable and nothing for XLA to constant-fold.
        data, val_data = arrays
        if spec.grid_update_every:
            due = (epoch % spec.grid_update_every == 0) & (epoch < spec.grid_update_until)
            p, r = jax.lax.cond(due, regrid, lambda p, r, x: (p, r), p, r, data[0])
        idx, mask = batch_indices(spec, key, epoch, _weight_dtype(data))
        body = lambda carry, batch: step(r, data, carry, batch)
        if spec.full_batch:  # one step: no loop for XLA to compile
            (p_new, s_new), (sums, norms, metrics) = body((p, s), (idx[0], mask[0]))
            sums, norms, metrics = jax.tree.map(lambda v: v[None], (sums, norms, metrics))
        else:
            (p_new, s_new), (sums, norms, metrics) = jax.lax.scan(body, (p, s), (idx, mask))
        train_loss = jnp.sum(sums) / spec.n
        finite = jnp.isfinite(train_loss) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(p_new)]))
        keep = lambda new, old: jnp.where(finite, new, old)
        p_out, s_out = jax.tree.map(keep, p_new, p), jax.tree.map(keep, s_new, s)
        val = (objective.validation(nnx.merge(graphdef, unravel(p_out), r), val_data)
               if spec.has_val else jnp.nan)
        lr = lr_fn((epoch + 1) * spec.steps - 1) if lr_fn is not None else jnp.nan
        done = optax.tree_utils.tree_get(s_out, "converged", jnp.asarray(False))
        metrics = {k: jnp.sum(v) / spec.n for k, v in metrics.items()}
        stats = (finite, train_loss, val, lr, jnp.mean(norms, axis=0), done, metrics)
        # The parameter pytree comes back too, so that no separate unravel program has to
        # be compiled to hand the result to the model.
        return p_out, s_out, stats, unravel(p_out), r

    return run_epoch
