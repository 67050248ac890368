"""A KAN's parameters as float64 numpy arrays, and the network evaluated on the host.

Formulas (:mod:`kanjax.formula`) and constant refinement (:mod:`kanjax.snapping`) work on
the host in float64, independent of the model's device and dtype: this module copies the
parameters out once (:func:`layer_arrays`) and evaluates the network from those copies
(:func:`forward`), optionally with some Taylor terms dropped and constants rounded, and
with symbolic edges written as their exact (unguarded) functions. It also knows the
"simple" constants that formulas write exactly (:func:`simple_value`).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from kanjax import functions as functions_lib
from kanjax import layer as layer_lib
from kanjax.nn import KAN, KANLayer

__all__ = [
    "LayerArrays",
    "forward",
    "layer_arrays",
    "layer_forward",
    "numeric_edges",
    "require_closed_form",
    "simple_candidates",
    "simple_value",
]


class LayerArrays(NamedTuple):
    """One layer's parameters in float64.

    ``mask``/``sym``: ``(n_in, n_out)`` unpruned / symbolic edges; ``w_base``,
    ``w_spline``: ``(n_in, n_out)``; ``coef``: ``(n_in, n_out, K)``; ``bias``: ``(n_out,)``
    (zeros without a bias); ``edges``: ``{(i, j): (name, affine (4,))}`` for the unpruned
    symbolic edges; ``eps``: the parameter dtype's machine epsilon; ``mult``/``arity``:
    the layer's multiplication nodes (see :func:`kanjax.layer.combine_nodes`).
    """

    basis: str
    squash: bool
    mask: np.ndarray
    sym: np.ndarray
    w_base: np.ndarray
    w_spline: np.ndarray
    coef: np.ndarray
    bias: np.ndarray
    edges: dict
    eps: float
    mult: int = 0
    arity: int = 2


def _one_layer(lyr: KANLayer) -> LayerArrays:
    mask = np.asarray(lyr.mask[...]) > 0
    sym = lyr.is_symbolic() & mask
    edges = {}
    for i, j in np.argwhere(sym):
        name, affine = lyr.symbolic_edge(int(i), int(j))
        edges[(int(i), int(j))] = (name, np.asarray(affine, np.float64))
    bias = (np.zeros(lyr.out_features) if lyr.bias is None
            else np.asarray(lyr.bias[...], np.float64))
    return LayerArrays(lyr.basis, lyr.basis == "taylor" and lyr.squash == "tanh", mask, sym,
                       np.asarray(lyr.w_base[...], np.float64),
                       np.asarray(lyr.w_spline[...], np.float64),
                       np.asarray(lyr.coef[...], np.float64), bias,
                       edges, float(np.finfo(lyr.param_dtype).eps), lyr.mult_nodes,
                       lyr.mult_arity)


def layer_arrays(model: KAN) -> list[LayerArrays]:
    """Every layer's parameters, copied to float64 numpy arrays."""
    return [_one_layer(lyr) for lyr in model.layers]


def numeric_edges(arrays: LayerArrays) -> np.ndarray:
    """``(n_in, n_out)``: the unpruned edges that are not symbolic."""
    return arrays.mask & ~arrays.sym


def require_closed_form(layers: list[LayerArrays], what: str) -> None:
    """Raise for a numeric B-spline edge (it has no closed form), naming the first one."""
    for li, arr in enumerate(layers):
        if arr.basis == "taylor":
            continue
        bad = np.argwhere(numeric_edges(arr))
        if bad.size:
            i, j = (int(v) for v in bad[0])
            raise ValueError(
                f"edge ({i}, {j}) is a numeric B-spline (layer {li}); pin it with "
                f"fix_symbolic or auto_symbolic before {what}")


def _round(v, digits):
    return v if digits is None else np.round(v, digits)


def _silu(h):
    return h / (1.0 + np.exp(-h))


