"""Benchmark: kanjax side by side with other KAN implementations, in one run.

Implementations (``--impls``; a peer whose package is missing is skipped with a note):

* ``kanjax-bspline``  kanjax ``KAN(basis="bspline", grid_size=5, order=3)`` (JAX)
* ``kanjax-taylor``   kanjax ``KAN(basis="taylor", degree=D)`` (JAX; default ``squash="tanh"``)
* ``jaxkan-spline``   jaxkan 0.3.7 ``KAN(layer_type="spline", k=3, G=5)``, its efficient B-spline
  layer (JAX / Flax NNX)
* ``jaxkan-base``     jaxkan 0.3.7 ``KAN(layer_type="base", k=3, G=5)``, its original per-edge
  B-spline layer (JAX / Flax NNX)
* ``kanjax-bspline-train``, ``kanjax-taylor-train``, ``jaxkan-spline-nnx``: the same models
  driven the way each library's documentation trains them (the "native" driver, below)
* ``kanjax-bspline-jit``, ``kanjax-taylor-jit``, ``jaxkan-spline-jit``: the same models as
  one plain ``jax.jit`` step each (the "jit" driver, below)
* ``matmuls-only``, ``matmuls-only-jit``: not a KAN but a yardstick (``matmuls_only.py``).
  Each layer multiplies ``G + k + 1`` scaled copies of its input, instead of silu and the
  ``G + k`` basis values, by the ``((G + k + 1) n_in, n_out)`` weights a dense B-spline layer
  multiplies: the step of a dense-basis KAN's matmuls with the cheapest features there are,
  by plain autodiff. Its ratio to kanjax shows how much of kanjax's step is anything but
  those matmuls, and a peer's step over this row is about the most any dense-basis KAN could
  lead that peer by on the machine
* ``pykan``           pykan 0.2.8 ``KAN(width, grid=5, k=3).speed()`` (PyTorch)
* ``seed-taylor``     the seed document's PyTorch Taylor layer, re-implemented below: D + 1
  Taylor terms x^0..x^D per edge plus silu, times one weight per edge

Protocol, as ``benchmarks/kan_vs_mlp.py``: the named problems ``seed`` [2, 4, 4, 1] batch 1000
(Taylor degree 9 = 10 terms), ``medium`` [8, 64, 64, 1] batch 1024 (degree 6) and ``wide``
[64, 256, 256, 10] batch 4096 (degree 6); B-splines G=5, k=3 on [-1, 1]; inputs uniform in
[-1, 1]^n, the same smooth target; one training step = forward + MSE + backward + Adam(1e-3)
update in float32. Every implementation x problem runs in its own fresh subprocess (in a
temporary working directory, so nothing a library writes lands in the repository) and reports:

* compile time (JAX: AOT compile of a one-step program; eager torch has none);
* first step: the time of the first training step, compilation excluded (JAX: the first call of
  the compiled one-step program; torch: the first eager step, lazy initialisation included);
* steady state: median and IQR over timed blocks of ``--block`` steps after warm-up, and
  samples/s: ``--repeats`` blocks, more (up to 8x as many) where those would cover less than
  ``--min-seconds``, so that a 3 ms step and an 80 ms one are timed over similar stretches of
  a shared machine's load;
* memory: growth of the process's peak RSS (``VmHWM``) over its RSS just before the model is
  built, the same measure for every library: ``RSS peak`` over the whole run (incl. compile and
  first step) and ``RSS steady`` over the timed steps only (peak reset after warm-up); for JAX
  also ``compiled.memory_analysis()`` of the one-step program (arguments + outputs +
  temporaries - donated);
* page faults / step: the process's minor page faults (``getrusage``) during the timed steps,
  per step: memory the system had to map in again (see "Memory allocator" below).

Three drivers:

* ``scan`` (rows without a suffix): every JAX library runs in the same harness, ``--block``
  steps in one ``lax.scan`` with parameters and optimizer state donated (the timed program is
  compiled after the first step). This measures the models alone, with no driver overhead.
* ``native``: each library as its users drive it. kanjax: ``kanjax.train(model, data,
  optimizer=optax.adam(lr), batch_size=batch)`` on ``--block`` batches, so one compiled epoch
  is ``--block`` steps including its per-epoch shuffle and bookkeeping, timed from
  ``History.wall_time``. jaxkan: its documented loop, an ``nnx.Optimizer(model, optax.adam(lr),
  wrt=nnx.Param)`` and one ``@nnx.jit`` train step called from Python per batch. torch peers
  (pykan, the seed's layer): eager, ``zero_grad`` / forward / ``backward`` / ``Adam.step``.

* ``jit``: every JAX library the same way, as a user's own training loop drives it: the
  model split once (``nnx.split``), one ``jax.jit`` step (forward, MSE, gradient,
  ``optax.adam`` update of the parameter pytree) called from Python per batch, default XLA
  options, no donation (the protocol of ``shared/anchors/bench_step.py`` with
  ``FUNCTIONAL=1``).

Ratios are peer / kanjax of the same family (B-spline or Taylor) and driver measured in this
run: scan-driven peers against the scan-driven kanjax row, natively driven peers against the
``kanjax-*-train`` row (or the scan row when that was not run); the ``vs`` column names it.

Threads: by default every library uses its own default on all CPUs. On a machine where another
process keeps a core busy, torch's OpenMP threads spin-wait at every parallel region and a 10 ms
step can take a second; ``--torch-threads 1`` (or ``--cpus N``, which pins every subprocess to
the first N CPUs) avoids that. The device column says how many threads torch used.

Memory allocator: on Linux, glibc's malloc serves large blocks with ``mmap`` and hands them
back to the system when they are freed, so a program that allocates and frees a large block at
every step pays page faults to map that memory in again each time. jaxkan's native driver calls
its compiled step once per batch, and each call allocates and frees the step's working memory,
which at medium is large (tens of thousands of page faults per step with glibc's defaults,
figures in ``benchmarks/PERF.md``). ``retain`` sets
``MALLOC_MMAP_MAX_=0``, a huge ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_ARENA_MAX=1`` in every
subprocess so that freed memory stays in the process for reuse (with more than one arena, a
block over 64 MB allocated from one of XLA's threads is mapped anew whatever the other two
say; a preloaded allocator such as tcmalloc or jemalloc
would be another way; not measured here). kanjax's epoch is one compiled program per
``--block`` steps with little working memory per step, and its step time did not change.
Which setting is fair depends on the machine a user runs on, so ``benchmarks/PERF.md``
reports both. The header says which allocator settings the subprocesses ran with, inherited
ones included.

Limits: a measurement phase that runs past ``--max-seconds`` (a build, a compile, the first
step) is killed and reported as ``timeout``; the timed blocks are shrunk (fewer steps per block,
then fewer blocks, at least 3) to fit in ``--max-seconds``; each subprocess may allocate at most
``--max-memory-gb`` (RLIMIT_DATA), beyond which the library's allocation fails and it is
reported as ``out of memory``.

    .venv-peers/bin/python benchmarks/peers.py                    # seed, medium, wide
    .venv-peers/bin/python benchmarks/peers.py --problems medium --impls kanjax-bspline pykan
    .venv-peers/bin/python benchmarks/peers.py --quick            # smoke run: seed only, tiny

Install the peers with ``pip install -e ".[peers]"`` (into a separate environment; see
``pyproject.toml``). Prints a markdown table; writes JSON to ``--out`` (default
``benchmarks/results``) as ``peers_<tag>.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# Same problems as benchmarks/kan_vs_mlp.py: widths, batch size, Taylor degree (highest power).
PROBLEMS = {
    "seed": dict(widths=[2, 4, 4, 1], batch=1000, degree=9),
    "medium": dict(widths=[8, 64, 64, 1], batch=1024, degree=6),
    "wide": dict(widths=[64, 256, 256, 10], batch=4096, degree=6),
}
GRID_SIZE, ORDER = 5, 3
LEARNING_RATE = 1e-3

# name: (framework, family, python packages it needs, distribution to report, driver)
IMPLS = {
    "kanjax-bspline": ("jax", "bspline", ["kanjax"], "kanjax", "scan"),
    "kanjax-taylor": ("jax", "taylor", ["kanjax"], "kanjax", "scan"),
    "kanjax-bspline-train": ("jax", "bspline", ["kanjax"], "kanjax", "native"),
    "kanjax-taylor-train": ("jax", "taylor", ["kanjax"], "kanjax", "native"),
    "jaxkan-spline": ("jax", "bspline", ["jaxkan"], "jaxkan", "scan"),
    "jaxkan-base": ("jax", "bspline", ["jaxkan"], "jaxkan", "scan"),
    "jaxkan-spline-nnx": ("jax", "bspline", ["jaxkan"], "jaxkan", "native"),
    "kanjax-bspline-jit": ("jax", "bspline", ["kanjax"], "kanjax", "jit"),
    "kanjax-taylor-jit": ("jax", "taylor", ["kanjax"], "kanjax", "jit"),
    "jaxkan-spline-jit": ("jax", "bspline", ["jaxkan"], "jaxkan", "jit"),
    "matmuls-only": ("jax", "bspline", ["flax"], "flax", "scan"),
    "matmuls-only-jit": ("jax", "bspline", ["flax"], "flax", "jit"),
    "pykan": ("torch", "bspline", ["torch", "kan"], "pykan", "native"),
    "seed-taylor": ("torch", "taylor", ["torch"], "torch", "native"),
}
REFERENCE = {("bspline", "scan"): "kanjax-bspline", ("taylor", "scan"): "kanjax-taylor",
             ("bspline", "native"): "kanjax-bspline-train",
             ("taylor", "native"): "kanjax-taylor-train",
             ("bspline", "jit"): "kanjax-bspline-jit", ("taylor", "jit"): "kanjax-taylor-jit"}


def reference_for(impl: str, rows: dict) -> str | None:
    """The kanjax row a peer is compared with: same family and driver, else same family."""
    family, driver = IMPLS[impl][1], IMPLS[impl][4]
    other = "scan" if driver == "native" else "native"
    for key in ((family, driver), (family, other)):
        ref = REFERENCE[key]
        if ref in rows and rows[ref].get("status") == "ok":
            return ref
    return None
PACKAGES = ["numpy", "jax", "jaxlib", "flax", "optax", "kanjax", "jaxkan", "torch", "pykan"]
PROTOCOL = "@@peers "  # prefix of the lines a child sends its parent


# --------------------------------------------------------------------------------------------
# data (numpy, identical for every implementation)


def target(x, n_out: int):
    """The target of kan_vs_mlp.py: sin(pi x_j) x_(j+1) + mean(x^2), for n_out outputs."""
    import numpy as np

    n_in = x.shape[-1]
    b = np.mean(x**2, axis=-1)
    outs = [np.sin(np.pi * x[..., j % n_in]) * x[..., (j + 1) % n_in] + b for j in range(n_out)]
    return np.stack(outs, axis=-1).astype(np.float32)


def make_data(problem: dict, block: int, seed: int = 1):
    import numpy as np

    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, (block, problem["batch"], problem["widths"][0])).astype(np.float32)
    return xs, target(xs, problem["widths"][-1])


# --------------------------------------------------------------------------------------------
# process memory (Linux /proc; no psutil)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: ru_maxrss (never reset; kB on Linux, bytes on macOS)
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024
    return kb / 1024


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


# --------------------------------------------------------------------------------------------
# the child: one implementation on one problem


PARTIAL: dict = {}  # what a child has measured so far, reported if a later phase fails
CURRENT_PHASE = ["import"]


def minor_faults() -> int:
    """Minor page faults of this process so far (memory the kernel had to map in on first
    touch, e.g. after the allocator gave it back to the system)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def emit(**msg):
    print(PROTOCOL + json.dumps(msg), flush=True)


