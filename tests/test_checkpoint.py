"""kanjax.checkpoint (save/load) and resumable training (train(checkpoint_dir=..., resume=...))."""

import json
import os
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import kanjax
from kanjax import checkpoint as ckpt_lib
from kanjax.checkpoint import CheckpointError
from kanjax.demo import seed_data


@pytest.fixture(scope="module")
def task():
    (x, z), _ = seed_data(0, n_train=200, n_test=8)
    return x, z


def _x(n=64, d=3, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, d), minval=-1.0, maxval=1.0)


def assert_same_model(a, b, x):
    """Bitwise-equal outputs, identical state (paths, variable types, values) and graphdef."""
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))
    fa, fb = nnx.to_flat_state(nnx.state(a)), nnx.to_flat_state(nnx.state(b))
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, va), (_, vb) in zip(fa, fb):
        assert type(va) is type(vb), path
        assert va[...].dtype == vb[...].dtype, path
        np.testing.assert_array_equal(np.asarray(va[...]), np.asarray(vb[...]), err_msg=str(path))
    assert nnx.graphdef(a) == nnx.graphdef(b)


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
    assert_same_model(model, loaded, _x())


def test_bspline_after_update_grid_roundtrip(tmp_path):
    model = kanjax.KAN([3, 5, 2], grid_size=6, rngs=nnx.Rngs(0))
    x = 1.5 * _x() ** 3
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
    assert_same_model(model, loaded, _x())


def test_pruned_kan_roundtrip(tmp_path):
    model = kanjax.KAN([3, 6, 5, 2], grid_size=4, rngs=nnx.Rngs(2))
    x = _x(128)
    scores = kanjax.node_importance(model, x)
    threshold = float(np.median(np.concatenate(scores)))
    pruned = kanjax.prune(model, x, threshold=threshold)
    assert pruned.widths != model.widths
    pruned.layers[0].mask[...] = pruned.layers[0].mask[...].at[0, 0].set(0.0)  # a masked edge
    loaded = roundtrip(tmp_path, pruned)
    assert loaded.widths == pruned.widths
    assert [(layer.in_features, layer.out_features) for layer in loaded.layers] == [
        (layer.in_features, layer.out_features) for layer in pruned.layers]
    assert_same_model(pruned, loaded, x)


def test_symbolic_edges_roundtrip(tmp_path):
    model = kanjax.KAN([3, 2, 1], grid_size=4, rngs=nnx.Rngs(4))
    if not hasattr(model.layers[0], "set_symbolic"):
        pytest.skip("this kanjax has no symbolic edges")
    model.layers[0].set_symbolic(1, 0, "sin", (2.0, 0.5, 1.5, -0.25))
    loaded = roundtrip(tmp_path, model)
    assert loaded.layers[0].sym_names == ("sin",) and loaded.layers[1].sym_mask is None
    assert loaded.layers[0].symbolic_edge(1, 0) == model.layers[0].symbolic_edge(1, 0)
    assert_same_model(model, loaded, _x())


def test_low_precision_dtypes_roundtrip(tmp_path):
    model = kanjax.KAN([3, 2], basis="taylor", degree=3, dtype=jnp.bfloat16,
                       param_dtype=jnp.float16, rngs=nnx.Rngs(0))
    loaded = roundtrip(tmp_path, model)
    assert loaded.layers[0].param_dtype is jnp.float16 and loaded.layers[0].dtype is jnp.bfloat16
    assert loaded.layers[0].coef[...].dtype == jnp.float16
    assert_same_model(model, loaded, _x())


