"""Benchmark: grid extension on the KAN paper's toy problem, and the RMSE-vs-G scaling check.

Part 1 (the paper's recipe): f(x, y) = exp(sin(pi x) + y^2) on [-1, 1]^2, widths [2, 5, 1],
cubic B-splines, grids 3 -> 10 -> 20 -> 50. At each grid size the model is refined from the
training samples (``KAN.refine(G, x)``: each layer's grid follows its inputs and the
coefficients are refitted so the function is kept; one ``train(..., grid_schedule=...)`` call
runs all stages, compiling the later stages' programs in the background) and trained
full-batch with Levenberg-Marquardt (``train(..., optimizer="lm")``, default: at most
``--steps`` 60, 40, 20 and 10 iterations on the four grids, stopping earlier when no step
lowers the loss) or L-BFGS (``--optimizer lbfgs``). Grids follow the
samples (``--grid-eps``, 0.02 as pykan) with a ``--margin`` of 10% of each input's range on
both sides, so test points slightly beyond the training activations stay inside the grid.
Prints test RMSE per grid and wall time (compilation included).

Part 2 (scaling): a [2, 1, 1]-representable target, f(x, y) = exp(sin(pi x) + y^2) is one;
test RMSE against G on a log-log scale with the fitted slope (theory: -(k + 1) = -4 for k = 3),
each grid trained to convergence (``--scaling-steps``, 100).

    python benchmarks/grid_extension.py            # both parts, Levenberg-Marquardt
    python benchmarks/grid_extension.py --optimizer lbfgs --steps 1000
    python benchmarks/grid_extension.py --optimizer adam --steps 150
    python benchmarks/grid_extension.py --quick    # CI smoke: few steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import kanjax


def toy(x):
    return jnp.exp(jnp.sin(jnp.pi * x[:, :1]) + x[:, 1:2] ** 2)


def data(n=1000, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.uniform(k1, (n, 2), minval=-1, maxval=1)
    xt = jax.random.uniform(k2, (n, 2), minval=-1, maxval=1)
    return (x, toy(x)), (xt, toy(xt))


def grid_extension(widths, grids, steps, seed=0, optimizer="lm", grid_eps=0.02, margin=0.1):
    """One ``kanjax.train`` call with ``grid_schedule``; per-stage rows from its history."""
    (x, y), (xt, yt) = data(seed=seed)
    start = time.perf_counter()
    # The first stage starts on the default [-1, 1] grids; each later stage refines every
    # layer on the training inputs (grid_eps, margin) inside train.
    model = kanjax.KAN(widths, basis="bspline", grid_size=grids[0], order=3, rngs=nnx.Rngs(seed))
    steps = list(steps) if isinstance(steps, (list, tuple)) else [steps] * len(grids)
    if len(steps) == 1:
        steps = steps * len(grids)
    if len(steps) != len(grids):
        raise ValueError(f"need one step budget per grid ({len(grids)}), got {steps}")
    schedule = list(zip(grids[1:], steps[1:]))
    if optimizer in ("lm", "lbfgs"):
        opts = dict(batch_size=len(x), optimizer=optimizer)
    else:  # Adam + cosine on minibatches, grids following the data early in each stage
        opts = dict(batch_size=250, learning_rate=1e-2, grid_update_every=10,
                    grid_update_until=min(50, steps[0]))
    model, h = kanjax.train(model, (x, y), epochs=steps[0], validation_data=(xt, yt),
                            grid_schedule=schedule, grid_eps=grid_eps, grid_margin=margin,
                            progress=False, **opts)
    total = time.perf_counter() - start
    firsts = [first for first, _ in h.config["grid_stages"]] + [h.epochs]
    rows, t_prev = [], 0.0
    for i, g in enumerate(grids):
        last = firsts[i + 1] - 1
        rows.append(dict(grid=g, train_rmse=h.train_loss[last] ** 0.5,
                         test_rmse=h.val_loss[last] ** 0.5, steps=firsts[i + 1] - firsts[i],
                         seconds=h.wall_time[last] - t_prev,
                         compile_s=h.config["stage_compile_time"][i]))
        t_prev = h.wall_time[last]
    return rows, total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[60, 40, 20, 10],
                        help="per grid (one value for all, or one per grid): at most this many LM "
                             "iterations or L-BFGS steps (full batch), or Adam epochs (4 steps "
                             "each)")
    parser.add_argument("--scaling-steps", type=int, default=100,
                        help="per grid in the scaling check (each grid trained to convergence)")
    parser.add_argument("--optimizer", choices=["lm", "lbfgs", "adam"], default="lm")
    parser.add_argument("--grid-eps", type=float, default=0.02,
                        help="1: uniform grids over the samples' range; 0: percentile grids")
    parser.add_argument("--margin", type=float, default=0.1,
                        help="grid range beyond the samples, as a fraction of their range")
    parser.add_argument("--grids", type=int, nargs="+", default=[3, 10, 20, 50])
    parser.add_argument("--scaling-grids", type=int, nargs="+", default=[3, 5, 10, 20, 50])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.scaling_steps, args.grids, args.scaling_grids = [5], 5, [3, 5], [3, 5]
    for name in ("grids", "scaling_grids"):  # an extension and a fitted slope need two grids
        if len(getattr(args, name)) < 2:
            parser.error(f"--{name.replace('_', '-')} needs at least two grid sizes, "
                         f"got {getattr(args, name)}")

    import flax
    import optax

    print("# Grid extension benchmark\n")
    print(f"device: {jax.devices()[0]}, float32 | jax {jax.__version__}, flax {flax.__version__}, "
          f"optax {optax.__version__}, kanjax {kanjax.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs")
    how = (f"{'Levenberg-Marquardt' if args.optimizer == 'lm' else 'L-BFGS'} at most "
           f"{'/'.join(map(str, args.steps))} steps per grid (scaling: {args.scaling_steps}), "
           f"full batch, grid_eps {args.grid_eps}, margin {args.margin}"
           if args.optimizer in ("lm", "lbfgs") else
           f"Adam {args.steps} epochs per grid, batch 250, lr 1e-2 cosine, grid updates every 10 "
           "epochs for the first 50")
    print(f"settings: f(x,y)=exp(sin(pi x)+y^2), 1000 train / 1000 test, k=3, {how}\n")
    opts = dict(optimizer=args.optimizer, grid_eps=args.grid_eps, margin=args.margin)
    rows, total = grid_extension([2, 5, 1], args.grids, args.steps, **opts)
    print("| widths | G | train RMSE (last step) | test RMSE | steps | stage s (refine, compile, run) "
          "| of which compile (or wait) s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| [2, 5, 1] | {r['grid']} | {r['train_rmse']:.2e} | {r['test_rmse']:.2e} "
              f"| {r['steps']} | {r['seconds']:.2f} | {r['compile_s']:.2f} |")
    print(f"\ntotal wall time: {total:.2f} s\n")

    scaling, _ = grid_extension([2, 1, 1], args.scaling_grids, args.scaling_steps, **opts)
    gs = np.array([r["grid"] for r in scaling], float)
    rmse = np.array([r["test_rmse"] for r in scaling])
    slope = float(np.polyfit(np.log(gs), np.log(rmse), 1)[0])
    print("| widths | G | test RMSE |\n|---|---|---|")
    for r in scaling:
        print(f"| [2, 1, 1] | {r['grid']} | {r['test_rmse']:.2e} |")
    print(f"\nfitted slope of log test RMSE vs log G: {slope:.2f} (theory for k=3: -4)")

    os.makedirs(args.out, exist_ok=True)
    tag = "quick" if args.quick else f"full_{args.optimizer}"
    with open(os.path.join(args.out, f"grid_extension_{tag}.json"), "w") as f:
        json.dump(dict(extension=rows, total_seconds=total, scaling=scaling, slope=slope), f, indent=1)
    from kanjax.plotting import _figure_class

    fig = _figure_class()(figsize=(9, 3.6), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    a1.semilogy([r["grid"] for r in rows], [r["test_rmse"] for r in rows], "o-", label="test")
    a1.semilogy([r["grid"] for r in rows], [r["train_rmse"] for r in rows], "s--", label="train")
    a1.set_xlabel("grid size G"), a1.set_ylabel("RMSE"), a1.set_title("[2, 5, 1] grid extension")
    a1.legend()
    a2.loglog(gs, rmse, "o-", label=f"[2, 1, 1], slope {slope:.2f}")
    a2.loglog(gs, rmse[0] * (gs / gs[0]) ** -4.0, "k:", label="G^-4")
    a2.set_xlabel("grid size G"), a2.set_title("scaling"), a2.legend()
    fig.savefig(os.path.join(args.out, f"grid_extension_{tag}.png"), dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