def layer_forward(arr: LayerArrays, h: np.ndarray, keep=None, digits=None) -> np.ndarray:
    """One layer's edge sums ``(N, n_out)`` on ``h (N, n_in)`` in float64 (before any
    multiplication nodes: :func:`forward` combines them).

    ``keep``: optional ``(silu (n_in, n_out), powers (n_in, n_out, K))`` booleans: Taylor
    terms to keep (the constant ``k = 0`` terms are always kept). ``digits``: round the
    constants as the formula writes them (products ``w_s c_k``, per-output constants).
    """
    out = np.zeros((h.shape[0], arr.mask.shape[1]))
    const = arr.bias.copy()
    if arr.basis == "taylor":
        num = numeric_edges(arr)
        t = np.tanh(h) if arr.squash else h
        powers = t[:, :, None] ** np.arange(arr.coef.shape[-1])
        c = arr.w_spline[..., None] * arr.coef * num[..., None]
        wb = arr.w_base * num
        if keep is not None:
            wb, c = wb * keep[0], np.concatenate([c[..., :1], c[..., 1:] * keep[1][..., 1:]], -1)
        const = const + c[..., 0].sum(0)
        out += np.einsum("nik,ijk->nj", powers[..., 1:], _round(c[..., 1:], digits))
        out += _silu(h) @ _round(wb, digits)
    for (i, j), (name, (a, b, cc, d)) in arr.edges.items():
        a, b, cc, d = (_round(v, digits) for v in (a, b, cc, d))
        out[:, j] += cc * functions_lib.numpy_fn(name)(a * h[:, i] + b) + d
    return out + _round(const, digits)


def forward(layers: list[LayerArrays], x, keeps=None, digits=None, hidden: bool = False):
    """The network on ``x (N, n_in)`` in float64; ``keeps``: one ``keep`` per layer (or
    ``None``). With ``hidden``, returns every layer's input and the output as a list."""
    h = np.asarray(x, np.float64).reshape(-1, layers[0].mask.shape[0])
    seen = [h]
    for li, arr in enumerate(layers):
        h = layer_lib.combine_nodes(layer_forward(arr, h, None if keeps is None else keeps[li],
                                                  digits), arr.mult, arr.arity)
        seen.append(h)
    return seen if hidden else h


# ------------------------------------------------------------------ simple constants

_MAX_DEN = 6  # rationals p/q with q <= this count as simple
_MAX_PI_DEN = 6  # and multiples p*pi/q with q <= this


def simple_candidates(v: float, rel: float) -> list[tuple[float, object]]:
    """Simple values within ``rel * max(1, |v|)`` of ``v``, simplest first, as
    ``(value, sympy number)``: integers, then rationals ``p/q`` (``q <= 6``) by
    denominator, then multiples ``p*pi/q`` (``q <= 6``) by denominator, then ``p/(q*pi)``
    with ``|p| <= 3`` and ``q <= 6`` (``1/(2*pi)``, ``1/(4*pi)``: frequent in physics; a
    small numerator keeps such values sparse) by denominator."""
    import sympy

    v = float(v)
    width = rel * max(1.0, abs(v))
    out, seen = [], set()
    for q in range(1, _MAX_DEN + 1):
        p = round(v * q)
        val = p / q
        if abs(val - v) <= width and Fraction(p, q) not in seen:
            seen.add(Fraction(p, q))
            out.append((val, sympy.Rational(p, q)))
    for q in range(1, _MAX_PI_DEN + 1):
        p = round(v * q / math.pi)
        val = p * math.pi / q
        if p != 0 and abs(val - v) <= width and ("pi", Fraction(p, q)) not in seen:
            seen.add(("pi", Fraction(p, q)))  # e.g. 2*pi/2 is listed once, as pi
            out.append((val, sympy.Rational(p, q) * sympy.pi))
    for q in range(1, _MAX_PI_DEN + 1):
        p = round(v * q * math.pi)
        val = p / (q * math.pi)
        if 0 < abs(p) <= 3 and abs(val - v) <= width and ("1/pi", Fraction(p, q)) not in seen:
            seen.add(("1/pi", Fraction(p, q)))
            out.append((val, sympy.Rational(p, q) / sympy.pi))
    return out


def simple_value(v: float, eps: float):
    """The sympy form of ``v`` when it is a simple value to within 4 ``eps`` (relative),
    i.e. when ``v`` is that value stored in a dtype with machine epsilon ``eps``; else
    ``None``."""
    cands = simple_candidates(v, 4.0 * eps)
    for val, exact in cands:
        if abs(val - v) <= 4.0 * eps * max(abs(val), 1e-30) or (val == 0.0 and v == 0.0):
            return exact
    return None
