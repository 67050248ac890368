"""Multiplication nodes (KAN 2.0): maths, training, pruning, formulas, plots, checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from flax import nnx

import kanjax
from kanjax.layer import combine_nodes


@pytest.mark.parametrize("arity", [2, 3])
def test_combine_nodes_matches_a_loop(rng, arity):
    n_sum, n_mult = 2, 3
    y = rng.normal(size=(5, n_sum + arity * n_mult)).astype(np.float32)
    want = np.empty((5, n_sum + n_mult), np.float32)
    want[:, :n_sum] = y[:, :n_sum]
    for j in range(n_mult):
        prod = np.ones(5, np.float32)
        for r in range(arity):
            prod *= y[:, n_sum + arity * j + r]
        want[:, n_sum + j] = prod
    np.testing.assert_allclose(np.asarray(combine_nodes(jnp.asarray(y), n_mult, arity)), want,
                               rtol=1e-6)
    host = combine_nodes(y, n_mult, arity)  # NumPy in, NumPy out
    assert isinstance(host, np.ndarray)
    np.testing.assert_allclose(host, want, rtol=1e-6)
    assert combine_nodes(y, 0, arity) is y


def _by_hand(model, x):
    """The network from per-edge values: edge sums, then products of the factor groups."""
    h = np.asarray(x, np.float64)
    for layer in model.layers:
        y = np.asarray(layer.edge_activations(jnp.asarray(h, jnp.float32)), np.float64).sum(-2)
        n_sum = layer.out_features - layer.mult_arity * layer.mult_nodes
        groups = y[:, n_sum:].reshape(len(y), layer.mult_nodes, layer.mult_arity)
        h = np.concatenate([y[:, :n_sum], groups.prod(-1)], axis=-1)
    return h


@pytest.mark.parametrize("basis", ["bspline", "taylor"])
def test_kan_with_multiplication_nodes_computes_sums_then_products(rng, basis):
    model = kanjax.KAN([3, [2, 2], [1, 1]], basis=basis, rngs=nnx.Rngs(0))
    assert model.widths == (3, 4, 2) and model.mult_nodes == (0, 2, 1)
    assert [(lyr.in_features, lyr.out_features, lyr.out_nodes) for lyr in model.layers] == [
        (3, 6, 4), (4, 3, 2)]
    x = rng.uniform(-1, 1, (16, 3)).astype(np.float32)
    out = model(jnp.asarray(x))
    assert out.shape == (16, 2)
    np.testing.assert_allclose(np.asarray(out), _by_hand(model, x), rtol=2e-5, atol=1e-6)
    # the penalty pass forms the same outputs, and layer_inputs the nodes' values
    np.testing.assert_allclose(np.asarray(model.forward_with_penalty(jnp.asarray(x), l1=1.0)[0]),
                               np.asarray(out), rtol=2e-5, atol=1e-6)
    assert [h.shape[-1] for h in kanjax.layer_inputs(model, x)] == [3, 4]
    # jit == eager, and gradients agree with finite differences through a product
    np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, v: m(v))(model, jnp.asarray(x))),
                               np.asarray(out), rtol=1e-5, atol=1e-6)
    f = jax.jit(lambda v: model(v).sum())
    v = jnp.asarray(x[:2], jnp.float32)
    g = np.asarray(jax.jit(jax.grad(f))(v))
    e = 1e-2
    for k in range(3):
        d = jnp.zeros_like(v).at[:, k].set(e)
        np.testing.assert_allclose(g[:, k].sum(), (f(v + d) - f(v - d)) / (2 * e), rtol=2e-2,
                                   atol=2e-3)


def test_x_times_y_learned_and_written_as_a_product():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (512, 2)).astype(np.float32)
    xt = rng.uniform(-1, 1, (512, 2)).astype(np.float32)
    y, yt = x[:, :1] * x[:, 1:], xt[:, :1] * xt[:, 1:]
    model = kanjax.KAN([2, [0, 1]], rngs=nnx.Rngs(0))  # a [2, 1] multiplication layer
    kanjax.train(model, (x, y), optimizer="lbfgs", epochs=200, batch_size=None, progress=False)
    assert kanjax.evaluate(model, (xt, yt)) ** 0.5 <= 1e-4
    model = kanjax.prune(model, x)  # the cross edges carry nothing
    assert np.asarray(model.layers[0].mask[...]).sum() == 2
    kanjax.auto_symbolic(model, x)
    kanjax.symbolic.refine_constants(model, x, y)
    (expr,), (sx, sy) = kanjax.symbolic_formula(model, ["x", "y"])
    assert sympy.simplify(expr - sx * sy) == 0, expr
    assert kanjax.evaluate(model, (xt, yt)) ** 0.5 <= 1e-4


def test_formula_multiplies_and_equals_the_network(rng):
    model = kanjax.KAN([2, [1, 1], 1], basis="taylor", degree=3, rngs=nnx.Rngs(1))
    x = rng.uniform(-1, 1, (64, 2))
    lf = kanjax.layered_formula(model, ["a", "b"], x=x, digits=None)
    assert lf.max_error < 1e-9  # float64 formula vs the float64 host network
    assert isinstance(lf.nodes[1][1], sympy.Mul)  # the multiplication node is a product
    (expr,), syms = kanjax.symbolic_formula(model, ["a", "b"], digits=None, simplify=False)
    fn = sympy.lambdify(syms, expr, "numpy")
    np.testing.assert_allclose(fn(x[:, 0], x[:, 1]), np.asarray(model(jnp.asarray(x, jnp.float32)))[:, 0],
                               rtol=1e-4, atol=1e-5)


def test_prune_drops_a_dead_multiplication_node_and_keeps_the_function(rng):
    model = kanjax.KAN([2, [1, 2], 1], rngs=nnx.Rngs(0))
    # the second multiplication node (node 2) sends nothing on: its outgoing edge is masked
    model.layers[1].mask = kanjax.nn.EdgeMask(model.layers[1].mask[...].at[2, 0].set(0.0))
    x = rng.uniform(-1, 1, (200, 2)).astype(np.float32)
    pruned = kanjax.prune(model, x, threshold=1e-6)
    assert pruned.widths == (2, 2, 1) and pruned.mult_nodes == (0, 1, 0)
    assert pruned.layers[0].out_features == 3  # one sum + two factors
    np.testing.assert_allclose(np.asarray(pruned(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    assert [a.shape for a in kanjax.attribution(pruned, x)] == [(2,), (2,), (1,)]
    assert model.widths == (2, 3, 1)  # the original is untouched


def test_checkpoint_round_trip_and_config(tmp_path, rng):
    model = kanjax.KAN([2, [1, 1], [0, 1]], mult_arity=3, basis="taylor", degree=2,
                       rngs=nnx.Rngs(0))
    assert model.layers[1].out_features == 3 and model.layers[0].out_features == 4
    x = rng.uniform(-1, 1, (8, 2)).astype(np.float32)
    kanjax.save(tmp_path / "ck", model)
    back = kanjax.load(tmp_path / "ck")
    assert back.mult_nodes == model.mult_nodes and back.widths == model.widths
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(model(x)))
    rebuilt = nnx.eval_shape(lambda: kanjax.KAN.from_config(model.config(), rngs=nnx.Rngs(0)))
    assert nnx.graphdef(rebuilt) == nnx.graphdef(model)


def test_plot_network_draws_multiplication_nodes_as_squares(rng):
    import matplotlib

    matplotlib.use("Agg")
    model = kanjax.KAN([2, [1, 2], 1], rngs=nnx.Rngs(0))
    fig = kanjax.plot_network(model, rng.uniform(-1, 1, (50, 2)))
    ax = fig.axes[0]
    assert len(ax.child_axes) == 2 * 5 + 3  # every edge column has an inset
    squares = [c for c in ax.collections if hasattr(c, "get_paths") and len(c.get_offsets())
               and c.get_paths()[0].vertices.shape[0] == 5]
    assert sum(len(c.get_offsets()) for c in squares) == 2


@pytest.mark.parametrize("widths, match", [
    ([[2, 1], 1], "inputs are not multiplied"),
    ([2, [1, 2, 3], 1], r"\[n_sum, n_mult\]"),
    ([2, [0, 0], 1], "widths"),
    ([2, [1, -1], 1], r"widths\[1\]\[1\]"),
])
def test_bad_widths_are_named(widths, match):
    with pytest.raises((TypeError, ValueError), match=match):
        kanjax.KAN(widths, rngs=nnx.Rngs(0))


def test_layer_needs_enough_edge_sums_for_its_products():
    with pytest.raises(ValueError, match="mult_nodes=2 with mult_arity=2 needs 4 edge sums"):
        kanjax.KANLayer(2, 3, mult_nodes=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="mult_arity must be >= 2"):
        kanjax.KAN([2, [0, 1], 1], mult_arity=1, rngs=nnx.Rngs(0))
