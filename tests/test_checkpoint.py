"""kanjax.save / kanjax.load: round trips, the public API, and what a checkpoint file may
(not) make the loader do."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from checkpoint_util import (
    assert_same_model,
    dict_positions,
    get_at,
    read_item,
    set_at,
    string_positions,
    write_item,
    x_like,
)
from flax import nnx

import kanjax
from kanjax import checkpoint as ckpt_lib
from kanjax.checkpoint import CheckpointError
from kanjax.demo import seed_data


@pytest.fixture(scope="module")
def task():
    (x, z), _ = seed_data(0, n_train=200, n_test=8)
    return x, z


def roundtrip(tmp_path, model, **kw):
    path = ckpt_lib.save(tmp_path / "ckpt", model, **kw)
    return ckpt_lib.load(path)


# ----------------------------------------------------------------------------- round trips


def test_taylor_kan_roundtrip(tmp_path):
    model = kanjax.KAN([3, 4, 2], basis="taylor", degree=5, squash=None, use_bias=True,
                       rngs=nnx.Rngs(3))
    loaded = roundtrip(tmp_path, model)
    assert isinstance(loaded, kanjax.KAN) and loaded is not model
    assert loaded.layers[0].squash is None and loaded.layers[0].bias is not None
    assert_same_model(model, loaded, x_like())


def test_bspline_after_update_grid_roundtrip(tmp_path):
    model = kanjax.KAN([3, 5, 2], grid_size=6, rngs=nnx.Rngs(0))
    x = 1.5 * x_like() ** 3
    model.update_grid(x)
    assert not model.layers[0].uniform  # non-uniform knots: the general evaluation path
    loaded = roundtrip(tmp_path, model)
    assert not loaded.layers[0].uniform
    assert_same_model(model, loaded, x)


def test_refined_kan_roundtrip(tmp_path):
    model = kanjax.KAN([3, 4, 1], grid_size=5, rngs=nnx.Rngs(1))
    model.refine(11)
    fresh = kanjax.KAN([3, 4, 1], rngs=nnx.Rngs(0))
    assert fresh.layers[0].coef.shape != model.layers[0].coef.shape  # shapes not from a fresh build
    loaded = roundtrip(tmp_path, model)
    assert loaded.layers[0].grid_size == 11 and loaded.layers[1].coef.shape == (4, 1, 14)
    assert_same_model(model, loaded, x_like())


def test_pruned_kan_roundtrip(tmp_path):
    model = kanjax.KAN([3, 6, 5, 2], grid_size=4, rngs=nnx.Rngs(2))
    x = x_like(128)
    scores = kanjax.node_importance(model, x)
    threshold = float(np.median(np.concatenate(scores)))
    pruned = kanjax.prune(model, x, threshold=threshold)
    assert pruned.widths != model.widths
    pruned.layers[0].mask[...] = pruned.layers[0].mask[...].at[0, 0].set(0.0)  # a masked edge
    loaded = roundtrip(tmp_path, pruned)
    assert loaded.widths == pruned.widths
    assert_same_model(pruned, loaded, x)


def test_symbolic_edges_roundtrip(tmp_path):
    model = kanjax.KAN([3, 2, 1], grid_size=4, rngs=nnx.Rngs(4))
    model.layers[0].set_symbolic(1, 0, "sin", (2.0, 0.5, 1.5, -0.25))
    model.layers[0].set_symbolic(2, 1, "x^2", (1.0, 0.0, 1.0, 0.0))
    loaded = roundtrip(tmp_path, model)
    assert loaded.layers[0].sym_names == model.layers[0].sym_names
    assert loaded.layers[1].sym_mask is None
    assert loaded.layers[0].symbolic_edge(1, 0) == model.layers[0].symbolic_edge(1, 0)
    assert_same_model(model, loaded, x_like())


def test_low_precision_dtypes_roundtrip(tmp_path):
    model = kanjax.KAN([3, 2], basis="taylor", degree=3, dtype=jnp.bfloat16,
                       param_dtype=jnp.float16, rngs=nnx.Rngs(0))
    loaded = roundtrip(tmp_path, model)
    assert loaded.layers[0].param_dtype is jnp.float16 and loaded.layers[0].dtype is jnp.bfloat16
    assert_same_model(model, loaded, x_like())


def test_float64_checkpoint_needs_x64(tmp_path):
    with jax.enable_x64(True):
        model = kanjax.KAN([2, 3], grid_size=3, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        x = x_like(d=2).astype(jnp.float64)
        path = ckpt_lib.save(tmp_path / "c", model)
        loaded = ckpt_lib.load(path)
        assert loaded.layers[0].coef[...].dtype == jnp.float64
        assert_same_model(model, loaded, x)
    with pytest.raises(CheckpointError, match="jax_enable_x64"):  # no silent rounding
        ckpt_lib.load(path)


@pytest.mark.parametrize("activation", [jax.nn.silu, jnp.tanh])
def test_mlp_roundtrip(tmp_path, activation):
    model = kanjax.MLP([3, 8, 8, 2], activation=activation, rngs=nnx.Rngs(5))
    loaded = roundtrip(tmp_path, model)
    assert isinstance(loaded, kanjax.MLP) and loaded.activation is activation
    assert_same_model(model, loaded, x_like())


def test_ensemble_roundtrip(tmp_path, task):
    x, z = task
    members = kanjax.make_ensemble(lambda rngs: kanjax.KAN([2, 3, 1], grid_size=4, rngs=rngs), 3)
    members, _ = kanjax.train_ensemble(members, (x, z), epochs=1, progress=False)
    loaded = roundtrip(tmp_path, members)
    assert ckpt_lib.read_config(tmp_path / "ckpt")["members"] == 3
    for a, b in zip(jax.tree.leaves(nnx.state(members)), jax.tree.leaves(nnx.state(loaded))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert nnx.graphdef(loaded) == nnx.graphdef(members)


@pytest.mark.parametrize("make", [
    lambda: kanjax.KAN([3, 4, 2], basis="taylor", degree=4, rngs=nnx.Rngs(0)),
    lambda: kanjax.KAN([3, 4, 2], grid_size=7, order=2, use_bias=True, rngs=nnx.Rngs(0)),
    lambda: kanjax.MLP([3, 5, 2], activation=jax.nn.gelu, rngs=nnx.Rngs(0)),
])
def test_config_rebuilds_the_structure(make):
    """``model.config()`` is JSON and ``nnx.eval_shape`` of ``from_config`` gives the same
    graphdef and the same array shapes and dtypes."""
    model = make()
    config = json.loads(json.dumps(model.config()))
    abstract = nnx.eval_shape(lambda: type(model).from_config(config, rngs=nnx.Rngs(1)))
    assert nnx.graphdef(abstract) == nnx.graphdef(model)
    shapes = lambda m: [(a.shape, a.dtype) for a in jax.tree.leaves(nnx.state(m))]  # noqa: E731
    assert shapes(abstract) == shapes(model)


# ----------------------------------------------------------------------------- extras


def test_history_optimizer_state_and_metadata(tmp_path, task):
    x, z = task
    model, history = kanjax.train(kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(0)), (x, z), epochs=2,
                                  progress=False)
    params = nnx.state(model, nnx.Param)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    _, opt_state = jax.jit(lambda s: tx.update(jax.tree.map(jnp.ones_like, params), s, params))(
        tx.init(params))
    path = ckpt_lib.save(tmp_path / "c", model, history=history, optimizer_state=opt_state,
                         metadata={"note": "x", "step": 7})
    got = ckpt_lib.load(path, optimizer=tx, with_extras=True)
    assert isinstance(got, ckpt_lib.Checkpoint)
    assert_same_model(model, got.model, x)
    assert got.history == history  # dataclass equality: every list and the config
    assert got.metadata == {"note": "x", "step": 7}
    assert jax.tree.structure(got.optimizer_state) == jax.tree.structure(opt_state)
    for a, b in zip(jax.tree.leaves(got.optimizer_state), jax.tree.leaves(opt_state)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(got.optimizer_state[1][0].count) == 1
    # without an optimizer: the model and history only
    plain = ckpt_lib.load(path, with_extras=True)
    assert plain.optimizer_state is None and plain.history == history
    assert isinstance(ckpt_lib.load(path), kanjax.KAN)
    config = ckpt_lib.read_config(path)
    assert config["model"]["class"] == "KAN" and config["model"]["config"]["widths"] == [2, 3, 1]


def test_optimizer_mismatch_is_named(tmp_path):
    model = kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(0))
    adam = optax.adam(1e-2)
    path = ckpt_lib.save(tmp_path / "a", model,
                         optimizer_state=adam.init(nnx.state(model, nnx.Param)))
    ok = ckpt_lib.load(path, optimizer=adam, with_extras=True).optimizer_state
    assert isinstance(ok[0].mu, nnx.State)
    with pytest.raises(CheckpointError, match="optimizer"):
        ckpt_lib.load(path, optimizer=optax.sgd(0.1, momentum=0.9), with_extras=True)
    with pytest.raises(ValueError, match="not both"):
        ckpt_lib.load(path, optimizer=adam, optimizer_state_like={}, with_extras=True)
    nothing = ckpt_lib.save(tmp_path / "b", model)
    with pytest.raises(CheckpointError, match="no optimizer"):
        ckpt_lib.load(nothing, optimizer=adam, with_extras=True)


def test_pathlike_relative_path_and_parents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = kanjax.KAN([2, 2], basis="taylor", degree=2, rngs=nnx.Rngs(0))
    written = ckpt_lib.save(pathlib.Path("runs") / "a", model)
    assert written == str(tmp_path / "runs" / "a") and os.path.isabs(written)
    assert_same_model(model, ckpt_lib.load("runs/a"), x_like(d=2))
    assert sorted(os.listdir(tmp_path / "runs")) == ["a"]


def test_overwrite_and_refusals(tmp_path):
    a = kanjax.KAN([2, 2], basis="taylor", degree=2, rngs=nnx.Rngs(0))
    b = kanjax.KAN([2, 3, 2], basis="taylor", degree=2, rngs=nnx.Rngs(1))
    path = tmp_path / "c"
    ckpt_lib.save(path, a)
    with pytest.raises(FileExistsError, match="overwrite"):
        ckpt_lib.save(path, b, overwrite=False)
    assert_same_model(a, ckpt_lib.load(path), x_like(d=2))
    ckpt_lib.save(path, b)
    assert_same_model(b, ckpt_lib.load(path), x_like(d=2))
    assert [n for n in os.listdir(path) if n != ckpt_lib.LOCK_NAME] == ["2"]  # one step kept

    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a kanjax checkpoint"):
        ckpt_lib.save(precious, a)
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a directory"):
        ckpt_lib.save(tmp_path / "file", a)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "file").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    ckpt_lib.save(tmp_path / "empty", a)  # an empty directory may be used
    assert_same_model(a, ckpt_lib.load(tmp_path / "empty"), x_like(d=2))


def test_unsupported_models_raise_before_writing(tmp_path):
    class Net(nnx.Module):
        def __init__(self):
            self.lin = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    with pytest.raises(TypeError, match=r"kanjax\.KAN or kanjax\.MLP"):
        ckpt_lib.save(tmp_path / "c", Net())
    custom = kanjax.MLP([2, 3, 1], activation=lambda v: v * 2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="activation"):
        ckpt_lib.save(tmp_path / "c", custom)
    with pytest.raises(TypeError, match="JSON"):
        ckpt_lib.save(tmp_path / "c", kanjax.KAN([2, 2], rngs=nnx.Rngs(0)), metadata={"a": object()})
    with pytest.raises(TypeError, match="History"):
        ckpt_lib.save(tmp_path / "c", kanjax.KAN([2, 2], rngs=nnx.Rngs(0)), history={"a": 1})
    assert os.listdir(tmp_path) == []


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt_lib.load(tmp_path / "nothing")
    (tmp_path / "dir").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        ckpt_lib.load(tmp_path / "dir")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        ckpt_lib.load(tmp_path / "file")
    assert issubclass(CheckpointError, ValueError)


# ----------------------------------------------------------------------------- file contents


@pytest.fixture
def saved(tmp_path):
    model = kanjax.KAN([3, 4, 1], grid_size=5, dtype=jnp.float32, rngs=nnx.Rngs(0))
    model.layers[0].set_symbolic(0, 1, "sin", (1.0, 0.0, 1.0, 0.0))
    return model, pathlib.Path(ckpt_lib.save(tmp_path / "c", model))


EXPLOITS = ["kanjax.checkpoint:os.system", "os:system", "builtins:eval", "subprocess:run",
            "posix.system", "__import__('os').system('touch {marker}')"]


def _assert_refused_and_inert(path, marker):
    with pytest.raises(CheckpointError) as info:
        ckpt_lib.load(path, optimizer=optax.adam(1e-3), with_extras=True)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_callable_names_anywhere_in_the_config_are_refused(saved, tmp_path):
    """Every string of the config replaced by a ``module:attr`` name (checksum forged to
    match): refused by the schema, and nothing named is ever imported or called."""
    _, path = saved
    marker = tmp_path / "marker"
    config = read_item(path, "config")
    positions = list(string_positions(config))
    assert len(positions) >= 8  # class, basis, dtypes, symbolic names
    for i, where in enumerate(positions):
        evil = json.loads(json.dumps(config))
        set_at(evil, where, EXPLOITS[i % len(EXPLOITS)].format(marker=marker))
        write_item(path, "config", evil, redigest=True)
        _assert_refused_and_inert(path, marker)


@pytest.mark.parametrize("key", ["_cast", "__call__", "config", "note", "class"])
def test_unknown_keys_anywhere_in_the_config_are_refused(saved, tmp_path, key):
    """A key outside the schema (an attribute or method name, or a class name) is refused
    wherever it appears."""
    _, path = saved
    marker = tmp_path / "marker"
    config = read_item(path, "config")
    for where in dict_positions(config):
        if key in get_at(config, where):
            continue
        evil = json.loads(json.dumps(config))
        get_at(evil, where)[key] = "kanjax.checkpoint:os.system"
        write_item(path, "config", evil, redigest=True)
        _assert_refused_and_inert(path, marker)


ARCHITECTURE_EDITS = {
    "widths": lambda c: c["model"]["config"].update(widths=[3, 3, 1]),
    "order": lambda c: c["model"]["config"]["layers"][0].update(order=1),
    "grid_size": lambda c: c["model"]["config"]["layers"][1].update(grid_size=9),
    "basis": lambda c: c["model"]["config"]["layers"][0].update(basis="taylor"),
    "features": lambda c: c["model"]["config"]["layers"][0].update(out_features=5),
    "class": lambda c: c["model"].update({"class": "MLP"}),
    "members": lambda c: c.update(members=2),
    "use_bias": lambda c: c["model"]["config"]["layers"][0].update(use_bias=True),
    "param_dtype": lambda c: c["model"]["config"]["layers"][0].update(param_dtype="float16"),
    "symbolic": lambda c: c["model"]["config"]["layers"][1].update(symbolic=["sin"]),
    "types": lambda c: c["model"]["config"]["layers"][0].update(grid_size="5"),
    "bool_as_int": lambda c: c["model"]["config"]["layers"][0].update(grid_size=True),
}


@pytest.mark.parametrize("redigest", [False, True], ids=["edited", "edited+checksum"])
@pytest.mark.parametrize("edit", sorted(ARCHITECTURE_EDITS))
def test_architecture_edits_are_refused(saved, edit, redigest):
    """An edited structure is caught by the checksum, and with a forged checksum by the
    schema or by the stored arrays' shapes, before any model is built from it."""
    _, path = saved
    config = read_item(path, "config")
    ARCHITECTURE_EDITS[edit](config)
    write_item(path, "config", config, redigest=redigest)
    with pytest.raises(CheckpointError, match="checksum" if not redigest else "."):
        ckpt_lib.load(path)


