import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import kanjax
from kanjax import basis as basis_lib
from kanjax import layer as layer_lib


def naive_layer(layer: kanjax.KANLayer, x: np.ndarray) -> np.ndarray:
    """Per-edge loop, numpy in float64, written from the formula in the docs."""
    x = np.asarray(x, np.float64)
    w_b = np.asarray(layer.w_base[...], np.float64)
    w_s = np.asarray(layer.w_spline[...], np.float64)
    c = np.asarray(layer.coef[...], np.float64)
    silu = lambda v: v / (1.0 + np.exp(-v))  # noqa: E731
    lead = x.shape[:-1]
    flat = x.reshape(-1, layer.in_features)
    out = np.zeros((flat.shape[0], layer.out_features))
    for q in range(layer.out_features):
        for p in range(layer.in_features):
            xp = flat[:, p]
            if layer.basis == "taylor":
                u = np.tanh(xp) if layer.squash == "tanh" else xp
                spline = sum(c[p, q, i] * u**i for i in range(layer.degree + 1))
            else:
                from scipy.interpolate import BSpline

                knots = np.asarray(layer.grid[...], np.float64)[p]
                spline = np.nan_to_num(BSpline(knots, c[p, q], layer.order, extrapolate=False)(xp))
            out[:, q] += w_b[p, q] * silu(xp) + w_s[p, q] * spline
    if layer.bias is not None:
        out += np.asarray(layer.bias[...], np.float64)
    return out.reshape(*lead, layer.out_features)


LAYERS = {
    "taylor-tanh": dict(basis="taylor", degree=5),
    "taylor-raw": dict(basis="taylor", degree=4, squash=None),
    "bspline": dict(basis="bspline", grid_size=4, order=3),
    "bspline-k1-bias": dict(basis="bspline", grid_size=6, order=1, use_bias=True),
}


