"""Benchmark: the seed experiment (``kanjax demo``) in fresh processes.

Each run is a new ``python -m kanjax demo`` process, so every figure includes imports,
JAX start-up and compilation, exactly as a user meets them. Reported per basis: test and
train MSE, ``train()`` wall time (compilation included), its compile part, and the whole
command's wall time; median and worst over ``--repeats`` runs with different seeds.

    python benchmarks/seed_experiment.py                # both bases, 3 seeds each
    python benchmarks/seed_experiment.py --quick        # CI smoke: 1 run, 20 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

TARGETS = {  # per basis: test MSE bound, train() and whole-command seconds
    "taylor": dict(test_mse=1e-5, train_seconds=2.0, command_seconds=15.0),
    "bspline": dict(test_mse=1e-4, train_seconds=None, command_seconds=15.0),
}


def run_once(basis: str, seed: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "kanjax", "demo", "--basis", basis, "--seed", str(seed),
               "--epochs", str(epochs), "--no-progress", "--out", out]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)
    res["command_seconds"] = wall
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--basis", nargs="+", default=["taylor", "bspline"])
    parser.add_argument("--repeats", type=int, default=3, help="runs per basis (seeds 0..n-1)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="1 run of 20 epochs (CI smoke test)")
    parser.add_argument("--json", default=None, help="write all runs to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.epochs = 1, 20

    runs = {b: [run_once(b, seed, args.epochs) for seed in range(args.repeats)] for b in args.basis}
    first = next(iter(runs.values()))[0]
    print(f"# Seed experiment benchmark ({args.repeats} fresh process(es) per basis)")
    print(f"device: {first['device']} | " + ", ".join(f"{k} {v}" for k, v in first["versions"].items())
          + f" | {platform.machine()}, {os.cpu_count()} CPUs")
    s = first["settings"]
    print(f"settings: widths {s['widths']}, {args.epochs} epochs, batch {s['batch_size']}, "
          f"lr {s['learning_rate']} (Adam + cosine), {s['n_train']} train / {s['n_test']} test\n")
    print("| basis | params | test MSE (median / worst) | train MSE (median) "
          "| train() s incl. compile (median / worst) | compile s (median) "
          "| whole command s (median / worst) |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for basis, rs in runs.items():
        col = {k: [r[k] for r in rs] for k in rs[0] if isinstance(rs[0][k], (int, float))}
        med, worst = statistics.median, max
        print(f"| {basis} | {rs[0]['num_params']} "
              f"| {med(col['test_mse']):.2e} / {worst(col['test_mse']):.2e} "
              f"| {med(col['train_mse']):.2e} "
              f"| {med(col['train_seconds']):.2f} / {worst(col['train_seconds']):.2f} "
              f"| {med(col['compile_seconds']):.2f} "
              f"| {med(col['command_seconds']):.2f} / {worst(col['command_seconds']):.2f} |")
        t = TARGETS.get(basis, {})
        if not args.quick:
            checks = [("test MSE", worst(col["test_mse"]), t.get("test_mse")),
                      ("train() s", med(col["train_seconds"]), t.get("train_seconds")),
                      ("command s", med(col["command_seconds"]), t.get("command_seconds"))]
            for name, value, bound in checks:
                if bound is not None:
                    passed = value <= bound
                    ok &= passed
                    print(f"  {basis}: {name} {value:.3g} <= {bound:g}: {'PASS' if passed else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