def test_float64_checkpoint(tmp_path):
    with jax.enable_x64(True):
        model = kanjax.KAN([2, 3], grid_size=3, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        x = _x(d=2).astype(jnp.float64)
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
    assert_same_model(model, loaded, _x())


def test_history_optimizer_state_and_metadata(tmp_path, task):
    x, z = task
    model, history = kanjax.train(kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(0)), (x, z), epochs=2,
                                  progress=False)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    opt_state = tx.init(params)
    _, opt_state = jax.jit(lambda s: tx.update(jax.tree.map(jnp.ones_like, params), s, params))(
        opt_state)
    path = ckpt_lib.save(tmp_path / "c", model, history=history, optimizer_state=opt_state,
                         metadata={"note": "x", "step": 7})
    got = ckpt_lib.load(path, with_extras=True)
    assert isinstance(got, ckpt_lib.Checkpoint)
    assert_same_model(model, got.model, x)
    assert got.history == history  # dataclass equality: every list and the config
    assert got.metadata == {"note": "x", "step": 7}
    assert jax.tree.structure(got.optimizer_state) == jax.tree.structure(opt_state)
    for a, b in zip(jax.tree.leaves(got.optimizer_state), jax.tree.leaves(opt_state)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(got.optimizer_state[1][0].count) == 1
    meta = ckpt_lib.read_metadata(path)
    assert meta["format_version"] == ckpt_lib.FORMAT_VERSION == 1
    assert meta["kanjax_version"] == kanjax.__version__ and meta["model"]["class"] == "KAN"
    assert meta["model"]["widths"] == [2, 3, 1]
    layer = meta["model"]["layers"][0]["attributes"]
    assert layer["coef"] == {"kind": "variable", "class": "Param"}
    assert layer["grid"] == {"kind": "variable", "class": "SplineGrid"}
    assert layer["mask"] == {"kind": "variable", "class": "EdgeMask"}
    assert layer["grid_size"] == {"kind": "static", "value": 5}
    assert layer["bias"] == {"kind": "static", "value": None}
    # plain load returns the model alone
    assert isinstance(ckpt_lib.load(path), kanjax.KAN)


class _UserState(NamedTuple):  # a state class outside optax/flax/jax/kanjax
    step: jax.Array
    trace: dict


def test_nnx_state_optimizer_state_and_user_classes(tmp_path):
    model = kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(0))
    tx = optax.adam(1e-2)
    opt_state = tx.init(nnx.state(model, nnx.Param))  # nnx.State of Params inside
    path = ckpt_lib.save(tmp_path / "a", model, optimizer_state=opt_state)
    got = ckpt_lib.load(path, with_extras=True).optimizer_state
    assert jax.tree.structure(got) == jax.tree.structure(opt_state)
    assert isinstance(got[0].mu, nnx.State)

    user = _UserState(jnp.int32(3), {"w": jnp.arange(4.0)})
    path = ckpt_lib.save(tmp_path / "b", model, optimizer_state=user)
    with pytest.raises(CheckpointError, match="optimizer_state_like"):
        ckpt_lib.load(path, with_extras=True)
    with pytest.raises(ValueError, match="with_extras"):
        ckpt_lib.load(path, optimizer_state_like=user)
    got = ckpt_lib.load(path, with_extras=True, optimizer_state_like=user).optimizer_state
    assert isinstance(got, _UserState) and int(got.step) == 3
    np.testing.assert_array_equal(np.asarray(got.trace["w"]), np.arange(4.0))
    with pytest.raises(CheckpointError, match="optimizer"):
        ckpt_lib.load(path, with_extras=True, optimizer_state_like=tx.init({"w": jnp.zeros(3)}))


def test_pathlike_relative_path_and_parents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = kanjax.KAN([2, 2], basis="taylor", degree=2, rngs=nnx.Rngs(0))
    written = ckpt_lib.save(pathlib.Path("runs") / "a", model)
    assert written == str(tmp_path / "runs" / "a") and os.path.isabs(written)
    assert_same_model(model, ckpt_lib.load("runs/a"), _x(d=2))
    assert sorted(os.listdir(tmp_path / "runs")) == ["a"]  # no temporary or old directories left


# ----------------------------------------------------------------------------- overwriting


def test_overwrite_and_refusals(tmp_path):
    a = kanjax.KAN([2, 2], basis="taylor", degree=2, rngs=nnx.Rngs(0))
    b = kanjax.KAN([2, 3, 2], basis="taylor", degree=2, rngs=nnx.Rngs(1))
    path = tmp_path / "c"
    ckpt_lib.save(path, a)
    with pytest.raises(FileExistsError, match="overwrite"):
        ckpt_lib.save(path, b, overwrite=False)
    assert_same_model(a, ckpt_lib.load(path), _x(d=2))
    ckpt_lib.save(path, b)
    assert_same_model(b, ckpt_lib.load(path), _x(d=2))
    assert sorted(os.listdir(tmp_path)) == ["c"]

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
    assert_same_model(a, ckpt_lib.load(tmp_path / "empty"), _x(d=2))


def test_unsupported_models_raise_before_writing(tmp_path):
    class Net(nnx.Module):
        def __init__(self):
            self.lin = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    with pytest.raises(TypeError, match="supports kanjax.KAN and kanjax.MLP"):
        ckpt_lib.save(tmp_path / "c", Net())
    custom = kanjax.MLP([2, 3, 1], activation=lambda v: v * 2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="activation"):
        ckpt_lib.save(tmp_path / "c", custom)
    odd = kanjax.KAN([2, 2], rngs=nnx.Rngs(0))
    odd.layers[0].note = object()
    with pytest.raises(TypeError, match=r"layers\.0\.note"):
        ckpt_lib.save(tmp_path / "c", odd)
    with pytest.raises(TypeError, match="JSON"):
        ckpt_lib.save(tmp_path / "c", kanjax.KAN([2, 2], rngs=nnx.Rngs(0)), metadata={"a": object()})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fail_in", ["_write_arrays", "_manifest", "_write_json", "_replace_dir"])