class Phase:
    """Tells the parent a phase started (and its deadline), and times it."""

    def __init__(self, name: str, deadline_s: float):
        self.name, self.deadline_s = name, deadline_s

    def __enter__(self):
        CURRENT_PHASE[0] = self.name
        emit(event="phase", name=self.name, deadline_s=self.deadline_s)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        emit(event="done", name=self.name, seconds=self.seconds, partial=PARTIAL)
        return False


# A row whose --repeats blocks take less than --min-seconds times up to this many times as many.
MAX_EXTEND = 8


def plan_timing(step_s: float, block: int, repeats: int, budget_s: float, can_shrink_block: bool,
                min_s: float = 0.0):
    """``(block, repeats)`` for timed blocks of about ``step_s`` per step.

    Shrunk so that the timed blocks take about ``budget_s`` at most; more blocks (up to
    ``MAX_EXTEND * repeats``) where ``repeats`` blocks would take less than ``min_s``, so that a
    fast row's median is not taken over a fraction of a second of a shared machine's load.
    """
    if can_shrink_block and repeats * block * step_s > budget_s:
        block = max(1, int(budget_s / (repeats * step_s)))
    if repeats * block * step_s > budget_s:
        repeats = max(3, int(budget_s / (block * step_s)))
    elif repeats * block * step_s < min_s:
        wanted = math.ceil(min_s / (block * step_s))
        repeats = min(wanted, MAX_EXTEND * repeats, max(repeats, int(budget_s / (block * step_s))))
    return block, repeats


