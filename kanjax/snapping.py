"""Exact constants for symbolic edges: a float64 refit on the host, then snapping.

After ``auto_symbolic`` the affine constants ``(a, b, c, d)`` of the symbolic edges are
only as precise as the network they were read from. :func:`refine_constants`

1. fits them to the data by Levenberg-Marquardt in float64 on the host (numpy; central
   finite-difference Jacobian), the rest of the network held fixed, and
2. snaps constants to simple values - integers, rationals ``p/q`` (``q <= 6``),
   multiples ``p*pi/q`` (``q <= 6``) - one at a time, closest first, refitting the other
   constants after each snap and keeping the snap only when the RMSE stays within
   ``1 + loss_tol`` times the refined one. The values ``0`` and ``+-1`` are tried for
   every constant, so constants the network leaves free (a scale passed between two
   layers) settle on them.

The refined constants are written back into the model; ``symbolic_formula`` writes
values that equal a simple one at the parameters' precision exactly (``pi``, ``1``).
"""

from __future__ import annotations

import time

import numpy as np

from kanjax import hostnet
from kanjax.checks import check_int, check_number
from kanjax.nn import KAN

__all__ = ["refine_constants"]


def _slots(layers):
    """``[(layer, (i, j))]`` of every symbolic edge, and their affines stacked ``(E*4,)``."""
    keys = [(li, key) for li, arr in enumerate(layers) for key in sorted(arr.edges)]
    theta = np.concatenate([layers[li].edges[key][1] for li, key in keys] or [np.zeros(0)])
    return keys, theta


def _with(layers, keys, theta):
    out = [arr._replace(edges=dict(arr.edges)) for arr in layers]
    for e, (li, key) in enumerate(keys):
        out[li].edges[key] = (out[li].edges[key][0], theta[4 * e:4 * e + 4])
    return out


def _residual(layers, keys, x, y):
    def r(theta):
        with np.errstate(all="ignore"):
            res = (hostnet.forward(_with(layers, keys, theta), x) - y).ravel()
        return np.where(np.isfinite(res), res, 1e100)
    return r


def _sum_squares(res) -> float:
    with np.errstate(over="ignore"):  # a diverging trial scores inf and is rejected
        return float(res @ res)


def _lm(r, theta, free, iters: int, target: float = 0.0):
    """Levenberg-Marquardt on ``theta[free]``, until the sum of squares stops falling or is
    at most ``target``; returns ``(theta, sum of squares)``."""
    theta = theta.copy()
    res = r(theta)
    sse, lam = _sum_squares(res), 1e-3
    idx = np.flatnonzero(free)
    for _ in range(iters):
        if idx.size == 0 or sse <= target:
            break
        jac = np.empty((res.size, idx.size))
        for n, k in enumerate(idx):
            h = 1e-6 * max(1.0, abs(theta[k]))
            tp, tm = theta.copy(), theta.copy()
            tp[k] += h
            tm[k] -= h
            jac[:, n] = (r(tp) - r(tm)) / (2 * h)
        moving = np.any(jac != 0, axis=0)
        if not moving.all():  # constants with no effect here (an edge that is 0 or scaled by 0)
            idx, jac = idx[moving], jac[:, moving]
            if idx.size == 0:
                break
        g, hess = jac.T @ res, jac.T @ jac
        improved = False
        while lam < 1e12:
            step = np.linalg.solve(hess + lam * (np.diag(np.diag(hess)) + 1e-12 * np.eye(idx.size)), g)
            cand = theta.copy()
            cand[idx] -= step
            rc = r(cand)
            sc = _sum_squares(rc)
            if sc < sse:
                theta, res, improved = cand, rc, sse - sc > 1e-15 * sse
                sse, lam = sc, max(lam * 0.3, 1e-12)
                break
            lam *= 10.0
        if not improved:
            break
    return theta, sse


def _closeness(v: float, rel: float) -> float:
    near = hostnet.simple_candidates(v, rel)
    return min([abs(c - v) / max(1.0, abs(v)) for c, _ in near] or [np.inf])


def _try(r, theta, fixed, k, values, limit, iters):
    """Fix ``theta[k]`` to the first of ``values`` whose refit stays within ``limit``."""
    for val in values:
        trial = theta.copy()
        trial[k] = val
        fixed_k = fixed.copy()
        fixed_k[k] = True
        trial, sse = _lm(r, trial, ~fixed_k, iters, target=limit)
        if sse <= limit:
            return trial, fixed_k
    return theta, fixed


