import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import kanjax
from kanjax import basis, grids


def smooth_layer(n_in=2, n_out=3, grid_size=6, order=3, seed=0):
    """A B-spline layer whose edges are smooth functions (coefficients sampled from sines)."""
    layer = kanjax.KANLayer(n_in, n_out, basis="bspline", grid_size=grid_size, order=order,
                            rngs=nnx.Rngs(seed))
    centers = np.linspace(-1.5, 1.5, grid_size + order)
    freq = 1.0 + np.arange(n_in * n_out).reshape(n_in, n_out, 1) * 0.3
    layer.coef[...] = jnp.asarray(np.sin(freq * centers), jnp.float32)
    return layer


def test_grid_from_samples_shapes_and_blend(rng):
    x = jnp.asarray(rng.normal(size=(2000, 3)) ** 3, jnp.float32)  # heavy tails
    g = np.asarray(grids.grid_from_samples(x, 4, 3, grid_eps=0.0))
    assert g.shape == (3, 4 + 7)
    assert np.all(np.diff(g, axis=1) > 0)
    np.testing.assert_allclose(g[:, 3], np.asarray(x.min(0)), rtol=1e-6)
    np.testing.assert_allclose(g[:, 7], np.asarray(x.max(0)), rtol=1e-6)
    counts = [np.histogram(np.asarray(x[:, 0]), bins=g[0, 3:8])[0]]
    assert np.ptp(counts) <= 2  # percentile grid: equal samples per interval
    u = np.asarray(grids.grid_from_samples(x, 4, 3, grid_eps=1.0))
    np.testing.assert_allclose(np.diff(u, axis=1), np.diff(u, axis=1)[:, :1] * np.ones((1, 10)), rtol=1e-4)
    flat = grids.grid_from_samples(jnp.ones((10, 1)), 2, 1)
    assert np.all(np.diff(np.asarray(flat)) > 0)  # a constant column still gets a valid grid