def time_python_loop(step, xs, ys, step_s: float, args, base_rss: float, out: dict,
                     sync=lambda loss: loss):
    """Warm-up and timed blocks of ``step(x, y) -> loss`` called from Python once per batch.

    ``sync(loss)`` waits for the last step of a block (JAX dispatches asynchronously; eager
    torch does not need it). Records peak RSS before and during the timed blocks in ``out``;
    returns ``(times per step, losses, block, repeats)``.
    """
    block, repeats = plan_timing(step_s, args.block, args.repeats, args.max_seconds, True,
                                 args.min_seconds)
    if step_s < args.max_seconds / 4:  # else the (slow) first step is warm-up enough
        with Phase("warm-up", max(args.max_seconds, 3 * block * step_s + 30)) as ph:
            for i in range(block):
                loss = step(xs[i], ys[i])
            sync(loss)
        step_s = ph.seconds / block
        block, repeats = plan_timing(step_s, block, args.repeats, args.max_seconds, True,
                                     args.min_seconds)
    out["rss_peak_mb"] = peak_rss_mb() - base_rss
    reset_peak_rss()
    times, losses = [], []
    faults = minor_faults()
    with Phase("timed", 3 * repeats * block * step_s + 60):
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(block):
                losses.append(step(xs[i], ys[i]))
            sync(losses[-1])
            times.append((time.perf_counter() - t) / block)
    out["faults_per_step"] = (minor_faults() - faults) / (repeats * block)
    out["rss_steady_mb"] = peak_rss_mb() - base_rss
    out["rss_peak_mb"] = max(out["rss_peak_mb"], out["rss_steady_mb"])
    return times, losses, block, repeats


def summarize(times: list[float], batch: int) -> dict:
    import numpy as np

    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return dict(step_ms=med * 1e3, step_iqr_ms=(q3 - q1) * 1e3, samples_per_s=batch / med)


