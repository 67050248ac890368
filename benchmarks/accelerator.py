"""Benchmark for a GPU/TPU machine: KAN vs a parameter-matched MLP (and jaxKAN if importable).

Every model is driven the same way, as a user's own training loop drives it: the model is
split once (``nnx.split``) and three plain ``jax.jit`` programs are compiled over the
parameter pytree, each timed on its own:

* ``forward``: ``model(x)``;
* ``grad``: forward + backward, ``jax.value_and_grad`` of the MSE loss (``backward`` in the
  table is ``grad - forward``, a difference of two medians: noisy, even negative, where both
  programs are dominated by dispatch, as tiny ones on a CPU are);
* ``step``: ``grad`` + an Adam update (optax), parameters and optimizer state donated.

Problems (``--cases``): ``medium`` [8, 64, 64, 1] batch 1024, ``wide`` [64, 256, 256, 10] batch
4096, ``kanbench`` [1000, 1000, 1] batch 100 (the shape KAN benchmarks use) and ``large``
[8, 64, 64, 1] at batch 65,536, each at every grid size of ``--grids`` (default 5 and 50;
cubic B-splines). Models (``--models``): ``kanjax`` (``kanjax.KAN``, B-spline), ``mlp`` (same
depth, SiLU, hidden width chosen so its parameter count matches the KAN's at that G) and
``jaxkan`` (jaxKAN's ``KAN(layer_type="spline")``; skipped with a note when not importable).

Timing: after two warm-up calls, ``--repeats`` rounds; a round runs the program ``n`` times
back to back (``n`` chosen so a round lasts about ``--round-ms``) and blocks once at the end;
a figure is the median over rounds of the per-call time. A row that fails (out of memory,
say) is recorded with its error and the run goes on; rows left when ``--budget-s`` is spent
are listed as skipped. ``results.json`` (and ``results.md``) under ``--out`` are rewritten
after every row, so an interrupted run keeps what it measured.

    python benchmarks/accelerator.py --out results/accel          # everything (GPU/TPU)
    python benchmarks/accelerator.py --out /tmp/acc --quick       # tiny shapes, CPU smoke run
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
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

CASES = {  # name: (widths, batch)
    "medium": ([8, 64, 64, 1], 1024),
    "wide": ([64, 256, 256, 10], 4096),
    "kanbench": ([1000, 1000, 1], 100),
    "large": ([8, 64, 64, 1], 65536),
}
QUICK_CASES = {"tiny": ([4, 8, 1], 128)}
MODELS = ("kanjax", "mlp", "jaxkan")
ORDER = 3
PROGRAMS = ("forward", "grad", "step")


def mlp_params(widths) -> int:
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def matched_mlp_widths(widths, n_target: int) -> list[int]:
    """Same depth as ``widths``; the hidden width whose MLP parameter count is nearest ``n_target``."""
    if len(widths) <= 2:
        return list(widths)

    def with_hidden(h):
        return [widths[0]] + [h] * (len(widths) - 2) + [widths[-1]]

    h = 1
    while mlp_params(with_hidden(h)) < n_target:
        h *= 2
    lo, hi = h // 2, h  # parameter count grows with h: bisect for the crossing
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if mlp_params(with_hidden(mid)) < n_target else (lo, mid)
    best = min((lo, hi), key=lambda w: abs(mlp_params(with_hidden(max(w, 1))) - n_target))
    return with_hidden(max(best, 1))


def count_params(params) -> int:
    return int(sum(p.size for p in jax.tree.leaves(params)))


def build(model: str, widths, grid: int, dtype, kan_params: int | None):
    """The model and a short description of its configuration."""
    if model == "kanjax":
        return (kanjax.KAN(widths, basis="bspline", grid_size=grid, order=ORDER, dtype=dtype,
                           rngs=nnx.Rngs(0)), f"B-spline G={grid} k={ORDER}")
    if model == "mlp":
        w = matched_mlp_widths(widths, kan_params)
        return kanjax.MLP(w, dtype=dtype, rngs=nnx.Rngs(0)), f"widths {w}, silu"
    if model == "jaxkan":
        from jaxkan.models.KAN import KAN as JaxKAN

        return (JaxKAN(widths, layer_type="spline", required_parameters={"k": ORDER, "G": grid},
                       seed=0), f"layer_type='spline' G={grid} k={ORDER}")
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def programs(model, x, y):
    """The three compiled programs and their arguments: ``{name: (compiled, args_fn)}``."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    def forward(p, xb):
        return nnx.merge(graphdef, p, rest)(xb)

    def loss(p, xb, yb):
        return jnp.mean((forward(p, xb) - yb) ** 2)

    grad = jax.value_and_grad(loss)

    def step(p, s, xb, yb):
        value, g = grad(p, xb, yb)
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    state = {"p": params, "s": opt_state}

    def step_args():  # donated: each call consumes the state, the next call gets the new one
        return state["p"], state["s"], x, y

    def after_step(out):
        state["p"], state["s"] = out[0], out[1]

    compiled, seconds = {}, {}
    for name, fun, args, donate in (("forward", forward, (params, x), ()),
                                    ("grad", grad, (params, x, y), ()),
                                    ("step", step, (params, opt_state, x, y), (0, 1))):
        start = time.perf_counter()
        compiled[name] = jax.jit(fun, donate_argnums=donate).lower(*args).compile()
        seconds[name] = time.perf_counter() - start
    calls = {"forward": (lambda: (params, x), None), "grad": (lambda: (params, x, y), None),
             "step": (step_args, after_step)}
    return compiled, calls, seconds, count_params(params)


