"""Benchmark: KAN (B-spline and Taylor) vs MLP, side by side in one run.

For each named problem and model it reports, all measured in this run on this device:

* compile time of the training step program;
* steady-state time of one full training step (forward + backward + Adam update), the median
  and inter-quartile range of timed blocks of ``--block`` steps after warm-up, and samples/s;
* the step program's memory (``compiled.memory_analysis()``: arguments + outputs + temporaries);
* the matmul floor of a KAN step: its matmul FLOPs (6 * batch * sum_l n_in * (K + 1) * n_out)
  divided by the float32 matmul rate measured here with ``jnp.dot``, and the step's ratio to it;
* the step's ratio to the parameter-matched MLP's;
* test MSE after a fixed training budget (``kanjax.train``) on the problem's target function.

Models: ``kan-bspline`` (G=5, k=3), ``kan-taylor``, ``mlp`` (same widths, silu) and
``mlp-matched`` (same depth, hidden width chosen to match the B-spline KAN's parameter count).

    python benchmarks/kan_vs_mlp.py                      # seed, medium, wide
    python benchmarks/kan_vs_mlp.py --problems medium    # one problem
    python benchmarks/kan_vs_mlp.py --quick              # CI smoke run (seed only, short)

Two drivers (``--driver``), the same for every model:

* ``scan`` (default): ``--block`` Adam steps on fixed random batches as one jitted
  ``lax.scan`` with donated state, written here: the models alone, with no driver.
* ``train``: ``kanjax.train(model, data, optimizer=optax.adam(1e-3), batch_size=batch)`` on
  ``--block`` batches, the way users train (flat parameters, a shuffle and per-layer gradient
  norms every epoch); a step is an epoch's wall time (``History.wall_time``) over ``--block``.
  XLA compiles the two programs differently, and the same model can differ by tens of percent
  between them, so ``benchmarks/PERF.md`` reports both.

All models of a problem are compiled first and then timed in ``--repeats`` rounds: each round
measures the matmul rate and one block of every model, seconds apart. Steps are medians over
the rounds and each ratio is the median of the ratios formed within a round, so a load change
on a shared machine between one row and the next does not become a ratio.

Prints a markdown table; writes JSON and a PNG chart to ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import kanjax

# Every program here (KAN, MLP and the matmul) is compiled with the XLA options kanjax.train
# compiles its training programs with on this backend (None off CPU), so they compare alike.
XLA_OPTIONS = kanjax.cpu_compile_options(fast=False)

PROBLEMS = {
    # widths, batch size, Taylor degree, target function of x in [-1, 1]^n_in
    "seed": dict(widths=[2, 4, 4, 1], batch=1000, degree=9),
    "medium": dict(widths=[8, 64, 64, 1], batch=1024, degree=6),
    "wide": dict(widths=[64, 256, 256, 10], batch=4096, degree=6),
}
GRID_SIZE, ORDER = 5, 3


def target(x: jax.Array, n_out: int) -> jax.Array:
    """A smooth multivariate target: sums of products of sines and squares, n_out outputs."""
    n_in = x.shape[-1]
    outs = []
    for j in range(n_out):
        a = jnp.sin(jnp.pi * x[..., j % n_in]) * x[..., (j + 1) % n_in]
        b = jnp.mean(x**2, axis=-1)
        outs.append(a + b)
    return jnp.stack(outs, axis=-1)


def num_params(model) -> int:
    return int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


def matched_mlp_widths(widths, n_target: int) -> list[int]:
    """Same depth as ``widths``; one hidden width h chosen so the MLP has ~n_target params."""
    n_hidden = len(widths) - 2
    if n_hidden == 0:
        return list(widths)
    best = None
    for h in range(1, 8192):
        w = [widths[0]] + [h] * n_hidden + [widths[-1]]
        n = sum(a * b + b for a, b in zip(w[:-1], w[1:]))
        if best is None or abs(n - n_target) < abs(best[1] - n_target):
            best = (w, n)
        if n > n_target:
            break
    return best[0]


def make_models(problem: dict, seed: int = 0, dtype=None) -> dict:
    """The four models; ``dtype`` is the compute dtype (parameters stay float32)."""
    widths = problem["widths"]
    models = {
        "kan-bspline": kanjax.KAN(widths, basis="bspline", grid_size=GRID_SIZE, order=ORDER,
                                  dtype=dtype, rngs=nnx.Rngs(seed)),
        "kan-taylor": kanjax.KAN(widths, basis="taylor", degree=problem["degree"], dtype=dtype,
                                 rngs=nnx.Rngs(seed)),
        "mlp": kanjax.MLP(widths, dtype=dtype, rngs=nnx.Rngs(seed)),
    }
    models["mlp-matched"] = kanjax.MLP(
        matched_mlp_widths(widths, num_params(models["kan-bspline"])), dtype=dtype,
        rngs=nnx.Rngs(seed))
    return models


def kan_matmul_flops(model, batch: int) -> float | None:
    if not isinstance(model, kanjax.KAN):
        return None
    total = sum(layer.in_features * (layer.num_basis + 1) * layer.out_features for layer in model.layers)
    return 6.0 * batch * total


def mlp_matmul_flops(model, batch: int) -> float | None:
    if not isinstance(model, kanjax.MLP):
        return None
    w = model.widths
    return 6.0 * batch * sum(a * b for a, b in zip(w[:-1], w[1:]))


def matmul_timer(n: int = 1024, dtype=jnp.float32):
    """A function that times one square ``jnp.dot`` in ``dtype`` and returns its GFLOP/s."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda a: a @ a).lower(a).compile(XLA_OPTIONS)
    f(a).block_until_ready()

    def rate() -> float:  # the median of three calls
        times = []
        for _ in range(3):
            t = time.perf_counter()
            f(a).block_until_ready()
            times.append(time.perf_counter() - t)
        return 2 * n**3 / statistics.median(times) / 1e9

    return rate