def test_grid_maths_on_host_arrays_equals_jax_and_numpy_quantiles(rng):
    # The grid maths takes NumPy arrays too (host refits): same knots as the jax.numpy
    # path, inner knots at numpy's percentiles for grid_eps=0, and the same refit.
    x = rng.normal(size=(501, 3)) ** 3
    levels = np.linspace(0, 1, 7)[1:-1]
    host = grids.grid_from_samples(x, 6, 3, grid_eps=0.0, margin=0.1)
    assert isinstance(host, np.ndarray) and host.dtype == np.float64
    np.testing.assert_allclose(host[:, 4:9], np.quantile(x, levels, axis=0).T, rtol=1e-12)
    traced = grids.grid_from_samples(jnp.asarray(x, jnp.float32), 6, 3, grid_eps=0.3)
    np.testing.assert_allclose(grids.grid_from_samples(x, 6, 3, grid_eps=0.3), traced,
                               rtol=1e-5, atol=1e-5)
    targets = np.sin(x)[:, :, None] * np.array([1.0, -0.5])
    fit_host = grids.fit_coefficients(x, targets, host, 3)
    fit_jax = grids.fit_coefficients(*(jnp.asarray(a, jnp.float32) for a in (x, targets, host)),
                                     3)
    assert isinstance(fit_host, np.ndarray) and fit_host.shape == (3, 2, 9)
    np.testing.assert_allclose(fit_host, fit_jax, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(basis.bspline_basis(x, host, 3),
                               basis.bspline_basis(jnp.asarray(x, jnp.float32),
                                                   jnp.asarray(host, jnp.float32), 3), atol=1e-5)


def test_refit_on_the_host_equals_the_compiled_refit(monkeypatch):
    from kanjax import regrid as regrid_lib

    x = jax.random.uniform(jax.random.key(5), (300, 2), minval=-1, maxval=1)

    def refined(host_limit):
        monkeypatch.setattr(regrid_lib, "HOST_REFIT_MAX_FLOPS", host_limit)
        model = kanjax.KAN([2, 3, 2], basis="bspline", grid_size=4, rngs=nnx.Rngs(0))
        model.refine(9, x, grid_eps=0.3, margin=0.1)
        return model

    host, device = refined(float("inf")), refined(0.0)
    for a, b in zip(host.layers, device.layers):
        assert a.grid[...].dtype == b.grid[...].dtype == jnp.float32
        assert (a.grid_size, a.uniform) == (b.grid_size, b.uniform) == (9, False)
        np.testing.assert_allclose(a.grid[...], b.grid[...], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.coef[...], b.coef[...], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(host(x), device(x), atol=1e-4)


def test_fit_coefficients_recovers_spline_even_with_empty_intervals(rng):
    grid = basis.uniform_grid(8, 3, (-1.0, 1.0), num_inputs=2)
    coef = jnp.asarray(rng.normal(size=(2, 3, 11)), jnp.float32)
    # samples only in [-1, 0.2]: several basis functions see no data at all
    x = jnp.asarray(rng.uniform(-1, 0.2, size=(400, 2)), jnp.float32)
    targets = jnp.einsum("npk,pqk->npq", basis.bspline_basis(x, grid, 3), coef)
    fitted = grids.fit_coefficients(x, targets, grid, 3)
    assert np.all(np.isfinite(np.asarray(fitted)))
    again = jnp.einsum("npk,pqk->npq", basis.bspline_basis(x, grid, 3), fitted)
    np.testing.assert_allclose(np.asarray(again), np.asarray(targets), atol=2e-3)
    assert float(jnp.abs(fitted[:, :, -3:]).max()) < 1.0  # unseen functions stay small


def test_update_grid_preserves_function_on_data(rng):
    layer = smooth_layer()
    x = jnp.asarray(rng.uniform(-1, 1, size=(3000, 2)), jnp.float32)
    before = layer(x)
    layer.update_grid(x, grid_eps=0.02)
    assert not layer.uniform
    err = float(jnp.max(jnp.abs(layer(x) - before)))
    assert err < 2e-3 * float(jnp.max(jnp.abs(before))), err
    g = np.asarray(layer.grid[...])
    np.testing.assert_allclose(g[:, 3], np.asarray(x.min(0)), rtol=1e-6)
    # Heavy tails: the percentile grid is sparse where samples are rare, so the bound is
    # on the least-squares error over the data, not the worst sample.
    layer = smooth_layer()
    x = jnp.asarray(rng.normal(scale=0.5, size=(3000, 2)), jnp.float32)
    before = layer(x)
    layer.update_grid(x)
    rms = lambda v: float(jnp.sqrt(jnp.mean(v**2)))  # noqa: E731
    assert rms(layer(x) - before) < 0.05 * rms(before)


def test_update_grid_is_independent_of_sample_order(rng):
    x = jnp.asarray(rng.uniform(-1, 1, size=(512, 2)), jnp.float32)
    a, b = smooth_layer(), smooth_layer()
    a.update_grid(x)
    b.update_grid(x[::-1])
    np.testing.assert_allclose(np.asarray(a.grid[...]), np.asarray(b.grid[...]), atol=1e-6)
    # float32 sums in another order: the function agrees closely; a coefficient of an
    # extension knot that the samples barely reach may differ a little more
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(a.coef[...]), np.asarray(b.coef[...]), atol=3e-4)


def test_refine_nested_grid_is_exact_and_reshapes():
    layer = smooth_layer(grid_size=5)
    x = jnp.linspace(-1, 1, 301)[:, None] * jnp.ones((1, 2))
    before = layer(x)
    layer.refine(10)
    assert layer.grid_size == 10 and layer.coef.shape == (2, 3, 13) and layer.uniform
    assert layer.grid.shape == (2, 17)
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(before), atol=1e-4)
    layer.refine(3)  # coarser: only approximate, but close for a smooth edge
    assert float(jnp.max(jnp.abs(layer(x) - before))) < 0.3


