"""kanjax.interop.from_pykan: a converted pykan model computes pykan's function.

Needs the optional ``interop`` extra (torch + pykan); skipped without it.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
kan = pytest.importorskip("kan")

import jax.numpy as jnp  # noqa: E402

import kanjax  # noqa: E402
from kanjax.interop import from_pykan  # noqa: E402

# One batch size throughout: kanjax runs these models eagerly, and XLA compiles each
# primitive once per shape, so a single shape keeps the file fast.
_N = 256


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """pykan may write checkpoints, figures and history into the cwd: keep them in tmp."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)


def _pykan(tmp_path, width, **kwargs):
    kwargs.setdefault("grid", 5)
    kwargs.setdefault("k", 3)
    kwargs.setdefault("seed", 1)
    # pykan rewrites `width` in place; give it its own copy.
    return kan.KAN(width=[list(w) if isinstance(w, list) else w for w in width],
                   auto_save=False, ckpt_path=str(tmp_path / "ckpt"), **kwargs)


def _compare(model, kmodel, x):
    """Max abs difference between pykan's and kanjax's outputs on ``x``; asserts closeness."""
    x = np.asarray(x, np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = np.asarray(kmodel(jnp.asarray(x)))
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6 * scale)
    return float(np.abs(got - expected).max())


def _knot_range(model):
    """(lowest first knot, highest last knot) over the first layer's inputs."""
    g = model.act_fun[0].grid.detach().numpy()
    return g[:, 0].min(), g[:, -1].max()


def _check_inside_and_outside(model, kmodel, n_in, rng):
    lo, hi = _knot_range(model)
    inner = model.act_fun[0].grid.detach().numpy()[:, model.act_fun[0].k :]
    a, b = inner[:, 0].max(), inner[:, -model.act_fun[0].k - 1].min()  # common inner range
    inside = rng.uniform(a, b, size=(_N, n_in))
    span = max(hi - lo, 1.0)
    outside = rng.uniform(lo - span, hi + span, size=(_N, n_in))
    # the outside sample really leaves the knots on both sides
    assert (outside < lo).mean() > 0.1 and (outside >= hi).mean() > 0.1
    return _compare(model, kmodel, inside), _compare(model, kmodel, outside)


@pytest.mark.parametrize(
    "width, grid, k",
    [([2, 5, 1], 5, 3), ([3, 4, 2], 5, 3), ([3, 4, 2], 5, 2), ([2, 3, 3, 1], 7, 1)],
)
def test_random_models_match(tmp_path, rng, width, grid, k):
    model = _pykan(tmp_path, width, grid=grid, k=k)
    kmodel = from_pykan(model)
    assert isinstance(kmodel, kanjax.KAN)
    assert kmodel.widths == tuple(width)
    assert [layer.order for layer in kmodel.layers] == [k] * (len(width) - 1)
    assert all(layer.grid_size == grid for layer in kmodel.layers)
    _check_inside_and_outside(model, kmodel, width[0], rng)


def test_converted_model_is_an_ordinary_nnx_module(tmp_path, rng):
    from flax import nnx

    model = _pykan(tmp_path, [2, 3, 1])
    kmodel = from_pykan(model)
    x = jnp.asarray(rng.uniform(-2, 2, size=(_N, 2)), jnp.float32)
    graphdef, state = nnx.split(kmodel)
    again = nnx.merge(graphdef, state)
    np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, x: m(x))(again, x)),
                               np.asarray(kmodel(x)), rtol=1e-6, atol=1e-7)  # jit fuses
    assert all(layer.bias is not None for layer in kmodel.layers)


def test_grid_updated_on_skewed_data_matches(tmp_path, rng):
    model = _pykan(tmp_path, [3, 4, 2])
    # skewed samples in [0, 1): percentile knots crowd near 0
    samples = torch.rand(_N, 3) ** 4
    model.update_grid(samples)
    knots = model.act_fun[0].grid.detach().numpy()
    assert not np.allclose(np.diff(knots[0]), np.diff(knots[0])[0], rtol=1e-3)
    kmodel = from_pykan(model)
    assert not any(layer.uniform for layer in kmodel.layers)
    np.testing.assert_allclose(np.asarray(kmodel.layers[0].grid[...]), knots, rtol=0, atol=0)
    _check_inside_and_outside(model, kmodel, 3, rng)
    # and on the data the grid was fitted to
    _compare(model, kmodel, samples.numpy())


def test_refined_model_matches(tmp_path, rng):
    model = _pykan(tmp_path, [2, 3, 1])
    model(torch.rand(100, 2) * 2 - 1)  # refine fits the new grid on the cached inputs
    model = model.refine(10)
    kmodel = from_pykan(model)
    assert [layer.grid_size for layer in kmodel.layers] == [10, 10]
    _check_inside_and_outside(model, kmodel, 2, rng)


