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

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["SymbolicFunction", "LIBRARY", "register_function", "get_function", "DEFAULT_NAMES"]

_TINY = 1e-4  # guard distance from a singularity (relative to the data, inputs are O(1))


class SymbolicFunction(NamedTuple):
    """One library entry.

    Attributes:
      name: the key, e.g. ``"sin"``.
      fn: JAX function of an array, elementwise, finite (and with finite gradients)
        everywhere.
      sympy_fn: builds the exact sympy expression from a sympy expression.
      complexity: a small positive integer; simpler functions win ties.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    sympy_fn: Callable[[Any], Any]
    complexity: int


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


def _sympy():
    import sympy

    return sympy


def _power(k: int) -> SymbolicFunction:
    return SymbolicFunction(f"x^{k}", lambda u: u**k, lambda e: e**k, k)


LIBRARY: dict[str, SymbolicFunction] = {}


def register_function(name: str, fn: Callable, sympy_fn: Callable, complexity: int = 2, *,
                      overwrite: bool = False) -> SymbolicFunction:
    """Add ``name`` to the library.

    Args:
      name: key used by ``fix_symbolic``, ``suggest_symbolic`` and checkpoints.
      fn: elementwise JAX function; it must stay finite (guard singularities yourself).
      sympy_fn: maps a sympy expression ``e`` to the exact sympy form, e.g.
        ``lambda e: sympy.sinh(e)``.
      complexity: positive integer used to rank equally good fits.
      overwrite: allow replacing an existing entry.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a function name must be a non-empty string, got {name!r}")
    if name in LIBRARY and not overwrite:
        raise ValueError(f"{name!r} is already in the library (pass overwrite=True to replace it)")
    if not callable(fn) or not callable(sympy_fn):
        raise TypeError("fn and sympy_fn must be callables")
    if int(complexity) < 0:
        raise ValueError(f"complexity must be >= 0, got {complexity}")
    entry = SymbolicFunction(name, fn, sympy_fn, int(complexity))
    LIBRARY[name] = entry
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


def _builtin():
    sp = _sympy
    entries = [
        SymbolicFunction("0", lambda u: jnp.zeros_like(u), lambda e: 0, 0),
        SymbolicFunction("x", lambda u: u, lambda e: e, 1),
        *(_power(k) for k in range(2, 6)),
        SymbolicFunction("1/x", _safe_reciprocal, lambda e: 1 / e, 2),
        SymbolicFunction("sqrt", _safe_sqrt, lambda e: sp().sqrt(e), 2),
        SymbolicFunction("exp", jnp.exp, lambda e: sp().exp(e), 2),
        SymbolicFunction("log", _safe_log, lambda e: sp().log(e), 2),
        SymbolicFunction("sin", jnp.sin, lambda e: sp().sin(e), 2),
        SymbolicFunction("cos", jnp.cos, lambda e: sp().cos(e), 2),
        SymbolicFunction("tan", _safe_tan, lambda e: sp().tan(e), 3),
        SymbolicFunction("tanh", jnp.tanh, lambda e: sp().tanh(e), 3),
        SymbolicFunction("arctan", jnp.arctan, lambda e: sp().atan(e), 3),
        SymbolicFunction("abs", jnp.abs, lambda e: sp().Abs(e), 2),
        SymbolicFunction("gaussian", lambda u: jnp.exp(-(u**2)), lambda e: sp().exp(-(e**2)), 3),
    ]
    for entry in entries:
        LIBRARY[entry.name] = entry


_builtin()

DEFAULT_NAMES: tuple[str, ...] = tuple(LIBRARY)