def compile_step(model, problem: dict, block: int) -> dict:
    """Compile ``block`` Adam steps on fresh random batches as one program; run it once."""
    widths, batch = problem["widths"], problem["batch"]
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    xs = jax.random.uniform(jax.random.key(1), (block, batch, widths[0]), minval=-1, maxval=1)
    ys = target(xs, widths[-1])

    def loss_fn(p, xb, yb):
        return jnp.mean((nnx.merge(graphdef, p, rest)(xb) - yb) ** 2)

    def run_block(p, s, xs, ys):
        def step(carry, batch_):
            p, s = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, *batch_)
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (p, s), losses = jax.lax.scan(step, (p, s), (xs, ys))
        return p, s, losses

    start = time.perf_counter()
    compiled = jax.jit(run_block, donate_argnums=(0, 1)).lower(params, opt_state, xs, ys).compile(
        XLA_OPTIONS)
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    mem_bytes = None
    if mem is not None:
        mem_bytes = int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                        + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
    entry = dict(program=compiled, state=(params, opt_state), data=(xs, ys), block=block,
                 compile_s=compile_s, memory_mb=None if mem_bytes is None else mem_bytes / 2**20)
    time_block(entry)  # warm-up
    return entry


def time_block(entry: dict) -> float:
    """Seconds per step of one call of a :func:`compile_step` program (or one
    :func:`train_entry` block)."""
    if entry.get("driver") == "train":
        entry["calls"] += 1
        _, history = kanjax.train(entry["model"], entry["data"], epochs=entry["epochs"],
                                  batch_size=entry["data"][0].shape[0] // entry["block"],
                                  optimizer=optax.adam(1e-3), seed=entry["calls"],
                                  progress=False)  # the model is trained further in place
        entry["last_compile_s"] = history.config.get("compile_time")
        entry["losses"] = np.asarray(history.train_loss)
        return float(np.median(np.diff(history.wall_time))) / entry["block"]
    start = time.perf_counter()
    params, opt_state, losses = entry["program"](*entry["state"], *entry["data"])
    losses.block_until_ready()
    elapsed = (time.perf_counter() - start) / entry["block"]
    entry["state"], entry["losses"] = (params, opt_state), losses
    return elapsed


