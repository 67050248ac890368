"""A stand-in for a dense-basis KAN that keeps its matmuls and drops its basis.

Each layer multiplies ``n_features`` scaled copies of its input, ``concat_j(c_j x)``, by
weights of shape ``(n_features * n_in, n_out)``: the matmul a dense B-spline layer does with
silu and ``G + k`` basis values per input (``n_features = G + k + 1``), with the cheapest
features there are. Its training step is what the matmuls of a dense-basis KAN step cost
on a machine, differentiated by plain autodiff; ``peers.py`` and ``grid_scaling.py`` time it
beside kanjax. Distinct scales keep XLA from folding the copies into the weights.
"""

from __future__ import annotations

import math


def matmuls_only_model(widths, n_features: int, seed: int = 0):
    """An NNX module ``x (batch, widths[0]) -> (batch, widths[-1])`` as described above."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    scales = [1.0 + 0.25 * j for j in range(n_features)]

    class MatmulsOnly(nnx.Module):
        def __init__(self, rngs):
            self.weights = nnx.List([
                nnx.Param(jax.random.normal(rngs.params(), (n_features * n_in, n_out))
                          / math.sqrt(n_features * n_in))
                for n_in, n_out in zip(widths[:-1], widths[1:])])

        def __call__(self, x):
            for w in self.weights:
                x = jnp.concatenate([c * x for c in scales], axis=-1) @ w[...]
            return x

    return MatmulsOnly(nnx.Rngs(seed))
