"""Plots: files written, insets match the unmasked edges, curves match the edge functions."""

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

import kanjax  # noqa: E402
from kanjax import plotting  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_files(tmp_path, draw, stem):
    """``draw(path)`` writes a valid PNG and SVG and leaves no temporary file behind."""
    for ext in ("png", "svg"):
        path = tmp_path / f"{stem}.{ext}"
        fig = draw(path)
        data = path.read_bytes()
        assert len(data) > 2000, (path, len(data))
        if ext == "png":
            assert data[:8] == PNG_MAGIC
        else:
            assert b"<svg" in data[:2000]
        assert fig._repr_png_()[:8] == PNG_MAGIC  # shows inline in notebooks
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(stem)) == [
        f"{stem}.png", f"{stem}.svg"]


def _insets(fig):
    (main,) = fig.axes  # the insets are child axes of the one network axes
    return {a.get_label(): a for a in main.child_axes if a.get_label().startswith("phi[")}


def _hidden(model, x, upto):
    h = jnp.asarray(x)
    for layer in list(model.layers)[:upto]:
        h = layer(h)
    return np.asarray(h)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).uniform(-1.0, 1.0, (64, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return kanjax.KAN([3, 4, 2], rngs=nnx.Rngs(0))


# ----------------------------------------------------------------- history plots


def test_history_plots_write_png_and_svg(tmp_path):
    h = kanjax.History(train_loss=[1.0, 0.1, 0.01], val_loss=[1.1, 0.2, 0.02],
                       grad_norm={"layers.0": [1.0, 0.5, 0.2], "layers.1": [2.0, 1.0, 0.1]})
    _check_files(tmp_path, lambda p: kanjax.plot_loss(h, p), "loss")
    _check_files(tmp_path, lambda p: kanjax.plot_grad_norms(h, path=p, title="g"), "grads")
    assert len(kanjax.plot_loss(h).axes[0].get_lines()) == 2
    assert len(kanjax.plot_grad_norms(h).axes[0].get_lines()) == 2


# ----------------------------------------------------------------- plot_layer


@pytest.mark.parametrize("basis", ["bspline", "taylor"])
def test_plot_layer_both_bases(tmp_path, basis):
    layer = kanjax.KANLayer(2, 3, basis=basis, rngs=nnx.Rngs(1))
    layer.mask[...] = layer.mask[...].at[1, 0].set(0.0)
    x = np.array([[-1.0, 0.0], [0.5, 2.0], [0.0, 1.0]], np.float32)
    _check_files(tmp_path, lambda p: kanjax.plot_layer(layer, x, p, num=50), f"layer-{basis}")
    fig = kanjax.plot_layer(layer, x, num=50)
    axes = np.asarray(fig.axes).reshape(3, 2)  # (out q, in p)
    grid = np.linspace(x.min(axis=0), x.max(axis=0), 50)
    expected = np.asarray(layer.edge_activations(jnp.asarray(grid)))
    for q in range(3):
        for p in range(2):
            lines = axes[q, p].get_lines()
            if (p, q) == (1, 0):  # masked: nothing drawn
                assert lines == []
                continue
            (line,) = lines
            np.testing.assert_allclose(line.get_xydata()[:, 0], grid[:, p], atol=1e-6)
            np.testing.assert_allclose(line.get_xydata()[:, 1], expected[:, p, q], atol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        kanjax.plot_layer(layer, np.ones((4, 3)))


# ----------------------------------------------------------------- plot_network


def test_plot_alias_and_files(tmp_path, model, data):
    assert kanjax.plot is kanjax.plot_network is plotting.plot_network
    _check_files(tmp_path, lambda p: kanjax.plot(model, data, path=p, title="net",
                                                 in_vars=["$a$", "$b$", "c"],
                                                 out_vars=["u", "$v^2$"]), "net")


def test_plot_network_taylor(tmp_path):
    model = kanjax.KAN([2, 3, 1], basis="taylor", degree=5, rngs=nnx.Rngs(2))
    x = np.random.default_rng(1).uniform(-2, 2, (40, 2)).astype(np.float32)
    _check_files(tmp_path, lambda p: kanjax.plot(model, x, path=p), "taylor")
    assert len(_insets(kanjax.plot(model, x))) == 2 * 3 + 3 * 1


def test_one_inset_per_unmasked_edge(model, data):
    insets = _insets(kanjax.plot(model, data))
    assert set(insets) == {f"phi[{l}]({p},{q})" for l, layer in enumerate(model.layers)
                           for p in range(layer.in_features) for q in range(layer.out_features)}

    masked = nnx.clone(model)
    masked.layers[0].mask[...] = masked.layers[0].mask[...].at[2, 1].set(0.0)
    masked.layers[1].mask[...] = masked.layers[1].mask[...].at[0, 0].set(0.0)
    insets = _insets(kanjax.plot(masked, data))
    assert len(insets) == 3 * 4 + 4 * 2 - 2
    assert "phi[0](2,1)" not in insets and "phi[1](0,0)" not in insets
    main = kanjax.plot(masked, data).axes[0]
    assert len(main.collections[0].get_segments()) == 2 * len(insets)  # node-inset-node lines


def test_pruned_model_draws_only_kept_edges(model, data):
    scores = kanjax.edge_importance(model, data)
    threshold = float(np.quantile(np.concatenate([s.ravel() for s in scores]), 0.4))
    pruned = kanjax.prune(model, data, threshold=threshold)
    kept = sum(int(np.asarray(layer.mask[...]).sum()) for layer in pruned.layers)
    total = sum(layer.in_features * layer.out_features for layer in pruned.layers)
    assert kept < total  # some edges of the pruned model are masked, not just dropped nodes
    insets = _insets(kanjax.plot(pruned, data))
    assert len(insets) == kept
    for l, layer in enumerate(pruned.layers):
        for p, q in np.argwhere(np.asarray(layer.mask[...]) == 0):
            assert f"phi[{l}]({p},{q})" not in insets


def test_inset_curve_is_edge_activation_at_sorted_samples(model, data):
    insets = _insets(kanjax.plot(model, data))
    for l, (p, q) in [(0, (1, 3)), (1, (2, 1))]:
        points = np.sort(_hidden(model, data, l), axis=0)  # the layer's inputs, sorted
        (line,) = insets[f"phi[{l}]({p},{q})"].get_lines()
        xy = line.get_xydata()
        # hidden activations: compiled vs eager may differ in the last bit
        np.testing.assert_allclose(xy[:, 0], points[:, p], rtol=1e-6, atol=1e-7)
        points[:, p] = xy[:, 0]
        expected = np.asarray(model.layers[l].edge_activations(jnp.asarray(points)))
        np.testing.assert_allclose(xy[:, 1], expected[:, p, q], rtol=1e-5, atol=1e-6)


def test_max_points_subsamples_sorted_samples(model):
    x = np.random.default_rng(3).normal(size=(1000, 3)).astype(np.float32)
    (line,) = _insets(kanjax.plot(model, x, max_points=100))["phi[0](0,2)"].get_lines()
    xs = line.get_xydata()[:, 0]
    assert len(xs) == 100 and np.all(np.diff(xs) >= 0)
    assert xs[0] == x[:, 0].min() and xs[-1] == x[:, 0].max()
    assert np.isin(xs, x[:, 0]).all()  # actual sample points, not a grid


def test_opacity_follows_edge_importance(model, data):
    beta = 2.0
    insets = _insets(kanjax.plot(model, data, beta=beta))
    for l, score in enumerate(kanjax.edge_importance(model, data)):
        expected = np.clip(np.tanh(beta * score / score.max()), 0.05, 1.0)
        got = np.array([[insets[f"phi[{l}]({p},{q})"].get_lines()[0].get_alpha()
                         for q in range(score.shape[1])] for p in range(score.shape[0])])
        np.testing.assert_allclose(got, expected, rtol=1e-4)
        assert got.max() == pytest.approx(np.tanh(beta), rel=1e-4)
    assert len(set(np.round(got.ravel(), 4))) > 1  # not all equal: the test can tell


def test_symbolic_edges_are_red(data):
    model = kanjax.KAN([3, 2, 1], rngs=nnx.Rngs(4))
    layer = model.layers[0]
    if hasattr(layer, "set_symbolic"):
        layer.set_symbolic(1, 0, "sin")
        name = "sin"
    else:  # before symbolic edges exist: a bare marker still colours the edge
        layer.sym_mask = nnx.Variable(jnp.zeros((3, 2)).at[1, 0].set(1.0))
        name = None
    insets = _insets(kanjax.plot(model, data))
    red, black = to_rgba(plotting._SYMBOLIC_COLOR)[:3], to_rgba(plotting._SPLINE_COLOR)[:3]
    for label, inset in insets.items():
        color = to_rgba(inset.get_lines()[0].get_color())[:3]
        assert color == (red if label == "phi[0](1,0)" else black), label
    if name:
        assert insets["phi[0](1,0)"].get_title() == name


def test_draws_into_given_axes(model, data):
    fig = plotting._figure_class()(figsize=(8, 4))
    ax = fig.add_subplot()
    assert kanjax.plot(model, data, ax=ax) is fig
    assert fig.axes == [ax] and len(_insets(fig)) == 3 * 4 + 4 * 2


def test_one_program_not_one_call_per_edge(monkeypatch, data):
    calls = []
    original = kanjax.KANLayer.edge_activations

    def counting(self, x):
        calls.append(x.shape)
        return original(self, x)

    monkeypatch.setattr(kanjax.KANLayer, "edge_activations", counting)
    jax.clear_caches()  # so that this structure is traced (once) here
    wide = kanjax.KAN([3, 6, 2], rngs=nnx.Rngs(5))  # 30 edges
    kanjax.plot(wide, data)
    assert len(calls) == 2 * 2  # per layer: scores on x, curves at the sorted points
    kanjax.plot(wide, data)
    assert len(calls) == 4  # compiled once per model structure


def test_bad_inputs_raise(model, data):
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3\)"):
        kanjax.plot(model, data[:, :2])
    with pytest.raises(ValueError, match=r"x must have shape"):
        kanjax.plot(model, data[0])
    with pytest.raises(ValueError, match=r"x must have shape"):
        kanjax.plot(model, data[:0])
    with pytest.raises(ValueError, match="non-finite"):
        kanjax.plot(model, np.where(data > 0.9, np.nan, data))
    with pytest.raises(ValueError, match="in_vars must have 3 entries"):
        kanjax.plot(model, data, in_vars=["a", "b"])
    with pytest.raises(ValueError, match="out_vars must have 2 entries"):
        kanjax.plot(model, data, out_vars=["y"])
    with pytest.raises(ValueError, match="in_vars must be a sequence"):
        kanjax.plot(model, data, in_vars="abc")
    with pytest.raises(ValueError, match="beta"):
        kanjax.plot(model, data, beta=0.0)
    with pytest.raises(TypeError, match="KAN"):
        kanjax.plot(kanjax.MLP([3, 2], rngs=nnx.Rngs(0)), data)
