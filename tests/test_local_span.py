"""The local B-spline path (only the k + 1 active basis functions per input) against the dense
path and scipy: values, derivatives of every order, transformations, training, the option."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy.interpolate import BSpline

import kanjax
from kanjax import basis as basis_lib
from kanjax import local_spline
from kanjax.kanlayer import KANLayer


def _inputs(n, n_in, grid_size, order, seed=0):
    """Points inside and outside [-1, 1] (the grid), on interior and end knots included."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.6, 1.6, (n, n_in))
    knots = np.linspace(-1, 1, grid_size + 1)
    x[: min(n, grid_size + 1), 0] = knots[: min(n, grid_size + 1)]
    h = 2 / grid_size
    x[-4:, -1] = [-1 - order * h - 0.1, -1 - order * h, 1 + order * h, 1 + order * h + 0.3]
    return x.astype(np.float32)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _dense_sum(x, table, grid_size, order):
    """The reference: the full uniform basis times the table, ``(..., n_out)``."""
    n_in, num_basis, _ = table.shape
    h = 2 / grid_size
    values = basis_lib.uniform_bspline_basis(x, jnp.full(n_in, -1 - order * h),
                                             jnp.full(n_in, h), num_basis, order)
    return jnp.einsum("...pi,piq->...q", values, table)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _local_sum(x, table, grid_size, order):
    n_in = table.shape[0]
    h = 2 / grid_size
    return local_spline.local_spline_sum(x, jnp.full(n_in, -1 - order * h, x.dtype),
                                         jnp.full(n_in, h, x.dtype), table, order)


@pytest.mark.parametrize("grid_size", [3, 5, 50, 100])
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_local_sum_equals_dense_and_scipy(grid_size, order):
    x = _inputs(200, 3, grid_size, order)
    table = jax.random.normal(jax.random.key(grid_size), (3, grid_size + order, 2))
    local = np.asarray(_local_sum(jnp.asarray(x), table, grid_size, order))
    dense = np.asarray(_dense_sum(jnp.asarray(x), table, grid_size, order))
    h = 2 / grid_size
    knots = -1 + h * np.arange(-order, grid_size + order + 1)
    off_knot = np.abs((x - knots[0]) / h - np.round((x - knots[0]) / h)) > 1e-3
    # order 0 jumps at every knot: a point on a knot may round to either side, and two
    # compiled programs need not round it alike; continuous splines are compared everywhere
    same = off_knot.all(axis=1) if order == 0 else slice(None)
    np.testing.assert_allclose(local[same], dense[same], atol=2e-5, rtol=1e-5)
    # scipy: each basis function is a B-spline element on k + 2 consecutive knots (zero off
    # its support); knot points are left to the dense comparison (one-sided conventions)
    ref = np.zeros((x.shape[0], 2))
    for p in range(3):
        for j in range(grid_size + order):
            element = BSpline.basis_element(knots[j:j + order + 2], extrapolate=False)
            b = np.nan_to_num(element(x[:, p].astype(np.float64)))
            ref += b[:, None] * np.asarray(table[p, j], np.float64)[None, :]
    rows = off_knot.all(axis=1)
    np.testing.assert_allclose(local[rows], ref[rows], atol=2e-5, rtol=1e-5)


def _layers(grid_size, order, **kwargs):
    dense = KANLayer(3, 2, grid_size=grid_size, order=order, spline_eval="dense",
                     rngs=nnx.Rngs(0), **kwargs)
    local = KANLayer(3, 2, grid_size=grid_size, order=order, spline_eval="local",
                     rngs=nnx.Rngs(0), **kwargs)
    return dense, local


@pytest.mark.parametrize("grid_size,order", [(3, 1), (5, 2), (50, 3), (100, 3)])
def test_layer_gradients_equal_dense(grid_size, order):
    dense, local = _layers(grid_size, order, use_bias=True)
    x = jnp.asarray(_inputs(64, 3, grid_size, order, seed=1))
    y_target = jnp.sin(x[:, :2])

    def grads(layer):
        graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

        def loss(p, x):
            return jnp.mean((nnx.merge(graphdef, p, rest)(x) - y_target) ** 2)
        return jax.grad(loss, argnums=(0, 1))(params, x)

    (gp_d, gx_d), (gp_l, gx_l) = grads(dense), grads(local)
    for a, b in zip(jax.tree.leaves(gp_d), jax.tree.leaves(gp_l)):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4)
    # for k <= 1 the slope jumps at the knots: a point on one may take either side's slope
    h = 2 / grid_size
    s = (np.asarray(x) + 1 + order * h) / h
    rows = ~(np.abs(s - np.round(s)) < 1e-3).any(axis=1) if order <= 1 else slice(None)
    np.testing.assert_allclose(np.asarray(gx_l)[rows], np.asarray(gx_d)[rows], atol=1e-5,
                               rtol=1e-4)


