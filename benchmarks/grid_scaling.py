"""Benchmark: training-step time of a B-spline KAN against the grid size G, per spline path.

One plain ``jax.jit`` training step (forward, backward and Adam, float32), driven as in
/work/shared/anchors/bench_step.py with ``FUNCTIONAL=1``: the model is split once with
``nnx.split`` and the step maps the parameter pytree to the updated one with ``optax.adam``
and default XLA options. Widths [8, 64, 64, 1], batch 1024, cubic splines, for G in
5, 10, 20, 50, 100 and each layer option ``spline_eval`` ("dense": all G + k basis functions;
"local": only the k + 1 active ones; "auto": chosen per layer). Rows are timed in rounds
(every row once per round, in turn) and each row's figure is the median over rounds of the
median of its timed blocks; the last column is step(G) / step(G=5) of the same path.

The "matmuls-only" rows are not a KAN but a yardstick (``matmuls_only.py``): the same
network with silu and the G + k basis values of each input replaced by G + k + 1 scaled
copies of it, so its step is what the matmuls of the dense path cost at that G, by plain
autodiff. A dense path's step cannot grow much less with G than this row's.

With ``--inkan`` the same table has rows for the torch library inkan 0.5.2
(``KANNetwork(widths, grid_size=G)``, exact cubic B-splines; ``basis_mode="local"``, its
default span lookup, and ``"dense"``), driven eagerly (``compile_basis=False``; zero_grad,
forward, MSE, backward, ``torch.optim.Adam``) on the same data, timed in the same rounds.

    python benchmarks/grid_scaling.py            # the full table
    python benchmarks/grid_scaling.py --quick    # tiny sizes: checks that it runs
    .venv-peers/bin/python benchmarks/grid_scaling.py --inkan   # with inkan side by side
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from matmuls_only import matmuls_only_model  # this script's folder is on sys.path
from plain_step import adam_mse_step

import kanjax

ORDER = 3  # cubic splines
PATHS = ("dense", "local", "auto", "matmuls-only")
INKAN_PATHS = ("inkan-local", "inkan-dense")


def make_step(widths, grid_size, spline_eval, batch, seed=0):
    """``(step, box)``: one jitted Adam step over the split parameters, and its state."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(-1, 1, size=(batch, widths[0])).astype("float32"))
    y = jnp.sum(x ** 2, axis=1, keepdims=True).repeat(widths[-1], axis=1)
    if spline_eval == "matmuls-only":
        model = matmuls_only_model(widths, grid_size + ORDER + 1, seed)
    else:
        model = kanjax.KAN(widths, basis="bspline", grid_size=grid_size, order=ORDER,
                           spline_eval=spline_eval, rngs=nnx.Rngs(seed))
    step, params, opt_state = adam_mse_step(model, 1e-3)
    box = [params, opt_state]

    def run():
        box[0], box[1], loss = step(box[0], box[1], x, y)
        return loss
    return run


def make_inkan_step(widths, grid_size, basis_mode, batch, seed=0):
    """The same problem as :func:`make_step` in inkan (torch, eager), one Adam step per call."""
    import torch
    from inkan import KANNetwork

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.uniform(-1, 1, size=(batch, widths[0])).astype("float32"))
    y = (x ** 2).sum(dim=1, keepdim=True).repeat(1, widths[-1])
    model = KANNetwork(widths, grid_size=grid_size, spline_order=ORDER, compile_basis=False,
                       basis_mode=basis_mode)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    class Done:  # what time_blocks waits on: torch on the CPU has finished when it returns
        def block_until_ready(self):
            return self

    def run():
        opt.zero_grad()
        loss = torch.mean((model(x) - y) ** 2)
        loss.backward()
        opt.step()
        return Done()
    return run


def time_blocks(run, steps, blocks):
    """Median ms per step over ``blocks`` blocks of ``steps`` steps (after warm-up)."""
    for _ in range(2):
        run().block_until_ready()
    per = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(steps):
            loss = run()
        loss.block_until_ready()
        per.append((time.perf_counter() - start) / steps * 1e3)
    return statistics.median(per)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--grids", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks per round")
    parser.add_argument("--inkan", action="store_true",
                        help="add inkan 0.5.2 rows (torch, eager; needs the peers environment)")
    args = parser.parse_args(argv)
    widths, batch = [8, 64, 64, 1], 1024
    if args.quick:
        widths, batch, args.grids = [2, 4, 1], 32, [5, 20]
        args.rounds, args.steps, args.blocks = 1, 2, 1
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"{platform.machine()}; jax {jax.__version__}, flax {flax.__version__}, "
          f"optax {optax.__version__}")
    print(f"settings: widths {widths}, batch {batch}, order {ORDER}, float32, plain jax.jit Adam "
          f"step; {args.rounds} rounds x {args.blocks} blocks x {args.steps} steps; median ms")
    paths = PATHS + (INKAN_PATHS if args.inkan else ())
    if args.inkan:
        import inkan
        import torch
        print(f"inkan {getattr(inkan, '__version__', '?')}, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), eager")
    rows = [(g, p) for g in args.grids for p in paths]
    runs = {row: (make_inkan_step(widths, row[0], row[1].split("-")[1], batch)
                  if row[1] in INKAN_PATHS else make_step(widths, row[0], row[1], batch))
            for row in rows}
    times = {row: [] for row in rows}
    for _ in range(args.rounds):
        for row in rows:
            times[row].append(time_blocks(runs[row], args.steps, args.blocks))
    ms = {row: statistics.median(t) for row, t in times.items()}
    print(f"{'G':>5} {'path':>12} {'step ms':>9} {'vs G=' + str(args.grids[0]):>8}"
          + (f" {'inkan-local / this':>18}" if args.inkan else ""))
    for g, p in rows:
        base = ms[(args.grids[0], p)]
        line = f"{g:>5} {p:>12} {ms[(g, p)]:>9.2f} {ms[(g, p)] / base:>8.2f}"
        if args.inkan:
            line += f" {ms[(g, 'inkan-local')] / ms[(g, p)]:>18.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
