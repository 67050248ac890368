"""Closed-form formulas of whole KANs, built in bounded time and presented at bounded size.

A KAN's formula is written layer by layer (:func:`layered_formula`): every hidden node
gets a name (``h1_0``, ``h1_1``, ... for layer 1) and a definition in terms of the nodes
before it, so the formula's size is linear in the number of edges:

* a symbolic edge is ``c * f(a * u + b) + d`` (one library function call);
* a Taylor edge is ``w_b * silu(u) + sum_k (w_s c_k) t^k`` with ``t = tanh(u)`` (or ``u``
  with ``squash=None``): one collected polynomial, at most ``degree + 1`` terms, its
  constant merged into one constant per node.

So a definition has at most ``in_features * (degree + 2)`` terms plus one constant.
:func:`symbolic_formula` substitutes the definitions into each other (one expression per
output, in the inputs). Composed Taylor layers repeat every node once per power, so that
inline form grows geometrically with depth; it is exact and evaluates fine, but reading a
three-layer Taylor KAN is easier in the layered form.

Simplification is bounded: the polynomial parts are already collected; ``sympy.simplify``
runs only on definitions and outputs of at most ``_SMALL_OPS`` operations built from
closed-form edges, and only while the time budget lasts. Nothing here catches
``BaseException``: interrupts propagate.

With data ``x`` and a tolerance ``tol``, Taylor terms whose largest contribution on ``x``
is negligible are dropped: the largest cut-off whose formula (after rounding) stays
within ``tol`` of the model on ``x`` (maximum absolute difference over samples and outputs).
"""

from __future__ import annotations

import keyword
import re
import time
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from kanjax import functions as functions_lib
from kanjax import hostnet
from kanjax import layer as layer_lib
from kanjax.checks import check_int, check_number
from kanjax.nn import KAN

__all__ = ["LayeredFormula", "layered_formula", "symbolic_formula"]

_SMALL_OPS = 40  # sympy.simplify runs only on expressions with at most this many operations
_EVALUATE_OPS = 5_000  # larger inline forms are built unevaluated (sympy.evaluate(False))
_LARGE_INLINE = 20_000  # symbolic_formula warns above this many operations (inline form)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class LayeredFormula(NamedTuple):
    """A KAN's formula as named intermediate nodes.

    Attributes:
      symbols: the input symbols.
      nodes: ``[(symbol, definition), ...]`` of the hidden nodes in evaluation order; a
        definition uses the inputs and earlier nodes.
      outputs: one expression per output, over the inputs and the nodes.
      max_error: the largest ``|formula - network|`` on the data ``x`` the formula was
        built with, the network evaluated in float64 from the model's parameters
        (``None`` without data).
      dropped: how many Taylor terms were dropped as negligible (see ``tol``).
    """

    symbols: tuple
    nodes: list
    outputs: list
    max_error: float | None
    dropped: int

    def inline(self) -> list:
        """One expression per output in the inputs only (the nodes substituted)."""
        values = {}
        for s, e in self.nodes:
            values[s] = e.xreplace(values)
        return [e.xreplace(values) for e in self.outputs]

    def lambdify(self):
        """A numpy function of ``x (N, n_in)`` returning ``(N, n_out)`` in float64."""
        import sympy

        steps = [(s, sympy.lambdify(self.symbols + tuple(t for t, _ in self.nodes[:k]), e,
                                    "numpy"))
                 for k, (s, e) in enumerate(self.nodes)]
        names = self.symbols + tuple(s for s, _ in self.nodes)
        outs = [sympy.lambdify(names, e, "numpy") for e in self.outputs]

        def f(x):
            x = np.asarray(x, np.float64)
            args = [x[:, k] for k in range(x.shape[1])]
            for _, g in steps:
                args.append(np.broadcast_to(g(*args), (x.shape[0],)))
            return np.stack([np.broadcast_to(g(*args), (x.shape[0],)) for g in outs], -1)

        return f

    def size(self) -> int:
        """Operations (``sympy.count_ops``) of all definitions and outputs together."""
        import sympy

        return int(sum(sympy.count_ops(e) for _, e in self.nodes)
                   + sum(sympy.count_ops(e) for e in self.outputs))

    def inline_size(self) -> int:
        """Operations of the inline form, counted without building it."""
        import sympy

        weight = {}
        for s, e in self.nodes:
            weight[s] = _weighted_ops(e, weight, sympy)
        return int(sum(_weighted_ops(e, weight, sympy) for e in self.outputs))

    def __str__(self) -> str:
        lines = [f"{s} = {e}" for s, e in self.nodes]
        lines += [f"out_{k} = {e}" for k, e in enumerate(self.outputs)]
        return "\n".join(lines)