@pytest.mark.slow  # ~17 s; refine exactness is covered by the layer tests, training by notebook 02
def test_kan_grid_extension_then_training_continues():
    from kanjax.demo import seed_data

    (x, z), _ = seed_data(0, n_train=256, n_test=16)
    model = kanjax.KAN([2, 3, 1], basis="bspline", grid_size=3, rngs=nnx.Rngs(0))
    model, h1 = kanjax.train(model, (x, z), epochs=20, progress=False)
    before = model(x)
    model.refine(6, x)
    assert [layer.grid_size for layer in model.layers] == [6, 6]
    assert float(jnp.max(jnp.abs(model(x) - before))) < 0.05
    model, h2 = kanjax.train(model, (x, z), epochs=5, learning_rate=1e-3, progress=False)
    assert np.all(np.isfinite(h2.train_loss))
    assert h2.train_loss[-1] <= h1.train_loss[-1] * 1.5


def test_grid_operations_need_bspline_and_good_samples():
    taylor = kanjax.KANLayer(2, 2, basis="taylor", rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="needs a B-spline layer"):
        taylor.update_grid(jnp.ones((4, 2)))
    layer = smooth_layer()
    with pytest.raises(ValueError, match="non-finite"):
        layer.update_grid(jnp.array([[0.0, jnp.nan]]))
    with pytest.raises(ValueError, match="expects inputs with 2 features"):
        layer.update_grid(jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="grid_size must be >= 1"):
        layer.refine(0)


def test_grid_updates_inside_compiled_training_match_eager_update():
    import optax

    x = jax.random.uniform(jax.random.key(0), (300, 2), minval=-0.7, maxval=0.9)
    y = jnp.sin(3 * x[:, :1]) + x[:, 1:] ** 2
    trained = kanjax.KAN([2, 3, 1], basis="bspline", grid_size=5, rngs=nnx.Rngs(0))
    eager = kanjax.KAN([2, 3, 1], basis="bspline", grid_size=5, rngs=nnx.Rngs(0))
    # SGD with lr 0: only the in-program grid update changes the model.
    trained, h = kanjax.train(trained, (x, y), epochs=2, optimizer=optax.sgd(0.0),
                              grid_update_every=1, grid_update_until=1, progress=False)
    eager.update_grid(x)
    for a, b in zip(trained.layers, eager.layers):
        np.testing.assert_allclose(np.asarray(a.grid[...]), np.asarray(b.grid[...]), atol=1e-5)
        np.testing.assert_allclose(np.asarray(a.coef[...]), np.asarray(b.coef[...]), atol=1e-3)
    np.testing.assert_allclose(np.asarray(trained(x)), np.asarray(eager(x)), atol=1e-4)
    with pytest.raises(TypeError, match="B-spline layers"):
        kanjax.train(kanjax.KAN([2, 1], basis="taylor", rngs=nnx.Rngs(0)), (x, y),
                     grid_update_every=2, progress=False)


def test_training_with_grid_updates_is_deterministic():
    x = jax.random.uniform(jax.random.key(1), (256, 2), minval=-1, maxval=1)
    y = x[:, :1] * x[:, 1:]
    runs = []
    for _ in range(2):
        m = kanjax.KAN([2, 2, 1], basis="bspline", grid_size=4, rngs=nnx.Rngs(3))
        m, h = kanjax.train(m, (x, y), epochs=6, grid_update_every=2, seed=1, progress=False)
        runs.append((h.train_loss, np.asarray(m.layers[1].grid[...])))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_refine_from_few_samples_keeps_the_function_between_them(rng):
    # The refit uses the old spline everywhere on the new grid's span, not only at the
    # samples: a fine grid from a few samples must not wiggle between them.
    layer = smooth_layer(grid_size=5)
    half = rng.uniform(0.6, 1.0, size=(100, 2))  # samples on both ends, none in the middle
    x = jnp.asarray(np.concatenate([-half, half]), jnp.float32)
    lo, hi = x.min(0), x.max(0)
    dense = lo[None, :] + (hi - lo)[None, :] * jnp.linspace(0, 1, 500)[:, None]
    before = layer(dense)
    layer.refine(30, x, grid_eps=1.0)  # uniform knots: many intervals inside the gap
    err = float(jnp.max(jnp.abs(layer(dense) - before)))
    assert err < 1e-3 * float(jnp.max(jnp.abs(before))), err


