"""Data-parallel training over several devices (4 CPU host devices in a subprocess)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    import kanjax
    from jax.sharding import Mesh

    assert jax.device_count() == 4, jax.devices()
    x = jax.random.uniform(jax.random.key(0), (256, 3), minval=-1, maxval=1)
    y = jnp.sin(2 * x[:, :1]) * x[:, 1:2] + x[:, 2:] ** 2
    out = {}
    two = Mesh(np.array(jax.devices()[:2]), ("batch",))
    for name, mesh in (("one", None), ("auto", "auto"), ("mesh2", two)):
        model = kanjax.KAN([3, 6, 1], rngs=nnx.Rngs(0))
        model, h = kanjax.train(model, (x, y), epochs=5, batch_size=64, progress=False, mesh=mesh)
        out[name] = {"loss": h.train_loss, "config": h.config,
                     "pred": np.asarray(jax.device_get(model(np.asarray(x[:8])))).ravel().tolist()}
    try:
        kanjax.train(kanjax.KAN([3, 1], rngs=nnx.Rngs(0)), (x, y), epochs=1, batch_size=30,
                     progress=False)
    except ValueError as err:
        out["error"] = str(err)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def result():
    flags = os.environ.get("XLA_FLAGS", "")  # the suite's compile options (conftest), if any
    env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_sharded_training_matches_one_device(result):
    one = result["one"]["loss"]
    for name in ("auto", "mesh2"):
        # same data order and maths; only the reduction order of the gradients differs
        assert len(result[name]["loss"]) == len(one) == 5
        assert result[name]["loss"] == pytest.approx(one, rel=1e-4)
        assert result[name]["pred"] == pytest.approx(result["one"]["pred"], rel=1e-3, abs=1e-5)
    assert one[-1] < one[0]


def test_sharded_epoch_is_one_program_without_host_transfers(result):
    assert result["one"]["config"]["devices"] == 1 and "sharding" not in result["one"]["config"]
    auto = result["auto"]["config"]
    assert auto["devices"] == 4
    assert auto["sharding"]["axis"] == "data"
    assert auto["sharding"]["all_reduce_ops"] >= 1  # the gradients are reduced on device
    assert auto["sharding"]["host_transfer_ops"] == 0
    assert result["mesh2"]["config"]["sharding"]["devices"] == 2


def test_batch_not_divisible_by_devices_is_a_clear_error(result):
    assert "batch_size 30 must be a multiple of the 4 devices" in result["error"]
