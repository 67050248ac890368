"""Symbolic regression of KAN edges and closed-form formulas of whole networks.

Every edge of a KAN is a 1-D function. This module fits each edge's sampled curve with
``c * f(a * x + b) + d`` for every ``f`` of a library (:mod:`kanjax.functions`), all
edges and candidates at once in one compiled program:

1. a coarse grid search over ``(a, b)``, where for every ``(a, b)`` the best ``(c, d)``
   and the coefficient of determination ``R^2`` are closed-form (linear least squares);
2. a few zooms of that grid around the best point;
3. a damped Gauss-Newton polish of ``(a, b, c, d)`` jointly.

Candidates are ranked by ``quality - weight * complexity`` with
``quality = -log10(1 - R^2)`` (decimal digits of fit). A fit that only uses ``f`` over a
tiny part of its domain (``|a| * range(x) < 0.3``) is just ``f``'s Taylor expansion in
disguise, so it counts as two units more complex.

* :func:`suggest_symbolic` - ranked candidates for one edge;
* :func:`fix_symbolic` - pin one edge to a formula (its ``(a, b, c, d)`` stay trainable);
* :func:`auto_symbolic` - fit every numeric edge, pin those above an ``R^2`` threshold;
* :func:`symbolic_formula`, :func:`layered_formula` (from :mod:`kanjax.formula`) - the
  network's formula. Taylor edges are exact polynomials (of ``tanh(x)`` unless
  ``squash=None``) with their ``silu`` term, so a Taylor KAN has an exact formula without
  any fitting.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kanjax import functions as functions_lib
from kanjax.checks import check_int
from kanjax.compiling import compile_program
from kanjax.formula import LayeredFormula, layered_formula, symbolic_formula
from kanjax.nn import KAN, KANLayer
from kanjax.pruning import layer_views
from kanjax.snapping import refine_constants

__all__ = [
    "Suggestion",
    "fit_edges",
    "suggest_symbolic",
    "fix_symbolic",
    "auto_symbolic",
    "symbolic_formula",
    "layered_formula",
    "LayeredFormula",
    "refine_constants",
]

_NUM_SAMPLES = 128
_PROGRAMS: dict = {}  # compiled fitting programs by (shape, library, settings)
_TINY_USE = 0.3  # |a| * range(x) below this: the function is only used near one point


class Suggestion(NamedTuple):
    """One candidate formula ``c * f(a * x + b) + d`` for an edge."""

    name: str
    r2: float
    affine: tuple[float, float, float, float]
    complexity: int
    score: float
    guard_free: bool = True  # the function's guard (1/x near 0, log of x <= 0) is unused on the data


# ------------------------------------------------------------------ fitting (pure JAX)

def _linear_fit(z, y):
    """Best ``(c, d)`` of ``c z + d ~ y`` and its ``R^2``, reducing the last axis."""
    zm, ym = z.mean(-1, keepdims=True), y.mean(-1, keepdims=True)
    zc, yc = z - zm, y - ym
    szz, szy, syy = (zc * zc).sum(-1), (zc * yc).sum(-1), (yc * yc).sum(-1)
    ok = jnp.isfinite(szz) & (szz > 1e-12 * (1.0 + syy))
    c = jnp.where(ok, szy / jnp.where(ok, szz, 1.0), 0.0)
    d = ym[..., 0] - c * zm[..., 0]
    sse = jnp.maximum(syy - c * szy, 0.0)
    flat = syy <= 1e-12 * (1.0 + (ym[..., 0] ** 2) * y.shape[-1])
    r2 = jnp.where(flat, 1.0, 1.0 - sse / jnp.where(flat, 1.0, syy))
    r2 = jnp.where(jnp.isfinite(r2) & (ok | flat), r2, -1.0)
    return c, d, r2


def _grid_search(fn, x, y, a_grid, b_grid):
    """Per edge, the ``(a, b)`` of the grid with the highest ``R^2``.

    ``x, y``: ``(E, S)``; ``a_grid, b_grid``: ``(E, A)`` and ``(E, B)``.
    """
    u = a_grid[:, :, None, None] * x[:, None, None, :] + b_grid[:, None, :, None]
    _, _, r2 = _linear_fit(fn(u), y[:, None, None, :])  # (E, A, B)
    flat = r2.reshape(r2.shape[0], -1)
    best = jnp.argmax(flat, axis=-1)
    ia, ib = best // b_grid.shape[1], best % b_grid.shape[1]
    take = lambda g, i: jnp.take_along_axis(g, i[:, None], axis=1)[:, 0]  # noqa: E731
    return take(a_grid, ia), take(b_grid, ib)


def _polish(fn, x, y, a, b, iters: int):
    """Levenberg-Marquardt on ``(a, b)`` with ``(c, d)`` solved exactly at every point.

    Each iteration evaluates ``f`` and ``f'`` once (one forward-mode pass) at the candidate
    ``(a, b)``, takes the best ``(c, d)`` there in closed form, and accepts the candidate if
    it lowers the error. The step comes from the Gauss-Newton system of the last accepted
    point with the analytic Jacobian ``[c f'(u) x, c f'(u), f(u), 1]`` (``u = a x + b``).
    """
    e = a.shape[0]
    dtype = x.dtype
    eye = jnp.eye(4, dtype=dtype)[None]

    def step(carry, _):
        cand, good, err_good, g, h, lam = carry
        u = cand[:, 0:1] * x + cand[:, 1:2]
        f, df = jax.jvp(fn, (u,), (jnp.ones_like(u),))
        c, d, _ = _linear_fit(f, y)
        r = c[:, None] * f + d[:, None] - y
        err = jnp.where(jnp.isfinite(r).all(-1), jnp.sum(r * r, -1), jnp.inf)
        jac = jnp.stack([c[:, None] * df * x, c[:, None] * df, f, jnp.ones_like(f)], -1)
        ok = err < err_good
        good = jnp.where(ok[:, None], jnp.stack([cand[:, 0], cand[:, 1], c, d], -1), good)
        err_good = jnp.where(ok, err, err_good)
        g = jnp.where(ok[:, None], jnp.einsum("esk,es->ek", jac, r), g)
        h = jnp.where(ok[:, None, None], jnp.einsum("esk,esl->ekl", jac, jac), h)
        lam = jnp.clip(jnp.where(ok, lam * 0.3, lam * 10.0), 1e-9, 1e9)
        diag = jnp.diagonal(h, axis1=-2, axis2=-1)
        damped = h + (lam[:, None, None] * diag[:, :, None] + 1e-9) * eye
        delta = jnp.linalg.solve(damped, g[..., None])[..., 0]
        new = good[:, :2] - delta[:, :2]
        new = jnp.where(jnp.isfinite(new), new, good[:, :2])
        return (new, good, err_good, g, h, lam), None

    init = (jnp.stack([a, b], -1), jnp.zeros((e, 4), dtype), jnp.full((e,), jnp.inf, dtype),
            jnp.zeros((e, 4), dtype), jnp.zeros((e, 4, 4), dtype), jnp.full((e,), 1e-3, dtype))
    (_, theta, err, _, _, _), _ = jax.lax.scan(step, init, None, length=iters + 1)
    yc = y - y.mean(-1, keepdims=True)
    syy = (yc * yc).sum(-1)
    flat = syy <= 1e-12 * (1.0 + (y.mean(-1) ** 2) * y.shape[-1])
    r2 = jnp.where(flat, jnp.where(err <= 1e-12 * (1.0 + syy), 1.0, 0.0),
                   1.0 - err / jnp.where(flat, 1.0, syy))
    return theta, jnp.where(jnp.isfinite(r2), r2, -1.0)


def _fit_all(x, y, a_range, b_range, *, fns, grid, zooms, iters):
    """``x, y: (E, S)`` -> ``theta (F, E, 4)``, ``r2 (F, E)`` for every function of ``fns``."""
    e = x.shape[0]
    lin = jnp.linspace(0.0, 1.0, grid, dtype=x.dtype)
    a0 = jnp.broadcast_to(a_range[0] + (a_range[1] - a_range[0]) * lin, (e, grid))
    b0 = jnp.broadcast_to(b_range[0] + (b_range[1] - b_range[0]) * lin, (e, grid))
    zoom_lin = jnp.linspace(-1.0, 1.0, 11, dtype=x.dtype)

    def one_function(k):
        # one traced body for every library function: only the elementwise f is switched,
        # so compile time does not grow with the library size
        fn = lambda u: jax.lax.switch(k, fns, u)  # noqa: E731
        # the grid searches use every other sample (the polish uses all of them)
        xh, yh = x[:, ::2], y[:, ::2]
        a, b = _grid_search(fn, xh, yh, a0, b0)
        da = (a_range[1] - a_range[0]) / (grid - 1)
        db = (b_range[1] - b_range[0]) / (grid - 1)

        def zoom(i, ab):
            scale = 0.2 ** i
            return _grid_search(fn, xh, yh, ab[0][:, None] + (da * scale * zoom_lin)[None],
                                ab[1][:, None] + (db * scale * zoom_lin)[None])

        a, b = jax.lax.fori_loop(0, zooms, zoom, (a, b))
        return _polish(fn, x, y, a, b, iters)

    return jax.lax.map(one_function, jnp.arange(len(fns)))


def fit_edges(x, y, names: Sequence[str] | None = None, *, a_range=(-10.0, 10.0),
              b_range=(-10.0, 10.0), grid: int = 31, zooms: int = 3, iters: int = 30):
    """Fit ``c * f(a * x + b) + d`` to sampled curves for every library function ``f``.

    Args:
      x, y: samples of ``E`` curves, shape ``(E, S)`` (or ``(S,)`` for one).
      names: library functions to try (default: the whole library).
      a_range, b_range: the coarse search box for ``a`` and ``b``.
      grid: coarse grid points per axis; zooms: grid refinements; iters: polish steps.

    Returns:
      ``(names, theta, r2)``: ``theta`` of shape ``(F, E, 4)`` holds ``(a, b, c, d)`` and
      ``r2`` of shape ``(F, E)`` the coefficient of determination of each fit.
    """
    names = _library(names)
    if not names:
        raise ValueError("need at least one library function to fit")
    fns = tuple(functions_lib.get_function(n).fn for n in names)
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    if x.ndim == 1:
        x, y = x[None], y[None]
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] < 4:
        raise ValueError(f"x and y must both have shape (edges, samples >= 4), got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if not (bool(jnp.isfinite(x).all()) and bool(jnp.isfinite(y).all())):
        raise ValueError("edge samples contain non-finite values (nan or inf)")
    # pad the number of edges to a power of two so repeated calls reuse the compiled program
    e = x.shape[0]
    pad = (1 << max(e - 1, 0).bit_length()) - e
    if pad:
        x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, x.shape[1]))])
        y = jnp.concatenate([y, jnp.broadcast_to(y[:1], (pad, y.shape[1]))])
    args = (x, y, jnp.asarray(a_range, x.dtype), jnp.asarray(b_range, x.dtype))
    key = (x.shape, fns, int(grid), int(zooms), int(iters))
    if key not in _PROGRAMS:
        static = dict(fns=fns, grid=int(grid), zooms=int(zooms), iters=int(iters))
        _PROGRAMS[key] = compile_program(jax.jit(functools.partial(_fit_all, **static)), *args)
    theta, r2 = _PROGRAMS[key](*args)
    return names, np.asarray(theta[:, :e]), np.asarray(r2[:, :e])


_ODD = {"x", "x^3", "x^5", "sin", "tan", "tanh", "arctan", "1/x"}
_EVEN = {"x^2", "x^4", "cos", "abs", "gaussian"}


def _canonical(name: str, a: float, b: float, c: float, d: float):
    """Remove the affine redundancy some functions have, so formulas read simply:
    ``c (a x + b)^k = c a^k (x + b/a)^k``, ``c exp(a x + b) = c e^b exp(a x)``, ``x`` and ``0``
    without inner constants."""
    if a < 0 and name in _ODD:  # f(-u) = -f(u)
        a, b, c = -a, -b, -c
    elif a < 0 and name in _EVEN:  # f(-u) = f(u)
        a, b = -a, -b
    if name in ("sin", "cos"):  # positive amplitude, phase in [-pi, pi]
        if c < 0:
            c, b = -c, b + math.pi
        b = math.remainder(b, 2 * math.pi)
    if name == "0":
        return 1.0, 0.0, 0.0, d
    if name == "x":
        return 1.0, 0.0, c * a, d + c * b
    if name.startswith("x^") and name[2:].isdigit() and a != 0.0:
        return 1.0, b / a, c * a ** int(name[2:]), d
    if name == "exp" and abs(b) < 80:
        return a, 0.0, c * math.exp(b), d
    return a, b, c, d


def _quadratic_error(x, y) -> float:
    """``1 - R^2`` of the least-squares quadratic in ``x`` through the samples ``y``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xc = (x - x.mean()) / max(float(np.ptp(x)), 1e-300)
    basis = np.stack([np.ones_like(xc), xc, xc * xc], -1)
    resid = basis @ np.linalg.lstsq(basis, y, rcond=None)[0] - y
    syy = float(np.sum((y - y.mean()) ** 2))
    return float(np.sum(resid**2)) / syy if syy > 0 else 0.0


