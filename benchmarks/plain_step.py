"""The plain ``jax.jit`` training step the benchmarks time any JAX library with.

The protocol of a user's own training loop (and of /work/shared/anchors/bench_step.py with
``FUNCTIONAL=1``): the NNX model is split once with ``nnx.split``; one jitted function maps
(parameters, Adam state, batch) to the updated parameters and state and the MSE loss, with
default XLA options and no donation.
"""

from __future__ import annotations


def adam_mse_step(model, learning_rate: float):
    """``(step, params, opt_state)``: the jitted step ``step(params, opt_state, x, y) ->
    (params, opt_state, loss)`` for ``model``, and the state it starts from."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(learning_rate)

    @jax.jit
    def step(p, opt_state, xb, yb):
        def loss_fn(p):
            return jnp.mean((nnx.merge(graphdef, p, rest)(xb) - yb) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    return step, params, tx.init(params)
