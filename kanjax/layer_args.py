"""Checks of the constructor arguments of ``KANLayer``, ``KAN`` and ``MLP``.

Each check names the argument, the value it got and what to pass instead, and runs before any
array is created. ``Default`` marks a constructor default, so that an option the caller did not
give can be told apart from one given with the default's value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

BASES = ("taylor", "bspline")


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class Default:
    """A constructor default that tells "not given" apart from "given" (and reads as the value)."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def is_given(value) -> bool:
    return not isinstance(value, Default)


def value_of(value):
    return value.value if isinstance(value, Default) else value


# Options of one basis that the other ignores, and the basis they belong to.
BASIS_ONLY = {"degree": "taylor", "squash": "taylor", "grid_size": "bspline",
               "order": "bspline", "grid_range": "bspline", "grid": "bspline",
               "spline_eval": "bspline"}


def check_basis_options(basis: str, options: dict) -> None:
    """Refuse options of the other basis (they would be ignored), and ``grid`` with a scalar."""
    wrong = [name for name, value in options.items()
             if is_given(value) and (value is not None or name != "grid")
             and BASIS_ONLY[name] != basis]
    if wrong:
        other = "bspline" if basis == "taylor" else "taylor"
        own = [n for n, b in BASIS_ONLY.items() if b == basis]
        raise ValueError(
            f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} for basis={other!r} and "
            f"would be ignored with basis={basis!r}; drop {'it' if len(wrong) == 1 else 'them'} "
            f"or pass basis={other!r} (basis={basis!r} takes {', '.join(own)})")
    grid = options["grid"]
    if grid is not None and np.ndim(grid) == 0:
        raise ValueError(
            f"grid={grid!r} is not a knot vector: grid takes explicit knots (shape (n_knots,) "
            f"or (n_in, n_knots)). For the number of grid intervals (pykan's grid=) pass "
            f"grid_size={grid!r}")
    if grid is not None:
        both = [n for n in ("grid_size", "grid_range") if is_given(options[n])]
        if both:
            raise ValueError(f"grid gives the knots, so {' and '.join(both)} would be ignored; "
                             f"drop {' and '.join(both)} (or drop grid)")


def check_spline_eval(spline_eval) -> str:
    """``spline_eval`` as given, or a clear error (see :data:`kanjax.local_spline.SPLINE_EVALS`)."""
    choices = ("auto", "dense", "local")
    if not isinstance(spline_eval, str) or spline_eval not in choices:
        raise ValueError(f"spline_eval must be one of {choices}, got {spline_eval!r}")
    return spline_eval


def check_grid_range(grid_range) -> tuple[float, float]:
    fix = "pass two finite numbers lo < hi, e.g. grid_range=(-1.0, 1.0)"
    try:
        values = [float(v) for v in grid_range]
    except (TypeError, ValueError):
        raise ValueError(f"grid_range must be (lo, hi), got {grid_range!r}; {fix}") from None
    if len(values) != 2:
        raise ValueError(f"grid_range must be (lo, hi), two numbers, got {len(values)}: "
                         f"{grid_range!r}; {fix}")
    lo, hi = values
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"grid_range must be finite, got {grid_range!r}; {fix}")
    if not lo < hi:
        raise ValueError(f"grid_range must satisfy lo < hi, got {grid_range!r}; {fix}")
    return lo, hi


def check_finite_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a finite number, got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}; pass e.g. {name}=1.0")
    return float(value)


def check_float_dtype(name: str, value, *, optional: bool = False):
    if value is None and optional:
        return None
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be a floating dtype such as jnp.float32, got "
                        f"{value!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating dtype (float16, bfloat16, float32, "
                         f"float64), got {dtype}; pass e.g. {name}=jnp.float32")
    return value


def check_layer_settings(use_bias, base_init, spline_init, coef_init, dtype, param_dtype,
                          rngs) -> None:
    if not isinstance(use_bias, (bool, np.bool_)):
        raise TypeError(f"use_bias must be True or False, got {use_bias!r}")
    for name, value in (("base_init", base_init), ("spline_init", spline_init),
                        ("coef_init", coef_init)):
        check_finite_number(name, value)
    check_float_dtype("dtype", dtype, optional=True)
    check_float_dtype("param_dtype", param_dtype)
    check_rngs(rngs)


def check_rngs(rngs) -> None:
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__} {rngs!r}; pass "
                        "e.g. rngs=nnx.Rngs(0)")