@pytest.mark.parametrize("grid_size,order", [(5, 2), (5, 3), (100, 3)])
def test_second_derivatives_equal_dense_and_finite_differences(grid_size, order):
    dense, local = _layers(grid_size, order)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.uniform(-0.9, 0.9, 3).astype(np.float32))

    def f(layer):
        return lambda v: jnp.sum(layer(v) * jnp.array([1.0, -0.5]))

    # each derivative is one compiled program (eager dispatch would compile every operation)
    h_dense, h_local = jax.jit(jax.hessian(f(dense)))(x), jax.jit(jax.hessian(f(local)))(x)
    np.testing.assert_allclose(h_local, h_dense, atol=1e-4, rtol=1e-4)
    assert np.abs(np.asarray(h_local)).max() > 1e-3  # a real curvature, not zeros
    # forward over reverse and reverse over forward agree too
    h_fwd = jax.jit(jax.jacfwd(jax.grad(f(local))))(x)
    h_rev = jax.jit(jax.jacrev(jax.jacfwd(f(local))))(x)
    np.testing.assert_allclose(h_fwd, h_dense, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(h_rev, h_dense, atol=1e-4, rtol=1e-4)
    # central differences of the gradient (the second derivative is continuous for k >= 2)
    eps = 1e-2 / grid_size
    grad = jax.jit(jax.grad(f(local)))
    fd = np.stack([(grad(x + eps * e) - grad(x - eps * e)) / (2 * eps) for e in np.eye(3)])
    scale = np.abs(np.asarray(h_dense)).max()
    np.testing.assert_allclose(fd, h_local, atol=2e-2 * scale)


def test_jvp_equals_dense():
    dense, local = _layers(50, 3)
    x = jnp.asarray(_inputs(32, 3, 50, 3, seed=3))
    t = jax.random.normal(jax.random.key(1), x.shape)
    yd, td = jax.jvp(dense, (x,), (t,))
    yl, tl = jax.jvp(local, (x,), (t,))
    np.testing.assert_allclose(yl, yd, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(tl, td, atol=1e-4, rtol=1e-4)


def test_jit_equals_eager_and_vmap_equals_batch():
    _, local = _layers(50, 3)
    x = jnp.asarray(_inputs(16, 3, 50, 3, seed=4))
    eager = local(x)
    np.testing.assert_allclose(nnx.jit(lambda m, v: m(v))(local, x), eager, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(local)(x), eager, atol=1e-6, rtol=1e-6)
    batched = local(x.reshape(4, 4, 3))  # any leading batch dimensions
    np.testing.assert_allclose(batched.reshape(16, 2), eager, atol=1e-6, rtol=1e-6)


def _train_losses(spline_eval, grid_size, steps=5):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.uniform(-1, 1, (128, 4)).astype(np.float32))
    y = jnp.sum(x ** 2, axis=1, keepdims=True)
    model = kanjax.KAN([4, 6, 1], grid_size=grid_size, spline_eval=spline_eval, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state):
        loss, g = jax.value_and_grad(
            lambda p: jnp.mean((nnx.merge(graphdef, p, rest)(x) - y) ** 2))(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    losses = []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("grid_size", [5, 50])
def test_training_gives_the_same_losses(grid_size):
    dense = _train_losses("dense", grid_size)
    np.testing.assert_allclose(_train_losses("local", grid_size), dense, rtol=1e-4)
    assert dense[-1] < dense[0]


@pytest.mark.parametrize("spline_eval", ["auto", "local"])
def test_local_layers_combine_multiplication_nodes_and_symbolic_edges(spline_eval):
    """The local path ends like the dense one: symbolic edges added, product nodes formed."""
    x = jnp.asarray(_inputs(16, 3, 50, 3, seed=8))
    models = [kanjax.KAN([3, [1, 1], 1], grid_size=50, spline_eval=e, rngs=nnx.Rngs(0))
              for e in ("dense", spline_eval)]
    for m in models:
        kanjax.fix_symbolic(m, 0, 0, 1, "sin", affine=(1.5, 0.2, 0.7, -0.1))
    dense, local = (np.asarray(m(x)) for m in models)
    assert local.shape == dense.shape == (16, 1)
    np.testing.assert_allclose(local, dense, atol=2e-5, rtol=1e-5)


def test_auto_rule_and_non_uniform_grids():
    assert not local_spline.use_local("auto", 5 + 3, 3, True)
    assert local_spline.use_local("auto", 100 + 3, 3, True)
    # the switch: G + k >= LOCAL_MIN_RATIO (k + 1), G >= 21 for cubic splines
    assert not local_spline.use_local("auto", 20 + 3, 3, True)
    assert local_spline.use_local("auto", 21 + 3, 3, True)
    assert local_spline.use_local("local", 5 + 3, 3, True)
    assert not local_spline.use_local("dense", 100 + 3, 3, True)
    # knots moved to the data: polynomial pieces from G + k >= PIECES_MIN_RATIO (k + 1)
    assert not local_spline.use_local("auto", 16 + 3, 3, False)
    assert local_spline.use_local("auto", 17 + 3, 3, False)
    assert local_spline.use_local("local", 100 + 3, 3, False)
    assert not local_spline.use_local("auto", 100 + 3, 3, False, batch=1)  # one sample (vmap)
    assert local_spline.use_local("auto", 100 + 3, 3, False, batch=2)
    assert not local_spline.use_local("auto", 100 + 3, 3, True, batch=1)  # uniform too
    assert local_spline.use_local("auto", 100 + 3, 3, True, batch=2)
    assert local_spline.use_local("local", 100 + 3, 3, True, batch=1)  # asked for: always
    assert not local_spline.use_local("dense", 100 + 3, 3, False)
    with pytest.raises(ValueError, match="spline_eval must be one of"):
        local_spline.use_local("fast", 8, 3, True)
    knots = np.concatenate([[-1.3, -1.2, -1.1], np.sort(np.random.default_rng(0).uniform(
        -1, 1, 40)), [1.1, 1.2, 1.3]])
    layer = KANLayer(2, 2, grid=knots, order=3, spline_eval="local", rngs=nnx.Rngs(0))
    ref = KANLayer(2, 2, grid=knots, order=3, spline_eval="dense", rngs=nnx.Rngs(0))
    x = jnp.linspace(-1.4, 1.4, 20).reshape(10, 2)
    np.testing.assert_allclose(layer(x), ref(x), atol=1e-5)


def _knots(n_in, grid_size, order, seed):
    """Non-uniform knot vectors ``(n_in, G + 2k + 1)`` on about [-1, 1], one with a repeated
    interior knot."""
    rng = np.random.default_rng(seed)
    knots = np.sort(rng.uniform(-1, 1, (n_in, grid_size + 2 * order + 1)), axis=1)
    knots[0, order + 2] = knots[0, order + 1]  # an empty interval
    return knots.astype(np.float32)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_piece_sum_equals_dense_and_scipy(order):
    """Polynomial pieces on non-uniform knots (with an empty interval; points outside, on and
    between the knots) against the Cox-de Boor basis and scipy."""
    grid_size, n_in = 9, 3
    knots = _knots(n_in, grid_size, order, seed=order)
    rng = np.random.default_rng(10 + order)
    x = rng.uniform(-1.3, 1.3, (120, n_in)).astype(np.float32)
    x[: knots.shape[1], 1] = knots[1]
    table = rng.normal(size=(n_in, grid_size + order, 2)).astype(np.float32)
    got = np.asarray(jax.jit(local_spline.piece_spline_sum, static_argnums=3)(
        jnp.asarray(x), jnp.asarray(knots), jnp.asarray(table), order))
    dense = np.einsum("bpj,pjq->bq", basis_lib.bspline_basis(x, knots, order), table)
    np.testing.assert_allclose(got, dense, atol=2e-5, rtol=1e-5)
    ref = np.zeros_like(dense, dtype=np.float64)
    for p in range(n_in):
        for j in range(grid_size + order):
            element = BSpline.basis_element(knots[p, j:j + order + 2].astype(np.float64),
                                            extrapolate=False)
            ref += np.nan_to_num(element(x[:, p].astype(np.float64)))[:, None] * table[p, j]
    off_knot = ~np.isin(x, knots).any(axis=1)  # scipy's closed last interval differs on knots
    np.testing.assert_allclose(got[off_knot], ref[off_knot], atol=2e-5, rtol=1e-5)


# order 2 runs with the slow tests: orders 1 and 3 cover the rule, 3 the Hessian
@pytest.mark.parametrize("order", [1, pytest.param(2, marks=pytest.mark.slow), 3])
def test_piece_sum_derivatives_equal_dense(order):
    """Gradients in inputs, coefficients and knots, and second derivatives in the inputs."""
    grid_size, n_in = 12, 3
    knots = jnp.asarray(_knots(n_in, grid_size, order, seed=20 + order))
    rng = np.random.default_rng(30 + order)
    x = jnp.asarray(rng.uniform(-0.9, 0.9, (48, n_in)).astype(np.float32))
    table = jnp.asarray(rng.normal(size=(n_in, grid_size + order, 2)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(48, 2)).astype(np.float32))

    def dense(x, t, k):
        return jnp.einsum("bpj,pjq->bq", basis_lib.bspline_basis(x, k, order), t)

    def local(x, t, k):
        return local_spline.piece_spline_sum(x, k, t, order)

    grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * w), argnums=(0, 1, 2)))(
        x, table, knots) for f in (dense, local)]
    for want, got in zip(*grads):
        scale = float(np.abs(np.asarray(want)).max())
        assert scale > 0
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5 * scale)
    if order >= 2:
        h = [jax.jit(jax.hessian(lambda v, f=f: jnp.sum(f(v[None], table, knots) * w[:1])))(x[0])
             for f in (dense, local)]
        np.testing.assert_allclose(h[1], h[0], atol=1e-4 * float(np.abs(h[0]).max()))