def test_train_with_a_grid_schedule_extends_grids_and_keeps_one_history():
    x = jax.random.uniform(jax.random.key(2), (200, 2), minval=-1, maxval=1)
    y = jnp.sin(2 * x[:, :1]) * x[:, 1:]
    xt = jax.random.uniform(jax.random.key(3), (200, 2), minval=-1, maxval=1)
    yt = jnp.sin(2 * xt[:, :1]) * xt[:, 1:]
    model = kanjax.KAN([2, 3, 1], basis="bspline", grid_size=3, rngs=nnx.Rngs(0))
    model, h = kanjax.train(model, (x, y), epochs=4, batch_size=200, optimizer="lm",
                            validation_data=(xt, yt), grid_schedule=[(6, 4), (12, 4)],
                            grid_margin=0.1, progress=False)
    assert [layer.grid_size for layer in model.layers] == [12, 12]
    # both later stages ran programs compiled in the background from stand-ins
    assert h.config["stage_compiled_ahead"] == [True, True]
    starts = [first for first, _ in h.config["grid_stages"]]
    assert [g for _, g in h.config["grid_stages"]] == [3, 6, 12]
    assert starts[0] == 0 and starts[1] <= 4 and starts[2] <= starts[1] + 4
    assert len(h.train_loss) == len(h.val_loss) == len(h.wall_time)
    assert all(np.diff(h.wall_time) > 0)
    # the finer grids fit better (each stage starts from the refined, function-keeping model)
    assert h.train_loss[-1] < h.train_loss[starts[1] - 1] < h.train_loss[0]
    np.testing.assert_allclose(h.val_loss[-1], kanjax.evaluate(model, (xt, yt)), rtol=1e-4)
    with pytest.raises(TypeError, match="B-spline"):
        kanjax.train(kanjax.KAN([2, 1], basis="taylor", rngs=nnx.Rngs(0)), (x, y),
                     grid_schedule=[(5, 1)], progress=False)
    with pytest.raises(ValueError, match="grid sizes >= 1"):
        kanjax.train(model, (x, y), grid_schedule=[(0, 1)], progress=False)


def test_grid_schedule_is_deterministic_and_ahead_programs_equal_in_place_ones(monkeypatch):
    # The background compiles each stage from a stand-in of the refined model; the numbers
    # must be exactly those of compiling the refined model itself, which is what happens
    # when the stand-in's structure differs (here: forced).
    from kanjax import schedule

    x = jax.random.uniform(jax.random.key(4), (64, 1), minval=-1, maxval=1)
    data = (x, jnp.sin(3 * x))

    def run():
        model = kanjax.KAN([1, 2, 1], basis="bspline", grid_size=3, rngs=nnx.Rngs(1))
        _, h = kanjax.train(model, data, epochs=2, batch_size=16, grid_schedule=[(5, 2)],
                            progress=False)
        return h

    ahead, again = run(), run()
    np.testing.assert_array_equal(ahead.train_loss, again.train_loss)  # deterministic
    # thread-local settings are not seen by the background (the suite sets "highest")
    with jax.default_matmul_precision("bfloat16"):
        assert run().config["stage_compiled_ahead"] == [False]
    monkeypatch.setattr(schedule, "refined_like", lambda model, grid_size, uniform: model)
    in_place = run()
    assert ahead.config["stage_compiled_ahead"] == [True]
    assert in_place.config["stage_compiled_ahead"] == [False]
    np.testing.assert_array_equal(ahead.train_loss, in_place.train_loss)
    assert ahead.train_loss[-1] < ahead.train_loss[0]


def test_layer_inputs_write_nothing_back_into_the_model():
    # Grid schedules call this from a background thread on stand-ins that share variables
    # with the model being trained; writing state back (as nnx.jit does) could put stale
    # values into the trained model.
    from kanjax.regrid import inputs_of_layers
    from kanjax.regrid import layer_inputs_compiled as _layer_inputs

    model = kanjax.KAN([2, 3, 1], basis="bspline", grid_size=4, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(1), (50, 2), minval=-1, maxval=1)
    before = jax.tree.leaves(nnx.state(model))
    inputs = _layer_inputs(model, x)
    assert all(a is b for a, b in zip(before, jax.tree.leaves(nnx.state(model))))
    for got, want in zip(inputs, inputs_of_layers(model, x)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
