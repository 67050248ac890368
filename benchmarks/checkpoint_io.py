"""Benchmark: ``kanjax.save`` / ``kanjax.load`` of a KAN with ~1e6 parameters.

Times, as the median of ``--repeats`` calls in one process (after one warm-up call, which
pays for importing orbax), saving and loading

* the model alone, and
* the model with an Adam state (``mu``, ``nu``: twice the parameters) and a 200-epoch
  history, what ``train(checkpoint_dir=...)`` writes;

and, in a fresh Python process, the first ``kanjax.load`` (orbax import included, JAX and
kanjax already imported). Loads include the checksum verification of every item, building
the abstract model from its config and the shape checks; the timings end when the arrays
are on the device. Target on a 2-core CPU: save <= 0.5 s and load <= 0.5 s.

    python benchmarks/checkpoint_io.py                  # KAN [64, 256, 256, 10], G = 7
    python benchmarks/checkpoint_io.py --grid-size 5 --repeats 9 --dir /some/disk
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import kanjax


def timed(fn, repeats):
    fn()  # warm-up: imports orbax, compiles nothing of the timings below
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        model = out.model if isinstance(out, kanjax.checkpoint.Checkpoint) else out
        if isinstance(model, nnx.Module):  # loads end when the arrays are on the device
            jax.block_until_ready(jax.tree.leaves(nnx.state(model)))
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def cold_load(path: str) -> float:
    code = (
        "import time, jax, kanjax\n"
        f"t = time.perf_counter(); m = kanjax.load({path!r})\n"
        "jax.block_until_ready(jax.tree.leaves(__import__('flax').nnx.state(m)))\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="64,256,256,10")
    parser.add_argument("--grid-size", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]

    from importlib.metadata import version

    import flax

    model = kanjax.KAN(widths, grid_size=args.grid_size, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    n_params = sum(a.size for a in jax.tree.leaves(params))
    n_total = sum(a.size for a in jax.tree.leaves(nnx.state(model)))
    flat = jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(params)])
    tx = optax.adam(1e-3)
    opt_state = tx.init(flat)  # the flat Adam state train() uses, with non-zero moments
    _, opt_state = tx.update(jax.random.normal(jax.random.key(1), flat.shape), opt_state, flat)
    history = kanjax.History(train_loss=list(np.linspace(1, 0, 200)),
                             learning_rate=list(np.linspace(1, 0, 200)),
                             wall_time=list(np.linspace(0, 10, 200)),
                             grad_norm={f"layers.{i}": list(np.ones(200)) for i in range(len(widths) - 1)})

    root = args.dir or tempfile.mkdtemp(prefix="kanjax-ckpt-bench-")
    os.makedirs(root, exist_ok=True)
    path_model, path_full = os.path.join(root, "model"), os.path.join(root, "full")

    print("# Checkpoint I/O benchmark\n")
    print(f"device: {jax.devices()[0]}, {os.cpu_count()} CPUs | jax {jax.__version__}, flax "
          f"{flax.__version__}, orbax-checkpoint {version('orbax-checkpoint')}, kanjax "
          f"{kanjax.__version__}, python {platform.python_version()}, {platform.machine()}")
    print(f"settings: KAN {widths}, B-spline G={args.grid_size}, k=3, float32; {n_params:,} "
          f"trainable parameters ({n_total:,} values with grids and masks); median of "
          f"{args.repeats} after one warm-up call; files in {root}\n")

    rows = []
    save_m = timed(lambda: kanjax.save(path_model, model), args.repeats)
    load_m = timed(lambda: kanjax.load(path_model), args.repeats)
    rows.append(("model", save_m, load_m, path_model))
    save_f = timed(lambda: kanjax.save(path_full, model, optimizer_state=opt_state,
                                       history=history), args.repeats)
    load_f = timed(lambda: kanjax.load(path_full, with_extras=True, optimizer_state_like=opt_state),
                   args.repeats)
    rows.append(("model + Adam state + history", save_f, load_f, path_full))

    loaded = kanjax.load(path_full, with_extras=True, optimizer_state_like=opt_state)
    x = jax.random.uniform(jax.random.key(0), (16, widths[0]), minval=-1, maxval=1)
    assert np.array_equal(np.asarray(model(x)), np.asarray(loaded.model(x)))
    assert np.array_equal(np.asarray(loaded.optimizer_state[0].mu), np.asarray(opt_state[0].mu))

    print("| what | size on disk | save s (median, min-max) | load s (median, min-max) |")
    print("|---|---|---|---|")
    for name, s, lo, path in rows:
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
        print(f"| {name} | {size / 2**20:.1f} MiB | {s[0]:.3f} ({s[1]:.3f}-{s[2]:.3f}) | "
              f"{lo[0]:.3f} ({lo[1]:.3f}-{lo[2]:.3f}) |")
    cold = [cold_load(path_model) for _ in range(3)]
    print(f"\nfirst load in a fresh process (orbax import included), model: "
          f"{statistics.median(cold):.3f} s (median of 3)")
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