_NOISE_FACTOR = 2.0  # fits whose errors differ by less than this factor are equivalent


def _rank(names, theta, r2, x_range, weight, x=None, y=None):
    """Suggestions for one edge, best first. ``theta (F, 4)``, ``r2 (F,)``; ``x, y``: the
    edge's sorted sample points (their span is ``x_range``) and values.

    A non-polynomial function counts as two units more complex when it is used only near
    one point (``|a| * x_range < 0.3``) or when a quadratic in ``x`` fits ``y`` within
    ``_NOISE_FACTOR`` times its own error ``1 - R^2``: when fits are equivalent within
    noise, the polynomial reading wins (``x^2``, not ``-23.4 cos(0.29 x) + 23.4``).
    Fits whose function's guard is active on ``x`` (``1/x`` near 0, ``log`` of negatives)
    are flagged
    ``guard_free=False`` and listed after the others. Ties (equal score and complexity,
    e.g. ``sin`` and ``cos`` with a phase) go to the fit with the smaller phase ``|b|``.
    """
    out = []
    quad = None if y is None else _quadratic_error(x, y)
    for k, name in enumerate(names):
        entry = functions_lib.get_function(name)
        a, b = float(theta[k, 0]), float(theta[k, 1])
        complexity = entry.complexity
        poly = name in ("0", "x") or name.startswith("x^")
        if not poly and abs(a) * x_range < _TINY_USE:
            complexity += 2
        elif not poly and quad is not None and quad <= _NOISE_FACTOR * max(1.0 - r2[k], 1e-7):
            complexity += 2
        free = True if x is None else bool(functions_lib.guard_free(name, a * np.asarray(x) + b).all())
        quality = -math.log10(max(1.0 - float(r2[k]), 1e-7))
        affine = _canonical(name, *(float(v) for v in theta[k]))
        out.append(Suggestion(name, float(r2[k]), affine, entry.complexity,
                              quality - weight * complexity, free))
    return sorted(out, key=lambda s: (not s.guard_free, -round(s.score, 6), s.complexity,
                                      abs(s.affine[1])))