def test_refined_grids_train_the_same_on_both_paths():
    """Grids moved to the data (non-uniform) take the polynomial pieces and train as dense."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.uniform(-1, 1, (128, 3)).astype(np.float32))
    y = jnp.sin(x[:, :1]) + x[:, 1:2] * x[:, 2:]
    losses = []
    for spline_eval in ("dense", "local"):
        model = kanjax.KAN([3, 4, 1], grid_size=5, spline_eval=spline_eval, rngs=nnx.Rngs(0))
        model.refine(30, x)
        assert not model.layers[0].uniform
        _, history = kanjax.train(model, (x, y), epochs=5, batch_size=64, progress=False)
        losses.append(history.train_loss)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    assert losses[0][-1] < losses[0][0]


def test_config_round_trip_and_older_configs():
    layer = KANLayer(2, 3, grid_size=40, spline_eval="dense", rngs=nnx.Rngs(0))
    config = layer.config()
    assert config["spline_eval"] == "dense"
    assert KANLayer.from_config(config, rngs=nnx.Rngs(0)).spline_eval == "dense"
    older = {k: v for k, v in config.items() if k != "spline_eval"}
    assert KANLayer.from_config(older, rngs=nnx.Rngs(0)).spline_eval == "auto"
    with pytest.raises(kanjax.schema.ConfigError, match="spline_eval"):
        KANLayer.from_config({**config, "spline_eval": "sparse"}, rngs=nnx.Rngs(0))
    assert "spline_eval" not in KANLayer(2, 3, basis="taylor", rngs=nnx.Rngs(0)).config()


@functools.partial(jax.jit, static_argnums=(1, 2))
def _window_placed_and_full(s, num_basis, order):
    """The window's values placed at their basis indices, and the full basis, at ``s``."""
    first, values = basis_lib.cardinal_window(s[:, None], num_basis, order)
    full = basis_lib.uniform_bspline_basis(s[:, None], 0.0, 1.0, num_basis, order)[:, 0]
    placed = sum(values[:, 0, l, None] * (jnp.arange(num_basis)[None, :] == first[:, 0, None] + l)
                 for l in range(order + 1))
    return first, placed, full