def test_format_1_directory_is_refused_with_the_way_to_convert(tmp_path):
    marker = tmp_path / "marker"
    old = tmp_path / "old"
    old.mkdir()
    exploit = {"format_version": 1, "model": {"class": "kanjax.nn:KAN"}, "optimizer_state": {
        "structure": {"kind": "namedtuple", "class": "kanjax.checkpoint:os.system",
                      "fields": [f"touch {marker}"]}}}
    (old / "metadata.json").write_text(json.dumps(exploit))
    with pytest.raises(CheckpointError, match="convert-checkpoint"):
        ckpt_lib.load(old, with_extras=True)
    assert not marker.exists()


def test_metadata_is_returned_as_data(tmp_path):
    """User metadata is free-form JSON: strings that name callables come back as strings."""
    model = kanjax.KAN([2, 2], basis="taylor", degree=2, rngs=nnx.Rngs(0))
    meta = {"hook": "kanjax.checkpoint:os.system", "args": ["touch", str(tmp_path / "m")]}
    path = ckpt_lib.save(tmp_path / "c", model, metadata=meta)
    assert ckpt_lib.load(path, with_extras=True).metadata == meta
    assert not (tmp_path / "m").exists()


def test_checkpoint_code_reads_no_names_from_files():
    """The loader's source has no dynamic import, reflection over attributes or private NNX
    attribute access, and stays small enough to audit."""
    source = pathlib.Path(ckpt_lib.__file__).read_text()
    for banned in ("importlib", "__import__", "_pytree__", "_object__", "vars(", "setattr(",
                   "getattr("):
        assert banned not in source, banned
    assert len(source.splitlines()) <= 350


def test_a_run_without_checkpoints_never_imports_orbax(tmp_path):
    # Importing orbax adds 0.3-0.5 s to a process's start: the demo (train, evaluate, plots,
    # JSON results) must not pay it.
    code = textwrap.dedent("""
        import runpy, sys
        sys.argv = ["kanjax", "demo", "--epochs", "2", "--no-progress", "--out", sys.argv[1]]
        try:
            runpy.run_module("kanjax", run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            assert stop.code == 0, stop.code
        print("ORBAX=" + str(sorted(m for m in sys.modules if m.split(".")[0] == "orbax")))
    """)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ORBAX=[]" in done.stdout, done.stdout