def run_jax(impl: str, problem: dict, args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    xs_np, ys_np = make_data(problem, args.block)
    xs, ys = jnp.asarray(xs_np), jnp.asarray(ys_np)
    out = PARTIAL
    model, base_rss = build_measured_model(impl, problem, args, out)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    tx = optax.adam(LEARNING_RATE)
    opt_state = tx.init(params)

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

    def compile_for(n_steps):
        jitted = jax.jit(run_block, donate_argnums=(0, 1))
        return jitted.lower(params, opt_state, xs[:n_steps], ys[:n_steps]).compile()

    # A one-step program first: its compile time and its first call are this row's
    # "compile" and "first step", and a step slower than max_seconds stops here.
    with Phase("compile", args.max_seconds) as ph:
        one_step = compile_for(1)
    out["compile_s"] = ph.seconds
    mem = one_step.memory_analysis()
    if mem is not None:  # of one step: arguments + outputs + temporaries - donated
        out["xla_mb"] = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                         + mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 2**20
    with Phase("first step", args.max_seconds) as ph:
        params, opt_state, losses = one_step(params, opt_state, xs[:1], ys[:1])
        losses.block_until_ready()
    step_s = ph.seconds
    out["first_step_s"] = step_s
    out["loss_first"] = float(losses[0])
    if step_s > args.max_seconds:
        out["rss_peak_mb"] = peak_rss_mb() - base_rss
        return dict(out, status="timeout", note=f"first step {step_s:.1f} s > {args.max_seconds:g} s")

    # Then the timed program: `block` steps in one lax.scan, shrunk to fit the budget.
    block, repeats = plan_timing(step_s, args.block, args.repeats, args.max_seconds, True,
                                 args.min_seconds)
    with Phase("compile block", args.max_seconds) as ph:
        compiled = one_step if block == 1 else compile_for(block)
    out["compile_block_s"] = ph.seconds
    with Phase("warm-up", max(args.max_seconds, 3 * block * step_s + 30)) as ph:
        params, opt_state, losses = compiled(params, opt_state, xs[:block], ys[:block])
        losses.block_until_ready()
    step_s = ph.seconds / block
    block, repeats = plan_timing(step_s, block, args.repeats, args.max_seconds, False,
                                 args.min_seconds)
    out["rss_peak_mb"] = peak_rss_mb() - base_rss

    reset_peak_rss()
    times = []
    faults = minor_faults()
    with Phase("timed", 3 * repeats * block * step_s + 60):
        for _ in range(repeats):
            t = time.perf_counter()
            params, opt_state, losses = compiled(params, opt_state, xs[:block], ys[:block])
            losses.block_until_ready()
            times.append((time.perf_counter() - t) / block)
    out["faults_per_step"] = (minor_faults() - faults) / (repeats * block)
    out["rss_steady_mb"] = peak_rss_mb() - base_rss
    out["rss_peak_mb"] = max(out["rss_peak_mb"], out["rss_steady_mb"])
    out.update(summarize(times, problem["batch"]), block=block, repeats=repeats,
               loss_last=float(losses[-1]), finite=bool(np.isfinite(np.asarray(losses)).all()))
    return dict(out, status="ok")


def import_library(impl: str) -> None:
    """Import the library ``impl`` measures, so that its import is not timed as the build."""
    if impl.startswith(("kanjax", "jaxkan")):
        importlib.import_module(impl.split("-")[0])


def build_measured_model(impl: str, problem: dict, args, out: dict):
    """The start every JAX driver shares: the device and the parameter count into ``out``,
    the library imported, then the model built under the build phase's time limit.

    Returns ``(model, base_rss)``: the process's peak RSS is reset just before the build, so
    imports and data are not counted and everything from the model on is.
    """
    import jax
    from flax import nnx

    out["device"] = f"{jax.devices()[0]} ({jax.default_backend()})"
    import_library(impl)
    reset_peak_rss()
    base_rss = rss_mb()
    with Phase("build", args.max_seconds):
        model = build_jax_model(impl, problem["widths"], problem["degree"], out)
        params = nnx.state(model, nnx.Param)
        jax.block_until_ready(params)
    out["params"] = int(sum(p.size for p in jax.tree.leaves(params)))
    return model, base_rss


def build_jax_model(impl: str, widths, degree: int, out: dict):
    from flax import nnx

    if impl.startswith("matmuls-only"):
        out["config"] = f"{GRID_SIZE + ORDER + 1} scaled input copies per layer, no basis"
        from matmuls_only import matmuls_only_model  # this script's folder is on sys.path

        return matmuls_only_model(widths, GRID_SIZE + ORDER + 1)

    if impl.startswith("kanjax"):
        import kanjax

        if "bspline" in impl:
            out["config"] = f"G={GRID_SIZE} k={ORDER}"
            return kanjax.KAN(widths, basis="bspline", grid_size=GRID_SIZE, order=ORDER,
                              rngs=nnx.Rngs(0))
        out["config"] = f"degree {degree} ({degree + 1} terms), tanh squash"
        return kanjax.KAN(widths, basis="taylor", degree=degree, rngs=nnx.Rngs(0))
    from jaxkan.models.KAN import KAN as JaxKAN

    layer_type = impl.split("-")[1]  # "spline" or "base"
    out["config"] = f"layer_type={layer_type!r} G={GRID_SIZE} k={ORDER}"
    return JaxKAN(widths, layer_type=layer_type, required_parameters={"k": ORDER, "G": GRID_SIZE},
                  seed=0)


def run_jax_native(impl: str, problem: dict, args) -> dict:
    """kanjax through ``kanjax.train``; jaxkan through its documented ``nnx.jit`` step."""
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    batch = problem["batch"]
    xs_np, ys_np = make_data(problem, args.block)
    out = PARTIAL
    model, base_rss = build_measured_model(impl, problem, args, out)

    if impl.startswith("kanjax"):
        import kanjax

        # One call of kanjax.train: 1 epoch to warm up, then timed epochs of `block` steps
        # each: at least --repeats, more (up to MAX_EXTEND times as many) until they cover
        # --min-seconds, fewer than MAX_EXTEND * repeats once they pass --max-seconds. The
        # callback stops training there and resets the peak RSS after the warm-up epoch.
        x = xs_np.reshape(-1, xs_np.shape[-1])
        y = ys_np.reshape(-1, ys_np.shape[-1])
        steady = {}

        def callback(epochs_done, history):
            if epochs_done == 1:
                steady["rss_peak"] = peak_rss_mb() - base_rss
                reset_peak_rss()
                steady["faults"] = minor_faults()
            steady["faults_timed"] = minor_faults() - steady["faults"]
            timed_s = history.wall_time[-1] - history.wall_time[0]
            return epochs_done > args.repeats and (timed_s >= args.min_seconds
                                                   or timed_s >= args.max_seconds)

        with Phase("train", 3 * args.max_seconds + 60):
            model, history = kanjax.train(model, (x, y), epochs=1 + MAX_EXTEND * args.repeats,
                                          batch_size=batch, optimizer=optax.adam(LEARNING_RATE),
                                          progress=False, callback=callback)
        wall = np.asarray(history.wall_time)
        repeats = len(wall) - 1
        out["compile_s"] = history.config["compile_time"]
        out["first_step_s"] = wall[0] / args.block
        times = list(np.diff(wall) / args.block)
        out["rss_steady_mb"] = peak_rss_mb() - base_rss
        out["rss_peak_mb"] = max(steady.get("rss_peak", 0.0), out["rss_steady_mb"])
        out["faults_per_step"] = steady.get("faults_timed", 0) / (repeats * args.block)
        losses = np.asarray(history.train_loss)
        out.update(summarize(times, batch), block=args.block, repeats=repeats,
                   loss_first=float(losses[0]), loss_last=float(losses[-1]),
                   finite=bool(np.isfinite(losses).all()))
        return dict(out, status="ok")

    # jaxkan: as in its documentation, an nnx.Optimizer and an nnx.jit train step per batch
    xs, ys = jnp.asarray(xs_np), jnp.asarray(ys_np)
    opt = nnx.Optimizer(model, optax.adam(LEARNING_RATE), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, opt, xb, yb):
        def loss_fn(model):
            return jnp.mean((model(xb) - yb) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    with Phase("compile", args.max_seconds) as ph:  # trace + compile + the first step
        loss = train_step(model, opt, xs[0], ys[0])
        loss.block_until_ready()
    out["compile_s"] = ph.seconds
    out["loss_first"] = float(loss)
    with Phase("first step", args.max_seconds) as ph:
        train_step(model, opt, xs[1 % args.block], ys[1 % args.block]).block_until_ready()
    step_s = ph.seconds
    out["first_step_s"] = step_s
    times, losses, block, repeats = time_python_loop(
        lambda xb, yb: train_step(model, opt, xb, yb), xs, ys, step_s, args, base_rss, out,
        sync=lambda loss: loss.block_until_ready())
    losses = np.asarray(losses)
    out.update(summarize(times, batch), block=block, repeats=repeats,
               loss_last=float(losses[-1]), finite=bool(np.isfinite(losses).all()))
    return dict(out, status="ok")


def run_jax_jit(impl: str, problem: dict, args) -> dict:
    """Any JAX library as one plain ``jax.jit`` step called per batch: the model split once
    with ``nnx.split``, the step maps (parameters, Adam state, batch) to the updated ones,
    default XLA options, no donation (the protocol of a user's own training loop)."""
    import jax.numpy as jnp
    import numpy as np

    xs_np, ys_np = make_data(problem, args.block)
    xs, ys = jnp.asarray(xs_np), jnp.asarray(ys_np)
    out = PARTIAL
    model, base_rss = build_measured_model(impl, problem, args, out)
    from plain_step import adam_mse_step  # this script's folder is on sys.path

    train_step, params, opt_state = adam_mse_step(model, LEARNING_RATE)
    box = [params, opt_state]

    def step(xb, yb):
        box[0], box[1], loss = train_step(box[0], box[1], xb, yb)
        return loss

    with Phase("compile", args.max_seconds) as ph:
        compiled = train_step.lower(box[0], box[1], xs[0], ys[0]).compile()
    out["compile_s"] = ph.seconds
    with Phase("first step", args.max_seconds) as ph:
        box[0], box[1], loss = compiled(box[0], box[1], xs[0], ys[0])
        loss.block_until_ready()
    out["first_step_s"], out["loss_first"] = ph.seconds, float(loss)
    times, losses, block, repeats = time_python_loop(
        step, xs, ys, ph.seconds, args, base_rss, out, sync=lambda loss: loss.block_until_ready())
    losses = np.asarray(losses)
    out.update(summarize(times, problem["batch"]), block=block, repeats=repeats,
               loss_last=float(losses[-1]), finite=bool(np.isfinite(losses).all()))
    return dict(out, status="ok")


def seed_taylor_model(widths, terms: int):
    """The seed document's Taylor KAN, in PyTorch, written from its description.

    Each layer keeps ``w_fn`` (n_out, n_in), ``coef`` (n_out, terms, n_in) and, as in the seed,
    a ``w_base`` (n_out, n_in) that the forward pass never uses; all initialised N(0, 1e-3^2).
    ``y_q = sum_p w_fn[q, p] * (silu(x_p) + sum_j coef[q, j, p] * x_p^j)``, j = 0..terms-1.
    """
    import torch

    class SeedTaylorLayer(torch.nn.Module):
        def __init__(self, n_in: int, n_out: int):
            super().__init__()
            self.terms = terms
            self.w_fn = torch.nn.Parameter(1e-3 * torch.randn(n_out, n_in))
            self.w_base = torch.nn.Parameter(1e-3 * torch.randn(n_out, n_in))  # unused, as in the seed
            self.coef = torch.nn.Parameter(1e-3 * torch.randn(n_out, terms, n_in))

        def forward(self, x):  # x: (batch, n_in)
            powers = torch.stack([x**j for j in range(self.terms)], dim=-1)  # (batch, n_in, terms)
            poly = torch.einsum("bpj,qjp->qbp", powers, self.coef)  # per edge: (n_out, batch, n_in)
            edges = torch.nn.functional.silu(x).unsqueeze(0) + poly
            return torch.einsum("qp,qbp->bq", self.w_fn, edges)

    return torch.nn.Sequential(*[SeedTaylorLayer(a, b) for a, b in zip(widths[:-1], widths[1:])])


def run_torch(impl: str, problem: dict, args) -> dict:
    import numpy as np
    import torch

    if args.torch_threads or args.cpus:
        torch.set_num_threads(args.torch_threads or args.cpus)
    widths, degree = problem["widths"], problem["degree"]
    xs_np, ys_np = make_data(problem, args.block)
    xs, ys = torch.from_numpy(xs_np), torch.from_numpy(ys_np)
    out = PARTIAL
    out["device"] = f"cpu (torch, {torch.get_num_threads()} threads)"
    torch.manual_seed(0)
    if impl == "pykan":
        import kan

    reset_peak_rss()  # imports and data are not counted; everything from the model on is
    base_rss = rss_mb()
    with Phase("build", args.max_seconds):
        if impl == "pykan":
            # auto_save=False: no checkpoint folder; speed(): no symbolic branch, no saved
            # activations (pykan's recommended mode for training speed).
            model = kan.KAN(width=list(widths), grid=GRID_SIZE, k=ORDER, seed=0, auto_save=False,
                            device="cpu").speed()
            out["config"] = f"grid={GRID_SIZE} k={ORDER}, speed()"
        else:
            model = seed_taylor_model(widths, degree + 1)
            out["config"] = f"{degree + 1} terms (x^0..x^{degree}), raw powers"
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=LEARNING_RATE)

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model(xb) - yb) ** 2)
        loss.backward()
        opt.step()
        return loss.detach()

    with Phase("first step", args.max_seconds) as ph:
        loss = step(xs[0], ys[0])
    step_s = ph.seconds
    out["compile_s"] = None
    out["first_step_s"] = step_s
    out["loss_first"] = float(loss)
    # Parameters the step trains (pykan's unused symbolic-branch parameters and the seed's
    # unused w_base get no gradient); all requires_grad parameters in params_all.
    out["params"] = int(sum(p.numel() for p in trainable if p.grad is not None))
    out["params_all"] = int(sum(p.numel() for p in trainable))
    if step_s > args.max_seconds:
        out["rss_peak_mb"] = peak_rss_mb() - base_rss
        return dict(out, status="timeout", note=f"first step {step_s:.1f} s > {args.max_seconds:g} s")

    times, losses, block, repeats = time_python_loop(step, xs, ys, step_s, args, base_rss, out)
    losses = torch.stack(losses).numpy()
    out.update(summarize(times, problem["batch"]), block=block, repeats=repeats,
               loss_last=float(losses[-1]), finite=bool(np.isfinite(losses).all()))
    return dict(out, status="ok")


