import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import kanjax
from kanjax.demo import seed_data


@pytest.fixture(scope="module")
def seed_task():
    return seed_data(0, n_train=256, n_test=256)


def small_kan(seed=0, **kw):
    kw.setdefault("basis", "taylor")
    kw.setdefault("degree", 5)
    return kanjax.KAN([2, 4, 1], rngs=nnx.Rngs(seed), **kw)


def test_loss_decreases_on_seed_task(seed_task):
    (x, z), (xt, zt) = seed_task
    model = small_kan()
    before = float(jnp.mean((model(xt) - zt) ** 2))
    model, h = kanjax.train(model, (x, z), epochs=30, batch_size=32, validation_data=(xt, zt),
                            progress=False)
    after = float(jnp.mean((model(xt) - zt) ** 2))
    assert h.epochs == 30 and len(h.val_loss) == 30
    assert after < before / 20
    assert h.train_loss[-1] < h.train_loss[0] / 10
    assert h.val_loss[-1] == pytest.approx(after, rel=1e-4)  # history's val loss is the real one
    assert set(h.grad_norm) == {"layers.0", "layers.1"}
    assert all(len(v) == 30 and np.all(np.isfinite(v)) for v in h.grad_norm.values())
    # cosine schedule over 240 steps; the entry is the rate of the epoch's last step (7)
    assert h.learning_rate[0] == pytest.approx(2e-2 * 0.5 * (1 + np.cos(np.pi * 7 / 240)), rel=1e-4)
    assert h.learning_rate[-1] < 1e-6
    assert np.all(np.diff(h.wall_time) > 0)


