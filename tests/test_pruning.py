import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import kanjax


@pytest.fixture(scope="module")
def trained():
    x = jax.random.uniform(jax.random.key(0), (400, 3), minval=-1, maxval=1)
    y = jnp.sin(2 * x[:, :1]) + x[:, 1:2] ** 2  # x[:, 2] is irrelevant
    model = kanjax.KAN([3, 6, 4, 1], rngs=nnx.Rngs(0))
    model, _ = kanjax.train(model, (x, y), epochs=30, l1=1e-3, progress=False)
    return model, x


def masked_original(model, x, threshold):
    """The original model with every pruned edge masked (computed here from the definition)."""
    scores = kanjax.edge_importance(model, x)
    n_layers = len(scores)
    alive = [np.ones(model.widths[0], bool)]
    for i in range(n_layers - 1):
        node = np.minimum(scores[i].max(axis=0), scores[i + 1].max(axis=1))
        keep = node > threshold
        if not keep.any():
            keep[np.argmax(node)] = True
        alive.append(keep)
    alive.append(np.ones(model.widths[-1], bool))
    masked = nnx.clone(model)
    for i, layer in enumerate(masked.layers):
        m = (scores[i] > threshold) & alive[i][:, None] & alive[i + 1][None, :]
        layer.mask[...] = jnp.asarray(m, layer.param_dtype)
    return masked, [int(a.sum()) for a in alive]


def test_pruned_model_equals_masked_original(trained):
    model, x = trained
    nodes = np.concatenate(kanjax.node_importance(model, x))
    threshold = float(np.median(nodes))
    pruned = kanjax.prune(model, x, threshold=threshold)
    masked, widths = masked_original(model, x, threshold)
    assert list(pruned.widths) == widths
    assert sum(widths[1:-1]) < sum(model.widths[1:-1])  # something was removed
    x_new = jax.random.uniform(jax.random.key(9), (100, 3), minval=-1.2, maxval=1.2)
    np.testing.assert_allclose(np.asarray(pruned(x_new)), np.asarray(masked(x_new)), atol=1e-5)
    assert model.widths == (3, 6, 4, 1)  # the original is untouched
    for layer, (n_in, n_out) in zip(pruned.layers, zip(widths[:-1], widths[1:])):
        assert layer.coef.shape[:2] == (n_in, n_out) and layer.mask.shape == (n_in, n_out)


def test_pruned_model_keeps_training(trained):
    model, x = trained
    y = jnp.sin(2 * x[:, :1]) + x[:, 1:2] ** 2
    pruned = kanjax.prune(model, x, threshold=1e-3)
    masks = [np.asarray(layer.mask[...]).copy() for layer in pruned.layers]
    pruned, h = kanjax.train(pruned, (x, y), epochs=3, progress=False)
    assert np.all(np.isfinite(h.train_loss))
    for layer, m in zip(pruned.layers, masks):  # masks are state: training leaves them alone
        np.testing.assert_array_equal(np.asarray(layer.mask[...]), m)


def test_importance_errors():
    with pytest.raises(TypeError, match="needs a kanjax.KAN"):
        kanjax.edge_importance(kanjax.MLP([2, 1], rngs=nnx.Rngs(0)), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="threshold"):
        kanjax.prune(kanjax.KAN([2, 2, 1], rngs=nnx.Rngs(0)), jnp.ones((2, 2)), threshold=-1.0)


def test_attribution_ranks_the_irrelevant_input_last_and_conserves_importance(trained):
    model, x = trained
    scores = kanjax.attribution(model, x)
    assert [s.shape for s in scores] == [(w,) for w in model.widths]
    for s in scores:  # every layer hands on exactly the outputs' total importance
        np.testing.assert_allclose(s.sum(), model.widths[-1], rtol=1e-6)
    assert np.argmin(scores[0]) == 2  # y does not depend on x[:, 2]
    # the backward recursion, written out for the last hidden layer from the edge scores
    a = kanjax.edge_importance(model, x)[-1].astype(np.float64)
    np.testing.assert_allclose(scores[-2], (a / a.sum(axis=0, keepdims=True)) @ np.ones(1), rtol=1e-6)


@pytest.mark.parametrize("fn", [kanjax.edge_importance, kanjax.node_importance,
                                kanjax.attribution, kanjax.prune])
def test_non_finite_or_empty_samples_are_refused_before_anything_runs(fn):
    model = kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(0))
    before = jax.tree.map(np.array, nnx.state(model))
    x = np.zeros((5, 2), np.float32)
    x[1, 0], x[3, 1], x[4, 1] = np.nan, np.inf, -np.inf  # three rows, one of them twice
    x[4, 0] = np.nan
    with pytest.raises(ValueError, match=r"x has 3 of 5 rows with nan or inf"):
        fn(model, x)
    with pytest.raises(ValueError, match=r"x has no samples \(shape \(0, 2\)\)"):
        fn(model, np.zeros((0, 2), np.float32))
    after = jax.tree.map(np.array, nnx.state(model))
    jax.tree.map(np.testing.assert_array_equal, before, after)


def test_layer_inputs_are_the_forward_pass_layer_by_layer():
    model = kanjax.KAN([2, 3, 4, 1], basis="taylor", degree=3, rngs=nnx.Rngs(1))
    x = np.random.default_rng(0).uniform(-1, 1, (7, 2)).astype(np.float32)
    got = kanjax.layer_inputs(model, x)
    assert [a.shape for a in got] == [(7, 2), (7, 3), (7, 4)]
    h = x
    for layer, a in zip(model.layers, got):  # each layer applied on its own, one at a time
        np.testing.assert_allclose(np.asarray(a), np.asarray(h), rtol=1e-5, atol=1e-6)
        h = layer(h)
    np.testing.assert_allclose(np.asarray(model.layers[-1](got[-1])), np.asarray(model(x)),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="2 features"):
        kanjax.layer_inputs(model, np.ones((3, 3)))