def child_main(args) -> int:
    import resource

    if args.max_memory_gb:
        limit = int(args.max_memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    impl, problem = args.child
    framework, driver = IMPLS[impl][0], IMPLS[impl][4]
    try:
        if framework == "jax" and driver == "native":
            result = run_jax_native(impl, PROBLEMS[problem], args)
        elif framework == "jax" and driver == "jit":
            result = run_jax_jit(impl, PROBLEMS[problem], args)
        elif framework == "jax":
            result = run_jax(impl, PROBLEMS[problem], args)
        else:
            result = run_torch(impl, PROBLEMS[problem], args)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        text = f"{type(e).__name__}: {e}"
        oom = re.search(r"RESOURCE_EXHAUSTED|[Oo]ut of memory|can't allocate memory|MemoryError", text)
        emit(event="error", status="out of memory" if oom else "error",
             note=f"during {CURRENT_PHASE[0]}: {text[:400]}", partial=PARTIAL)
        return 0
    emit(event="result", result=result)
    return 0


# --------------------------------------------------------------------------------------------
# the parent: one subprocess per implementation x problem


# glibc malloc settings of --malloc retain: no mmap for large blocks, no trimming of the heap,
# and one arena: a thread's own arena holds at most 64 MB, and a larger block allocated
# from a thread (XLA runs its programs on its own threads) is mapped anew however the rest
# is set
RETAIN_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(10**15),
                     "MALLOC_ARENA_MAX": "1"}