def train_entry(model, problem: dict, block: int, epochs: int = 4) -> dict:
    """The ``train`` driver: each timed block is one ``kanjax.train`` call of ``epochs`` epochs
    of ``block`` batches; its step time is the median epoch (after the first) over ``block``."""
    widths, batch = problem["widths"], problem["batch"]
    x = jax.random.uniform(jax.random.key(1), (block * batch, widths[0]), minval=-1, maxval=1)
    entry = dict(driver="train", model=model, data=(x, target(x, widths[-1])), block=block,
                 epochs=epochs, calls=0, memory_mb=None)
    start = time.perf_counter()
    time_block(entry)  # warm-up: imports, tracing and the first compile
    entry["compile_s"] = entry.pop("last_compile_s", time.perf_counter() - start)
    return entry


def interleaved_times(entries: dict, repeats: int, matmul_rate) -> tuple[dict, list]:
    """``repeats`` rounds; each round times the matmul rate, then one block of every entry.

    The machine this runs on is shared and its speed drifts by tens of percent between
    minutes, so every ratio is formed within a round, from blocks timed seconds apart.
    """
    times = {label: [] for label in entries}
    rates = []
    for _ in range(repeats):
        rates.append(matmul_rate())
        for label, entry in entries.items():
            times[label].append(time_block(entry))
    return times, rates