def make_layer(name, n_in=3, n_out=5, seed=0):
    layer = kanjax.KANLayer(n_in, n_out, rngs=nnx.Rngs(seed), **LAYERS[name])
    if layer.bias is not None:  # make the bias visible in the comparison
        layer.bias[...] = jnp.linspace(-1, 1, n_out)
    return layer


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("lead", [(7,), (2, 3), ()])
def test_layer_matches_naive_loop(name, lead):
    layer = make_layer(name)
    x = jax.random.uniform(jax.random.key(1), (*lead, 3), minval=-0.99, maxval=0.99)
    y = layer(x)
    assert y.shape == (*lead, 5)
    np.testing.assert_allclose(np.asarray(y), naive_layer(layer, np.asarray(x)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(LAYERS))
def test_edge_activations_sum_to_layer_output(name):
    layer = make_layer(name)
    x = jax.random.normal(jax.random.key(2), (11, 3))
    edges = layer.edge_activations(x)
    assert edges.shape == (11, 3, 5)
    bias = jnp.zeros((1, 5)) if layer.bias is None else layer.bias[...][None]
    np.testing.assert_allclose(np.asarray(edges.sum(-2) + bias), np.asarray(layer(x)), atol=1e-5)


@pytest.mark.parametrize("name", list(LAYERS))
def test_jit_equals_eager_and_vmap_equals_batch(name):
    layer = make_layer(name)
    x = jax.random.uniform(jax.random.key(3), (16, 3), minval=-1, maxval=1)
    eager = layer(x)
    jitted = nnx.jit(lambda m, v: m(v))(layer, x)
    graphdef, state = nnx.split(layer)
    pure = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, x)
    mapped = jax.vmap(lambda v: nnx.merge(graphdef, state)(v))(x)
    for other in (jitted, pure, mapped):
        np.testing.assert_allclose(np.asarray(other), np.asarray(eager), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_check_grads_on_layer(name):
    layer = make_layer(name, n_in=2, n_out=3)
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    # Stay away from knots: B-splines are only piecewise smooth there.
    x = jnp.array([[0.13, -0.41], [0.77, 0.29]], jnp.float32)

    def f(p, v):
        return nnx.merge(graphdef, p, rest)(v)

    check_grads(f, (params, x), order=1, modes=["rev", "fwd"], eps=1e-2, atol=2e-2, rtol=2e-2)


def test_pure_kan_layer_equals_module():
    layer = make_layer("bspline")
    x = jax.random.uniform(jax.random.key(4), (9, 3), minval=-1, maxval=1)
    b = basis_lib.bspline_basis(x, layer.grid[...], layer.order)
    y = kanjax.kan_layer(x, b, layer.w_base[...], layer.w_spline[...], layer.coef[...])
    np.testing.assert_allclose(np.asarray(y), np.asarray(layer(x)), atol=1e-6)


def test_seed_shaped_kan_has_336_parameters():
    model = kanjax.KAN([2, 4, 4, 1], basis="taylor", degree=9, rngs=nnx.Rngs(0))
    n = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == 336
    assert not jax.tree.leaves(nnx.state(model, kanjax.SplineGrid))


def test_bspline_grid_is_non_trainable_state():
    model = kanjax.KAN([2, 3, 1], basis="bspline", grid_size=5, order=3, rngs=nnx.Rngs(0))
    grids = jax.tree.leaves(nnx.state(model, kanjax.SplineGrid))
    assert [g.shape for g in grids] == [(2, 12), (3, 12)]
    params = nnx.state(model, nnx.Param)
    assert all(leaf.shape != (2, 12) for leaf in jax.tree.leaves(params))
    n = sum(p.size for p in jax.tree.leaves(params))
    assert n == (2 * 3 + 3 * 1) * (8 + 2)


def test_custom_grid_used_and_checked():
    knots = np.array([-3.0, -2.0, -1.0, -0.5, 0.0, 0.2, 1.0, 2.0, 3.0])
    layer = kanjax.KANLayer(2, 1, basis="bspline", order=2, grid=knots, rngs=nnx.Rngs(0))
    assert layer.grid_size == 4 and layer.coef.shape == (2, 1, 6)
    x = jnp.array([[0.1, -0.7]])
    np.testing.assert_allclose(np.asarray(layer(x)), naive_layer(layer, np.asarray(x)), atol=1e-5)
    with pytest.raises(ValueError, match="sorted"):
        kanjax.KANLayer(2, 1, basis="bspline", order=2, grid=knots[::-1], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="at least 6 knots"):
        kanjax.KANLayer(2, 1, basis="bspline", order=2, grid=knots[:5], rngs=nnx.Rngs(0))


def test_deep_taylor_on_wide_inputs_stays_finite():
    model = kanjax.KAN([2, 8, 8, 8, 1], basis="taylor", degree=9, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (512, 2), minval=-3, maxval=3)
    y = jnp.sin(x[:, :1]) * x[:, 1:]
    model, history = kanjax.train(model, (x, y), epochs=5, progress=False)
    assert np.all(np.isfinite(history.train_loss))
    assert np.all(np.isfinite(np.asarray(model(10 * x))))


def test_dtype_options():
    model = kanjax.KAN([2, 3, 1], basis="taylor", degree=3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    y = model(jnp.ones((4, 2)))
    assert y.dtype == jnp.bfloat16
    assert model.layers[0].coef[...].dtype == jnp.float32


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(widths=[3]), ValueError, "at least 2 entries"),
        (dict(widths=[2, 0, 1]), ValueError, r"widths\[1\] must be >= 1"),
        (dict(widths=[2, -3]), ValueError, "must be >= 1"),
        (dict(widths=[2, 2.5]), TypeError, "must be an integer"),
        (dict(widths="21"), TypeError, "sequence of integers"),
        (dict(widths=[2, 1], basis="taylor", degree=-1), ValueError, "degree must be >= 0"),
        (dict(widths=[2, 1], basis="bspline", grid_size=0), ValueError, "grid_size must be >= 1"),
        (dict(widths=[2, 1], basis="bspline", order=-2), ValueError, "order must be >= 0"),
        (dict(widths=[2, 1], basis="fourier"), ValueError, "basis must be one of"),
        (dict(widths=[2, 1], basis="taylor", squash="relu"), ValueError, "unknown squash"),
    ],
)
def test_bad_construction(kwargs, err, match):
    with pytest.raises(err, match=match):
        kanjax.KAN(kwargs.pop("widths"), rngs=nnx.Rngs(0), **kwargs)