def _weighted_ops(expr, weight, sympy) -> int:
    """``count_ops`` of ``expr`` with each node symbol counting as its own inline size."""
    total = int(sympy.count_ops(expr))
    for s, w in weight.items():
        n = expr.count(s)
        if n:
            total += n * w
    return total


# ------------------------------------------------------------------ arguments

def check_var_names(n: int, var_names) -> list[str]:
    """``n`` distinct names usable as sympy symbols and Python identifiers."""
    if var_names is None:
        return [f"x_{k + 1}" for k in range(n)]
    if isinstance(var_names, str):
        raise TypeError(f"var_names must be a sequence of {n} names, got the string "
                        f"{var_names!r} (write e.g. ['x', 'y'])")
    names = list(var_names)
    if len(names) != n:
        raise ValueError(f"var_names: the model has {n} inputs, got {len(names)} names {names}")
    for v in names:
        if not isinstance(v, str) or not _NAME.match(v) or keyword.iskeyword(v):
            raise ValueError(f"var_names: {v!r} is not a valid symbol name (use letters, "
                             "digits and underscores, not starting with a digit, e.g. 'x_1')")
    if len(set(names)) != n:
        raise ValueError(f"var_names must be distinct, got {names}")
    return names


def _node_prefix(names: list[str]) -> str:
    """A node-name prefix (``h``, ``g``, ...) that no input name starts with."""
    for p in ("h", "g", "z", "node"):
        if not any(re.fullmatch(rf"{p}\d+_\d+", v) for v in names):
            return p
    raise ValueError(f"var_names {names} clash with every node name prefix")


# ------------------------------------------------------------------ building

def _number(v: float, eps: float, exact: bool):
    import sympy

    if exact:
        s = hostnet.simple_value(v, eps)
        if s is not None:
            return s
    return sympy.Float(float(v))


def _node_expr(arr, q, inputs, keep, exact):
    """sympy expression of output ``q`` of a layer over the sympy ``inputs``."""
    import sympy

    num = hostnet.numeric_edges(arr)
    const = float(arr.bias[q])
    terms = []
    n = lambda v: _number(v, arr.eps, exact)
    for p in range(arr.mask.shape[0]):
        u = inputs[p]
        if (p, q) in arr.edges:
            name, (a, b, c, d) = arr.edges[(p, q)]
            f = functions_lib.get_function(name).sympy_fn
            terms.append(n(c) * f(n(a) * u + n(b)) + n(d))
        elif num[p, q]:
            t = sympy.tanh(u) if arr.squash else u
            coefs = arr.w_spline[p, q] * arr.coef[p, q]
            const += float(coefs[0])
            if keep is None or keep[0][p, q]:
                terms.append(n(arr.w_base[p, q]) * u / (1 + sympy.exp(-u)))
            terms += [n(coefs[k]) * t**k for k in range(1, coefs.shape[0])
                      if coefs[k] != 0.0 and (keep is None or keep[1][p, q, k])]
    return sympy.Add(*terms, n(const))


def _multiplied(exprs: list, mult: int, arity: int) -> list:
    """Sum-node expressions, then one product per multiplication node."""
    import sympy

    return [sympy.Mul(*(exprs[c] for c in cols))
            for cols in layer_lib.node_columns(len(exprs), mult, arity)]


def _round(expr, digits):
    import sympy

    if digits is None:
        return expr
    reps = {}
    for v in expr.atoms(sympy.Float):
        r = round(float(v), digits)
        reps[v] = sympy.Integer(int(r)) if r == int(r) else sympy.Float(r, 15)
    return expr.xreplace(reps)


