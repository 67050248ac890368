"""The library of closed-form functions that symbolic edges are fitted to and evaluated with.

A symbolic edge computes ``c * f(a * x + b) + d`` for a named ``f`` from this library.
Each entry pairs a JAX function (used in training and fitting; functions with a
singularity are evaluated in a guarded form so that neither values nor gradients become
``nan``) with a sympy builder (used by :func:`kanjax.symbolic.symbolic_formula`, exact
form) and a complexity (used to rank equally good fits: simpler wins).

Users add functions with :func:`register_function`; a name must be registered before a
model that uses it is built, trained or loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_NAMES",
    "LIBRARY",
    "SymbolicFunction",
    "get_function",
    "guard_free",
    "numpy_fn",
    "register_function",
]

_TINY = 1e-4  # guard distance from a singularity (relative to the data, inputs are O(1))


class SymbolicFunction(NamedTuple):
    """One library entry.

    Attributes:
      name: the key, e.g. ``"sin"``.
      fn: JAX function of an array, elementwise, finite (and with finite gradients)
        everywhere.
      sympy_fn: builds the exact sympy expression from a sympy expression.
      complexity: a small positive integer; simpler functions win ties.
      exact: ``None`` when ``fn`` equals the exact function everywhere; otherwise a numpy
        predicate of sorted points ``u`` (a monotone sample of an edge's argument) that
        says where the guarded ``fn`` equals the exact formula (``False`` near a
        singularity or outside the domain, and on both sides of a pole ``u`` jumps over).
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    sympy_fn: Callable[[Any], Any]
    complexity: int
    exact: Callable[[np.ndarray], np.ndarray] | None = None


def _safe_reciprocal(u):
    s = jnp.where(u >= 0, 1.0, -1.0).astype(u.dtype)
    return 1.0 / (s * jnp.maximum(jnp.abs(u), _TINY))


def _safe_sqrt(u):
    return jnp.sqrt(jnp.maximum(u, _TINY**2))


def _safe_log(u):
    return jnp.log(jnp.maximum(u, _TINY))


def _safe_tan(u):
    # tan with its poles clipped: |cos u| is kept >= _TINY
    c = jnp.cos(u)
    s = jnp.where(c >= 0, 1.0, -1.0).astype(u.dtype)
    return jnp.sin(u) / (s * jnp.maximum(jnp.abs(c), _TINY))


def _no_pole_between(u, pole):
    """``True`` where ``|pole(u)|`` keeps away from 0 and no sign change of ``pole(u)``
    happens between neighbouring points (a pole jumped over)."""
    p = pole(np.asarray(u, np.float64))
    ok = np.abs(p) >= _TINY
    flip = np.sign(p[1:]) != np.sign(p[:-1])
    ok[1:] &= ~flip
    ok[:-1] &= ~flip
    return ok


def _reciprocal_exact(u):
    return _no_pole_between(u, lambda v: v)


def _tan_exact(u):
    return _no_pole_between(u, np.cos)


def _sqrt_exact(u):
    return np.asarray(u, np.float64) >= _TINY**2


def _log_exact(u):
    return np.asarray(u, np.float64) >= _TINY


def _sympy():
    import sympy

    return sympy


def _power(k: int) -> SymbolicFunction:
    return SymbolicFunction(f"x^{k}", lambda u: u**k, lambda e: e**k, k)


LIBRARY: dict[str, SymbolicFunction] = {}


def register_function(name: str, fn: Callable, sympy_fn: Callable, complexity: int = 2, *,
                      overwrite: bool = False, exact: Callable | None = None) -> SymbolicFunction:
    """Add ``name`` to the library.

    Args:
      name: key used by ``fix_symbolic``, ``suggest_symbolic`` and checkpoints.
      fn: elementwise JAX function; it must stay finite (guard singularities yourself).
      sympy_fn: maps a sympy expression ``e`` to the exact sympy form, e.g.
        ``lambda e: sympy.sinh(e)``.
      complexity: positive integer used to rank equally good fits.
      overwrite: allow replacing an existing entry.
      exact: for a guarded ``fn``, a predicate of sorted numpy points saying where ``fn``
        equals ``sympy_fn`` (see :class:`SymbolicFunction`); ``auto_symbolic`` does not
        choose the function for an edge whose data reach outside it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a function name must be a non-empty string, got {name!r}")
    if name in LIBRARY and not overwrite:
        raise ValueError(f"{name!r} is already in the library (pass overwrite=True to replace it)")
    if not callable(fn) or not callable(sympy_fn):
        raise TypeError("fn and sympy_fn must be callables")
    if exact is not None and not callable(exact):
        raise TypeError(f"exact must be None or a callable, got {type(exact).__name__}")
    if int(complexity) < 0:
        raise ValueError(f"complexity must be >= 0, got {complexity}")
    entry = SymbolicFunction(name, fn, sympy_fn, int(complexity), exact)
    LIBRARY[name] = entry
    numpy_fn.cache_clear()
    return entry


def get_function(name: str) -> SymbolicFunction:
    """The library entry called ``name`` (a clear error when it is not registered)."""
    try:
        return LIBRARY[name]
    except KeyError:
        raise KeyError(
            f"unknown symbolic function {name!r}; registered: {sorted(LIBRARY)} "
            "(add one with kanjax.functions.register_function)"
        ) from None


@functools.cache
def numpy_fn(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The exact (unguarded) function ``name`` as an elementwise numpy function, made from
    its sympy form; it evaluates in the input's precision (float64 for host fits)."""
    sympy = _sympy()
    u = sympy.Symbol("u", real=True)
    expr = sympy.sympify(get_function(name).sympy_fn(u))
    f = sympy.lambdify(u, expr, "numpy")
    return lambda v: np.broadcast_to(f(v), np.shape(v)).astype(np.result_type(v, np.float32))


def guard_free(name: str, u) -> np.ndarray:
    """Where the library's (guarded) ``name`` equals its exact formula at the sorted points
    ``u``: all ``True`` for a function without a guard."""
    entry = get_function(name)
    u = np.asarray(u)
    if entry.exact is None:
        return np.ones(u.shape, bool)
    return np.asarray(entry.exact(u), bool)


def _builtin():
    sp = _sympy
    entries = [
        SymbolicFunction("0", lambda u: jnp.zeros_like(u), lambda e: 0, 0),
        SymbolicFunction("x", lambda u: u, lambda e: e, 1),
        *(_power(k) for k in range(2, 6)),
        SymbolicFunction("1/x", _safe_reciprocal, lambda e: 1 / e, 2, _reciprocal_exact),
        SymbolicFunction("sqrt", _safe_sqrt, lambda e: sp().sqrt(e), 2, _sqrt_exact),
        SymbolicFunction("exp", jnp.exp, lambda e: sp().exp(e), 2),
        SymbolicFunction("log", _safe_log, lambda e: sp().log(e), 2, _log_exact),
        SymbolicFunction("sin", jnp.sin, lambda e: sp().sin(e), 2),
        SymbolicFunction("cos", jnp.cos, lambda e: sp().cos(e), 2),
        SymbolicFunction("tan", _safe_tan, lambda e: sp().tan(e), 3, _tan_exact),
        SymbolicFunction("tanh", jnp.tanh, lambda e: sp().tanh(e), 3),
        SymbolicFunction("arctan", jnp.arctan, lambda e: sp().atan(e), 3),
        SymbolicFunction("abs", jnp.abs, lambda e: sp().Abs(e), 2),
        SymbolicFunction("gaussian", lambda u: jnp.exp(-(u**2)), lambda e: sp().exp(-(e**2)), 3),
    ]
    for entry in entries:
        LIBRARY[entry.name] = entry


_builtin()

DEFAULT_NAMES: tuple[str, ...] = tuple(LIBRARY)
