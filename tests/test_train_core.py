"""The training core's pieces: general objectives, the validated config, LM as an optax
transformation, no mutation on failure, and the code-shape rules of the training modules."""

import ast
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import kanjax
from kanjax import lm

ROOT = pathlib.Path(kanjax.__file__).parent
TRAINING_MODULES = ["training", "train_config", "train_data", "objective", "optimizers", "epoch",
                    "driver", "hooks", "fit", "ensemble", "schedule", "mesh", "history",
                    "compiling", "lm", "losses", "checkpoint", "resume", "convert", "schema"]


def _poisson_objective(model, batch):
    # u'' = f on [-1, 1] with u(-1) = u(1) = 0; f = 6x gives u = x^3 - x
    x = batch["x"]

    def u(t):
        return model(t[None, None])[0, 0]

    u_xx = jax.vmap(jax.grad(jax.grad(u)))(x[:, 0])
    pde = jnp.mean((u_xx - batch["f"]) ** 2)
    boundary = jnp.mean(model(jnp.array([[-1.0], [1.0]])) ** 2)
    return pde + 10.0 * boundary, {"pde": pde, "boundary": boundary}


def test_poisson_residual_objective_trains_to_the_exact_solution():
    x = jnp.linspace(-1, 1, 64)[:, None]
    data = {"x": x, "f": 6.0 * x[:, 0]}
    model = kanjax.KAN([1, 1], basis="taylor", degree=5, squash=None, rngs=nnx.Rngs(0))
    grid = np.linspace(-1, 1, 201)[:, None]
    exact = grid**3 - grid
    before = np.max(np.abs(np.asarray(model(grid)) - exact))
    model, h = kanjax.train(model, data, objective=_poisson_objective, epochs=40,
                            batch_size=None, optimizer="lbfgs", progress=False)
    after = np.max(np.abs(np.asarray(model(grid)) - exact))
    assert h.config["steps_per_epoch"] == 1 and h.config["loss"] == "_poisson_objective"
    assert after < 1e-2 < before / 10, (before, after)
    # the metrics are recorded per epoch and add up to the loss (one full-batch step)
    assert set(h.metrics) == {"pde", "boundary"} and len(h.metrics["pde"]) == h.epochs
    total = np.asarray(h.metrics["pde"]) + 10 * np.asarray(h.metrics["boundary"])
    np.testing.assert_allclose(total, h.train_loss, rtol=1e-4, atol=1e-7)


def test_objective_on_a_dict_of_several_inputs_equals_the_mse_short_form():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (64, 1)), rng.uniform(-1, 1, (64, 1))
    y = np.sin(2 * a) * b

    def objective(model, batch):
        pred = model(jnp.concatenate([batch["a"], batch["b"]], axis=-1))
        return jnp.mean((pred - batch["y"]) ** 2)

    kw = {"epochs": 3, "batch_size": 16, "seed": 2, "progress": False}
    m1, h1 = kanjax.train(kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(0)), {"a": a, "b": b, "y": y},
                          objective=objective, **kw)
    m2, h2 = kanjax.train(kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(0)),
                          (np.concatenate([a, b], -1), y), **kw)
    np.testing.assert_allclose(h1.train_loss, h2.train_loss, rtol=1e-5)
    for p, q in zip(jax.tree.leaves(nnx.state(m1)), jax.tree.leaves(nnx.state(m2))):
        np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="different numbers of samples"):
        kanjax.train(kanjax.KAN([2, 1], rngs=nnx.Rngs(0)), {"a": a, "y": y[:5]},
                     objective=objective, progress=False)


def test_failed_train_leaves_graphdef_and_every_variable_unchanged():
    model = kanjax.KAN([2, 3, 1], basis="bspline", grid_size=4, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).uniform(-1, 1, (20, 2)).astype(np.float32)
    graphdef, state = nnx.split(model)
    before = jax.tree.map(np.asarray, state)
    flags = [layer.uniform for layer in model.layers]
    assert all(flags)
    with pytest.raises(ValueError, match="different numbers of samples"):
        kanjax.train(model, (x, x[:19, :1]), grid_update_every=2, progress=False)
    graphdef_after, state_after = nnx.split(model)
    assert graphdef_after == graphdef
    assert [layer.uniform for layer in model.layers] == flags
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, state_after))


def test_config_is_frozen_validated_and_recorded():
    config = kanjax.TrainConfig(epochs=3, learning_rate=np.float32(0.05), batch_size=None)
    assert config.learning_rate == pytest.approx(0.05) and type(config.learning_rate) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 4
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        kanjax.TrainConfig(epochs=-1)
    with pytest.raises(TypeError, match="objective must be a callable"):
        kanjax.TrainConfig(objective=3)
    record = config.record(n_samples=10, batch_size=10, steps=1)
    assert record["epochs"] == 3 and record["learning_rate"] == pytest.approx(0.05)