def _maybe_simplify(expr, digits, deadline):
    """``sympy.simplify`` on a small expression while time is left, then rounding."""
    import sympy

    small = sympy.count_ops(expr) <= _SMALL_OPS
    if small and time.perf_counter() < deadline:
        expr = sympy.simplify(expr)
    expr = _round(expr, digits)
    if small and digits is not None and time.perf_counter() < deadline:
        expr = _round(sympy.simplify(expr), digits)  # simplify merges rounded constants
    return expr


# ------------------------------------------------------------------ negligible terms

def _term_bounds(layers, seen):
    """Per layer, the largest ``|term|`` of every silu and power term on the data."""
    out = []
    for arr, h in zip(layers, seen):
        if arr.basis != "taylor":
            out.append(None)
            continue
        t = np.tanh(h) if arr.squash else h
        rmax = np.abs(t).max(0)[:, None, None] ** np.arange(arr.coef.shape[-1])
        powers = np.abs(arr.w_spline[..., None] * arr.coef) * rmax
        silu = np.abs(arr.w_base) * np.abs(h / (1 + np.exp(-h))).max(0)[:, None]
        out.append((silu, powers))
    return out


def _keeps(bounds, cut):
    return [None if b is None else (b[0] >= cut, b[1] >= cut) for b in bounds]


def _choose_keeps(layers, x, reference, tol, digits):
    """The largest cut-off on term size whose truncated network stays within ``tol``."""
    bounds = _term_bounds(layers, hostnet.forward(layers, x, hidden=True))
    values = np.unique(np.concatenate(
        [np.concatenate([b[0].ravel(), b[1][..., 1:].ravel()]) for b in bounds if b is not None]
        or [np.zeros(0)]))
    values = values[values > 0]
    err = lambda keeps: np.abs(hostnet.forward(layers, x, keeps, digits) - reference).max()
    lo, hi = -1, len(values)  # cut at values[lo] passes (lo = -1: keep all); values[hi] fails
    while hi - lo > 1:  # the error grows (about monotonically) with the cut-off
        mid = (lo + hi) // 2
        if err(_keeps(bounds, values[mid])) <= tol:
            lo = mid
        else:
            hi = mid
    if lo < 0:
        full = err(None)
        if full > tol:
            warnings.warn(f"rounding to digits={digits} alone moves the formula {full:.3g} "
                          f"from the network on x, more than tol={tol}: ask for more digits",
                          stacklevel=3)
        return None, 0
    keeps = _keeps(bounds, values[lo])
    dropped = sum(int((~k[0]).sum() + (~k[1][..., 1:]).sum())
                  for k, b in zip(keeps, bounds) if b is not None)
    return keeps, dropped


# ------------------------------------------------------------------ public API

def _check_model(model) -> None:
    if not isinstance(model, KAN):
        raise TypeError(f"expected a kanjax.KAN, got {type(model).__name__}")


def _check_x(model: KAN, x, tol):
    if tol is not None and (not np.isfinite(tol) or tol < 0):
        raise ValueError(f"tol must be a finite number >= 0 (or None), got {tol}")
    if x is None:
        if tol is not None:
            raise ValueError("tol needs data x: the terms dropped are those negligible on x")
        return None
    arr = np.asarray(x, np.float64)
    if arr.ndim < 1 or arr.shape[-1] != model.in_features:
        raise ValueError(f"x must have {model.in_features} features on the last axis, "
                         f"got shape {tuple(arr.shape)}")
    arr = arr.reshape(-1, model.in_features)
    if arr.shape[0] < 1 or not np.isfinite(arr).all():
        raise ValueError("x must hold at least one sample and only finite values")
    return arr


