"""Ahead-of-time compilation of kanjax's programs, and what decides whether one is reusable."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from kanjax._xla import cpu_compile_options

__all__ = ["FAST_COMPILE_MAX_FLOPS", "Program", "compile_program", "program_result", "signature",
           "trace_settings"]

# Fast-compile options (kanjax._xla) for small calls only: they cost run time on large
# tensors. Programs whose estimated work is above this compile without them.
FAST_COMPILE_MAX_FLOPS = 5e9

# JAX settings that a ``with ...`` block can change for one thread and that change what a
# traced program computes.
_TRACE_SETTINGS = ("jax_default_matmul_precision", "jax_enable_x64", "jax_numpy_rank_promotion",
                   "jax_numpy_dtype_promotion", "jax_default_prng_impl", "jax_default_device",
                   "jax_softmax_custom_jvp", "jax_enable_checks")


def compile_program(jitted, *args, work: float = 0.0, on_lowered: Callable | None = None):
    """Compile ``jitted`` once, ahead of time, for ``args``; the result never retraces.

    ``work`` estimates the floating-point operations that all calls of the program will
    run; on CPU it chooses between options that compile fast and ones that run fast
    (:func:`kanjax.cpu_compile_options`). ``on_lowered()`` is called between tracing
    (Python, holds the GIL) and XLA's compile.
    """
    lowered = jitted.lower(*args)
    if on_lowered is not None:
        on_lowered()
    return lowered.compile(cpu_compile_options(fast=work < FAST_COMPILE_MAX_FLOPS))


class Program(NamedTuple):
    """A compiled program and the :func:`signature` it was compiled for."""

    signature: tuple
    fn: Callable


def trace_settings() -> tuple:
    """This thread's values of the JAX settings that change a traced program."""
    values = []
    for name in _TRACE_SETTINGS:
        try:
            value = getattr(jax.config, name)
        except AttributeError:  # not in this jax version
            value = None
        values.append(value if isinstance(value, (str, int, float, bool, type(None)))
                      else repr(value))
    return tuple(values)


def signature(static, *args) -> tuple:
    """What decides a compiled program besides ``static``: structure, shapes and placement
    of the arguments, and this thread's JAX settings (a program compiled in another thread
    must not miss a ``with jax.default_matmul_precision(...)`` block)."""
    leaves, treedef = jax.tree.flatten(args)
    return static, treedef, trace_settings(), tuple(
        (np.shape(a), str(getattr(a, "dtype", type(a))), getattr(a, "sharding", None))
        if hasattr(a, "shape") else a
        for a in leaves)


def program_result(future) -> Program | None:
    """The program a future holds, or ``None`` if there is none or it failed (the caller
    then compiles; the same error, if real, is raised there)."""
    if future is None:
        return None
    try:
        return future.result()
    except Exception:  # noqa: BLE001
        return None