def _snap(r, theta, sse_ref, n, loss_tol, rel, iters, floor, deadline):
    """Two passes: every constant tries 0, 1, -1 (a constant the rest of the network can
    absorb, such as a scale passed between layers, settles there); then the remaining
    ones, always the one now closest to a simple value next, try the simple values near
    them. Each snap refits the unsnapped constants (until within the limit) and is kept
    when the RMSE stays within ``1 + loss_tol`` of the refined one, or of ``floor`` (the
    data's own rounding). Returns the constants and which of them were snapped."""
    fixed = np.zeros(theta.size, bool)
    limit = ((np.sqrt(sse_ref / n) * (1.0 + loss_tol)) ** 2 + floor**2) * n
    for k in range(theta.size):
        if time.perf_counter() > deadline:
            return theta, fixed
        theta, fixed = _try(r, theta, fixed, k, (0.0, 1.0, -1.0), limit, iters)
    visited = fixed.copy()
    while not visited.all() and time.perf_counter() <= deadline:
        k = min(np.flatnonzero(~visited), key=lambda m: _closeness(theta[m], rel))
        visited[k] = True
        near = sorted(hostnet.simple_candidates(theta[k], rel), key=lambda c: abs(c[0] - theta[k]))
        theta, fixed = _try(r, theta, fixed, k, [c for c, _ in near], limit, iters)
    return theta, fixed


def refine_constants(model: KAN, x, y, *, snap: bool = True, loss_tol: float = 0.1,
                     snap_rel: float = 0.05, iters: int = 50,
                     time_budget: float = 10.0) -> dict:
    """Refit the symbolic edges' ``(a, b, c, d)`` in float64 and snap them to simple values.

    Args:
      model: a KAN whose unpruned edges are symbolic or Taylor (Taylor edges stay fixed).
      x, y: data, ``(N, n_in)`` and ``(N, n_out)``.
      snap: snap constants to integers, small rationals and multiples of pi.
      loss_tol: a snap is kept when the RMSE (the other constants refitted) stays within
        ``1 + loss_tol`` times the RMSE of the refined constants, or within the rounding
        noise of ``y``'s dtype (``eps * rms(y)``; float32 targets are only that exact).
      snap_rel: candidate simple values lie within ``snap_rel * max(1, |v|)`` of a
        constant ``v`` (``0`` and ``+-1`` are always tried).
      iters: Levenberg-Marquardt iterations of each refit (they stop early once the
        loss stops falling).
      time_budget: seconds for snapping (checked before each constant); constants not
        reached keep their refined values. Each refit costs about
        ``iters * 2 * (4 * symbolic edges)`` network evaluations on ``x``.

    Returns:
      ``{(layer, i, j): (name, (a, b, c, d))}`` as written into the model, and the
      model's RMSE before and after under the key ``"rmse"``.
    """
    if not isinstance(model, KAN):
        raise TypeError(f"expected a kanjax.KAN, got {type(model).__name__}")
    if not loss_tol >= 0 or not snap_rel >= 0:
        raise ValueError(f"loss_tol and snap_rel must be >= 0, got {loss_tol}, {snap_rel}")
    iters = check_int("iters", iters, 1)
    check_number("time_budget", time_budget)
    xs = np.asarray(x, np.float64).reshape(-1, model.in_features)
    ys = np.asarray(y, np.float64)
    if ys.size != xs.shape[0] * model.out_features:
        raise ValueError(f"y has shape {ys.shape}: {xs.shape[0]} samples of x need "
                         f"({xs.shape[0]}, {model.out_features}) targets")
    ys = ys.reshape(xs.shape[0], model.out_features)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("x and y must be finite")
    layers = hostnet.layer_arrays(model)
    hostnet.require_closed_form(layers, "refining constants")
    keys, theta0 = _slots(layers)
    r = _residual(layers, keys, xs, ys)
    res0 = r(theta0)
    theta, sse = _lm(r, theta0, np.ones(theta0.size, bool), int(iters))
    deadline = time.perf_counter() + float(time_budget)
    if snap:
        y_dtype = np.asarray(y).dtype
        eps = float(np.finfo(y_dtype if np.issubdtype(y_dtype, np.floating) else np.float64).eps)
        floor = eps * float(np.sqrt(np.mean(ys**2)))  # y's own rounding noise
        theta, fixed = _snap(r, theta, sse, ys.size, float(loss_tol), float(snap_rel),
                             int(iters), floor, deadline)
        # the snaps' refits stop once within the limit: converge the constants left free
        theta, _ = _lm(r, theta, ~fixed, int(iters))
    final = r(theta)
    out = {}
    for e, (li, (i, j)) in enumerate(keys):
        name = layers[li].edges[(i, j)][0]
        affine = tuple(float(v) for v in theta[4 * e:4 * e + 4])
        model.layers[li].set_symbolic(i, j, name, affine)
        out[(li, i, j)] = (name, affine)
    out["rmse"] = (float(np.sqrt(np.mean(res0**2))), float(np.sqrt(np.mean(final**2))))
    return out
