"""Benchmark: an ensemble of N seed-experiment KANs trained in one program vs one model.

Trains ``KAN([2, 4, 4, 1], basis="taylor", degree=9)`` on the seed task (1000 points, 200
epochs, batch 64, Adam + cosine) once with ``kanjax.train`` and then N members at once with
``kanjax.make_ensemble`` + ``kanjax.train_ensemble``, in the same process, and reports the
wall times (construction + compilation + training) and their ratio, plus the members'
test MSE.

    python benchmarks/ensemble.py --members 32
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import numpy as np
from flax import nnx

import kanjax
from kanjax.demo import seed_data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--basis", default="taylor", choices=["taylor", "bspline"])
    args = parser.parse_args(argv)

    import flax
    import optax

    print(f"device: {jax.devices()[0]} | jax {jax.__version__}, flax {flax.__version__}, optax "
          f"{optax.__version__}, kanjax {kanjax.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs")
    print(f"settings: seed task, KAN [2, 4, 4, 1] {args.basis}, {args.epochs} epochs, batch 64\n")
    (x, z), (xt, zt) = seed_data(0)

    def build(rngs):
        options = {"degree": 9} if args.basis == "taylor" else {}
        return kanjax.KAN([2, 4, 4, 1], basis=args.basis, rngs=rngs, **options)

    t = time.perf_counter()
    single, h = kanjax.train(build(nnx.Rngs(0)), (x, z), epochs=args.epochs, progress=False)
    one = time.perf_counter() - t
    print("| run | wall s (incl. build + compile) | / one model | compile s | test MSE |")
    print("|---|---|---|---|---|")
    print(f"| 1 model | {one:.2f} | 1.00x | {h.config['compile_time']:.2f} "
          f"| {kanjax.evaluate(single, (xt, zt)):.2e} |")
    for shared in (False, True):
        t = time.perf_counter()
        ens = kanjax.make_ensemble(build, args.members, seed=0)
        ens, hs = kanjax.train_ensemble(ens, (x, z), epochs=args.epochs, shared_order=shared,
                                        progress=False)
        many = time.perf_counter() - t
        mse = np.array([kanjax.evaluate(kanjax.ensemble_member(ens, i), (xt, zt))
                        for i in range(args.members)])
        label = "shared order" if shared else "own order each"
        print(f"| {args.members} members, {label} | {many:.2f} | {many / one:.2f}x "
              f"| {hs[0].config['compile_time']:.2f} | median {np.median(mse):.2e}, worst {mse.max():.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
