"""Benchmark: recovering f(x, y) = exp(sin(pi x) + y^2) as a formula, and auto_symbolic speed.

Recipe (the one the README documents), all timed together in one process:

1. ``KAN([2, 1, 1])`` B-spline, G=5, k=3, trained with L-BFGS (full batch) on 1000 points
   uniform in [-1, 1]^2;
2. ``kanjax.auto_symbolic`` on the training inputs (every edge fitted against the default
   library in one compiled call);
3. ``kanjax.symbolic.refine_constants`` on the training data: the symbolic edges'
   (a, b, c, d) refitted in float64 on the host (Levenberg-Marquardt), then snapped to
   0 and +-1, then integers, small rationals and multiples of pi, while the RMSE stays
   within 10%;
4. ``kanjax.symbolic_formula`` (rounded to ``--digits`` decimals), then the formula's test
   RMSE on 1000 fresh points (sympy lambdify, float64) and a sympy check that
   ``formula - exp(sin(pi x) + y^2)`` simplifies to 0.

Then ``auto_symbolic`` on a ``KAN([4, 8, 1])`` (40 edges, default library): the first call
(including compilation) and a second, warm call on a fresh model of the same shape.

    python benchmarks/symbolic_regression.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def target(x):
    return jnp.exp(jnp.sin(jnp.pi * x[:, :1]) + x[:, 1:2] ** 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="L-BFGS steps of stage 1")
    parser.add_argument("--lm-iters", type=int, default=50,
                        help="Levenberg-Marquardt iterations of the constant refit")
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/symbolic_regression.json")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    import sympy

    import kanjax
    from kanjax.demo import versions

    v = versions()
    print(f"device: {jax.devices()[0]} | " + ", ".join(f"{k} {val}" for k, val in v.items())
          + f", sympy {sympy.__version__}, {os.cpu_count()} CPUs")
    print(f"settings: KAN [2, 1, 1] bspline G=5 k=3, L-BFGS {args.steps} steps, "
          f"refine_constants {args.lm_iters} LM iterations, "
          f"1000 train / 1000 test points, digits={args.digits}, seed={args.seed}\n")

    k1, k2 = jax.random.split(jax.random.key(args.seed))
    xtr = jax.random.uniform(k1, (1000, 2), minval=-1, maxval=1)
    xte = jax.random.uniform(k2, (1000, 2), minval=-1, maxval=1)
    ytr, yte = target(xtr), target(xte)

    t0 = time.perf_counter()
    model = kanjax.KAN([2, 1, 1], grid_size=5, rngs=nnx.Rngs(args.seed))
    model, h1 = kanjax.train(model, (xtr, ytr), epochs=args.steps, batch_size=1000,
                             optimizer="lbfgs", progress=False)
    t1 = time.perf_counter()
    net_rmse = float(np.sqrt(kanjax.evaluate(model, (xte, yte))))
    fixed = kanjax.auto_symbolic(model, xtr)
    t2 = time.perf_counter()
    refined = kanjax.symbolic.refine_constants(model, xtr, ytr, iters=args.lm_iters)
    t3 = time.perf_counter()
    (expr,), (x, y) = kanjax.symbolic_formula(model, ["x", "y"], digits=args.digits)
    t4 = time.perf_counter()
    total = t4 - t0

    f = sympy.lambdify((x, y), expr, "numpy")
    xt = np.asarray(xte, np.float64)
    pred = np.broadcast_to(f(xt[:, 0], xt[:, 1]), (xt.shape[0],))
    formula_rmse = float(np.sqrt(np.mean((pred - np.asarray(yte, np.float64)[:, 0]) ** 2)))
    reference = sympy.exp(sympy.sin(sympy.pi * x) + y**2)
    equivalent = sympy.simplify(expr - reference) == 0

    print("| stage | s |")
    print("|---|---|")
    print(f"| train [2,1,1] ({args.steps} L-BFGS steps, incl. compile) | {t1 - t0:.2f} |")
    print(f"| auto_symbolic (incl. compile) | {t2 - t1:.2f} |")
    print(f"| refine_constants (LM + snapping) | {t3 - t2:.2f} |")
    print(f"| symbolic_formula | {t4 - t3:.2f} |")
    print(f"| **total** | **{total:.2f}** (target <= 15) |\n")
    print("edges:", {f"layer {k[0]} ({k[1]},{k[2]})": f"{s.name} R^2={s.r2:.6f}"
                     for k, s in fixed.items()})
    print(f"network test RMSE before auto_symbolic: {net_rmse:.2e}")
    print(f"train RMSE after auto_symbolic / after refine_constants: "
          f"{refined['rmse'][0]:.2e} / {refined['rmse'][1]:.2e}")
    print(f"formula: {expr}")
    print(f"formula test RMSE: {formula_rmse:.2e} (target <= 1e-4)")
    print(f"sympy-equivalent to exp(sin(pi x) + y^2): {equivalent}\n")

    # auto_symbolic speed on a [4, 8, 1] model (40 edges), default library
    xs = jax.random.uniform(jax.random.key(1), (1000, 4), minval=-1, maxval=1)
    times = []
    for seed in (1, 2):
        m = kanjax.KAN([4, 8, 1], rngs=nnx.Rngs(seed))
        t = time.perf_counter()
        kanjax.auto_symbolic(m, xs, r2_threshold=0.0)
        times.append(time.perf_counter() - t)
    print(f"auto_symbolic KAN [4, 8, 1] (40 edges x {len(kanjax.functions.LIBRARY)} functions): "
          f"first call {times[0]:.2f} s (incl. compile), warm {times[1]:.2f} s (target <= 5)")
    print(f"whole script: {time.perf_counter() - t_start:.1f} s")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "versions": v, "device": str(jax.devices()[0]), "platform": platform.platform(),
        "settings": vars(args),
        "times_s": {"train": t1 - t0, "auto_symbolic": t2 - t1, "refine_constants": t3 - t2,
                    "formula": t4 - t3, "total": total},
        "formula": str(expr), "formula_test_rmse": formula_rmse, "equivalent": bool(equivalent),
        "network_test_rmse": net_rmse,
        "auto_symbolic_481_s": {"first": times[0], "warm": times[1]},
    }, indent=2))
    return 0 if (equivalent and formula_rmse <= 1e-4) else 1


if __name__ == "__main__":
    raise SystemExit(main())
