"""Benchmark: formulas of the AI Feynman set, from data to a closed form, against an MLP.

The 20 equations below are from the AI Feynman database (Udrescu & Tegmark 2020, "Feynman
equations"), named by their ids there, with the input ranges given there (or ``[1, 5]``).
Each dataset is generated here from its formula: inputs uniform in their ranges, 1000
training and 1000 test points.

One recipe for all equations (``recipe``):

1. ``KAN([n, 2n + 1, 1])``, B-spline G=5 k=3, grid fitted to the training inputs
   (``update_grid``), ``--steps`` L-BFGS steps, full batch;
2. ``kanjax.prune`` (threshold 1e-2);
3. ``kanjax.auto_symbolic`` with ``r2_threshold=0`` (every edge gets its best function);
4. ``kanjax.symbolic.refine_constants`` (float64 Levenberg-Marquardt, 20 iterations per
   refit, then snapping for at most 5 s);
5. ``kanjax.symbolic_formula`` (4 digits); its test RMSE, and whether
   ``sympy.simplify(formula - truth) == 0`` (checked only for formulas of at most 60
   operations).

The baseline is an MLP ``[n, h, h, 1]`` (silu) with ``h`` chosen so that its parameter
count matches the KAN's before pruning, trained with the same L-BFGS steps.

    python benchmarks/feynman.py            # all 20 equations
    python benchmarks/feynman.py --quick    # 1 equation, short training (smoke test)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# (id, variables, formula (sympy syntax), range per variable)
EQUATIONS = [
    ("I.6.2a", "theta", "exp(-theta**2/2)/sqrt(2*pi)", [(1, 3)]),
    ("I.12.1", "mu Nn", "mu*Nn", [(1, 5)] * 2),
    ("I.12.5", "q2 Ef", "q2*Ef", [(1, 5)] * 2),
    ("I.14.4", "k x", "k*x**2/2", [(1, 5)] * 2),
    ("I.25.13", "q C", "q/C", [(1, 5)] * 2),
    ("I.29.4", "omega c", "omega/c", [(1, 10)] * 2),
    ("I.34.27", "h omega", "h*omega/(2*pi)", [(1, 5)] * 2),
    ("I.39.1", "pr V", "3*pr*V/2", [(1, 5)] * 2),
    ("II.3.24", "Pwr r", "Pwr/(4*pi*r**2)", [(1, 5)] * 2),
    ("II.8.31", "epsilon Ef", "epsilon*Ef**2/2", [(1, 5)] * 2),
    ("II.27.18", "epsilon Ef", "epsilon*Ef**2", [(1, 5)] * 2),
    ("II.38.14", "Y sigma", "Y/(2*(1 + sigma))", [(1, 5)] * 2),
    ("III.12.43", "n h", "n*h/(2*pi)", [(1, 5)] * 2),
    ("I.6.2", "sigma theta", "exp(-(theta/sigma)**2/2)/(sqrt(2*pi)*sigma)", [(1, 3)] * 2),
    ("I.10.7", "m_0 v c", "m_0/sqrt(1 - v**2/c**2)", [(1, 5), (1, 2), (3, 10)]),
    ("I.12.4", "q1 epsilon r", "q1/(4*pi*epsilon*r**2)", [(1, 5)] * 3),
    ("I.18.12", "r F theta", "r*F*sin(theta)", [(1, 5)] * 3),
    ("I.27.6", "d1 d2 n", "1/(1/d1 + n/d2)", [(1, 5)] * 3),
    ("II.11.28", "n alpha", "1 + n*alpha/(1 - n*alpha/3)", [(0, 1)] * 2),
    ("II.15.4", "mom B theta", "-mom*B*cos(theta)", [(1, 5)] * 3),
]


def dataset(equation, n: int, seed: int):
    """``(x, y, truth, symbols)`` of ``n`` points uniform in the equation's ranges."""
    import sympy

    _, names, text, ranges = equation
    symbols = sympy.symbols(names.split(), real=True)
    truth = sympy.sympify(text, locals={s.name: s for s in symbols})
    lo, hi = np.array(ranges, np.float64).T
    x = lo + (hi - lo) * np.random.default_rng(seed).uniform(size=(n, len(symbols)))
    y = np.broadcast_to(sympy.lambdify(symbols, truth, "numpy")(*x.T), (n,))[:, None]
    return x.astype(np.float32), y.astype(np.float32), truth, symbols


def _rmse(pred, y) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - np.asarray(y, np.float64)) ** 2)))


def _params(model) -> int:
    import jax
    from flax import nnx

    return int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