# ------------------------------------------------------------------ model-level API

def _library(names) -> tuple[str, ...]:
    """The library functions to try, checked (``None``: all of them)."""
    if isinstance(names, str):
        raise TypeError(f"library must be a sequence of function names, e.g. [{names!r}], got "
                        f"the string {names!r}")
    names = tuple(functions_lib.LIBRARY if names is None else names)
    for name in names:
        functions_lib.get_function(name)
    return names


def _check_model(model) -> None:
    if not isinstance(model, KAN):
        raise TypeError(f"expected a kanjax.KAN, got {type(model).__name__}")


def _check_data(model: KAN, x) -> jax.Array:
    """``x`` as ``(samples, n_in)`` float32, with the problems named before any tracing."""
    arr = np.asarray(x)
    if arr.ndim < 1 or arr.shape[-1] != model.in_features:
        raise ValueError(f"x must have {model.in_features} features on the last axis, "
                         f"got shape {tuple(arr.shape)}")
    arr = arr.reshape(-1, model.in_features)
    if arr.shape[0] < 2:
        raise ValueError("need at least 2 samples of x to sample the edges")
    if not np.isfinite(arr).all():
        raise ValueError("x contains non-finite values (nan or inf)")
    return jnp.asarray(arr, model.layers[0].param_dtype)