def accuracy(model, problem: dict, epochs: int, n_train: int, seed: int = 0) -> float:
    widths = problem["widths"]
    key_train, key_test = jax.random.split(jax.random.key(seed + 7))
    x = jax.random.uniform(key_train, (n_train, widths[0]), minval=-1, maxval=1)
    xt = jax.random.uniform(key_test, (n_train, widths[0]), minval=-1, maxval=1)
    y, yt = target(x, widths[-1]), target(xt, widths[-1])
    model, _ = kanjax.train(model, (x, y), epochs=epochs, batch_size=min(problem["batch"], n_train),
                            learning_rate=1e-2, progress=False)
    return kanjax.evaluate(model, (xt, yt))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--models", nargs="+", default=["kan-bspline", "kan-taylor", "mlp", "mlp-matched"])
    parser.add_argument("--block", type=int, default=10, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per model")
    parser.add_argument("--driver", choices=["scan", "train"], default="scan",
                        help="how every model's steps run: one jitted lax.scan written here, "
                             "or kanjax.train (see the module docstring)")
    parser.add_argument("--epochs", type=int, default=50, help="training budget for the accuracy column")
    parser.add_argument("--n-train", type=int, default=4096)
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="compute dtype of every model (parameters stay float32)")
    parser.add_argument("--matmul-n", type=int, default=1024,
                        help="size of the square matmul that measures the floor rate")
    parser.add_argument("--quick", action="store_true", help="seed problem, tiny budgets (CI)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.problems, args.block, args.repeats, args.epochs, args.n_train = ["seed"], 2, 2, 2, 256

    import flax

    dtype = jnp.dtype(args.dtype)
    compute = None if args.dtype == "float32" else dtype
    matmul_rate = matmul_timer(args.matmul_n, dtype=dtype)
    header = (f"device: {jax.devices()[0]} ({jax.default_backend()}), compute {args.dtype} "
              f"| jax {jax.__version__}, "
              f"flax {flax.__version__}, optax {optax.__version__}, kanjax {kanjax.__version__}, "
              f"python {platform.python_version()} | {os.cpu_count()} CPUs")
    print("# KAN vs MLP training-step benchmark\n")
    print(header)
    print(f"settings: driver {args.driver}; {args.repeats} rounds; each round times a "
          f"{args.matmul_n}^3 {args.dtype} jnp.dot "
          f"(the floor's rate), then one block of {args.block} steps of every model in turn; Adam; "
          f"B-spline G={GRID_SIZE}, k={ORDER}; step = median over rounds, each ratio = median of "
          f"the ratios within a round; XLA options {XLA_OPTIONS} (as kanjax.train); "
          f"accuracy: {args.epochs} epochs of kanjax.train on "
          f"{args.n_train} samples\n")
    print("| problem | model | widths | params | compile s | step ms (median ± IQR) | samples/s "
          "| step / matmul floor | step / mlp-matched | memory MB | test MSE |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    rates_by_problem = {}
    for name in args.problems:
        problem = PROBLEMS[name]
        models = make_models(problem, dtype=compute)
        rows, entries = {}, {}
        for label in args.models:
            model = models[label]
            rows[label] = dict(problem=name, model=label, widths=list(model.widths),
                               params=num_params(model), batch=problem["batch"])
            entries[label] = (compile_step(model, problem, args.block) if args.driver == "scan"
                              else train_entry(model, problem, args.block))
        times, rates = interleaved_times(entries, args.repeats, matmul_rate)
        rates_by_problem[name] = statistics.median(rates)
        base = times.get("mlp-matched")
        for label, r in rows.items():
            entry, t = entries[label], np.asarray(times[label])
            q1, med, q3 = np.percentile(t, [25, 50, 75])
            flops = kan_matmul_flops(models[label], problem["batch"]) or mlp_matmul_flops(
                models[label], problem["batch"])
            floors = flops / (np.asarray(rates) * 1e9)
            r.update(compile_s=entry["compile_s"], step_ms=med * 1e3, step_iqr_ms=(q3 - q1) * 1e3,
                     step_ms_rounds=(t * 1e3).tolist(), samples_per_s=problem["batch"] / med,
                     memory_mb=entry["memory_mb"],
                     finite=bool(np.isfinite(np.asarray(entry["losses"])).all()),
                     matmul_gflop=flops / 1e9, matmul_gflops_rounds=list(rates),
                     floor_ms=float(np.median(floors)) * 1e3,
                     vs_floor=float(np.median(t / floors)),
                     vs_mlp_matched=None if base is None else float(np.median(t / np.asarray(base))))
            r["test_mse"] = None if args.no_accuracy else accuracy(
                make_models(problem, dtype=compute)[label], problem, args.epochs, args.n_train)
            mem = "n/a" if r["memory_mb"] is None else f"{r['memory_mb']:.1f}"
            mse = "-" if r["test_mse"] is None else f"{r['test_mse']:.2e}"
            ratio = "-" if r["vs_mlp_matched"] is None else f"{r['vs_mlp_matched']:.2f}x"
            print(f"| {name} | {label} | {r['widths']} | {r['params']} | {r['compile_s']:.2f} "
                  f"| {r['step_ms']:.3f} ± {r['step_iqr_ms']:.3f} | {r['samples_per_s']:.3g} "
                  f"| {r['vs_floor']:.1f}x | {ratio} | {mem} | {mse} |", flush=True)
            results.append(r)
    print("\nmatmul rate (median of the rounds): " + ", ".join(
        f"{name} {rate:.1f} GFLOP/s" for name, rate in rates_by_problem.items()))
    os.makedirs(args.out, exist_ok=True)
    tag = "quick" if args.quick else "_".join(args.problems) + ("" if compute is None else f"_{args.dtype}")
    tag += "" if args.driver == "scan" else f"_{args.driver}"
    with open(os.path.join(args.out, f"kan_vs_mlp_{tag}.json"), "w") as f:
        json.dump(dict(header=header, driver=args.driver, xla_options=XLA_OPTIONS,
                       matmul_gflops=rates_by_problem, results=results), f, indent=1)
    chart(results, os.path.join(args.out, f"kan_vs_mlp_{tag}.png"), header)
    print(f"\nwrote {args.out}/kan_vs_mlp_{tag}.json and .png")
    return 0 if all(r["finite"] for r in results) else 1


def chart(results, path, header):
    from kanjax.plotting import _figure_class

    problems = sorted({r["problem"] for r in results}, key=list(PROBLEMS).index)
    labels = list(dict.fromkeys(r["model"] for r in results))
    fig = _figure_class()(figsize=(2.5 + 2.2 * len(problems), 4), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        vals = [next((r["step_ms"] for r in results if r["problem"] == p and r["model"] == label), math.nan)
                for p in problems]
        ax.bar(np.arange(len(problems)) + i * width, vals, width, label=label)
    ax.set_xticks(np.arange(len(problems)) + 0.4 - width / 2, problems)
    ax.set_yscale("log")
    ax.set_ylabel("training step (ms, median)")
    ax.set_title("KAN vs MLP: one Adam step", fontsize=10)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, header[:140], fontsize=5)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