def test_same_seed_same_history(seed_task):
    (x, z), _ = seed_task
    runs = [kanjax.train(small_kan(), (x, z), epochs=4, batch_size=50, seed=3, progress=False)
            for _ in range(2)]
    (m1, h1), (m2, h2) = runs
    assert h1.train_loss == h2.train_loss and h1.grad_norm == h2.grad_norm
    for a, b in zip(jax.tree.leaves(nnx.state(m1)), jax.tree.leaves(nnx.state(m2))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, h3 = kanjax.train(small_kan(), (x, z), epochs=4, batch_size=50, seed=4, progress=False)
    assert h3.train_loss != h1.train_loss  # the seed drives the shuffling


def test_every_sample_used_once_per_epoch():
    # One step per epoch with batch >= n and SGD(lr=1) on a linear-ish check:
    # with a constant schedule the full-batch gradient equals the masked-minibatch
    # average only if every sample is counted exactly once.
    x = jnp.linspace(-1, 1, 10)[:, None]
    y = 3.0 * x
    for bs in (3, 4, 10):
        m = kanjax.KAN([1, 1], basis="taylor", degree=1, squash=None, rngs=nnx.Rngs(0))
        _, h = kanjax.train(m, (x, y), epochs=1, batch_size=bs, optimizer=optax.sgd(0.0),
                            progress=False)
        ref = float(jnp.mean((kanjax.KAN([1, 1], basis="taylor", degree=1, squash=None,
                                         rngs=nnx.Rngs(0))(x) - y) ** 2))
        assert h.train_loss[0] == pytest.approx(ref, rel=1e-5), bs


def test_no_recompilation_after_first_epoch(seed_task):
    (x, z), _ = seed_task
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        kanjax.train(small_kan(1), (x, z), epochs=1, progress=False)  # warm any helper ops
        compiles.clear()
        kanjax.train(small_kan(2), (x, z), epochs=1, progress=False)
        one = len(compiles)
        compiles.clear()
        kanjax.train(small_kan(3), (x, z), epochs=6, progress=False)
        six = len(compiles)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert one >= 1  # the listener does see train's compilation
    assert six == one


def test_custom_optimizer_and_loss(seed_task):
    (x, z), _ = seed_task
    model = small_kan()
    mae = lambda p, t: jnp.mean(jnp.abs(p - t))  # noqa: E731  (scalar: applied per sample)
    model, h = kanjax.train(model, (x, z), epochs=20, optimizer=optax.adam(1e-2), loss=mae,
                            progress=False)
    assert h.train_loss[-1] < h.train_loss[0] / 3
    final = float(jnp.mean(jnp.abs(model(x) - z)))
    assert final == pytest.approx(h.train_loss[-1], rel=0.3)
    assert np.isnan(h.learning_rate[0]) and h.config["loss"] == "<lambda>"


def test_per_sample_custom_loss_matches_builtin(seed_task):
    (x, z), _ = seed_task
    per_sample = lambda p, t: (p - t) ** 2  # noqa: E731
    _, h1 = kanjax.train(small_kan(), (x, z), epochs=2, loss=per_sample, progress=False)
    _, h2 = kanjax.train(small_kan(), (x, z), epochs=2, loss="mse", progress=False)
    np.testing.assert_allclose(h1.train_loss, h2.train_loss, rtol=1e-6)


def test_classification_reaches_high_accuracy():
    key = jax.random.key(0)
    x = jax.random.uniform(key, (600, 2), minval=-1, maxval=1)
    labels = (x[:, 0] * x[:, 1] > 0).astype(jnp.int32)  # XOR quadrants: not linearly separable
    model = kanjax.KAN([2, 4, 2], basis="bspline", grid_size=5, rngs=nnx.Rngs(0))
    model, h = kanjax.train(model, (x, labels), epochs=60, loss="cross_entropy", progress=False)
    acc = float(jnp.mean(jnp.argmax(model(x), axis=-1) == labels))
    assert acc > 0.95, acc


def test_mlp_trains_too(seed_task):
    (x, z), _ = seed_task
    model, h = kanjax.train(kanjax.MLP([2, 16, 1], rngs=nnx.Rngs(0)), (x, z), epochs=20,
                            progress=False)
    assert h.train_loss[-1] < h.train_loss[0] / 5


def test_divergence_stops_with_last_finite_model(seed_task):
    (x, z), _ = seed_task
    x3 = x
    steps_per_epoch = 4  # 256 samples, batch 64
    blowup = lambda step: jnp.where(step < 2 * steps_per_epoch, 1e-3, 1e9)  # noqa: E731

    def fresh():
        return kanjax.KAN([2, 4, 1], basis="taylor", degree=9, squash=None, rngs=nnx.Rngs(0))

    model = fresh()
    with pytest.raises(kanjax.TrainingDiverged, match="in epoch 3") as info:
        kanjax.train(model, (x3, z), epochs=10, schedule=blowup, progress=False)
    err = info.value
    assert err.epoch == 3 and err.history.epochs == 2 and err.model is model
    reference, _ = kanjax.train(fresh(), (x3, z), epochs=2, schedule=blowup, progress=False)
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(reference))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.all(np.isfinite(np.asarray(model(x3))))


def test_history_json_round_trip(tmp_path, seed_task):
    (x, z), _ = seed_task
    _, h = kanjax.train(small_kan(), (x, z), epochs=3, progress=False)
    h.save(tmp_path / "h.json")
    assert json.loads((tmp_path / "h.json").read_text())["train_loss"] == h.train_loss
    assert kanjax.History.load(tmp_path / "h.json") == h


def test_progress_bar_runs(seed_task, capsys):
    (x, z), _ = seed_task
    kanjax.train(small_kan(), (x, z), epochs=2, progress=True)


def test_train_does_not_mutate_on_bad_input(seed_task):
    (x, z), _ = seed_task
    model = small_kan()
    before = jax.tree.map(np.asarray, nnx.state(model))
    with pytest.raises(ValueError):
        kanjax.train(model, (x[:, :1], z), progress=False)
    after = jax.tree.map(np.asarray, nnx.state(model))
    jax.tree.map(np.testing.assert_array_equal, before, after)


X = np.random.default_rng(0).uniform(-1, 1, (20, 2)).astype(np.float32)
Y = X.sum(1, keepdims=True)


