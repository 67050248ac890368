"""Compile-time settings shared by the compiled programs of kanjax (internal)."""

from __future__ import annotations

import jax

# XLA:CPU spends most of a small program's compile time in LLVM code generation of its many
# small fused kernels. Its legacy fusion emitters and LLVM -O1 roughly halve that (seed
# model on a 2-core CPU: ~1.9 s -> ~1.0 s), but they cost run time on large tensors (a
# [8, 64, 64, 1] B-spline step at batch 1024 ran ~2.4x slower with them), so they are asked
# for only where the work is small. GPU and TPU always compile with their defaults.
FAST_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 1}


def fast_compile_jit(fun, **jit_kwargs):
    """``jax.jit(fun, **jit_kwargs)`` compiled with :data:`FAST_COMPILE_OPTIONS` on CPU.

    For small programs whose compile time dominates (grid refits, evaluation helpers). The
    backend is looked up at the first call, not at import.
    """
    compiled = {}

    def call(*args, **kwargs):
        if "jit" not in compiled:
            options = FAST_COMPILE_OPTIONS if jax.default_backend() == "cpu" else None
            compiled["jit"] = jax.jit(fun, compiler_options=options, **jit_kwargs)
            compiled["nested"] = jax.jit(fun, **jit_kwargs)
        # Inside another trace (jit, vmap, eval_shape) it is part of the caller's program,
        # which does not take compiler options of its own.
        traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs)))
        return compiled["nested" if traced else "jit"](*args, **kwargs)

    call.__wrapped__ = fun
    call.__doc__ = fun.__doc__
    return call
