import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import kanjax


def direct_penalty(model, x, l1, entropy):
    """Written from the KAN paper's definition, layer by layer, in float64 numpy."""
    total = 0.0
    h = x
    for layer in model.layers:
        edges = np.asarray(layer.edge_activations(h), np.float64)  # (n, in, out)
        a = np.abs(edges).mean(axis=0)
        p = a / a.sum()
        total += l1 * a.sum() - entropy * np.sum(p * np.log(p))
        h = layer(h)
    return total


@pytest.mark.parametrize("basis", [pytest.param("bspline", marks=pytest.mark.slow), "taylor"])
def test_penalty_matches_direct_computation(basis):
    model = kanjax.KAN([3, 4, 2], basis=basis, use_bias=True, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (64, 3), minval=-1, maxval=1)
    y, pen = model.forward_with_penalty(x, l1=0.3, entropy=0.7)
    np.testing.assert_allclose(np.asarray(y), np.asarray(model(x)), atol=1e-5)
    assert float(pen) == pytest.approx(direct_penalty(model, x, 0.3, 0.7), rel=1e-4)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grads = jax.grad(
        lambda p: nnx.merge(graphdef, p, rest).forward_with_penalty(x, l1=0.3, entropy=0.7)[1]
    )(params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


def test_l1_training_makes_the_network_sparser():
    from kanjax.demo import seed_data

    (x, z), _ = seed_data(0, n_train=512, n_test=8)

    def activation_mass(m):
        return sum(float(jnp.mean(jnp.abs(layer.edge_activations(h)), axis=0).sum())
                   for layer, h in zip(m.layers, [x, m.layers[0](x), m.layers[1](m.layers[0](x))]))

    plain, _ = kanjax.train(kanjax.KAN([2, 4, 4, 1], rngs=nnx.Rngs(0)), (x, z), epochs=15,
                            progress=False)
    sparse, h = kanjax.train(kanjax.KAN([2, 4, 4, 1], rngs=nnx.Rngs(0)), (x, z), epochs=15,
                             l1=1e-2, entropy=1e-3, progress=False)
    assert np.all(np.isfinite(h.train_loss))
    assert activation_mass(sparse) < 0.7 * activation_mass(plain)


def test_penalty_needs_a_kan_and_valid_strengths():
    x, y = np.zeros((8, 2), np.float32), np.zeros((8, 1), np.float32)
    with pytest.raises(TypeError, match="needs a kanjax.KAN"):
        kanjax.train(kanjax.MLP([2, 3, 1], rngs=nnx.Rngs(0)), (x, y), l1=0.1, progress=False)
    with pytest.raises(ValueError, match="entropy must be a finite number >= 0"):
        kanjax.train(kanjax.KAN([2, 1], rngs=nnx.Rngs(0)), (x, y), entropy=-1.0, progress=False)