def check_knots(grid, n_in: int, order: int, dtype) -> tuple[jax.Array, bool]:
    knots = np.asarray(grid, dtype=np.float64)
    if knots.ndim == 1:
        knots = np.broadcast_to(knots, (n_in, knots.shape[0]))
    if knots.ndim != 2 or knots.shape[0] != n_in:
        raise ValueError(
            f"grid must have shape (n_knots,) or ({n_in}, n_knots), got {np.shape(grid)}"
        )
    if not np.all(np.isfinite(knots)):
        raise ValueError("grid contains non-finite knots (nan or inf)")
    if np.any(np.diff(knots, axis=-1) < 0):
        raise ValueError("grid knots must be sorted in non-decreasing order along the last axis")
    if knots.shape[-1] < 2 * order + 2:
        raise ValueError(
            f"an order-{order} grid needs at least {2 * order + 2} knots (one interval plus "
            f"{order} extension knots per side), got {knots.shape[-1]}"
        )
    steps = np.diff(knots, axis=-1)
    uniform = bool(np.all(steps > 0) and np.allclose(steps, steps[:, :1], rtol=1e-6, atol=0.0))
    return jnp.asarray(knots, dtype=dtype), uniform


def check_mult_nodes(out_features: int, mult_nodes, mult_arity) -> tuple[int, int]:
    """``(mult_nodes, mult_arity)`` checked against a layer's ``out_features`` edge sums."""
    arity = check_positive_int("mult_arity", mult_arity, minimum=2)
    mult = check_positive_int("mult_nodes", mult_nodes, minimum=0)
    if arity * mult > out_features:
        raise ValueError(f"mult_nodes={mult} with mult_arity={arity} needs {arity * mult} edge "
                         f"sums, but out_features={out_features}; pass out_features >= "
                         f"{arity * mult} (sum nodes + mult_arity * mult_nodes)")
    return mult, arity


def check_widths(widths) -> list[int]:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"widths must be a sequence of integers, got {widths!r}")
    if len(widths) < 2:
        raise ValueError(
            f"widths needs at least 2 entries (inputs and outputs), got {list(widths)}"
        )
    out = []
    for i, w in enumerate(widths):
        try:
            out.append(check_positive_int(f"widths[{i}]", w))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{err} (widths={list(widths)})") from None
    return out


def check_kan_widths(widths) -> tuple[list[int], list[int]]:
    """KAN widths -> ``(nodes, mult)`` per layer of nodes: an entry is a node count or
    ``[n_sum, n_mult]`` (sum and multiplication nodes, pykan's convention); inputs have no
    multiplication nodes."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"widths must be a sequence of integers, got {widths!r}")
    flat, mult = [], []
    for i, w in enumerate(widths):
        if isinstance(w, (list, tuple)):
            if len(w) != 2 or (i == 0 and w[1] != 0):
                raise ValueError(f"widths[{i}] must be a node count or [n_sum, n_mult]"
                                 + (" with n_mult = 0 (inputs are not multiplied)" if i == 0
                                    else "") + f", got {w!r} (widths={list(widths)})")
            n_sum = check_positive_int(f"widths[{i}][0]", w[0], minimum=0)
            n_mult = check_positive_int(f"widths[{i}][1]", w[1], minimum=0)
            flat.append(n_sum + n_mult)
            mult.append(n_mult)
        else:
            flat.append(w)
            mult.append(0)
    return check_widths(flat), mult


# pykan's names for KAN options, and kanjax's.
PYKAN_NAMES = {"k": "order", "width": "widths", "seed": "rngs=nnx.Rngs(seed)",
                "base_fun": "the fixed silu base", "noise_scale": "coef_init",
                "scale_base_mu": "base_init", "scale_sp": "spline_init"}
LAYER_OPTIONS = ("basis", "degree", "grid_size", "order", "grid_range", "grid", "spline_eval",
                  "squash",
                  "use_bias", "base_init", "spline_init", "coef_init", "dtype", "param_dtype")


def check_layer_kwargs(layer_kwargs) -> None:
    unknown = [name for name in layer_kwargs if name not in LAYER_OPTIONS]
    if unknown:
        hints = [f"{n} -> {PYKAN_NAMES[n]}" for n in unknown if n in PYKAN_NAMES]
        raise TypeError(f"KAN got unknown option(s) {', '.join(map(repr, unknown))}"
                        + (f" (pykan's names; kanjax's: {'; '.join(hints)})" if hints else "")
                        + f"; KAN takes widths, rngs and {', '.join(LAYER_OPTIONS)}")
