"""Compile-time settings shared by the compiled programs of kanjax (internal)."""

from __future__ import annotations

import functools

import jax

# XLA:CPU spends most of a small program's compile time in LLVM code generation of its many
# small fused kernels. Its legacy fusion emitters and LLVM -O1 shorten that, but they cost
# run time on large tensors, so they are asked for only where the work is small (figures in
# benchmarks/PERF.md). GPU and TPU always compile with their defaults.
FAST_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 1}

# XLA:CPU hands dots (and the elementwise work around them) to YNNPACK fusions by default;
# kanjax's training programs are compiled without them on CPU, so its KAN steps use XLA's
# Eigen dots, which ran them faster (figures in benchmarks/PERF.md).
CPU_RUN_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def cpu_compile_options(fast: bool) -> dict | None:
    """XLA options kanjax compiles its CPU programs with (``None`` off CPU).

    ``fast`` adds :data:`FAST_COMPILE_OPTIONS` (for programs whose compile time dominates).
    Options the installed jaxlib does not know are left out, so older versions compile with
    their defaults instead of failing. To compile a step of your own the way ``kanjax.train``
    compiles its epochs: ``jax.jit(step).lower(*args).compile(cpu_compile_options(fast=False))``.
    """
    if jax.default_backend() != "cpu":
        return None
    wanted = tuple({**CPU_RUN_OPTIONS, **(FAST_COMPILE_OPTIONS if fast else {})}.items())
    if _accepted(wanted):  # one trivial compile per process in the usual case
        return dict(wanted) or None
    return {k: v for k, v in wanted if _accepted(((k, v),))} or None


@functools.cache
def _accepted(options: tuple) -> bool:
    """Whether this jaxlib accepts all these compile options (tried once on a trivial program)."""
    try:
        jax.jit(lambda: 0).lower().compile(dict(options))
    except Exception:  # an unknown option or value: XLA rejects it before compiling anything
        return False
    return True


def fast_compile_jit(fun, **jit_kwargs):
    """``jax.jit(fun, **jit_kwargs)`` compiled with ``cpu_compile_options(fast=True)`` on CPU.

    For small programs whose compile time dominates (grid refits, evaluation helpers). The
    backend is looked up at the first call, not at import.
    """
    compiled = {}

    def call(*args, **kwargs):
        if "jit" not in compiled:
            compiled["jit"] = jax.jit(fun, compiler_options=cpu_compile_options(fast=True),
                                      **jit_kwargs)
            compiled["nested"] = jax.jit(fun, **jit_kwargs)
        # Inside another trace (jit, vmap, eval_shape) it is part of the caller's program,
        # which does not take compiler options of its own.
        traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs)))
        return compiled["nested" if traced else "jit"](*args, **kwargs)

    call.__wrapped__ = fun
    call.__doc__ = fun.__doc__
    return call