def test_levenberg_marquardt_is_an_optax_transformation():
    # linear least squares through the optax interface, against numpy's lstsq
    a = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    b = (a @ np.array([1.0, -2.0, 0.5]) + 0.1 * np.random.default_rng(1).normal(size=30))
    a, b = jnp.asarray(a), jnp.asarray(b, jnp.float32)
    tx = lm.levenberg_marquardt()
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    theta = jnp.zeros(3)
    state = tx.init(theta)
    for _ in range(5):
        updates, state = tx.update(
            None, state, theta, value_fn=lambda t: jnp.sum((a @ t - b) ** 2),
            residual_fn=lambda t, ai, bi: (ai @ t - bi)[None], samples=(a, b))
        theta = optax.apply_updates(theta, updates)
    np.testing.assert_allclose(theta, np.linalg.lstsq(np.asarray(a), np.asarray(b), rcond=None)[0],
                               rtol=1e-4, atol=1e-5)
    assert bool(state.converged)


def _imports(module: str):
    """(imported kanjax module, names) for every import in ``module``, at any depth."""
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kanjax"):
            names = [a.name for a in node.names]
            if node.module == "kanjax":
                for name in names:
                    yield f"kanjax.{name}", []
            else:
                yield node.module, names
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("kanjax."):
                    yield alias.name, []


def test_every_module_follows_the_code_rules():
    modules = sorted(p.stem for p in ROOT.glob("*.py") if p.stem != "__main__")
    assert set(TRAINING_MODULES) <= set(modules)
    for module in modules:
        source = (ROOT / f"{module}.py").read_text()
        assert len(source.splitlines()) <= 500, module
        assert "jax._src" not in source, module
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                if not body:  # a protocol method: its docstring only
                    continue
                lines = body[-1].end_lineno - body[0].lineno + 1
                assert lines <= 80, f"{module}.{node.name}: {lines} lines"
        for imported, names in _imports(module):
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{module} imports {private} from {imported}"


def test_no_import_cycles_in_kanjax():
    modules = [p.stem for p in ROOT.glob("*.py") if p.stem not in ("__init__", "__main__")]
    graph = {m: {i.split(".")[1] for i, _ in _imports(m) if i.count(".") == 1} & set(modules)
             for m in modules}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", " -> ".join(path + [m])
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, path + [m])
        state[m] = "done"

    for m in sorted(modules):
        visit(m, [])


# ----------------------------------------------------------------------------- bad inputs

_X = np.random.default_rng(0).uniform(-1, 1, (16, 2)).astype(np.float32)
_Y = _X[:, :1] * _X[:, 1:]


@pytest.mark.parametrize("rate", [np.float32(0.01), jnp.asarray(0.01), np.asarray(0.01)])
def test_numpy_and_jax_scalar_learning_rates_are_accepted(rate):
    _, h = kanjax.train(kanjax.KAN([2, 1], rngs=nnx.Rngs(0)), (_X, _Y), epochs=1,
                        learning_rate=rate, progress=False)
    assert h.config["learning_rate"] == pytest.approx(0.01)


@pytest.mark.parametrize("x, match", [
    (_X.astype(np.complex64), "data x is complex"),
    (_X.astype(str), "data x must hold numbers, got an array of dtype <U"),
])
def test_complex_and_string_inputs_are_named(x, match):
    model = kanjax.KAN([2, 1], rngs=nnx.Rngs(0))
    before = jax.tree.map(np.asarray, nnx.state(model))
    with pytest.raises(TypeError, match=match):
        kanjax.train(model, (x, _Y), epochs=1, progress=False)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, nnx.state(model)))


def test_cross_entropy_with_too_few_outputs_names_the_classes():
    with pytest.raises(ValueError, match="2 classes need 2 outputs; the model has 1"):
        kanjax.train(kanjax.KAN([2, 4, 1], rngs=nnx.Rngs(0)),
                     (_X, (_X[:, 0] > 0).astype(np.int32)), loss="cross_entropy", progress=False)


def test_levenberg_marquardt_at_the_epoch_limit_records_not_converged():
    _, h = kanjax.train(kanjax.KAN([2, 1], rngs=nnx.Rngs(0)), (_X, np.sin(3 * _X[:, :1])),
                        epochs=1, batch_size=None, optimizer="lm", progress=False)
    assert h.config["converged"] is False and "stopped_at_epoch" not in h.config


def test_default_optimizer_trains_float16_parameters():
    from kanjax.optimizers import adam_eps

    assert adam_eps(jnp.float32) == 1e-8  # optax's default where it is representable
    assert np.float16(adam_eps(jnp.float16)) > 0
    model = kanjax.KAN([2, 3, 1], basis="taylor", degree=3, param_dtype=jnp.float16,
                       rngs=nnx.Rngs(0))
    _, h = kanjax.train(model, (_X, _Y), epochs=20, batch_size=8, progress=False)
    assert np.all(np.isfinite(h.train_loss)) and h.train_loss[-1] < h.train_loss[0]


def test_evaluate_reports_accuracy():
    labels = (_X[:, 0] > 0).astype(np.int32)
    model = kanjax.KAN([2, 2], rngs=nnx.Rngs(0))
    out = kanjax.evaluate(model, (_X, labels), loss="cross_entropy", metrics=("accuracy",))
    want = float(np.mean(np.argmax(np.asarray(model(_X)), -1) == labels))
    assert out["accuracy"] == pytest.approx(want)
    assert out["loss"] == pytest.approx(kanjax.evaluate(model, (_X, labels), loss="cross_entropy"))
    with pytest.raises(ValueError, match="unknown metrics"):
        kanjax.evaluate(model, (_X, labels), loss="cross_entropy", metrics=("f1",))
