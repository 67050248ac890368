"""Benchmark: the seed experiment's ``train()`` with a cold and a warm compilation cache.

Runs the seed experiment (``kanjax.demo.run_seed_experiment``) in fresh ``python -c``
processes that share one new, empty cache directory (``KANJAX_CACHE_DIR``): the first
process compiles everything and writes the cache, the next ones load from it. With
``--off`` one more process runs with the cache turned off (``KANJAX_COMPILATION_CACHE=0``)
for reference. Per process: ``import kanjax`` time, ``train()`` wall time, and where
``train()``'s compile time goes, from JAX's monitoring events: tracing to a jaxpr, lowering
to MLIR, and the backend step (XLA compile, or loading from the cache on a hit), with the
count of compile requests, cache hits and cache writes (programs compiled faster than
``kanjax.compile_cache.MIN_COMPILE_TIME_SECS`` are looked up but not written).

    python benchmarks/compile_cache.py                 # taylor, cold + 2 warm processes
    python benchmarks/compile_cache.py --basis bspline --off --json cc.json
    python benchmarks/compile_cache.py --quick         # CI smoke: 20 epochs, cold + 1 warm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

TARGETS = {"cold": 2.0, "warm": 0.8}  # train() seconds, seed experiment, this 2-core CPU

# Runs in each child process; prints one JSON line.
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import jax
events = {}
hits = {"/jax/compilation_cache/compile_requests_use_cache": 0,
        "/jax/compilation_cache/cache_hits": 0, "/jax/compilation_cache/cache_misses": 0}
def on_duration(event, duration, **kwargs):
    if event.startswith("/jax/core/compile/") or event.startswith("/jax/compilation_cache/"):
        n, s = events.get(event, (0, 0.0))
        events[event] = (n + 1, s + duration)
def on_event(event, **kwargs):
    if event in hits:
        hits[event] += 1
jax.monitoring.register_event_duration_secs_listener(on_duration)
jax.monitoring.register_event_listener(on_event)
import kanjax
import kanjax.demo
from kanjax.demo import run_seed_experiment, versions
import_s = time.perf_counter() - t0
train = kanjax.demo.train
inside = {}
def timed_train(*args, **kwargs):  # counts events and CPU time of train() alone
    events.clear(); hits.update(dict.fromkeys(hits, 0))
    cpu = time.process_time()
    try:
        return train(*args, **kwargs)
    finally:
        inside["cpu_s"] = time.process_time() - cpu
        inside["events"], inside["hits"] = dict(events), dict(hits)
kanjax.demo.train = timed_train
basis, epochs, min_compile_time = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if min_compile_time != "default" and kanjax.compile_cache.cache_dir():
    kanjax.compile_cache.enable(kanjax.compile_cache.cache_dir(),
                                min_compile_time_secs=float(min_compile_time))
result = run_seed_experiment(basis=basis, epochs=epochs, progress=False)
hits = inside["hits"]
print(json.dumps({
    "import_s": import_s, "train_s": result.train_seconds, "train_cpu_s": inside["cpu_s"],
    "compile_s": result.history.config.get("compile_time"), "test_mse": result.test_mse,
    "events": {k.rsplit("/", 1)[1]: v for k, v in inside["events"].items()},
    "cache_lookups": hits["/jax/compilation_cache/compile_requests_use_cache"],
    "cache_hits": hits["/jax/compilation_cache/cache_hits"],
    "cache_writes": hits["/jax/compilation_cache/cache_misses"],
    "cache_dir": kanjax.compile_cache.cache_dir(), "device": str(jax.devices()[0]),
    "min_compile_time_secs": jax.config.jax_persistent_cache_min_compile_time_secs,
    "versions": versions(),
}))
"""


def run_child(basis: str, epochs: int, env: dict, min_compile_time: float | None = None) -> dict:
    threshold = "default" if min_compile_time is None else str(min_compile_time)
    done = subprocess.run([sys.executable, "-c", CHILD, basis, str(epochs), threshold], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_env(cache_dir: str | None) -> dict:
    """The caller's environment with kanjax's cache in ``cache_dir`` (``None``: off)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "KANJAX_COMPILATION_CACHE", "KANJAX_CACHE_DIR")}
    if cache_dir is None:
        env["KANJAX_COMPILATION_CACHE"] = "0"
    else:
        env["KANJAX_CACHE_DIR"] = cache_dir
    return env


def entries(cache_dir: str) -> tuple[int, int]:
    """(number of files, total bytes) in the cache directory."""
    files = [os.path.join(cache_dir, f) for f in os.listdir(cache_dir)]
    files = [f for f in files if os.path.isfile(f)]
    return len(files), sum(os.path.getsize(f) for f in files)


def row(label: str, r: dict) -> str:
    ev = r["events"]

    def part(name):
        n, s = ev.get(name, (0, 0.0))
        return f"{s:.3f} ({n})"

    return (f"| {label} | {r['import_s']:.2f} | {r['train_s']:.3f} | {r['train_cpu_s']:.2f} "
            f"| {r['compile_s']:.3f} "
            f"| {part('jaxpr_trace_duration')} | {part('jaxpr_to_mlir_module_duration')} "
            f"| {part('backend_compile_duration')} "
            f"| {r['cache_lookups']} / {r['cache_hits']} / {r['cache_writes']} "
            f"| {r['test_mse']:.2e} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--basis", default="taylor", choices=["taylor", "bspline"])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--warm", type=int, default=2, help="warm-cache processes after the cold one")
    parser.add_argument("--off", action="store_true", help="also run one process with the cache off")
    parser.add_argument("--min-compile-time", type=float, default=None,
                        help="write only programs compiling longer than this (default: kanjax's)")
    parser.add_argument("--quick", action="store_true", help="20 epochs, 1 warm process (CI smoke)")
    parser.add_argument("--json", default=None, help="write every process's figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.warm = 20, 1

    runs = {}
    with tempfile.TemporaryDirectory(prefix="kanjax-cc-") as tmp:
        cache = os.path.join(tmp, "xla")
        runs["cold"] = run_child(args.basis, args.epochs, child_env(cache), args.min_compile_time)
        n_files, n_bytes = entries(cache)
        for i in range(args.warm):
            runs[f"warm{i + 1}"] = run_child(args.basis, args.epochs, child_env(cache),
                                             args.min_compile_time)
        if args.off:
            runs["off"] = run_child(args.basis, args.epochs, child_env(None))

    first = runs["cold"]
    print(f"# Seed experiment train() with kanjax's compilation cache ({args.basis}, {args.epochs} epochs)")
    print(f"device: {first['device']} | " + ", ".join(f"{k} {v}" for k, v in first["versions"].items())
          + f" | {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"cache after the cold process: {n_files} files, {n_bytes / 1e6:.2f} MB "
          f"(programs written if compiled in >= {first['min_compile_time_secs']:g} s)\n")
    print("| process | import s | train() s | train() CPU s | compile s | trace s (n) | lower s (n) "
          "| XLA compile / cache load s (n) | cache requests / hits / writes | test MSE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, r in runs.items():
        print(row(label, r))
    ok = True
    if not args.quick:
        warm = min(r["train_s"] for k, r in runs.items() if k.startswith("warm")) if args.warm else None
        for name, value in (("cold", first["train_s"]), ("warm", warm)):
            if value is not None:
                passed = value <= TARGETS[name]
                ok &= passed
                print(f"  {name} train() {value:.3f} s <= {TARGETS[name]} s: {'PASS' if passed else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "cache_files": n_files, "cache_bytes": n_bytes,
                       "runs": runs}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
