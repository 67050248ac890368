"""Grid updates and grid extension of B-spline layers: new knots from samples, coefficients
refitted so that every edge keeps its function.

The refit runs with NumPy in float64 on the host when it is small (no compiled program for a
new shape), else as a compiled JAX program. ``inputs_of_layers`` gives the samples each layer
of a network sees.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kanjax import basis as basis_lib
from kanjax import grids as grids_lib
from kanjax._xla import fast_compile_jit


def inputs_of_layers(model, x):
    """The inputs each layer of ``model`` receives from ``x``: a list, ``x`` first."""
    inputs = [x]
    for layer in model.layers[:-1]:
        inputs.append(layer(inputs[-1]))
    return inputs


@functools.partial(jax.jit, static_argnums=0)
def _layer_inputs_of_state(graphdef, state, x):
    return inputs_of_layers(nnx.merge(graphdef, state), x)


def layer_inputs_compiled(model, x):
    """``inputs_of_layers`` as one compiled forward pass, for the host side.

    A pure function of the split state: unlike ``nnx.jit`` it writes nothing back into
    ``model``, so a background thread may call it on a model that shares variables with
    one being trained.
    """
    return _layer_inputs_of_state(*nnx.split(model), x)


@functools.partial(fast_compile_jit, static_argnums=(0, 3, 4, 5, 6))
def refine_all(graphdef, state, x, grid_size, grid_eps, margin, ridge):
    """``[(grid, coef)]`` of every layer of a B-spline KAN refined on the inputs from ``x``."""
    model = nnx.merge(graphdef, state)
    return regrid_layers(model.layers, inputs_of_layers(model, x), [grid_size] * len(model.layers),
                          grid_eps, margin, ridge)


def regrid_layers(layers, inputs, grid_sizes, grid_eps, margin, ridge):
    """:func:`regrid_compiled` of several B-spline layers (``[(grid, coef)]``), traced once per kind.

    Layers with the same order, knot count, uniform flag and new grid size are regridded
    as one: their inputs are stacked as columns (grids and fits are per input column
    anyway) and their outputs zero-padded to the widest. A [2, 5, 1] KAN then compiles one
    refit instead of one per layer.
    """
    host = all(isinstance(h, np.ndarray) for h in inputs)  # NumPy in: refit on the host
    regrid = regrid_arrays if host else regrid_compiled
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


def check_samples(x) -> None:
    if x.shape[0] == 0:
        raise ValueError("need at least one sample to place a grid")
    if not bool(jnp.isfinite(x).all()):
        raise ValueError("grid samples contain non-finite values (nan or inf)")


def is_uniform(grid) -> bool:
    steps = np.diff(np.asarray(grid, np.float64), axis=-1)
    return bool(np.all(steps > 0) and np.allclose(steps, steps[:, :1], rtol=1e-5, atol=0.0))


def regrid_arrays(x, old_grid, old_coef, grid_size, order, grid_eps, margin, ridge, old_uniform):
    """New knots from ``x`` and coefficients refitted to the old splines.

    The fit uses the samples ``x`` together with a dense uniform sample of the new grid's
    span (4 points per basis function and input). The old spline is known everywhere, so
    every new coefficient is pinned down by it: fitting at the data alone left the
    coefficients of sparsely sampled intervals to the ridge, and a refined [2, 5, 1] model
    lost an order of magnitude of test accuracy to wiggles between samples (G 20 -> 50).

    Runs with NumPy on the host when given NumPy arrays (:data:`HOST_REFIT_MAX_FLOPS`),
    else with ``jax.numpy`` (:func:`regrid_compiled`, compiled).
    """
    xp = basis_lib.array_namespace(x, old_grid, old_coef)
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


regrid_compiled = functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8))(regrid_arrays)

# A refit this small (estimated flops) runs with NumPy in float64 on the host: compiling it
# would cost ~0.5-1 s of XLA:CPU time per new shape (every refine of a grid extension),
# while the host does it in milliseconds. Larger refits are compiled and run on the device.
HOST_REFIT_MAX_FLOPS = 2e8


def refit_flops(layers, n_samples, grid_size) -> float:
    total = 0.0
    for layer in layers:
        k_new, k_old = grid_size + layer.order, layer.num_basis
        n = n_samples + 4 * k_new + 1
        total += n * layer.in_features * (k_new * k_new + (k_new + k_old) * layer.out_features)
    return 2.0 * total