@pytest.mark.parametrize(
    "data, kwargs, err, match",
    [
        ((X, Y[:19]), {}, ValueError, "different numbers of samples: 20 vs 19"),
        ((X[:, :1], Y), {}, ValueError, "takes 2 input features"),
        ((np.where(X > 0.9, np.nan, X), Y), {}, ValueError, "data x contains .* non-finite"),
        ((X, np.full_like(Y, np.inf)), {}, ValueError, "data y contains 20 non-finite"),
        ((X, Y), dict(batch_size=0), ValueError, "batch_size must be >= 1"),
        ((X, Y), dict(epochs=-1), ValueError, "epochs must be >= 0"),
        ((X, Y), dict(learning_rate=-1.0), ValueError, "learning_rate must be a positive"),
        ((X, Y), dict(loss="hinge"), ValueError, "unknown loss"),
        ((X, Y), dict(schedule="linear"), ValueError, "schedule must be"),
        ((X, Y), dict(optimizer="adam"), TypeError, "optax.GradientTransformation"),
        ((X, np.ones((20, 3))), {}, ValueError, r"outputs shape \(1,\) per sample"),
        ((X, Y), dict(loss="cross_entropy"), TypeError, "integer class labels"),
        ((X, Y), dict(validation_data=(X, Y[:3])), ValueError, "validation_data: x and y"),
        ((X[0], Y[0]), {}, ValueError, "takes 2 input features"),
        (X, {}, TypeError, "pair"),
    ],
)
def test_bad_input_is_named(data, kwargs, err, match):
    with pytest.raises(err, match=match):
        kanjax.train(small_kan(), data, progress=False, **kwargs)


