"""Initial parameters of a KAN layer, drawn with one compiled program for most shapes."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from kanjax._xla import fast_compile_jit

__all__ = ["init_weights"]


_uniform_block = functools.partial(fast_compile_jit, static_argnums=(1, 2))(
    lambda key, size, dtype: jax.random.uniform(key, (size,), dtype, -1.0, 1.0))


def init_weights(key, n_in, n_out, num_basis, base_init, spline_init, coef_init, dtype):
    """Initial ``(w_base, w_spline, coef)`` of a layer.

    ``w_base ~ U(-1, 1) * base_init / sqrt(n_in)``, ``w_spline = spline_init / sqrt(n_in)``
    and ``coef`` uniform with zero mean and standard deviation ``coef_init / sqrt(K)``.

    XLA compiles a random-number program once per shape, which costs ~0.1-0.3 s on CPU; the
    numbers are therefore drawn in power-of-two blocks (one compiled program serves every
    layer of most networks) and cut to shape on the host (with ``jax.numpy`` when the
    constructor is traced, e.g. under ``nnx.vmap`` for an ensemble).
    """
    dtype = jnp.dtype(dtype)
    n_base = n_in * n_out
    n = n_base * (1 + num_basis)
    block = _uniform_block(key, max(1024, 1 << (n - 1).bit_length()), dtype)
    xp = jnp if isinstance(block, jax.core.Tracer) else np
    block = block if xp is jnp else np.asarray(block, np.float32)
    w_base = block[:n_base].reshape(n_in, n_out) * (base_init / math.sqrt(n_in))
    coef = block[n_base:n].reshape(n_in, n_out, num_basis) * (
        coef_init * math.sqrt(3.0 / num_basis))  # U(-1, 1) has std 1/sqrt(3)
    w_spline = xp.full((n_in, n_out), spline_init / math.sqrt(n_in), np.float32)
    if xp is np:  # cast on the host: jnp.asarray(a, dtype) would compile a conversion
        return tuple(jnp.asarray(a.astype(dtype)) for a in (w_base, w_spline, coef))
    return tuple(a.astype(dtype) for a in (w_base, w_spline, coef))