def _all_edge_samples(model: KAN, x, num_samples: int = _NUM_SAMPLES):
    """Per layer, sorted sample points of every input and the edge values there, in one
    compiled program: ``xs (S, n_in)`` (quantiles of the layer's inputs on ``x``) and
    ``ys (S, n_in, n_out)``."""
    h = _check_data(model, x)
    q = jnp.linspace(0.0, 1.0, num_samples)
    return [(np.asarray(xs), np.asarray(ys)) for _, xs, ys in layer_views(model, h, q, "linear")]


def _edge_samples(model: KAN, x, layer: int, num_samples: int = _NUM_SAMPLES):
    return _all_edge_samples(model, x, num_samples)[layer]


def _check_layer_index(model: KAN, layer: int) -> KANLayer:
    check_int("layer", layer, 0)
    if not layer < len(model.layers):
        raise IndexError(f"layer {layer} out of range: the model has {len(model.layers)} layers")
    return model.layers[int(layer)]


def suggest_symbolic(model: KAN, x, layer: int, i: int, j: int, *, library=None,
                     top_k: int = 5, weight: float = 0.5, **fit_kwargs) -> list[Suggestion]:
    """Ranked closed-form candidates for edge ``(i, j)`` (input ``i``, output ``j``) of ``layer``.

    The edge is sampled at quantiles of the activations that ``x`` (model inputs,
    ``(..., n_in)``) produces at that layer, so the fit covers the range the data uses.
    """
    _check_model(model)
    top_k = check_int("top_k", top_k, 1)
    library = _library(library)
    lyr = _check_layer_index(model, layer)
    lyr.check_edge(i, j)
    xs, ys = _edge_samples(model, x, layer)
    names, theta, r2 = fit_edges(xs[:, i], ys[:, i, j], library, **fit_kwargs)
    x_range = float(xs[-1, i] - xs[0, i])
    return _rank(names, theta[:, 0], r2[:, 0], x_range, weight, xs[:, i], ys[:, i, j])[:top_k]


