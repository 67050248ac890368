"""Fault injection for ``kanjax.save`` / ``kanjax.load``: bit flips, killed saves, racing saves.

Three experiments on a small trained KAN checkpoint (model, Adam state, history):

* **bit flips**: for every file of the checkpoint, flip ``--flips`` random single bits (one
  at a time, restoring the file in between) and load with ``with_extras`` and the optimizer.
  Each load must either raise ``CheckpointError`` ("detected") or return exactly the saved
  model, history and optimizer state ("harmless": e.g. a bit of a timestamp orbax never
  reads). Anything else (another exception, a silently different value) is a failure.
* **killed saves**: a child process saves over an existing checkpoint and SIGKILLs itself
  just before or just after its n-th ``os.rename`` or ``shutil.rmtree`` call (every such
  point of one save). Afterwards ``load(path)`` must return the old or the new model exactly,
  and the next save must leave only its own step in the directory.
* **racing saves**: ``--racers`` child processes each save their own model ``--rounds``
  times to one path at once. Every save must succeed or raise ``CheckpointError``; the path
  must then load as one of the racers' models, with one step left.

Prints the counts and exits non-zero on any failure.

    python benchmarks/checkpoint_faults.py            # every kill point, 25 flips per file
    python benchmarks/checkpoint_faults.py --quick    # 2 flips per file, 2 kill points
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter

import jax
import numpy as np
import optax
from flax import nnx

import kanjax
from kanjax import checkpoint as ckpt_lib

TX = optax.adam(1e-3)


def make_model(seed: int):
    return kanjax.KAN([3, 4, 1], grid_size=5, rngs=nnx.Rngs(seed))


def same_tree(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return (jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb)
            and all(np.asarray(x).dtype == np.asarray(y).dtype
                    and np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
                    for x, y in zip(la, lb)))


def same_model(a, b) -> bool:
    return nnx.graphdef(a) == nnx.graphdef(b) and same_tree(nnx.state(a), nnx.state(b))


# ----------------------------------------------------------------------------- bit flips


def saved_run(path: str):
    x = jax.random.uniform(jax.random.key(0), (64, 3), minval=-1, maxval=1)
    y = np.sin(3 * np.asarray(x)).sum(axis=1, keepdims=True)
    model, history = kanjax.train(make_model(0), (x, y), epochs=2, batch_size=32,
                                  progress=False)
    opt_state = TX.init(nnx.state(model, nnx.Param))
    kanjax.save(path, model, history=history, optimizer_state=opt_state)
    return model, history, opt_state


def flip_outcome(path: str, model, history, opt_state) -> str:
    try:
        got = kanjax.load(path, optimizer=TX, with_extras=True)
    except ckpt_lib.CheckpointError:
        return "detected"
    except Exception as err:  # noqa: BLE001 - counted as a failure and reported
        return f"FAILED: {type(err).__name__}: {str(err)[:160]}"
    if (same_model(got.model, model) and got.history == history
            and same_tree(got.optimizer_state, opt_state)):
        return "harmless"
    return "FAILED: loaded different values without an error"


def bit_flips(root: str, flips: int, rng: random.Random) -> Counter:
    path = os.path.join(root, "flips")
    model, history, opt_state = saved_run(path)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                   if f != ckpt_lib.LOCK_NAME)
    counts: Counter = Counter()
    for name in files:
        with open(name, "rb") as f:
            original = f.read()
        if not original:
            continue
        for _ in range(flips):
            data = bytearray(original)
            bit = rng.randrange(8 * len(data))
            data[bit // 8] ^= 1 << (bit % 8)
            with open(name, "wb") as f:
                f.write(data)
            outcome = flip_outcome(path, model, history, opt_state)
            counts[outcome.split(":")[0]] += 1
            if outcome.startswith("FAILED"):
                print(f"  {os.path.relpath(name, path)} bit {bit}: {outcome}")
        with open(name, "wb") as f:
            f.write(original)
    return counts


# ----------------------------------------------------------------------------- killed saves


def child_save(path: str, seed: int, point: int, when: str, rounds: int) -> None:
    """Save ``make_model(seed)`` to ``path`` (``rounds`` times), SIGKILLed at the ``point``-th
    rename/rmtree call (``when`` = before/after); prints the number of calls made."""
    calls = [0]

    def instrumented(real):
        def call(*args, **kwargs):
            calls[0] += 1
            if calls[0] == point and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            out = real(*args, **kwargs)
            if calls[0] == point and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return call

    os.rename = instrumented(os.rename)
    shutil.rmtree = instrumented(shutil.rmtree)
    model = make_model(seed)
    errors = 0
    for _ in range(rounds):
        try:
            kanjax.save(path, model)
        except ckpt_lib.CheckpointError as err:
            errors += 1
            print("CheckpointError:", err, file=sys.stderr)
    print(f"CALLS {calls[0]} ERRORS {errors}")


def run_child(path: str, seed: int, point: int = 0, when: str = "none", rounds: int = 1):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", path, str(seed), str(point),
           when, str(rounds)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def only_one_step(path: str) -> bool:
    return len([n for n in os.listdir(path) if n != ckpt_lib.LOCK_NAME]) == 1


def count_calls(path: str, model) -> int:
    """The ``os.rename`` / ``shutil.rmtree`` calls of one save of ``model`` over ``path``."""
    calls = [0]
    real = os.rename, shutil.rmtree

    def counted(fn):
        def call(*args, **kwargs):
            calls[0] += 1
            return fn(*args, **kwargs)
        return call

    os.rename, shutil.rmtree = counted(real[0]), counted(real[1])
    try:
        kanjax.save(path, model)
    finally:
        os.rename, shutil.rmtree = real
    return calls[0]


def kill_points(root: str, quick: bool) -> tuple[int, int]:
    old, new, after = make_model(0), make_model(1), make_model(2)
    path = os.path.join(root, "kills")
    kanjax.save(path, old)
    total = count_calls(path, new)  # rename/rmtree calls of one complete save over a checkpoint
    points = [(p, w) for p in range(1, total + 1) for w in ("before", "after")]
    if quick:  # before the last two renames/removals of the save
        points = [(total - 1, "before"), (total, "before")]
    recovered = 0
    for point, when in points:
        shutil.rmtree(path, ignore_errors=True)
        kanjax.save(path, old)
        proc = run_child(path, 1, point, when)
        proc.communicate()
        killed = proc.returncode == -signal.SIGKILL
        loaded = kanjax.load(path)
        readable = same_model(loaded, old) or same_model(loaded, new)
        kanjax.save(path, after)
        clean = only_one_step(path) and same_model(kanjax.load(path), after)
        ok = killed and readable and clean
        recovered += ok
        print(f"  kill {when:6s} call {point}/{total}: killed={killed} old-or-new loads="
              f"{readable} next save clean={clean}")
    return len(points), recovered


def start_racers(root: str, racers: int, rounds: int) -> list:
    """``racers`` child processes, each saving its own model ``rounds`` times to one path."""
    return [run_child(os.path.join(root, "race"), 10 + i, rounds=rounds) for i in range(racers)]


def racing_saves(root: str, procs: list, rounds: int) -> bool:
    path, racers = os.path.join(root, "race"), len(procs)
    results = [p.communicate() for p in procs]
    ok = all(p.returncode == 0 for p in procs)
    errors = sum(int(out.split()[3]) for out, _ in results if out.startswith("CALLS"))
    loaded = kanjax.load(path)
    one_of = any(same_model(loaded, make_model(10 + i)) for i in range(racers))
    print(f"  {racers} processes x {rounds} saves: all exited 0={ok}, CheckpointErrors={errors}, "
          f"loads one racer's model={one_of}, one step left={only_one_step(path)}")
    for p, (_, err) in zip(procs, results):
        if p.returncode != 0:
            print(err[-2000:])
    return ok and one_of and only_one_step(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 flips per file, 2 kill points")
    parser.add_argument("--flips", type=int, default=25, help="random bit flips per file")
    parser.add_argument("--racers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4, help="saves per racing process")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    flips = 2 if args.quick else args.flips
    import orbax.checkpoint as ocp

    print(f"device: {jax.devices()[0]} | jax {jax.__version__}, orbax-checkpoint "
          f"{getattr(ocp, '__version__', '?')}, kanjax {kanjax.__version__}, python "
          f"{platform.python_version()} | flips per file {flips}, seed {args.seed}")
    root = tempfile.mkdtemp(prefix="kanjax-faults-")
    try:
        flipped = bit_flips(root, flips, random.Random(args.seed))
        tried = sum(flipped.values())
        print(f"bit flips: {tried} tried, {flipped['detected']} detected (CheckpointError), "
              f"{flipped['harmless']} harmless (identical load), {flipped['FAILED']} failed")
        rounds = 2 if args.quick else args.rounds
        racers = start_racers(root, args.racers, rounds)  # run while the kills are tried
        kills, recovered = kill_points(root, args.quick)
        print(f"killed saves: {kills} kill points tried, {recovered} recovered")
        raced = racing_saves(root, racers, rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ok = flipped["FAILED"] == 0 and recovered == kills and raced
    print("RESULT", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        path, seed, point, when, rounds = sys.argv[2:7]
        child_save(path, int(seed), int(point), when, int(rounds))
    else:
        sys.exit(main())