def test_wrong_feature_count_is_named():
    model = kanjax.KAN([3, 2], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="expects inputs with 3 features"):
        model(jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="expects inputs with 3 features"):
        kanjax.MLP([3, 4, 1], rngs=nnx.Rngs(0))(jnp.ones((4, 5)))


def test_uniform_layer_uses_fast_path_equal_to_reference():
    layer = kanjax.KANLayer(3, 2, basis="bspline", grid_size=7, order=3, rngs=nnx.Rngs(0))
    assert layer.uniform
    x = jax.random.uniform(jax.random.key(5), (50, 3), minval=-1.3, maxval=1.3)
    ref = basis_lib.bspline_basis(x, layer.grid[...], 3)
    np.testing.assert_allclose(np.asarray(layer.basis_values(x)), np.asarray(ref), atol=2e-6)
    same = kanjax.KANLayer(3, 2, basis="bspline", order=3, grid=np.asarray(layer.grid[...]),
                           rngs=nnx.Rngs(0))
    assert same.uniform  # a uniform custom grid also takes the fast path
    skewed = np.asarray(layer.grid[...]).copy()
    skewed[:, 5] += 0.05
    assert not kanjax.KANLayer(3, 2, basis="bspline", order=3, grid=skewed, rngs=nnx.Rngs(0)).uniform


@pytest.mark.parametrize("basis", [pytest.param("bspline", marks=pytest.mark.slow), "taylor"])
def test_hessian_wrt_inputs_matches_finite_differences(basis):
    # Forward-over-reverse (jax.hessian) works through the analytic basis derivatives,
    # which matters for physics-informed losses.
    model = kanjax.KAN([2, 3, 1], basis=basis, rngs=nnx.Rngs(0))
    f = lambda v: model(v[None])[0, 0]  # noqa: E731
    x0 = jnp.array([0.13, -0.37])
    hess = np.asarray(jax.hessian(f)(x0))
    grad, eps = jax.grad(f), 1e-2
    fd = np.stack([(grad(x0 + e) - grad(x0 - e)) / (2 * eps) for e in np.eye(2) * eps])
    np.testing.assert_allclose(hess, fd, atol=2e-3)


def _reference_call(layer, x, params, grid=None):
    """The layer's output through the plain autodiff path (kan_layer_kmajor on basis values)."""
    w_b, w_s, c = (params[k][...] for k in ("w_base", "w_spline", "coef"))
    if layer.basis == "taylor":
        b = basis_lib.power_basis(basis_lib.squash(x, layer.squash), layer.degree)
    else:
        knots = (layer.grid[...] if grid is None else grid).T
        # the plain recursion, differentiated by autodiff (no analytic derivative rule)
        b = jnp.swapaxes(basis_lib._cox_de_boor_kmajor(x, knots, layer.order), -1, -2)
    return kanjax.kan_layer(x, b, w_b, w_s, c)


@pytest.mark.parametrize("kwargs", [
    dict(basis="taylor", degree=0),
    dict(basis="taylor", degree=3, squash=None),
    dict(basis="bspline", grid_size=5, order=2),
    dict(basis="bspline", order=3, grid=[-1.0, -0.8, -0.7, -0.5, -0.1, 0.2, 0.3, 0.6, 0.9, 1.2]),
])
# both weight layouts, and a single output (where XLA turns g W^T into an outer product)
@pytest.mark.parametrize("n_out", [1, 4, layer_lib._OUT_MAJOR_MAX + 1])
def test_layer_derivatives_equal_plain_autodiff(kwargs, n_out):
    # KANLayer differentiates through kan_layer_from_basis's own JVP rule; every derivative
    # (reverse, forward, second order) must equal plain autodiff of the same maths.
    layer = kanjax.KANLayer(3, n_out, rngs=nnx.Rngs(2), **kwargs)
    graphdef, p, rest = nnx.split(layer, nnx.Param, ...)
    x = jax.random.uniform(jax.random.key(7), (6, 3), minval=-0.95, maxval=0.95)

    def ours(p, v):
        return nnx.merge(graphdef, p, rest)(v)

    def ref(p, v):
        return _reference_call(layer, v, p)

    tangent = (jax.tree.map(jnp.ones_like, p), jnp.full_like(x, 0.5))

    def derivatives(p, v, tangent, f=None):
        loss = lambda p, v: jnp.sum(jnp.sin(f(p, v)))  # noqa: E731
        return (f(p, v), jax.grad(loss, argnums=(0, 1))(p, v), jax.jvp(f, (p, v), tangent)[1],
                jax.hessian(lambda u: jnp.sum(f(p, u[None])))(v[0]))

    got = jax.tree.leaves(jax.jit(derivatives, static_argnames="f")(p, x, tangent, f=ours))
    want = jax.tree.leaves(jax.jit(derivatives, static_argnames="f")(p, x, tangent, f=ref))
    assert len(got) == len(want) == 7  # value, 4 gradients (3 parameters, x), jvp, hessian
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)