def fix_symbolic(model: KAN, layer: int, i: int, j: int, name: str, x=None, *, affine=None,
                 **fit_kwargs) -> Suggestion | None:
    """Pin edge ``(i, j)`` of ``layer`` to ``c * f(a * x + b) + d`` with ``f = name``.

    With ``affine=(a, b, c, d)`` the edge is set as given; otherwise ``(a, b, c, d)`` are
    fitted to the edge's current curve on the data ``x`` and the fit is returned. The
    affine parameters stay trainable, so ``kanjax.train`` keeps improving them.
    """
    _check_model(model)
    lyr = _check_layer_index(model, layer)
    lyr.check_edge(i, j)
    functions_lib.get_function(name)
    if affine is not None:
        lyr.set_symbolic(i, j, name, affine)
        return None
    if x is None:
        raise ValueError("fix_symbolic needs data x to fit (a, b, c, d), or an explicit affine=")
    xs, ys = _edge_samples(model, x, layer)
    names, theta, r2 = fit_edges(xs[:, i], ys[:, i, j], (name,), **fit_kwargs)
    best = _rank(names, theta[:, 0], r2[:, 0], float(xs[-1, i] - xs[0, i]), 0.0, xs[:, i])[0]
    if not best.guard_free:
        warnings.warn(f"layer {layer} edge ({i},{j}): the data reach where {name}'s guard is "
                      "active (e.g. 1/x near 0, log of x <= 0): the model and its formula "
                      "differ there", stacklevel=2)
    lyr.set_symbolic(i, j, name, best.affine)
    return best