def test_window_values_are_the_active_basis_functions():
    s = jnp.linspace(-3.0, 14.0, 171)
    for order in range(4):
        num_basis = 8 + order
        first, placed, full = _window_placed_and_full(s, num_basis, order)
        np.testing.assert_allclose(placed, full, atol=1e-6)
        assert int(first.min()) >= 0 and int(first.max()) <= num_basis - order - 1


def test_reverse_mode_stores_no_input_by_output_tensor():
    """The gradient in inputs and coefficients keeps no ``(batch, n_in, n_out)`` tensor (the
    input tangent's scan is rematerialised), so its working memory stays below one's size
    (storing the slope sums took 47 MB here, the tensor's 34 MB and the scan's buffers)."""
    batch, n_in, n_out, grid_size = 2048, 64, 64, 50
    x = jnp.asarray(_inputs(batch, n_in, grid_size, 3, seed=8))
    table = jax.random.normal(jax.random.key(9), (n_in, grid_size + 3, n_out))
    w = jax.random.normal(jax.random.key(10), (batch, n_out))
    grad = jax.jit(jax.grad(lambda x, t: jnp.sum(_local_sum(x, t, grid_size, 3) * w),
                            argnums=(0, 1)))
    memory = grad.lower(x, table).compile().memory_analysis()
    if memory is None:
        pytest.skip("this backend reports no memory analysis")
    assert memory.temp_size_in_bytes < 4 * batch * n_in * n_out
    dx, dtable = grad(x, table)
    dense_dx, dense_dtable = jax.jit(jax.grad(
        lambda x, t: jnp.sum(_dense_sum(x, t, grid_size, 3) * w), argnums=(0, 1)))(x, table)
    # float32 sums of 2048 (coefficients) and 64 x 4 (inputs) terms: compared at their scale
    for got, want in ((dtable, dense_dtable), (dx, dense_dx)):
        scale = float(np.abs(np.asarray(want)).max())
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=2e-5 * scale)


