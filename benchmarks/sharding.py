"""Benchmark: data-parallel training of the wide problem over several devices.

Re-runs itself with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (CPU host
devices; on a machine with N accelerators pass ``--real`` to use them instead) and trains
the wide problem of ``kan_vs_mlp.py``, ``KAN([64, 256, 256, 10])`` B-spline G=5 k=3 with batch
4096, for a few epochs twice in the same process: on one device (``mesh=None``) and
sharded over all devices (``mesh="auto"``). Prints both loss curves, their largest relative
difference, the epoch times, and what the compiled sharded epoch contains (all-reduce ops
for the gradients, and host transfer ops, which must be 0: no host round trip per step).

    python benchmarks/sharding.py --devices 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def child(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import kanjax
    from kanjax.demo import versions

    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} | "
          + ", ".join(f"{k} {v}" for k, v in versions().items()))
    print(f"settings: KAN [64, 256, 256, 10] bspline G=5 k=3, n={args.samples}, "
          f"batch {args.batch}, {args.epochs} epochs, Adam lr 2e-2, float32\n")
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(kx, (args.samples, 64), minval=-1, maxval=1)
    w = jax.random.normal(kw, (64, 10)) / 8.0
    y = jnp.sin(x @ w)
    runs = {}
    for name, mesh in (("1 device", None), (f"{jax.device_count()} devices", "auto")):
        model = kanjax.KAN([64, 256, 256, 10], rngs=nnx.Rngs(0))
        t = time.perf_counter()
        model, h = kanjax.train(model, (x, y), epochs=args.epochs, batch_size=args.batch,
                                progress=False, mesh=mesh)
        total = time.perf_counter() - t
        epoch_times = np.diff([0.0] + h.wall_time)
        runs[name] = (h, total, epoch_times)
    (n1, (h1, t1, e1)), (n2, (h2, t2, e2)) = runs.items()
    print("| run | compile s | median epoch s | losses |")
    print("|---|---|---|---|")
    for name, (h, _total, ep) in runs.items():
        print(f"| {name} | {h.config['compile_time']:.2f} | {np.median(ep[1:] if len(ep) > 1 else ep):.3f} "
              f"| {', '.join(f'{v:.6e}' for v in h.train_loss)} |")
    diff = max(abs(a - b) / abs(a) for a, b in zip(h1.train_loss, h2.train_loss))
    print(f"\nlargest relative difference of the per-epoch losses: {diff:.2e}")
    print(f"compiled sharded epoch: {json.dumps(h2.config.get('sharding'))}")
    return 0 if diff < 1e-3 and h2.config.get("sharding", {}).get("host_transfer_ops") == 0 else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--real", action="store_true", help="use the machine's own devices")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child or args.real:
        return child(args)
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                         f"--xla_force_host_platform_device_count={args.devices}".strip())
    cmd = [sys.executable, __file__, "--child", "--epochs", str(args.epochs), "--samples",
           str(args.samples), "--batch", str(args.batch)]
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
