"""Benchmark: formulas of the AI Feynman set, from data to a closed form, against an MLP and pykan.

The 20 equations below are from the AI Feynman database (Udrescu & Tegmark 2020, "Feynman
equations"), named by their ids there, with the input ranges given there (or ``[1, 5]``).
Each dataset is generated here from its formula: inputs uniform in their ranges, 1000
training and 1000 test points.

One recipe for all equations (``recipe``):

1. ``KAN([n, [0, 1]], mult_arity=n)``: one multiplication node over ``n`` factors, each
   factor a sum of one learned B-spline edge per input (G=5, k=3; ``KAN([1, 1])`` for one
   input); grids fitted to the training inputs (``update_grid``);
2. Levenberg-Marquardt (``optimizer="lm"``, at most ``--steps`` epochs, full batch) from
   ``--restarts`` initialisations (seeds ``seed, seed + 1, ...``), keeping the lowest
   training loss;
3. ``kanjax.prune`` (threshold 1e-2: edges that carry nothing are masked);
4. ``kanjax.auto_symbolic`` with ``r2_threshold=0`` (every edge gets its best function);
5. ``kanjax.refine_constants`` (float64 Levenberg-Marquardt, 20 iterations per refit, then
   snapping for at most 5 s);
6. ``kanjax.symbolic_formula`` (4 digits); its test RMSE, and whether
   ``sympy.simplify(formula - truth) == 0`` (checked only for formulas of at most 60
   operations whose test RMSE is within 1e-4 of the targets' RMS).

The recipe finds formulas that are products of one-variable functions (most of the set); a
formula that is not (``I.6.2``, ``I.10.7``, ``I.27.6``, ``II.11.28``) is fitted but not
recovered. The baseline is an MLP ``[n, h, h, 1]`` (silu) with ``h`` chosen so that its
parameter count matches the KAN's before pruning, trained the same way (Levenberg-Marquardt,
same epochs, best of the same restarts) and also with L-BFGS (same epochs and restarts); the
lower training loss of the two is the MLP's row.

With ``--pykan N`` (needs pykan 0.2.8 and torch, the ``peers`` extra) the first ``N``
equations also run pykan's documented recipe (its README/tutorial: ``KAN(width=[n, 5, 1],
grid=3, k=3)``, ``fit(opt="LBFGS", steps=50, lamb=0.001)``, ``prune``, ``fit``,
``refine(10)``, ``fit``, ``auto_symbolic`` with its tutorial's library, ``fit``,
``ex_round(symbolic_formula, 4)``) on the same data.

    python benchmarks/feynman.py                 # all 20 equations
    python benchmarks/feynman.py --pykan 5       # and pykan on the first 5
    python benchmarks/feynman.py --quick         # 1 equation, short training (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
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


def _equivalent(expr, truth, formula_rmse: float, y) -> bool:
    """``sympy.simplify(expr - truth) == 0``, tried only where the formula is numerically
    the truth on the test data (RMSE <= 1e-4 of the targets' RMS: float32 data) and small."""
    import sympy

    scale = float(np.sqrt(np.mean(np.asarray(y, np.float64) ** 2)))
    if not formula_rmse <= 1e-4 * scale or sympy.count_ops(expr) > 60:
        return False
    return sympy.simplify(expr - truth) == 0


def _best_of(build, x, y, steps: int, seeds, optimizer="lm"):
    """Train ``build(seed)`` for each seed (full batch); ``(model, training loss)`` of the
    lowest training loss."""
    import kanjax

    best = None
    for seed in seeds:
        model = build(seed)
        if isinstance(model, kanjax.KAN):
            model.update_grid(x)
        model, history = kanjax.train(model, (x, y), epochs=steps, batch_size=x.shape[0],
                                      optimizer=optimizer, progress=False)
        if best is None or history.train_loss[-1] < best[1]:
            best = (model, history.train_loss[-1])
    return best


def recipe(x, y, symbols, steps: int, seed: int, restarts: int):
    """The documented recipe; returns ``(trained model before pruning, formula)``."""
    from flax import nnx

    import kanjax

    n = x.shape[1]
    widths, arity = ([1, 1], 2) if n == 1 else ([n, [0, 1]], n)
    trained = _best_of(lambda s: kanjax.KAN(widths, mult_arity=arity, grid_size=5,
                                            rngs=nnx.Rngs(s)),
                       x, y, steps, range(seed, seed + restarts))[0]
    model = kanjax.prune(trained, x, threshold=1e-2)
    kanjax.auto_symbolic(model, x, r2_threshold=0.0)
    kanjax.refine_constants(model, x, y, iters=20, time_budget=5.0)
    (expr,), _ = kanjax.symbolic_formula(model, [s.name for s in symbols], digits=4)
    return trained, expr


def mlp_baseline(x, y, n_params: int, steps: int, seed: int, restarts: int):
    """An ``[n, h, h, 1]`` MLP with about ``n_params`` parameters, same training, and the
    same restarts with L-BFGS too: the lower training loss of the two optimizers wins."""
    from flax import nnx

    import kanjax

    n = x.shape[1]
    # params = (n + 1) h + (h + 1) h + (h + 1) = h^2 + (n + 3) h + 1
    h = max(1, round((-(n + 3) + np.sqrt((n + 3) ** 2 + 4 * (n_params - 1))) / 2))
    build = lambda s: kanjax.MLP([n, h, h, 1], rngs=nnx.Rngs(s))
    fits = [_best_of(build, x, y, steps, range(seed, seed + restarts), opt)
            for opt in ("lm", "lbfgs")]
    return min(fits, key=lambda fit: fit[1])[0]


PYKAN_LIB = ["x", "x^2", "x^3", "x^4", "exp", "log", "sqrt", "tanh", "sin", "abs"]


def pykan_recipe(x, y, xt, yt, symbols, truth, seed: int) -> dict:
    """pykan 0.2.8's documented recipe on the same data: test RMSE, formula, seconds."""
    import contextlib
    import io
    import tempfile

    import sympy
    import torch
    from kan import KAN
    from kan.utils import ex_round

    start = time.perf_counter()
    t = lambda a: torch.tensor(np.asarray(a, np.float32))
    data = {"train_input": t(x), "train_label": t(y), "test_input": t(xt), "test_label": t(yt)}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        model = KAN(width=[x.shape[1], 5, 1], grid=3, k=3, seed=seed, auto_save=False,
                    ckpt_path=tmp)
        model.fit(data, opt="LBFGS", steps=50, lamb=0.001)
        model = model.prune()
        model.fit(data, opt="LBFGS", steps=50)
        model = model.refine(10)
        model.fit(data, opt="LBFGS", steps=50)
        with torch.no_grad():
            rmse = _rmse(model(data["test_input"]).numpy(), yt)
        model.auto_symbolic(lib=PYKAN_LIB)
        model.fit(data, opt="LBFGS", steps=50)
        expr = ex_round(model.symbolic_formula()[0][0], 4)
    names = {f"x_{i + 1}": s for i, s in enumerate(symbols)}  # pykan's input names
    expr = sympy.sympify(expr)
    expr = expr.xreplace({v: names[v.name] for v in expr.free_symbols if v.name in names})
    return {"pykan_test_rmse": rmse, "pykan_formula": str(expr),
            "pykan_formula_rmse": _formula_rmse(expr, symbols, xt, yt),
            "pykan_equivalent": bool(_equivalent(expr, truth, _formula_rmse(expr, symbols, xt, yt),
                                                 yt)),
            "pykan_seconds": time.perf_counter() - start}


def _formula_rmse(expr, symbols, x, y) -> float:
    import sympy

    f = sympy.lambdify(symbols, expr, "numpy")
    with np.errstate(all="ignore"):
        pred = np.broadcast_to(f(*np.asarray(x, np.float64).T), (x.shape[0],))[:, None]
    return _rmse(pred, y)


def run_one(equation, steps: int, n: int, seed: int, restarts: int, pykan: bool) -> dict:
    start = time.perf_counter()
    x, y, truth, symbols = dataset(equation, 2 * n, seed)
    xtr, ytr, xte, yte = x[:n], y[:n], x[n:], y[n:]
    trained, expr = recipe(xtr, ytr, symbols, steps, seed, restarts)
    formula_rmse = _formula_rmse(expr, symbols, xte, yte)
    row = {"id": equation[0], "truth": str(truth), "formula": str(expr),
           "equivalent": bool(_equivalent(expr, truth, formula_rmse, yte)),
           "kan_test_rmse": _rmse(trained(xte), yte),
           "formula_test_rmse": formula_rmse,
           "kan_params": _params(trained), "kan_seconds": time.perf_counter() - start}
    mlp = mlp_baseline(xtr, ytr, _params(trained), steps, seed, restarts)
    row.update(mlp_test_rmse=_rmse(mlp(xte), yte), mlp_params=_params(mlp))
    if pykan:
        try:
            row.update(pykan_recipe(xtr, ytr, xte, yte, symbols, truth, seed))
        except Exception as err:  # noqa: BLE001 - a peer's failure is a result, not a crash
            row.update(pykan_formula=f"failed: {type(err).__name__}: {err}"[:120],
                       pykan_equivalent=False, pykan_test_rmse=float("nan"),
                       pykan_seconds=float("nan"))
    row["seconds"] = time.perf_counter() - start
    return row


def _header(args, steps, points) -> None:
    import platform
    from importlib import metadata

    import jax

    versions = {}
    for name in ("jax", "flax", "optax", "sympy", "kanjax", "pykan", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    print(f"device: {jax.devices()[0]} ({jax.default_backend()}), {platform.machine()}, "
          f"{os.cpu_count()} CPUs | " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    print(f"settings: {points} train / {points} test points, seed {args.seed}, LM <= {steps} "
          f"epochs, best of {args.restarts} restarts (KAN and MLP; MLP also L-BFGS); pykan on the first "
          f"{args.pykan} equation(s)\n")


def _print_row(r) -> None:
    pykan = (f" | `{r['pykan_formula']}` | {r['pykan_equivalent']} | {r['pykan_test_rmse']:.2e} "
             f"| {r['pykan_seconds']:.1f}" if "pykan_formula" in r else " | | | |")
    print(f"| {r['id']} | `{r['truth']}` | `{r['formula']}` | {r['equivalent']} | "
          f"{r['kan_test_rmse']:.2e} | {r['mlp_test_rmse']:.2e} | "
          f"{r['formula_test_rmse']:.2e} | {r['kan_seconds']:.1f}" + pykan + " |", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 equation, 30 epochs, 200 points")
    parser.add_argument("--steps", type=int, default=200, help="LM epochs at most (both models)")
    parser.add_argument("--restarts", type=int, default=3, help="initialisations per model")
    parser.add_argument("--points", type=int, default=1000, help="training (and test) points")
    parser.add_argument("--only", nargs="*", help="equation ids to run (default: all)")
    parser.add_argument("--pykan", type=int, default=0, help="run pykan on the first N equations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/feynman.json")
    args = parser.parse_args(argv)
    equations = [e for e in EQUATIONS if not args.only or e[0] in args.only]
    steps, points = args.steps, args.points
    if args.quick:
        equations, steps, points, args.restarts = equations[:1], 30, 200, 1
    _header(args, steps, points)
    rows = []
    print("| id | truth | kanjax formula | exact | KAN RMSE | MLP RMSE | formula RMSE | kanjax s "
          "| pykan formula | exact | pykan RMSE | pykan s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, eq in enumerate(equations):
        rows.append(run_one(eq, steps, points, args.seed, args.restarts, i < args.pykan))
        _print_row(rows[-1])
    exact = sum(r["equivalent"] for r in rows)
    better = sum(r["kan_test_rmse"] < r["mlp_test_rmse"] for r in rows)
    print(f"\nkanjax exact: {exact}/{len(rows)}; KAN test RMSE below the matched MLP's: "
          f"{better}/{len(rows)}")
    with_pykan = [r for r in rows if "pykan_formula" in r]
    if with_pykan:
        print(f"on the {len(with_pykan)} equations run with pykan: kanjax exact "
              f"{sum(r['equivalent'] for r in with_pykan)}, pykan exact "
              f"{sum(r['pykan_equivalent'] for r in with_pykan)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": {**vars(args), "steps": steps, "points": points},
                               "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