def child_env(malloc: str, base=None) -> dict:
    """Environment of a measurement subprocess: ``base`` (default ``os.environ``), with the
    glibc malloc settings of ``--malloc retain`` when asked for."""
    env = dict(os.environ if base is None else base, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    if malloc == "retain":
        env.update(RETAIN_MALLOC_ENV)
    elif malloc != "inherit":
        raise ValueError(f"unknown --malloc {malloc!r}; expected 'inherit' or 'retain'")
    return env


def allocator_settings(env) -> str:
    """The settings in ``env`` that change how the process allocates memory (glibc's
    ``MALLOC_*`` variables and ``GLIBC_TUNABLES``, ``LD_PRELOAD``), or a note that there are none."""
    found = [f"{k}={env[k]}" for k in sorted(env)
             if k in ("LD_PRELOAD", "GLIBC_TUNABLES") or k.startswith("MALLOC_")]
    return " ".join(found) if found else ("system malloc with its defaults "
                                          "(no MALLOC_*, GLIBC_TUNABLES or LD_PRELOAD)")


def run_child(impl: str, problem: str, args, workdir: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, problem,
           "--block", str(args.block), "--repeats", str(args.repeats),
           "--max-seconds", str(args.max_seconds),
           "--min-seconds", str(args.min_seconds), "--max-memory-gb", str(args.max_memory_gb)]
    if args.cpus:
        cmd += ["--cpus", str(args.cpus)]
    if args.torch_threads:
        cmd += ["--torch-threads", str(args.torch_threads)]
    env = child_env(args.malloc)
    preexec = None
    if args.cpus and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[: args.cpus]
        preexec = lambda: os.sched_setaffinity(0, cpus)  # noqa: E731
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=preexec)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: ([lines.put(l) for l in proc.stdout], lines.put(None)),
                     daemon=True).start()
    log: list[str] = []
    deadline_s = max(300.0, args.max_seconds)
    phase, deadline = "import", time.monotonic() + deadline_s
    result, partial = None, {}
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            proc.wait()
            limit = "import" if phase == "import" else f"{phase} > {deadline_s:g} s"
            result = dict(partial, status="timeout", note=f"killed: {limit}")
            break
        if line is None:
            break
        if not line.startswith(PROTOCOL):
            log.append(line.rstrip())
            continue
        msg = json.loads(line[len(PROTOCOL):])
        if msg["event"] == "phase":
            phase, deadline_s = msg["name"], msg["deadline_s"]
            deadline = time.monotonic() + deadline_s
        elif msg["event"] == "done":
            partial = msg.get("partial") or partial
            deadline_s = max(300.0, args.max_seconds)
            phase, deadline = "after " + msg["name"], time.monotonic() + deadline_s
        elif msg["event"] == "result":
            result = msg["result"]
        elif msg["event"] == "error":
            result = dict(msg.get("partial") or {}, status=msg["status"], note=msg["note"])
    rc = proc.wait()
    if result is None:
        tail = " | ".join(l for l in log[-3:] if l.strip())
        why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        result = dict(partial, status="crashed", note=f"{why} during {phase}; {tail[-300:]}")
    result["wall_s"] = time.perf_counter() - start
    if log:
        result["log_tail"] = log[-20:]
    return result


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def missing_packages(impl: str) -> list[str]:
    return [m for m in IMPLS[impl][2] if importlib.util.find_spec(m) is None]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        return m.group(1).strip() if m else platform.processor() or platform.machine()
    except OSError:
        return platform.processor() or platform.machine()


def fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def merge_rounds(runs: list[dict]) -> dict:
    """One row from the same measurement repeated in several rounds: the median step over
    the rounds, and the median of the within-round ratios (each against the kanjax row
    measured minutes apart in the same round, not against a median of other rounds)."""
    if len(runs) == 1:
        return runs[0]
    bad = [r for r in runs if r.get("status") != "ok"]
    if bad:
        return dict(bad[0], rounds=len(runs))
    steps = [r["step_ms"] for r in runs]
    pick = sorted(runs, key=lambda r: r["step_ms"])[len(runs) // 2]  # the median round's row
    out = dict(pick, rounds=len(runs), step_ms_rounds=steps, step_ms=statistics.median(steps))
    for key in ("step_vs_kanjax", "mem_vs_kanjax"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[f"{key}_rounds"] = values
        out[key] = statistics.median(values) if len(values) == len(runs) else None
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    parser.add_argument("--block", type=int, default=10, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per measurement")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help=f"time more blocks (up to {MAX_EXTEND} times --repeats) where --repeats blocks "
                             "take less than this, so that fast and slow rows are timed over "
                             f"similar stretches of a shared machine's load")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="limit for one phase (build, compile, the first step) and budget for "
                             "the timed blocks of one measurement")
    parser.add_argument("--max-memory-gb", type=float, default=8.0,
                        help="RLIMIT_DATA of each measurement's subprocess (0: no limit)")
    parser.add_argument("--cpus", type=int, default=0,
                        help="pin each subprocess to this many CPUs (and torch threads); 0: all")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch.set_num_threads for the torch peers; 0: torch's default")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every row this many times, the rows of a problem taking turns "
                             "(round robin); steps are the median over rounds and each ratio the "
                             "median of the ratios within a round, so slow drifts of a shared "
                             "machine's load cancel")
    parser.add_argument("--malloc", choices=["inherit", "retain"], default="inherit",
                        help="memory allocator settings of the subprocesses: 'inherit' this "
                             "process's environment, or 'retain': glibc malloc keeps freed memory "
                             "instead of returning it to the system (see the module docstring)")
    parser.add_argument("--quick", action="store_true", help="seed problem, tiny budgets (smoke run)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "PROBLEM"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.quick:
        args.problems, args.block, args.repeats, args.min_seconds = ["seed"], 2, 3, 0.0
        args.max_seconds = min(args.max_seconds, 30.0)

    vers = versions()
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    header = (f"host: {cpu_model()}, {ncpu} CPUs{f' (pinned to {args.cpus})' if args.cpus else ''}, "
              f"{platform.system()} {platform.machine()} | "
              + ", ".join(f"{k} {v}" for k, v in vers.items() if v is not None))
    allocator = allocator_settings(child_env(args.malloc))
    print("# kanjax vs peers: one training step\n")
    print(header)
    print(f"allocator (--malloc {args.malloc}): {allocator}")
    not_installed = sorted({n for n, v in vers.items() if v is None})
    if not_installed:
        print(f"not installed: {', '.join(not_installed)}")
    print(f"settings: float32, MSE + Adam(lr={LEARNING_RATE:g}); "
          f"B-spline G={GRID_SIZE}, k={ORDER} on [-1, 1]; "
          f"block {args.block} steps x {args.repeats} timed blocks after warm-up (more, up to "
          f"{MAX_EXTEND}x, until they cover --min-seconds {args.min_seconds:g}; shrunk to fit "
          f"--max-seconds {args.max_seconds:g}; a row that differs says (blocks x steps)); "
          f"one subprocess per row, RLIMIT_DATA "
          f"{args.max_memory_gb:g} GiB; ratios are peer / kanjax of the same family and driver "
          f"(the vs column; see --help); "
          f"mem ratio uses RSS steady\n", flush=True)

    results = []
    skipped = []
    impls = []
    for impl in args.impls:
        missing = missing_packages(impl)
        if missing:
            note = f"skipped {impl}: {', '.join(missing)} not installed (pip install -e \".[peers]\")"
            print(note)
            skipped.append(dict(impl=impl, missing=missing))
        else:
            impls.append(impl)
    if skipped:
        print()
    rows_header = ("| problem | impl | device | config | params | compile s | first step s | "
                   "step ms (median ± IQR) | samples/s | vs | step / kanjax | RSS peak MB | RSS steady MB "
                   "| mem / kanjax | XLA MB | page faults / step | status |")
    print(rows_header)
    print("|" + "---|" * rows_header.count(" | ") + "---|")
    with tempfile.TemporaryDirectory(prefix="kanjax-peers-") as workdir:
        for name in args.problems:
            problem = PROBLEMS[name]
            rounds = []
            for _ in range(max(1, args.rounds)):
                rows = {}
                for impl in impls:
                    r = dict(problem=name, impl=impl, library=IMPLS[impl][3], framework=IMPLS[impl][0],
                             family=IMPLS[impl][1], driver=IMPLS[impl][4], widths=problem["widths"],
                             batch=problem["batch"])
                    r.update(run_child(impl, name, args, workdir))
                    rows[impl] = r
                for impl, r in rows.items():
                    r["reference"] = reference_for(impl, rows)
                    ref = rows.get(r["reference"])
                    ok = r.get("status") == "ok"
                    ref_ok = ref is not None and ref.get("status") == "ok"
                    r["step_vs_kanjax"] = r["step_ms"] / ref["step_ms"] if ok and ref_ok else None
                    r["mem_vs_kanjax"] = (r["rss_steady_mb"] / ref["rss_steady_mb"]
                                          if ok and ref_ok and ref["rss_steady_mb"] > 0 else None)
                rounds.append(rows)
            rows = {impl: merge_rounds([rows[impl] for rows in rounds]) for impl in impls}
            for impl, r in rows.items():
                ok = r.get("status") == "ok"
                status = r["status"] + (f": {r['note']}" if r.get("note") else "")
                step = (f"{r['step_ms']:.3f} ± {r['step_iqr_ms']:.3f}" if ok else "-")
                if ok and r["block"] * r["repeats"] != args.block * args.repeats:
                    step += f" ({r['repeats']}x{r['block']})"
                print(f"| {name} | {impl} | {r.get('device', '-')} | {r.get('config', '-')} "
                      f"| {fmt(r.get('params'), 'd')} | {fmt(r.get('compile_s'), '.2f')} "
                      f"| {fmt(r.get('first_step_s'), '.3f')} | {step} "
                      f"| {fmt(r.get('samples_per_s'), '.3g')} "
                      f"| {r['reference'] or '-'} "
                      f"| {fmt(r['step_vs_kanjax'], '.2f', '-')}{'x' if r['step_vs_kanjax'] else ''} "
                      f"| {fmt(r.get('rss_peak_mb'), '.1f')} | {fmt(r.get('rss_steady_mb'), '.1f')} "
                      f"| {fmt(r['mem_vs_kanjax'], '.2f')}{'x' if r['mem_vs_kanjax'] else ''} "
                      f"| {fmt(r.get('xla_mb'), '.1f')} | {fmt(r.get('faults_per_step'), '.0f')} "
                      f"| {status} |", flush=True)
                results.append(r)
            if len(rounds) > 1:
                per_round = [f"{impl} {', '.join(f'{v:.2f}x' for v in r['step_vs_kanjax_rounds'])}"
                             for impl, r in rows.items()
                             if r.get("reference") not in (None, impl) and r.get("step_vs_kanjax_rounds")]
                if per_round:
                    print(f"| {name} | ratios in each of the {len(rounds)} rounds: "
                          + "; ".join(per_round) + " |" + " |" * (rows_header.count(" | ") - 1), flush=True)
        leftovers = os.listdir(workdir)
    if leftovers:
        print(f"\nfiles the libraries wrote into the working directory (discarded): {sorted(leftovers)}")

    os.makedirs(args.out, exist_ok=True)
    tag = "quick" if args.quick else "_".join(args.problems)
    path = os.path.join(args.out, f"peers_{tag}.json")
    settings = dict(block=args.block, repeats=args.repeats, rounds=args.rounds,
                    min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                    max_memory_gb=args.max_memory_gb, cpus=args.cpus or None, malloc=args.malloc,
                    allocator=allocator, learning_rate=LEARNING_RATE,
                    grid_size=GRID_SIZE, order=ORDER, problems={p: PROBLEMS[p] for p in args.problems})
    with open(path, "w") as f:
        json.dump(dict(header=header, versions=vers, settings=settings, skipped=skipped,
                       workdir_leftovers=sorted(leftovers), results=results), f, indent=1)
    print(f"\nwrote {path}")
    bad = [r for r in results if r.get("status") == "ok" and not r.get("finite", True)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