def time_program(compiled, args_fn, after, repeats: int, round_ms: float) -> list[float]:
    """Per-call milliseconds, one figure per round."""
    for _ in range(2):  # warm-up
        out = compiled(*args_fn())
        if after:
            after(out)
        jax.block_until_ready(out)
    start = time.perf_counter()
    out = compiled(*args_fn())
    if after:
        after(out)
    jax.block_until_ready(out)
    one = max(time.perf_counter() - start, 1e-6)
    n = int(min(max(round_ms / 1e3 / one, 1), 1000))
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            out = compiled(*args_fn())
            if after:
                after(out)
        jax.block_until_ready(out)
        rounds.append((time.perf_counter() - start) / n * 1e3)
    return rounds


def memory_mb(compiled) -> float | None:
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    total = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
             - mem.alias_size_in_bytes)
    return total / 2**20


def run_row(case: str, widths, batch: int, grid: int, model_name: str, args,
            kan_params: int | None) -> dict:
    """Build, compile and time one model on one problem; errors are recorded, not raised."""
    row = {"case": case, "widths": list(widths), "batch": batch, "grid": grid,
           "model": model_name, "status": "ok"}
    try:
        dtype = None if args.dtype == "float32" else jnp.dtype(args.dtype)
        model, row["config"] = build(model_name, widths, grid, dtype, kan_params)
        kx, ky = jax.random.split(jax.random.key(1))
        x = jax.random.uniform(kx, (batch, widths[0]), minval=-1.0, maxval=1.0)
        y = jax.random.normal(ky, (batch, widths[-1]))
        compiled, calls, row["compile_s"], row["params"] = programs(model, x, y)
        row["memory_mb"] = {k: memory_mb(c) for k, c in compiled.items()}
        row["rounds_ms"] = {}
        for name in PROGRAMS:
            args_fn, after = calls[name]
            row["rounds_ms"][name] = time_program(compiled[name], args_fn, after, args.repeats,
                                                  args.round_ms)
            row[f"{name}_ms"] = statistics.median(row["rounds_ms"][name])
        row["backward_ms"] = row["grad_ms"] - row["forward_ms"]
        del compiled, calls, model, x, y
    # Out of memory, a peer's API change: record it and go on with the next row.
    except Exception as err:  # noqa: BLE001
        row["status"] = f"error: {type(err).__name__}: {str(err)[:300]}"
    jax.clear_caches()
    return row