def layered_formula(model: KAN, var_names: Sequence[str] | None = None, *, x=None,
                    tol: float | None = None, digits: int | None = 4, simplify: bool = True,
                    time_budget: float = 3.0, exact_constants: bool = True) -> LayeredFormula:
    """The formula of ``model`` as named hidden nodes (size linear in the edges).

    Every unpruned edge must be symbolic (see ``auto_symbolic``), except in Taylor layers,
    whose edges are written exactly.

    Args:
      var_names: input names (default ``x_1 .. x_n``): distinct identifiers.
      x: data ``(N, n_in)``; with it, ``max_error`` reports ``|formula - network|`` there
        (the network in float64, so only dropped terms and rounding count).
      tol: drop the Taylor terms negligible on ``x``: the largest terms are kept such that
        the formula stays within ``tol`` (absolute, max over ``x`` and the outputs) of the
        model. ``None``: keep every term.
      digits: round every constant to this many decimals (``None``: keep them all).
      simplify: ``sympy.simplify`` the small closed-form definitions, within the budget.
      time_budget: seconds for the simplifications (checked before each one).
      exact_constants: write constants that equal an integer, a small rational or a
        multiple of pi at the parameters' precision exactly (``pi``, not ``3.141593``).
    """
    import sympy

    deadline = time.perf_counter() + check_number("time_budget", time_budget, positive=True)
    if digits is not None:
        check_int("digits", digits, 0)
    _check_model(model)
    names = check_var_names(model.in_features, var_names)
    xs = _check_x(model, x, tol)
    layers = hostnet.layer_arrays(model)
    hostnet.require_closed_form(layers, "asking for a formula")
    reference = None if xs is None else hostnet.forward(layers, xs)
    keeps, dropped = (None, 0)
    if tol is not None:
        keeps, dropped = _choose_keeps(layers, xs, reference, tol, digits)
    symbols = tuple(sympy.Symbol(v, real=True) for v in names)
    prefix = _node_prefix(names)
    h, nodes = list(symbols), []
    for li, arr in enumerate(layers):
        keep = None if keeps is None else keeps[li]
        exprs = [_node_expr(arr, q, h, keep, exact_constants) for q in range(arr.mask.shape[1])]
        exprs = _multiplied(exprs, arr.mult, arr.arity)
        if simplify and not hostnet.numeric_edges(arr).any():  # closed-form edges only
            exprs = [_maybe_simplify(e, digits, deadline) for e in exprs]
        else:
            exprs = [_round(e, digits) for e in exprs]
        if li == len(layers) - 1:
            out = LayeredFormula(symbols, nodes, exprs, None, dropped)
            break
        h = [sympy.Symbol(f"{prefix}{li + 1}_{q}", real=True) for q in range(len(exprs))]
        nodes += list(zip(h, exprs))
    if xs is not None:
        err = float(np.abs(out.lambdify()(xs) - reference).max())
        out = out._replace(max_error=err)
    return out


def symbolic_formula(model: KAN, var_names: Sequence[str] | None = None, *,
                     digits: int | None = 4, simplify: bool = True, time_budget: float = 3.0,
                     x=None, tol: float | None = None, exact_constants: bool = True):
    """One sympy expression per output of ``model``, in its inputs.

    Built from :func:`layered_formula` (same arguments) by substituting the hidden nodes;
    outputs of at most ``_SMALL_OPS`` (40) operations are simplified while ``time_budget``
    lasts. An inline form of more than ``_EVALUATE_OPS`` (5,000) operations is built
    without sympy's canonical reordering (``sympy.evaluate(False)``), and one of more than
    ``_LARGE_INLINE`` (20,000) operations comes with a warning: printing or lambdifying it
    takes time in proportion to its size (a three-layer degree-9 Taylor KAN ``[2, 4, 4, 1]``
    has about 160,000), while :func:`layered_formula` writes it in about 1,200.

    Returns:
      ``(expressions, symbols)``: a list of ``n_out`` sympy expressions and the input symbols.
    """
    import sympy

    deadline = time.perf_counter() + float(time_budget)
    lf = layered_formula(model, var_names, x=x, tol=tol, digits=digits, simplify=simplify,
                         time_budget=time_budget, exact_constants=exact_constants)
    size = lf.inline_size()
    if size <= _EVALUATE_OPS:
        exprs = lf.inline()
    else:  # sympy's canonical ordering of huge sums costs seconds and adds nothing
        with sympy.evaluate(False):
            exprs = lf.inline()
    if simplify and lf.nodes and size <= _SMALL_OPS * len(exprs):
        exprs = [_maybe_simplify(e, digits, deadline) for e in exprs]
    if size > _LARGE_INLINE:
        warnings.warn(f"the formula has about {size} operations written inline; "
                      f"kanjax.layered_formula gives it as {len(lf.nodes)} named nodes "
                      f"({lf.size()} operations)", stacklevel=2)
    return exprs, lf.symbols