def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch, fail_in):
    first = kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(0))
    path = tmp_path / "c"
    ckpt_lib.save(path, first)

    class Crash(Exception):
        pass

    real = getattr(ckpt_lib, fail_in)

    def crash(*args, **kwargs):
        if fail_in != "_replace_dir":  # crash after the step (for the swap: before it)
            real(*args, **kwargs)
        raise Crash

    monkeypatch.setattr(ckpt_lib, fail_in, crash)
    with pytest.raises(Crash):
        ckpt_lib.save(path, kanjax.KAN([2, 5, 1], rngs=nnx.Rngs(1)))
    monkeypatch.undo()
    assert_same_model(first, ckpt_lib.load(path), _x(d=2))
    assert sorted(os.listdir(tmp_path)) == ["c"]  # the temporary directory was removed


def test_swap_failure_restores_previous(tmp_path, monkeypatch):
    first = kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(0))
    path = tmp_path / "c"
    ckpt_lib.save(path, first)
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        src, dst = os.fspath(src), os.fspath(dst)
        calls.append((os.path.basename(src), os.path.basename(dst)))
        if os.path.basename(src).startswith("c.tmp-") and dst == str(path):
            raise OSError("disk full")  # the old one is already moved away
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="disk full"):
        ckpt_lib.save(path, kanjax.KAN([2, 5, 1], rngs=nnx.Rngs(1)))
    monkeypatch.undo()
    assert [c for c in calls if c[1] == "c"][-2:] != [] and calls[-1][1] == "c"  # moved back
    assert calls[-1][0].startswith("c.old-")
    assert_same_model(first, ckpt_lib.load(path), _x(d=2))
    assert sorted(os.listdir(tmp_path)) == ["c"]


# ----------------------------------------------------------------------------- corruption


@pytest.fixture
def saved(tmp_path, task):
    x, z = task
    model, history = kanjax.train(kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(0)), (x, z), epochs=1,
                                  progress=False)
    path = ckpt_lib.save(tmp_path / "c", model, history=history,
                         optimizer_state=optax.adam(1e-3).init(jnp.zeros(5)))
    return pathlib.Path(path)


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_every_file_truncated_at_random_byte_is_detected(saved, tmp_path):
    rng = np.random.default_rng(0)
    files = _files(saved)
    assert len(files) >= 4 and saved / "metadata.json" in files and saved / "history.json" in files
    backup = {f: f.read_bytes() for f in files}
    for f in files:
        data = backup[f]
        if not data:
            continue  # an empty marker file cannot be truncated
        cut = int(rng.integers(0, len(data)))
        f.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as info:
            ckpt_lib.load(saved, with_extras=True)
        message = str(info.value)
        assert str(saved) in message, message
        assert "Traceback" not in message
        f.write_bytes(data)
    ckpt_lib.load(saved, with_extras=True)  # intact again


def test_flipped_byte_and_missing_file_are_detected(saved):
    data_files = [f for f in _files(saved / "arrays") if f.stat().st_size > 64]
    target = max(data_files, key=lambda f: f.stat().st_size)
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt_lib.load(saved)
    target.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        ckpt_lib.load(saved)