def test_bad_labels_are_named():
    model = kanjax.KAN([2, 3], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        kanjax.train(model, (X, np.arange(20)), loss="cross_entropy", progress=False)


def _factory(rngs):
    return kanjax.KAN([2, 3, 1], basis="bspline", grid_size=4, rngs=rngs)


def test_ensemble_member_equals_independent_run(seed_task):
    (x, z), _ = seed_task
    ensemble = kanjax.make_ensemble(_factory, 3, seed=5)
    initial = [kanjax.ensemble_member(ensemble, i) for i in range(3)]
    w0 = [np.asarray(m.layers[0].coef[...]) for m in initial]
    assert not np.allclose(w0[0], w0[1])  # members start from different initialisations
    ensemble, histories = kanjax.train_ensemble(ensemble, (x, z), epochs=4, batch_size=64,
                                                seed=10, progress=False)
    assert len(histories) == 3 and all(h.epochs == 4 for h in histories)
    for i in (0, 2):
        single, h = kanjax.train(initial[i], (x, z), epochs=4, batch_size=64, seed=10 + i,
                                 progress=False)
        np.testing.assert_allclose(histories[i].train_loss, h.train_loss, rtol=2e-4)
        trained = kanjax.ensemble_member(ensemble, i)
        np.testing.assert_allclose(np.asarray(trained(x)), np.asarray(single(x)), rtol=2e-3, atol=2e-4)
    assert histories[0].train_loss != histories[1].train_loss


def test_ensemble_errors():
    with pytest.raises(ValueError, match="not an ensemble"):
        kanjax.train_ensemble(small_kan(), (X, Y), progress=False)
    with pytest.raises(ValueError, match="members must be >= 1"):
        kanjax.make_ensemble(_factory, 0)
    with pytest.raises(IndexError, match="out of range"):
        kanjax.ensemble_member(kanjax.make_ensemble(_factory, 2), 2)


def test_bfloat16_compute_trains(seed_task):
    (x, z), _ = seed_task
    model = kanjax.KAN([2, 4, 1], basis="bspline", dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    model, h = kanjax.train(model, (x, z), epochs=10, progress=False)
    assert model.layers[0].coef[...].dtype == jnp.float32  # parameters stay float32
    assert h.train_loss[-1] < h.train_loss[0] / 5


def test_lbfgs_full_batch_converges_fast(seed_task):
    (x, z), _ = seed_task
    model = kanjax.KAN([2, 3, 1], basis="bspline", grid_size=5, rngs=nnx.Rngs(0))
    model, h = kanjax.train(model, (x, z), epochs=40, batch_size=len(x), optimizer="lbfgs",
                            progress=False)
    assert h.train_loss[-1] < 1e-3 and h.train_loss[-1] < h.train_loss[0] / 100
    assert np.isnan(h.learning_rate[0])
    with pytest.raises(TypeError, match="'lbfgs' or 'lm'"):
        kanjax.train(model, (x, z), optimizer="bfgs", progress=False)


@pytest.mark.parametrize("max_entries", [2**22, 2000])  # one chunk; 5 chunks of 9, padded
def test_normal_equations_match_a_dense_jacobian(max_entries):
    # J^T J and J^T r from chunked per-sample Jacobians against jax.jacfwd of all residuals
    from kanjax import lm

    model = kanjax.KAN([2, 3, 2], basis="bspline", grid_size=4, rngs=nnx.Rngs(1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    from jax.flatten_util import ravel_pytree

    theta, unravel = ravel_pytree(params)
    x = jax.random.uniform(jax.random.key(0), (37, 2), minval=-1, maxval=1)
    y = jnp.stack([jnp.sin(3 * x[:, 0]), x[:, 0] * x[:, 1]], axis=-1)
    w = jnp.linspace(0.5, 1.5, 37)

    def residual_one(t, xi, yi, wi):
        return (nnx.merge(graphdef, unravel(t), rest)(xi[None])[0] - yi) * jnp.sqrt(wi)

    def all_residuals(t):
        return ((nnx.merge(graphdef, unravel(t), rest)(x) - y) * jnp.sqrt(w)[:, None]).ravel()

    jac, r = jax.jit(lambda t: (jax.jacfwd(all_residuals)(t), all_residuals(t)))(theta)
    a, g, loss = jax.jit(lambda t: lm.normal_equations(residual_one, t, x, y, w,
                                                       max_entries=max_entries))(theta)
    np.testing.assert_allclose(a, jac.T @ jac, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g, jac.T @ r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss, r @ r, rtol=1e-5)


def test_levenberg_marquardt_fits_least_squares_to_float_precision():
    # Teacher-student: targets from a random KAN layer with the student's grid, so the
    # student can fit them exactly. LM must drive the training error far below what L-BFGS
    # reaches in the same number of steps, and stop by itself.
    x = jax.random.uniform(jax.random.key(0), (400, 2), minval=-1, maxval=1)
    teacher = kanjax.KAN([2, 3], basis="bspline", grid_size=6, rngs=nnx.Rngs(5))
    z = teacher(x)
    results = {}
    for opt in ("lm", "lbfgs"):
        model = kanjax.KAN([2, 3], basis="bspline", grid_size=6, rngs=nnx.Rngs(0))
        model, h = kanjax.train(model, (x, z), epochs=60, batch_size=len(x), optimizer=opt,
                                progress=False)
        results[opt] = (model, h)
    model, h = results["lm"]
    assert np.all(np.diff(h.train_loss) <= 0)  # every accepted step lowers the loss
    assert h.train_loss[-1] < 1e-9 and h.train_loss[-1] < results["lbfgs"][1].train_loss[-1] / 10
    np.testing.assert_allclose(kanjax.evaluate(model, (x, z)), h.train_loss[-1], rtol=0.5,
                               atol=1e-9)
    assert all(np.isfinite(v).all() for v in h.grad_norm.values())
    # a second call from the optimum finds no step that lowers the loss and stops early
    model, h2 = kanjax.train(model, (x, z), epochs=50, batch_size=len(x), optimizer="lm",
                             progress=False)
    assert h2.config.get("converged") and h2.config["stopped_at_epoch"] < 50


def test_levenberg_marquardt_reports_the_gradient_of_the_loss_it_starts_from():
    # LM's epoch takes the per-layer gradient norms from its normal equations (2 J^T r);
    # they must be those of the MSE's gradient at the parameters of that epoch's start.
    x = jax.random.uniform(jax.random.key(0), (50, 2), minval=-1, maxval=1)
    z = jnp.sin(3 * x[:, :1]) * x[:, 1:]
    model = kanjax.KAN([2, 3, 1], basis="bspline", grid_size=5, rngs=nnx.Rngs(1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def mse(p):
        return jnp.mean(jnp.mean((nnx.merge(graphdef, p, rest)(x) - z) ** 2, axis=-1))

    loss, grads = jax.value_and_grad(mse)(params)
    loss = float(loss)  # before train() updates the model's (shared) parameters
    expected = {name: float(optax.global_norm(grads["layers"][i]))
                for i, name in enumerate(("layers.0", "layers.1"))}
    model, h = kanjax.train(model, (x, z), epochs=1, batch_size=len(x), optimizer="lm",
                            progress=False)
    assert set(h.grad_norm) == set(expected)
    for name, norm in expected.items():
        np.testing.assert_allclose(h.grad_norm[name][0], norm, rtol=1e-4)
    np.testing.assert_allclose(h.train_loss[0], loss, rtol=1e-5)


def test_lm_update_converges_by_relative_reduction():
    # Linear least squares with a nonzero residual at the optimum: the first iteration
    # lowers the loss a lot (not converged), the next one from the optimum by almost
    # nothing (converged, whatever float noise it still finds). ftol=1 accepts any step as
    # the last one; the parameters still move.
    from kanjax import lm

    a = jax.random.normal(jax.random.key(0), (30, 3))
    b = a @ jnp.array([1.0, -2.0, 0.5]) + 0.1 * jax.random.normal(jax.random.key(1), (30,))
    loss_fn = lambda t: jnp.sum((a @ t - b) ** 2)  # noqa: E731
    normal_fn = lambda t: (a.T @ a, a.T @ (a @ t - b), loss_fn(t))  # noqa: E731
    theta, state = jnp.zeros(3), lm.lm_init(jnp.zeros(3), damping=1e-6)
    theta1, state1, loss0, _ = lm.lm_update(loss_fn, normal_fn, theta, state)
    assert float(loss_fn(theta1)) < 0.01 * float(loss0) and not bool(state1.converged)
    theta2, state2, _, _ = lm.lm_update(loss_fn, normal_fn, theta1, state1)
    assert bool(state2.converged)
    np.testing.assert_allclose(theta2, np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-4)
    moved, state_f, _, _ = lm.lm_update(loss_fn, normal_fn, theta, state, ftol=1.0)
    assert bool(state_f.converged) and float(jnp.abs(moved - theta).max()) > 0.1


def test_levenberg_marquardt_rejects_what_it_cannot_do():
    x = jnp.zeros((10, 2))
    z = jnp.zeros((10, 1))
    model = kanjax.KAN([2, 2, 1], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="full-batch"):
        kanjax.train(model, (x, z), batch_size=5, optimizer="lm", progress=False)
    with pytest.raises(ValueError, match="loss='mse'"):
        kanjax.train(model, (x, jnp.zeros(10, jnp.int32)), batch_size=10, optimizer="lm",
                     loss="cross_entropy", progress=False)
    with pytest.raises(ValueError, match="l1/entropy"):
        kanjax.train(model, (x, z), batch_size=10, optimizer="lm", l1=1e-3, progress=False)
    big = kanjax.MLP([2, 200, 200, 1], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="at most"):
        kanjax.train(big, (x, z), batch_size=10, optimizer="lm", progress=False)


def test_ensemble_shared_order_equals_runs_with_the_same_seed(seed_task):
    (x, z), _ = seed_task
    ensemble = kanjax.make_ensemble(_factory, 2, seed=1)
    initial = kanjax.ensemble_member(ensemble, 1)
    ensemble, histories = kanjax.train_ensemble(ensemble, (x, z), epochs=3, seed=4,
                                                shared_order=True, progress=False)
    _, h = kanjax.train(initial, (x, z), epochs=3, seed=4, progress=False)  # seed, not seed + 1
    np.testing.assert_allclose(histories[1].train_loss, h.train_loss, rtol=2e-4)


def test_custom_module_gets_per_submodule_grad_norms():
    class Custom(nnx.Module):
        def __init__(self, rngs):
            self.scale = nnx.Param(jnp.ones((1,)))
            self.body = nnx.Linear(2, 1, rngs=rngs)

        def __call__(self, x):
            return self.body(x) * self.scale[...][None]

    _, h = kanjax.train(Custom(nnx.Rngs(0)), (X, Y), epochs=2, progress=False)
    assert set(h.grad_norm) == {"body", "params"}
    assert all(v[-1] > 0 for v in h.grad_norm.values())


def test_a_users_line_search_optimizer_gets_the_loss():
    # optax.lbfgs needs value, grad and value_fn in update(); train passes them to any
    # GradientTransformationExtraArgs (a plain update() call would fail inside the trace)
    x = jax.random.uniform(jax.random.key(3), (128, 1), minval=-1, maxval=1)
    y = 0.5 * x**2
    model = kanjax.KAN([1, 1], rngs=nnx.Rngs(3))
    model, hist = kanjax.train(model, (x, y), epochs=30, batch_size=128,
                               optimizer=optax.lbfgs(memory_size=5), progress=False)
    assert hist.train_loss[-1] < 1e-3 * hist.train_loss[0]


def test_callback_sees_every_epoch_and_can_stop_early():
    x = jax.random.uniform(jax.random.key(4), (64, 2), minval=-1, maxval=1)
    y = x[:, :1] * x[:, 1:]
    model = kanjax.KAN([2, 2, 1], basis="taylor", degree=3, rngs=nnx.Rngs(4))
    seen = []

    def callback(done, history):
        # the model already holds this epoch's parameters
        seen.append((done, len(history.train_loss), kanjax.evaluate(model, (x, y))))
        return done == 3

    model, hist = kanjax.train(model, (x, y), epochs=10, batch_size=64, progress=False,
                               callback=callback)
    assert [s[:2] for s in seen] == [(1, 1), (2, 2), (3, 3)]
    assert hist.config["stopped_at_epoch"] == 3 and len(hist.train_loss) == 3
    assert seen[-1][2] == pytest.approx(kanjax.evaluate(model, (x, y)))
    assert seen[0][2] != seen[-1][2]
    with pytest.raises(TypeError, match="callback must be callable"):
        kanjax.train(model, (x, y), epochs=1, callback=3, progress=False)


def test_cpu_compile_options_follow_the_amount_of_work(monkeypatch):
    # Small calls compile with XLA:CPU's fast-compile options; large ones without them,
    # because the fast-compile emitters run big tensors much slower. Both leave out the
    # YNNPACK fusions (kanjax._xla.CPU_RUN_OPTIONS).
    from kanjax import _xla, compiling

    if jax.default_backend() != "cpu":
        pytest.skip("the option choice is CPU-only")
    fast, full = _xla.cpu_compile_options(fast=True), _xla.cpu_compile_options(fast=False)
    assert fast == {**_xla.CPU_RUN_OPTIONS, **_xla.FAST_COMPILE_OPTIONS}  # all known to jax 0.10
    assert full == _xla.CPU_RUN_OPTIONS
    seen = []
    original = jax.stages.Lowered.compile

    def record(self, compiler_options=None, **kwargs):
        seen.append(compiler_options)
        return original(self, compiler_options, **kwargs)

    monkeypatch.setattr(jax.stages.Lowered, "compile", record)
    f = jax.jit(lambda v: jnp.sin(v) * 2.0)
    v = jnp.arange(4.0)
    for work in (0.0, 1e12):
        np.testing.assert_allclose(compiling.compile_program(f, v, work=work)(v), np.sin(np.arange(4.0)) * 2,
                                   rtol=1e-6)
    assert seen == [fast, full]
    x = np.random.default_rng(0).uniform(-1, 1, (64, 2)).astype(np.float32)
    seen.clear()
    model = kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(0))
    kanjax.train(model, (x, x[:, :1] ** 2), epochs=2, batch_size=32, progress=False)
    assert seen[-1] == fast  # the seed-sized demo compiles fast


def test_cpu_compile_options_leave_out_what_xla_does_not_know(monkeypatch):
    # An option an older jaxlib lacks (or a value it rejects) is dropped, not an error.
    from kanjax import _xla

    if jax.default_backend() != "cpu":
        pytest.skip("the option choice is CPU-only")
    monkeypatch.setattr(_xla, "CPU_RUN_OPTIONS", {"xla_cpu_no_such_option": True,
                                                   "xla_cpu_experimental_ynn_fusion_type": "BOGUS"})
    assert _xla.cpu_compile_options(fast=False) is None
    assert _xla.cpu_compile_options(fast=True) == _xla.FAST_COMPILE_OPTIONS
    f = _xla.fast_compile_jit(lambda v: v * 3.0)
    np.testing.assert_allclose(f(jnp.arange(3.0)), [0.0, 3.0, 6.0])


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 1000, 4097])
def test_shuffle_is_a_permutation_and_depends_on_the_key(n):
    from kanjax.epoch import shuffle as _shuffle

    shuffle = jax.jit(_shuffle, static_argnums=1)
    perms = np.stack([np.asarray(shuffle(jax.random.key(s), n)) for s in range(40)])
    assert perms.dtype == np.int32
    for p in perms:
        np.testing.assert_array_equal(np.sort(p), np.arange(n))  # a bijection of 0..n-1
    np.testing.assert_array_equal(shuffle(jax.random.key(3), n), perms[3])  # deterministic
    if n >= 7:
        assert len({p.tobytes() for p in perms}) == 40  # every key its own order


def test_shuffle_places_every_sample_uniformly():
    # where sample 0 lands, over many keys: uniform over 10 buckets (chi-square, 9 dof,
    # p ~ 1e-4 bound), and no correlation between a sample's index and its position
    from kanjax.epoch import shuffle as _shuffle

    n, keys = 100, 3000
    perms = np.asarray(jax.jit(jax.vmap(lambda k: _shuffle(k, n)))(
        jax.random.split(jax.random.key(0), keys)))
    counts = np.histogram(np.argmax(perms == 0, axis=1), bins=10, range=(0, n))[0]
    expected = keys / 10
    assert np.sum((counts - expected) ** 2 / expected) < 33.7
    corr = np.mean([np.corrcoef(p, np.arange(n))[0, 1] for p in perms])
    assert abs(corr) < 0.02


@pytest.mark.parametrize("n", [96, 100])  # every batch full (plain mean) / last one padded
def test_train_equals_a_hand_written_optax_loop(n):
    from kanjax.epoch import shuffle as _shuffle

    x = jax.random.uniform(jax.random.key(7), (n, 2), minval=-1, maxval=1)
    y = jnp.sin(2 * x[:, :1]) * x[:, 1:]
    batch, epochs, seed = 32, 2, 3
    model = kanjax.KAN([2, 3, 1], basis="bspline", grid_size=4, rngs=nnx.Rngs(1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-2)
    state = tx.init(params)

    def loss(p, xb, yb, wb):  # the weighted batch mean, written out
        per = jnp.mean((nnx.merge(graphdef, p, rest)(xb) - yb) ** 2, axis=-1)
        return jnp.sum(per * wb) / jnp.sum(wb)

    steps = -(-n // batch)
    for epoch in range(epochs):
        perm = np.asarray(_shuffle(jax.random.fold_in(jax.random.key(seed), epoch), n))
        order = np.concatenate([perm, perm[: steps * batch - n]]).reshape(steps, batch)
        weights = (np.arange(steps * batch) < n).reshape(steps, batch).astype(np.float32)
        for idx, wb in zip(order, weights):
            grads = jax.grad(loss)(params, x[idx], y[idx], wb)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)

    trained, _ = kanjax.train(model, (x, y), epochs=epochs, batch_size=batch, seed=seed,
                              optimizer=optax.adam(1e-2), progress=False)
    for a, b in zip(jax.tree.leaves(nnx.state(trained, nnx.Param)), jax.tree.leaves(params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