def _equivalent(expr, truth) -> bool:
    import sympy

    if sympy.count_ops(expr) > 60:
        return False
    return sympy.simplify(expr - truth) == 0


def recipe(x, y, symbols, steps: int, seed: int):
    """The documented recipe; returns ``(model before pruning, formula or None, notes)``."""
    from flax import nnx

    import kanjax

    n = x.shape[1]
    model = kanjax.KAN([n, 2 * n + 1, 1], grid_size=5, rngs=nnx.Rngs(seed))
    model.update_grid(x)
    model, _ = kanjax.train(model, (x, y), epochs=steps, batch_size=x.shape[0],
                            optimizer="lbfgs", progress=False)
    trained = model
    model = kanjax.prune(model, x, threshold=1e-2)
    kanjax.auto_symbolic(model, x, r2_threshold=0.0)
    kanjax.symbolic.refine_constants(model, x, y, iters=20, time_budget=5.0)
    (expr,), _ = kanjax.symbolic_formula(model, [s.name for s in symbols], digits=4)
    return trained, expr


def mlp_baseline(x, y, n_params: int, steps: int, seed: int):
    """An ``[n, h, h, 1]`` MLP with about ``n_params`` parameters, same training."""
    from flax import nnx

    import kanjax

    n = x.shape[1]
    # params = (n + 1) h + (h + 1) h + (h + 1) = h^2 + (n + 3) h + 1
    h = max(1, round((-(n + 3) + np.sqrt((n + 3) ** 2 + 4 * (n_params - 1))) / 2))
    mlp = kanjax.MLP([n, h, h, 1], rngs=nnx.Rngs(seed))
    mlp, _ = kanjax.train(mlp, (x, y), epochs=steps, batch_size=x.shape[0], optimizer="lbfgs",
                          progress=False)
    return mlp


def run_one(equation, steps: int, n: int, seed: int) -> dict:
    import sympy

    start = time.perf_counter()
    x, y, truth, symbols = dataset(equation, 2 * n, seed)
    xtr, ytr, xte, yte = x[:n], y[:n], x[n:], y[n:]
    trained, expr = recipe(xtr, ytr, symbols, steps, seed)
    kan_rmse = _rmse(trained(xte), yte)
    f = sympy.lambdify(symbols, expr, "numpy")
    with np.errstate(all="ignore"):
        pred = np.broadcast_to(f(*np.asarray(xte, np.float64).T), (xte.shape[0],))[:, None]
    formula_rmse = _rmse(pred, yte)
    equivalent = bool(_equivalent(expr, truth))
    kan_seconds = time.perf_counter() - start
    mlp = mlp_baseline(xtr, ytr, _params(trained), steps, seed)
    return {"id": equation[0], "truth": str(truth), "formula": str(expr),
            "equivalent": equivalent, "kan_test_rmse": kan_rmse,
            "formula_test_rmse": formula_rmse, "mlp_test_rmse": _rmse(mlp(xte), yte),
            "kan_params": _params(trained), "mlp_params": _params(mlp),
            "kan_seconds": kan_seconds, "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 equation, 30 steps, 200 points")
    parser.add_argument("--steps", type=int, default=200, help="L-BFGS steps (both models)")
    parser.add_argument("--points", type=int, default=1000, help="training (and test) points")
    parser.add_argument("--only", nargs="*", help="equation ids to run (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/feynman.json")
    args = parser.parse_args(argv)
    equations = [e for e in EQUATIONS if not args.only or e[0] in args.only]
    steps, points = args.steps, args.points
    if args.quick:
        equations, steps, points = equations[:1], 30, 200
    rows = []
    print("| id | truth | formula | exact | KAN RMSE | MLP RMSE | formula RMSE | s |")
    print("|---|---|---|---|---|---|---|---|")
    for eq in equations:
        r = run_one(eq, steps, points, args.seed)
        rows.append(r)
        print(f"| {r['id']} | `{r['truth']}` | `{r['formula']}` | {r['equivalent']} | "
              f"{r['kan_test_rmse']:.2e} | {r['mlp_test_rmse']:.2e} | "
              f"{r['formula_test_rmse']:.2e} | {r['seconds']:.1f} |", flush=True)
    exact = sum(r["equivalent"] for r in rows)
    better = sum(r["kan_test_rmse"] < r["mlp_test_rmse"] for r in rows)
    print(f"\nexact: {exact}/{len(rows)}; KAN below the matched MLP: {better}/{len(rows)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": {**vars(args), "steps": steps, "points": points},
                               "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