def test_gradient_wrt_knots_flows_through_the_layer():
    # Knots are state, not parameters, but a user may still differentiate through them.
    layer = kanjax.KANLayer(2, 3, basis="bspline", grid=[-1.2, -1, -0.6, -0.1, 0.3, 0.7, 1, 1.3],
                            order=2, rngs=nnx.Rngs(0))
    graphdef, grid, rest = nnx.split(layer, kanjax.SplineGrid, ...)
    x = jnp.array([[0.1, -0.5], [0.45, 0.8], [-0.3, 0.05]])

    def ours(g):
        return jnp.sum(nnx.merge(graphdef, g, rest)(x) ** 2)

    params = nnx.state(layer, nnx.Param)
    ref = lambda g: jnp.sum(_reference_call(layer, x, params, grid=g["grid"][...]) ** 2)  # noqa: E731
    got, want = (jax.jit(jax.grad(f))(grid)["grid"][...] for f in (ours, ref))
    assert np.abs(want).max() > 1e-3  # the check is not vacuous
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_initial_weights_follow_their_distribution_and_match_when_traced():
    """Init draws on the host when it can; traced construction (nnx.vmap, eval_shape) must agree."""
    layer = kanjax.KANLayer(16, 24, grid_size=5, order=3, coef_init=0.1, base_init=1.0,
                            spline_init=1.0, rngs=nnx.Rngs(3))
    w_base, coef = np.asarray(layer.w_base[...]), np.asarray(layer.coef[...])
    assert abs(w_base.std() - 1 / np.sqrt(3) / 4) < 0.02  # U(-1, 1) / sqrt(16)
    assert abs(coef.std() - 0.1 / np.sqrt(8)) < 0.003  # std coef_init / sqrt(K), K = 8
    np.testing.assert_allclose(layer.w_spline[...], np.full((16, 24), 0.25))
    assert layer.mask[...].dtype == jnp.float32 and bool(jnp.all(layer.mask[...] == 1))

    @jax.jit
    def traced(key):
        m = kanjax.KANLayer(16, 24, grid_size=5, order=3, rngs=nnx.Rngs(params=key))
        return m.w_base[...], m.w_spline[...], m.coef[...], m.grid[...]

    eager = kanjax.KANLayer(16, 24, grid_size=5, order=3, rngs=nnx.Rngs(params=jax.random.key(7)))
    for a, b in zip(traced(jax.random.key(7)), (eager.w_base, eager.w_spline, eager.coef, eager.grid)):
        np.testing.assert_allclose(a, b[...], rtol=1e-6, atol=1e-7)
    # bfloat16 parameters are drawn and cast on the host too
    half = kanjax.KANLayer(4, 3, param_dtype=jnp.bfloat16, use_bias=True, rngs=nnx.Rngs(0))
    assert {half.w_base.dtype, half.coef.dtype, half.bias.dtype, half.grid.dtype} == {jnp.dtype(jnp.bfloat16)}


def test_fast_compile_jit_nests_inside_other_traces():
    from kanjax._xla import fast_compile_jit

    f = fast_compile_jit(lambda x, n: jnp.sin(x) * n, static_argnums=1)
    x = jnp.linspace(-1.0, 1.0, 7)
    np.testing.assert_allclose(f(x, 3), jnp.sin(x) * 3, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda v: f(v, 2))(x), jnp.sin(x) * 2, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda v: f(v, 2))(x[:, None])[:, 0], jnp.sin(x) * 2,
                               rtol=1e-6)
    assert jax.eval_shape(lambda v: f(v, 1), x).shape == (7,)