def test_chunks_divide_the_inputs():
    assert local_spline.chunk_features(64, 1024, 64, 8) == 8  # (1024, 8, 64) buffers
    assert local_spline.chunk_features(64, 1024, 64, 103) == 4  # tables of 4 x 103 x 64
    assert local_spline.chunk_features(64, 128, 64, 103) == 4
    assert local_spline.chunk_features(67, 1024, 64, 8) == 1  # prime: one input per step
    assert local_spline.chunk_features(64, 1024, 1, 103) == 64
    # accelerators: no table cap, per-step buffers up to 2^24 elements
    assert local_spline.chunk_features(64, 1024, 64, 103, backend="gpu") == 64
    assert local_spline.chunk_features(256, 4096, 256, 53, backend="tpu") == 16
    assert local_spline.chunk_features(256, 4096, 256, 53) == 1
    x = jnp.asarray(_inputs(16, 7, 50, 3, seed=6))
    table = jax.random.normal(jax.random.key(7), (7, 53, 3))
    np.testing.assert_allclose(_local_sum(x, table, 50, 3), _dense_sum(x, table, 50, 3),
                               atol=2e-5, rtol=1e-5)


# bfloat16 on refined grids runs with the slow tests; float16 there is the tighter range
@pytest.mark.parametrize("kwargs,refined", [
    ({"dtype": jnp.bfloat16}, False), ({"param_dtype": jnp.float16}, False),
    ({"dtype": jnp.bfloat16, "param_dtype": jnp.bfloat16}, False),
    ({"param_dtype": jnp.float16}, True),
    pytest.param({"dtype": jnp.bfloat16}, True, marks=pytest.mark.slow),
    pytest.param({"dtype": jnp.bfloat16, "param_dtype": jnp.bfloat16}, True,
                 marks=pytest.mark.slow)])
def test_half_precision_matches_dense(kwargs, refined):
    """Low-precision compute and parameters (as on TPUs and GPUs) give the dense path's dtypes
    and, to that precision, its values and gradients, on uniform grids and on grids moved to
    the data (polynomial pieces, whose coefficients must keep a float16 range)."""
    x = jnp.asarray(_inputs(64, 3, 50, 3, seed=11))
    results = []
    for spline_eval in ("dense", "local"):
        model = kanjax.KAN([3, 4, 2], grid_size=5 if refined else 50, spline_eval=spline_eval,
                           rngs=nnx.Rngs(0), **kwargs)
        if refined:
            model.refine(50, jnp.clip(x, -1, 1))
            assert not model.layers[0].uniform
        # one compiled program for the values and the gradients
        y, grads = nnx.jit(lambda m: (m(x), nnx.grad(
            lambda m: jnp.mean(m(x).astype(jnp.float32) ** 2))(m)))(model)
        results.append((y, jax.tree.leaves(grads)))
    (y_dense, g_dense), (y_local, g_local) = results
    assert y_local.dtype == y_dense.dtype
    eps = float(jnp.finfo(y_dense.dtype).eps)
    scale = float(jnp.abs(y_dense.astype(jnp.float32)).max())
    np.testing.assert_allclose(np.asarray(y_local, np.float32), np.asarray(y_dense, np.float32),
                               atol=8 * eps * scale)
    for a, b in zip(g_dense, g_local):
        assert b.dtype == a.dtype
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        # sums of 64 terms in the compute precision, rounded differently: compared as a whole
        # (7% apart at most in bfloat16 here; a wrong or missing term is off by ~100%)
        assert np.linalg.norm(b - a) <= 20 * eps * np.linalg.norm(a) + 1e-6
