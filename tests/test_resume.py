"""Resumable training: train(checkpoint_dir=..., checkpoint_every=..., resume=...)."""

import json
import os

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import kanjax
from kanjax import checkpoint as ckpt_lib
from kanjax.demo import seed_data


@pytest.fixture(scope="module")
def task():
    (x, z), _ = seed_data(0, n_train=200, n_test=8)
    return x, z


class Interrupted(Exception):
    pass


def _kill_after_checkpoint(monkeypatch, epoch):
    """Make training die right after it wrote the checkpoint of ``epoch``."""
    real = ckpt_lib.write

    def write(path, json_items, arrays):
        step = real(path, json_items, arrays)
        if json_items["train"]["epoch"] == epoch:
            raise Interrupted
        return step

    monkeypatch.setattr(ckpt_lib, "write", write)


def _assert_same_run(m1, h1, m2, h2):
    for a, b in zip(jax.tree.leaves(nnx.state(m1)), jax.tree.leaves(nnx.state(m2))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss
    np.testing.assert_array_equal(h1.learning_rate, h2.learning_rate)  # nan for user optimizers
    assert h1.grad_norm == h2.grad_norm


def _steps(directory):
    return [n for n in os.listdir(directory) if n != ckpt_lib.LOCK_NAME]


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
    assert ckpt_lib.load(tmp_path, with_extras=True).history.epochs == 4
    assert len(_steps(tmp_path)) == 1  # the manager keeps the newest step only

    model = make()
    m_res, h_res = kanjax.train(model, (x, z), checkpoint_dir=tmp_path, checkpoint_every=2,
                                resume=True, **kw)
    assert m_res is model  # updated in place, as train always does
    assert h_res.epochs == 6 and h_res.config["resumed_from_epoch"] == 4
    assert np.all(np.diff(h_res.wall_time) >= 0)
    _assert_same_run(m_ref, h_ref, m_res, h_res)
    final = ckpt_lib.load(tmp_path, with_extras=True)  # written at the end
    assert final.history.train_loss == h_ref.train_loss
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
    assert len(_steps(tmp_path / "new")) == 1  # checkpoint_every=0: written at the end
    # resuming a finished run trains no further and returns the checkpointed state
    m2, h2 = kanjax.train(make(), (x, z), checkpoint_dir=tmp_path / "new", resume=True, **kw)
    _assert_same_run(m_ref, h_ref, m2, h2)
    assert h2.wall_time == h1.wall_time


def test_extending_a_finished_run(tmp_path, task):
    """A finished run continued to more epochs: the first epochs are the finished run's, the
    rest continue from its state (constant learning rate: the same as one long run)."""
    x, z = task
    make = lambda: kanjax.KAN([2, 3, 1], grid_size=4, rngs=nnx.Rngs(0))  # noqa: E731
    kw = dict(batch_size=64, progress=False, schedule="constant", grid_update_every=2)
    m_long, h_long = kanjax.train(make(), (x, z), epochs=6, **kw)
    kanjax.train(make(), (x, z), epochs=3, checkpoint_dir=tmp_path, **kw)
    m_ext, h_ext = kanjax.train(make(), (x, z), epochs=6, checkpoint_dir=tmp_path, resume=True,
                                **kw)
    assert h_ext.epochs == 6 and h_ext.config["extended_from_epochs"] == 3
    assert h_ext.config["epochs"] == 6
    _assert_same_run(m_long, h_long, m_ext, h_ext)
    # a run stopped before its end keeps its length: extending it is refused
    other = tmp_path / "other"

    def stop(done, history):
        return done == 2

    kanjax.train(make(), (x, z), epochs=4, checkpoint_dir=other, checkpoint_every=1,
                 callback=stop, **kw)
    with pytest.raises(ValueError, match="epochs: 4 in the checkpoint, 6 now"):
        kanjax.train(make(), (x, z), epochs=6, checkpoint_dir=other, resume=True, **kw)


def test_resume_with_incompatible_options_or_model(tmp_path, task):
    x, z = task
    make = lambda: kanjax.KAN([2, 3, 1], basis="taylor", degree=4, rngs=nnx.Rngs(0))  # noqa: E731
    kw = dict(batch_size=64, progress=False, checkpoint_dir=tmp_path)
    kanjax.train(make(), (x, z), epochs=2, **kw)
    with pytest.raises(ValueError, match="learning_rate"):
        kanjax.train(make(), (x, z), epochs=2, learning_rate=0.1, resume=True, **kw)
    with pytest.raises(ValueError, match="seed"):
        kanjax.train(make(), (x, z), epochs=2, seed=1, resume=True, **kw)
    with pytest.raises(ValueError, match="structure"):
        kanjax.train(kanjax.KAN([2, 5, 1], basis="taylor", degree=4, rngs=nnx.Rngs(0)), (x, z),
                     epochs=2, resume=True, **kw)
    raw_powers = kanjax.KAN([2, 3, 1], basis="taylor", degree=4, squash=None, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="structure"):
        kanjax.train(raw_powers, (x, z), epochs=2, resume=True, **kw)


def test_resume_refuses_other_grid_range(tmp_path, task):
    """Same structure, other knots: refused, naming the variables, and the model is kept."""
    x, z = task
    kw = dict(epochs=2, batch_size=64, progress=False, checkpoint_dir=tmp_path)
    kanjax.train(kanjax.KAN([2, 3, 1], grid_size=4, grid_range=(-1, 1), rngs=nnx.Rngs(0)),
                 (x, z), **kw)
    wide = kanjax.KAN([2, 3, 1], grid_size=4, grid_range=(-2, 2), rngs=nnx.Rngs(0))
    before = [np.asarray(a).copy() for a in jax.tree.leaves(nnx.state(wide))]
    with pytest.raises(ValueError, match=r"non-trainable variables.*grid"):
        kanjax.train(wide, (x, z), resume=True, **kw)
    for a, b in zip(before, jax.tree.leaves(nnx.state(wide))):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_resume_refuses_a_plain_save(tmp_path, task):
    x, z = task
    model = kanjax.KAN([2, 3, 1], basis="taylor", degree=4, rngs=nnx.Rngs(0))
    ckpt_lib.save(tmp_path, model)
    with pytest.raises(ckpt_lib.CheckpointError, match="not written by kanjax.train"):
        kanjax.train(model, (x, z), epochs=1, checkpoint_dir=tmp_path, resume=True,
                     progress=False)


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
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a kanjax checkpoint"):
        kanjax.train(model, (x, z), epochs=1, checkpoint_dir=tmp_path / "data", progress=False)


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
real = ckpt_lib.write
def write(path, items, arrays):
    step = real(path, items, arrays)
    if items["train"]["epoch"] == 2:
        raise KeyboardInterrupt
    return step
ckpt_lib.write = write
try:
    kanjax.train(make(), (x, y), checkpoint_dir=directory, checkpoint_every=2, **kw)
except KeyboardInterrupt:
    pass
ckpt_lib.write = real
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
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines()
                          if line.startswith("RESULT"))[len("RESULT"):])
    assert out["resumed"] == 2 and out["res"] == out["ref"] and out["same_params"]