def auto_symbolic(model: KAN, x, *, library=None, r2_threshold: float = 0.99,
                  weight: float = 0.5, verbose: bool = False, **fit_kwargs) -> dict:
    """Fit every numeric, unpruned edge and pin those whose best candidate reaches
    ``r2_threshold``; all edges of a layer are fitted in one compiled call.

    A candidate whose guard is active on ``x`` (``1/x`` or ``tan`` near a pole, ``log``
    or ``sqrt`` of values <= 0, where the model's guarded function and the formula's
    exact one differ) is never chosen; a warning names the edge when it scored best.

    Returns ``{(layer, i, j): Suggestion}`` for the edges that were pinned; edges below
    the threshold keep their numeric function (their best candidates are listed when
    ``verbose``).
    """
    _check_model(model)
    library = _library(library)
    if not 0.0 <= r2_threshold <= 1.0:
        raise ValueError(f"r2_threshold must be in [0, 1], got {r2_threshold}")
    # sample every layer first (from the numeric network), then fit all edges in one call
    jobs, xs_all, ys_all = [], [], []
    samples = _all_edge_samples(model, x)
    for li, lyr in enumerate(model.layers):
        todo = np.argwhere((np.asarray(lyr.mask[...]) > 0) & ~lyr.is_symbolic())
        if todo.size == 0:
            continue
        xs, ys = samples[li]
        xs_all.append(xs[:, todo[:, 0]].T)
        ys_all.append(ys[:, todo[:, 0], todo[:, 1]].T)
        jobs += [(li, int(i), int(j), xs[:, i], ys[:, i, j]) for i, j in todo]
    fixed = {}
    if not jobs:
        return fixed
    names, theta, r2 = fit_edges(np.concatenate(xs_all), np.concatenate(ys_all), library,
                                 **fit_kwargs)
    for e, (li, i, j, xe, ye) in enumerate(jobs):
        ranked = _rank(names, theta[:, e], r2[:, e], float(xe[-1] - xe[0]), weight, xe, ye)
        best = ranked[0]
        top = max(ranked, key=lambda s: s.score)
        if not top.guard_free and top.score > best.score and top.r2 >= r2_threshold:
            warnings.warn(f"layer {li} edge ({i},{j}): {top.name} fits best but its guard "
                          f"is active on the data; not chosen", stacklevel=2)
        if best.guard_free and best.r2 >= r2_threshold:
            fixed[(li, i, j)] = best
        if verbose:
            mark = "fixed" if (best.guard_free and best.r2 >= r2_threshold) else "kept numeric"
            print(f"layer {li} edge ({i},{j}): {best.name} R^2={best.r2:.6f} ({mark})")
    for li, lyr in enumerate(model.layers):  # one assignment per layer
        mine = [(i, j, s.name, s.affine) for (l2, i, j), s in fixed.items() if l2 == li]
        if mine:
            lyr.set_symbolic_edges(*zip(*mine))
    return fixed
