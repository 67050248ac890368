"""Command line: ``kanjax demo``, ``kanjax convert-checkpoint`` and ``kanjax --version`` (also
``python -m kanjax ...``).

Only the standard library is imported here at module level: ``--help``, ``--version`` and
argument errors answer without loading JAX, Flax, Optax or Orbax. A subcommand imports what it
needs once its arguments have been checked.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_START = time.perf_counter()

# The files ``kanjax.demo.write_outputs`` writes into ``--out``.
DEMO_FILES = ("history.json", "results.json", "loss.png", "grad_norm.png")


def package_version() -> str:
    """kanjax's version from the installed distribution's metadata (no kanjax module imported)."""
    from importlib import metadata

    try:
        return metadata.version("kanjax")
    except metadata.PackageNotFoundError:
        return "unknown (no installed kanjax distribution; run `pip install -e .` in a checkout)"


def seconds_since_start() -> float:
    """Wall seconds since this command started: since ``kanjax.cli`` was imported, which
    ``python -m kanjax`` and the ``kanjax`` script do first, so the imports of JAX and the
    rest are included and only the interpreter's own start-up (tens of milliseconds) is not.

    The process's start time (``/proc``) would count more than the command: a shell that runs
    ``bash -c '... && python -m kanjax demo'`` hands its own process to the last command, whose
    start time is then the shell's, a ``pip install`` before it included.
    """
    return time.perf_counter() - _START


class _VersionAction(argparse.Action):
    """``--version``: print ``kanjax X.Y.Z`` and exit (the metadata is read only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print kanjax's version and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"kanjax {package_version()}")
        parser.exit()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def out_dir_problem(path: str) -> str | None:
    """Why the demo could not write its files into folder ``path``; ``None`` when it can."""
    if not path:
        return "'' is empty; give a folder path, e.g. --out kanjax-demo"
    if os.path.exists(path) and not os.path.isdir(path):
        return (f"{path!r} is an existing file, not a folder; give a folder path (new or "
                f"existing), e.g. --out {path}-demo, or move the file away")
    if os.path.isdir(path):
        for name in DEMO_FILES:
            target = os.path.join(path, name)
            if os.path.isdir(target):
                return (f"{path!r} holds a folder {name!r} where the demo writes a file; "
                        "give another folder or move that folder away")
        writable = path
    else:
        writable = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(writable):
            writable = os.path.dirname(writable)
        if not os.path.isdir(writable):
            return (f"{path!r} cannot be created: {writable!r} is a file, not a folder; "
                    "give a path whose parents are folders")
    if not os.access(writable, os.W_OK | os.X_OK):
        return (f"{path!r}: no permission to write in {writable!r}; give a folder you can "
                "write to, e.g. one under your home folder")
    return None


def _out_dir(text: str) -> str:
    problem = out_dir_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _add_demo(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the seed experiment (z = x^2 + y^2, KAN [2, 4, 4, 1]) and write its results",
        description="Fit z = x^2 + y^2 with a [2, 4, 4, 1] KAN (Taylor degree 9 by default), "
        "1000 train / 1000 test points, Adam + cosine schedule. Prints the train/test MSE and "
        "per-layer gradient norms; writes " + ", ".join(DEMO_FILES) + " into --out.",
    )
    demo.add_argument("--basis", choices=["taylor", "bspline"], default="taylor",
                      help="edge functions: Taylor polynomials of degree 9 or cubic B-splines "
                      "(default: %(default)s)")
    demo.add_argument("--epochs", type=_positive_int, default=200, metavar="N",
                      help="training epochs, >= 1 (default: %(default)s)")
    demo.add_argument("--batch-size", type=_positive_int, default=64, metavar="N",
                      help="minibatch size, >= 1 (default: %(default)s)")
    demo.add_argument("--lr", type=_positive_float, default=None, metavar="RATE",
                      help="peak learning rate of the cosine schedule, > 0 "
                      "(default: kanjax.train's default)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the data, the initial parameters and the batch order "
                      "(default: %(default)s)")
    demo.add_argument("--out", type=_out_dir, default="kanjax-demo", metavar="FOLDER",
                      help="folder for the results, created if missing; checked before "
                      "training (default: ./%(default)s)")
    demo.add_argument("--no-progress", action="store_true",
                      help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kanjax", description="Kolmogorov-Arnold Networks in JAX.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="run `kanjax COMMAND --help` for its options")
    _add_demo(sub)
    convert = sub.add_parser(
        "convert-checkpoint", help="rewrite a kanjax 0.1.0 checkpoint in the current format",
        description="Convert a format-1 checkpoint (a directory with metadata.json, written by "
                    "kanjax 0.1.0) to the current format: the model, its history and metadata "
                    "(not the optimizer state). OLD is only read; NEW must not exist yet.")
    convert.add_argument("old", metavar="OLD", help="the format-1 checkpoint directory")
    convert.add_argument("new", metavar="NEW", help="where to write the converted checkpoint")
    return parser


def run_demo(args) -> int:
    import jax

    from kanjax import demo

    print(f"kanjax seed experiment: basis={args.basis}, widths {list(demo.WIDTHS)}, "
          f"{args.epochs} epochs, batch {args.batch_size}, seed {args.seed}")
    print(f"device: {jax.devices()[0]} | " + ", ".join(f"{k} {v}" for k, v in demo.versions().items()))
    result = demo.run_seed_experiment(
        basis=args.basis, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, seed=args.seed, progress=not args.no_progress,
    )
    h = result.history
    print(f"parameters: {result.num_params}")
    print(f"train MSE: {result.train_mse:.3e}   test MSE: {result.test_mse:.3e}")
    print(f"train(): {result.train_seconds:.2f} s wall, of which compile "
          f"{h.config['compile_time']:.2f} s; learning rate {h.config['learning_rate']}")
    print("gradient L2 norm per layer (first epoch -> last epoch):")
    for name, values in h.grad_norm.items():
        print(f"  {name}: {values[0]:.3e} -> {values[-1]:.3e}")
    paths = demo.write_outputs(result, args.out)
    print("wrote " + ", ".join(paths))
    print(f"total: {seconds_since_start():.2f} s since the command started (imports included)")
    return 0


def run_convert(args) -> int:
    from kanjax.checkpoint import CheckpointError
    from kanjax.convert import convert_checkpoint

    try:
        path = convert_checkpoint(args.old, args.new)
    except (CheckpointError, FileExistsError, ValueError) as err:
        print(f"kanjax convert-checkpoint: error: {err}", file=sys.stderr)
        return 1
    print(f"converted {os.path.abspath(args.old)} -> {path} (model, history and metadata; "
          "an optimizer state is not converted)")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return run_demo(args)
    if args.command == "convert-checkpoint":
        return run_convert(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