def test_masked_edges_match(tmp_path, rng):
    model = _pykan(tmp_path, [3, 4, 2])
    with torch.no_grad():
        model.act_fun[0].mask[1, 2] = 0.0
        model.act_fun[0].mask[0, :] = 0.0
        model.act_fun[1].mask[3, 1] = 0.5  # pykan allows fractional masks (set_mode)
    kmodel = from_pykan(model)
    mask = np.asarray(kmodel.layers[0].mask[...])
    assert mask[1, 2] == 0 and not mask[0].any() and mask.sum() == 12 - 5
    _check_inside_and_outside(model, kmodel, 3, rng)
    # input 0 is cut off entirely: changing it changes neither model
    x = rng.uniform(-1, 1, size=(_N, 3)).astype(np.float32)
    x2 = x.copy()
    x2[:, 0] = rng.uniform(-1, 1, size=_N)
    np.testing.assert_array_equal(np.asarray(kmodel(jnp.asarray(x))),
                                  np.asarray(kmodel(jnp.asarray(x2))))


def test_node_and_subnode_affine_match(tmp_path, rng):
    model = _pykan(tmp_path, [3, 4, 2])
    with torch.no_grad():
        for l, n in enumerate([4, 2]):
            model.subnode_scale[l].copy_(torch.linspace(0.5, 2.0, n))
            model.subnode_bias[l].copy_(torch.linspace(-0.3, 0.7, n))
            model.node_scale[l].copy_(torch.linspace(-1.5, 0.8, n))
            model.node_bias[l].copy_(torch.linspace(0.2, -0.4, n))
    kmodel = from_pykan(model)
    assert np.abs(np.asarray(kmodel.layers[1].bias[...])).max() > 0.1
    _check_inside_and_outside(model, kmodel, 3, rng)


def test_zero_base_function_matches(tmp_path, rng):
    model = _pykan(tmp_path, [2, 3, 1], base_fun="zero")
    kmodel = from_pykan(model)
    assert not np.asarray(kmodel.layers[0].w_base[...]).any()
    _check_inside_and_outside(model, kmodel, 2, rng)


def test_single_kan_layer(rng):
    layer = kan.KANLayer(in_dim=3, out_dim=2, num=6, k=3)
    kmodel = from_pykan(layer)
    x = rng.uniform(-3, 3, size=(_N, 3)).astype(np.float32)
    with torch.no_grad():
        expected = layer(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(np.asarray(kmodel(jnp.asarray(x))), expected, rtol=1e-5, atol=2e-6)


def test_symbolic_zero_edge_folds_into_bias(tmp_path, rng):
    model = _pykan(tmp_path, [2, 3, 1])
    model.fix_symbolic(0, 1, 2, "0", fit_params_bool=False, verbose=False, log_history=False)
    with torch.no_grad():
        model.symbolic_fun[0].affine[2, 1, 3] = 0.75  # the edge is now the constant 0.75
    kmodel = from_pykan(model)
    assert np.asarray(kmodel.layers[0].bias[...])[2] == pytest.approx(0.75)
    _check_inside_and_outside(model, kmodel, 2, rng)


def test_symbolic_edge_is_rejected(tmp_path):
    model = _pykan(tmp_path, [2, 3, 1])
    model.fix_symbolic(1, 2, 0, "sin", fit_params_bool=False, verbose=False, log_history=False)
    with pytest.raises(NotImplementedError, match=r"layer 1, edge \(input 2 -> output 0\).*sin"):
        from_pykan(model)
    model.unfix_symbolic(1, 2, 0, log_history=False)
    from_pykan(model)  # back to the spline: converts again


def test_multiplication_nodes_are_rejected(tmp_path):
    model = _pykan(tmp_path, [2, [2, 1], 1])
    with pytest.raises(NotImplementedError, match="multiplication nodes"):
        from_pykan(model)


def test_other_base_function_is_rejected(tmp_path):
    model = _pykan(tmp_path, [2, 3, 1], base_fun="identity")
    with pytest.raises(NotImplementedError, match="base function"):
        from_pykan(model)


def test_pruned_inputs_are_rejected(tmp_path):
    model = _pykan(tmp_path, [3, 3, 1])
    model = model.prune_input(active_inputs=[0, 2], log_history=False)
    with pytest.raises(NotImplementedError, match="prune_input"):
        from_pykan(model)


def test_not_a_pykan_model():
    with pytest.raises(TypeError, match="pykan"):
        from_pykan(object())