def add_ratios(rows: list[dict]) -> None:
    """Each row's forward/grad/step time over the MLP's and over kanjax's, same case and G."""
    by_key = {(r["case"], r["grid"], r["model"]): r for r in rows if r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            continue
        for ref in ("mlp", "kanjax"):
            other = by_key.get((r["case"], r["grid"], ref))
            if other is not None:
                r[f"vs_{ref}"] = {p: r[f"{p}_ms"] / other[f"{p}_ms"] for p in PROGRAMS}


def table(rows: list[dict]) -> str:
    lines = [("| case | widths | batch | G | model | params | forward ms | backward ms | grad ms "
              "| step ms | step vs MLP | step memory MB | compile s (f/g/s) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['case']} | {r['widths']} | {r['batch']} | {r['grid']} | {r['model']} "
        if r["status"] != "ok":
            lines.append(head + f"| - | {r['status'][:80]} | | | | | | |")
            continue
        c = r["compile_s"]
        mem = r["memory_mb"]["step"]
        lines.append(
            head + f"| {r['params']} | {r['forward_ms']:.3f} | {r['backward_ms']:.3f} "
            f"| {r['grad_ms']:.3f} | {r['step_ms']:.3f} "
            f"| {r.get('vs_mlp', {}).get('step', float('nan')):.2f} "
            f"| {'-' if mem is None else f'{mem:.1f}'} "
            f"| {c['forward']:.1f}/{c['grad']:.1f}/{c['step']:.1f} |")
    return "\n".join(lines)


def environment() -> dict:
    import flax

    try:
        import jaxkan
        jaxkan_version = getattr(jaxkan, "__version__", "importable")
    except ImportError:
        jaxkan_version = None
    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind,
            "backend": jax.default_backend(), "device_count": jax.device_count(),
            "versions": {"kanjax": kanjax.__version__, "jax": jax.__version__,
                         "flax": flax.__version__, "optax": optax.__version__,
                         "numpy": np.__version__, "jaxkan": jaxkan_version,
                         "python": platform.python_version()},
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "compilation_cache": kanjax.compile_cache.cache_dir()}


def write(out_dir: str, header: dict, rows: list[dict], skipped: list[dict]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for name, text in (("results.json", json.dumps({**header, "results": rows,
                                                     "skipped": skipped}, indent=1)),
                       ("results.md", table(rows) + "\n")):
        tmp = os.path.join(out_dir, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out_dir, name))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--grids", nargs="+", type=int, default=[5, 50])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="compute dtype (parameters stay float32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per program")
    parser.add_argument("--round-ms", type=float, default=200.0, help="length of a round")
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="stop starting new rows after this many seconds")
    parser.add_argument("--quick", action="store_true",
                        help="one tiny problem at G = 5, 2 short rounds (CPU smoke run)")
    args = parser.parse_args(argv)
    for g in args.grids:
        if g < 1:
            parser.error(f"--grids: every grid size must be >= 1, got {g}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    cases = QUICK_CASES if args.quick else {c: CASES[c] for c in args.cases}
    if args.quick:
        args.grids, args.repeats, args.round_ms = [5], 2, 20.0
    started = time.perf_counter()
    header = {**environment(), "args": vars(args)}
    print(f"# accelerator benchmark | {header['device']} ({header['backend']}) | "
          + ", ".join(f"{k} {v}" for k, v in header["versions"].items()), flush=True)
    rows, skipped = [], []
    if "jaxkan" in args.models and header["versions"]["jaxkan"] is None:
        skipped.append({"model": "jaxkan", "reason": "jaxkan is not importable"})
    for case, (widths, batch) in cases.items():
        for grid in args.grids:
            kan_params = None
            for model in args.models:
                if model == "jaxkan" and header["versions"]["jaxkan"] is None:
                    continue
                if time.perf_counter() - started > args.budget_s:
                    skipped.append({"case": case, "grid": grid, "model": model,
                                    "reason": f"--budget-s {args.budget_s:g} spent"})
                    continue
                if kan_params is None:  # the MLP matches kanjax's parameter count at this G
                    kan_params = count_params(nnx.state(build("kanjax", widths, grid, None, 0)[0],
                                                        nnx.Param))
                row = run_row(case, widths, batch, grid, model, args, kan_params)
                rows.append(row)
                add_ratios(rows)
                write(args.out, header, rows, skipped)
                print(table([row]).splitlines()[-1], flush=True)
    header["wall_s"] = time.perf_counter() - started
    write(args.out, header, rows, skipped)
    print("\n" + table(rows))
    for s in skipped:
        print(f"skipped: {s}")
    return 0 if rows and all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