def _edit_metadata(path, fn):
    meta_file = path / "metadata.json"
    meta = json.loads(meta_file.read_text())
    fn(meta)
    meta_file.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.update(format_version=2), "newer than this kanjax reads"),
        (lambda m: m.update(format_version="1"), "format_version"),
        (lambda m: m.pop("format_version"), "format_version"),
        (lambda m: m.update(format_version=0), "format_version"),
        (lambda m: m["model"].update({"class": "Transformer"}), "unknown model class"),
        (lambda m: m["arrays"]["model/layers/0/coef"].update(shape=[2, 3, 9]), "shape"),
        (lambda m: m["model"]["layers"][0]["attributes"]["mask"].update({"class": "NoSuchVar"}),
         "NoSuchVar"),
        (lambda m: m["model"]["widths"].append(4), "layer"),
    ],
)
def test_bad_metadata(saved, edit, match):
    _edit_metadata(saved, edit)
    with pytest.raises(CheckpointError, match=match) as info:
        ckpt_lib.load(saved)
    assert str(saved) in str(info.value)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt_lib.load(tmp_path / "nothing")
    (tmp_path / "dir").mkdir()
    with pytest.raises(CheckpointError, match="missing metadata.json"):
        ckpt_lib.load(tmp_path / "dir")
    (tmp_path / "dir" / "metadata.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        ckpt_lib.load(tmp_path / "dir")
    assert issubclass(CheckpointError, ValueError)


def test_interrupted_swap_is_named_on_load(tmp_path):
    model = kanjax.KAN([2, 2], basis="taylor", degree=2, rngs=nnx.Rngs(0))
    ckpt_lib.save(tmp_path / "c", model)
    os.rename(tmp_path / "c", tmp_path / "c.old-1234abcd")  # as if killed between the renames
    with pytest.raises(CheckpointError, match=r"c\.old-1234abcd"):
        ckpt_lib.load(tmp_path / "c")


# ----------------------------------------------------------------------------- resumable training


class Interrupted(Exception):
    pass


def _kill_after_checkpoint(monkeypatch, epoch):
    """Make training die right after it wrote the checkpoint of ``epoch``."""
    real = ckpt_lib.save

    def save(path, model, **kw):
        real(path, model, **kw)
        if kw["metadata"]["train"]["epoch"] == epoch:
            raise Interrupted

    monkeypatch.setattr(ckpt_lib, "save", save)


def _assert_same_run(m1, h1, m2, h2):
    for a, b in zip(jax.tree.leaves(nnx.state(m1)), jax.tree.leaves(nnx.state(m2))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss
    np.testing.assert_array_equal(h1.learning_rate, h2.learning_rate)  # nan for user optimizers
    assert h1.grad_norm == h2.grad_norm


@pytest.mark.parametrize("kind", ["taylor", "bspline_grid_updates", "sgd_momentum"])
def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch, task, kind):
    x, z = task
    if kind == "taylor":
        make = lambda: kanjax.KAN([2, 4, 1], basis="taylor", degree=5, rngs=nnx.Rngs(0))  # noqa: E731
        kw = dict(batch_size=48, validation_data=(x[:50], z[:50]))
    elif kind == "bspline_grid_updates":  # the grids (non-trainable state) change in training
        make = lambda: kanjax.KAN([2, 3, 1], grid_size=4, rngs=nnx.Rngs(0))  # noqa: E731
        kw = dict(batch_size=64, grid_update_every=2)
    else:  # a user optimizer: its state is a pytree of nnx.State, not the flat Adam vector
        make = lambda: kanjax.MLP([2, 8, 1], rngs=nnx.Rngs(0))  # noqa: E731
        kw = dict(batch_size=64, optimizer=optax.sgd(0.05, momentum=0.9))
    kw.update(epochs=6, seed=3, progress=False)

    m_ref, h_ref = kanjax.train(make(), (x, z), **kw)

    _kill_after_checkpoint(monkeypatch, 4)
    with pytest.raises(Interrupted):
        kanjax.train(make(), (x, z), checkpoint_dir=tmp_path, checkpoint_every=2, **kw)
    monkeypatch.undo()
    assert ckpt_lib.load(tmp_path / "latest", with_extras=True).history.epochs == 4

    model = make()
    m_res, h_res = kanjax.train(model, (x, z), checkpoint_dir=tmp_path, checkpoint_every=2,
                                resume=True, **kw)
    assert m_res is model  # updated in place, as train always does
    assert h_res.epochs == 6 and h_res.config["resumed_from_epoch"] == 4
    assert np.all(np.diff(h_res.wall_time) >= 0)
    _assert_same_run(m_ref, h_ref, m_res, h_res)
    final = ckpt_lib.load(tmp_path / "latest", with_extras=True)  # written at the end
    assert final.history.train_loss == h_ref.train_loss
    assert final.metadata["train"]["epoch"] == 6
    for a, b in zip(jax.tree.leaves(nnx.state(final.model)), jax.tree.leaves(nnx.state(m_ref))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_from_empty_dir_and_after_completion(tmp_path, task):
    x, z = task
    make = lambda: kanjax.KAN([2, 3, 1], basis="taylor", degree=4, rngs=nnx.Rngs(0))  # noqa: E731
    kw = dict(epochs=3, batch_size=64, progress=False)
    m_ref, h_ref = kanjax.train(make(), (x, z), **kw)
    m1, h1 = kanjax.train(make(), (x, z), checkpoint_dir=tmp_path / "new", resume=True, **kw)
    assert "resumed_from_epoch" not in h1.config
    _assert_same_run(m_ref, h_ref, m1, h1)
    assert os.listdir(tmp_path / "new") == ["latest"]  # checkpoint_every=0: written at the end
    # resuming a finished run trains no further and returns the checkpointed state
    m2, h2 = kanjax.train(make(), (x, z), checkpoint_dir=tmp_path / "new", resume=True, **kw)
    _assert_same_run(m_ref, h_ref, m2, h2)
    assert h2.wall_time == h1.wall_time


def test_resume_with_incompatible_options_or_model(tmp_path, task):
    x, z = task
    make = lambda: kanjax.KAN([2, 3, 1], basis="taylor", degree=4, rngs=nnx.Rngs(0))  # noqa: E731
    kw = dict(batch_size=64, progress=False, checkpoint_dir=tmp_path)
    kanjax.train(make(), (x, z), epochs=2, **kw)
    with pytest.raises(ValueError, match=r"other options \(epochs: 2 in the checkpoint, 4 now"):
        kanjax.train(make(), (x, z), epochs=4, resume=True, **kw)
    with pytest.raises(ValueError, match="learning_rate"):
        kanjax.train(make(), (x, z), epochs=2, learning_rate=0.1, resume=True, **kw)
    with pytest.raises(ValueError, match="seed"):
        kanjax.train(make(), (x, z), epochs=2, seed=1, resume=True, **kw)
    with pytest.raises(ValueError, match="variables differ"):
        kanjax.train(kanjax.KAN([2, 5, 1], basis="taylor", degree=4, rngs=nnx.Rngs(0)), (x, z),
                     epochs=2, resume=True, **kw)
    raw_powers = kanjax.KAN([2, 3, 1], basis="taylor", degree=4, squash=None, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="static attributes"):
        kanjax.train(raw_powers, (x, z), epochs=2, resume=True, **kw)


def test_checkpoint_argument_errors(tmp_path, task):
    x, z = task
    model = kanjax.KAN([2, 3, 1], basis="taylor", degree=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="checkpoint_dir"):
        kanjax.train(model, (x, z), epochs=1, checkpoint_every=1, progress=False)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        kanjax.train(model, (x, z), epochs=1, resume=True, progress=False)
    with pytest.raises(ValueError, match="checkpoint_every"):
        kanjax.train(model, (x, z), epochs=1, checkpoint_every=-1, checkpoint_dir=tmp_path,
                     progress=False)
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        kanjax.train(model, (x, z), epochs=1, checkpoint_dir=tmp_path / "f", progress=False)


SHARDED_RESUME = """
import json, sys, tempfile
import jax, numpy as np
from flax import nnx
import kanjax, kanjax.checkpoint as ckpt_lib

assert jax.device_count() == 2, jax.devices()
x = jax.random.uniform(jax.random.key(0), (128, 2), minval=-1, maxval=1)
y = (x ** 2).sum(axis=1, keepdims=True)
make = lambda: kanjax.KAN([2, 3, 1], grid_size=4, rngs=nnx.Rngs(0))
kw = dict(epochs=4, batch_size=32, progress=False, mesh="auto")
ref, h_ref = kanjax.train(make(), (x, y), **kw)
assert h_ref.config["devices"] == 2
directory = tempfile.mkdtemp()
real = ckpt_lib.save
def save(path, model, **k):
    real(path, model, **k)
    if k["metadata"]["train"]["epoch"] == 2:
        raise KeyboardInterrupt
ckpt_lib.save = save
try:
    kanjax.train(make(), (x, y), checkpoint_dir=directory, checkpoint_every=2, **kw)
except KeyboardInterrupt:
    pass
ckpt_lib.save = real
res, h_res = kanjax.train(make(), (x, y), checkpoint_dir=directory, checkpoint_every=2,
                          resume=True, **kw)
same = all(np.array_equal(np.asarray(a), np.asarray(b))
           for a, b in zip(jax.tree.leaves(nnx.state(ref)), jax.tree.leaves(nnx.state(res))))
print("RESULT" + json.dumps({"same_params": same, "ref": h_ref.train_loss, "res": h_res.train_loss,
                             "resumed": h_res.config.get("resumed_from_epoch")}))
"""


@pytest.mark.slow  # ~8 s subprocess; resume and sharding each have fast tests
def test_resume_sharded_training():
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SHARDED_RESUME], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines()
                          if line.startswith("RESULT"))[len("RESULT"):])
    assert out["resumed"] == 2 and out["res"] == out["ref"] and out["same_params"]
