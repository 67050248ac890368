"""Command line: ``kanjax demo`` (also ``python -m kanjax demo``)."""

from __future__ import annotations

import argparse
import sys
import time


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kanjax", description="Kolmogorov-Arnold Networks in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the seed experiment (z = x^2 + y^2, KAN [2, 4, 4, 1])",
        description="Fit z = x^2 + y^2 with a [2, 4, 4, 1] KAN (Taylor degree 9 by default), "
        "1000 train / 1000 test points, Adam + cosine schedule.",
    )
    demo.add_argument("--basis", choices=["taylor", "bspline"], default="taylor")
    demo.add_argument("--epochs", type=_positive_int, default=200)
    demo.add_argument("--batch-size", type=_positive_int, default=64)
    demo.add_argument("--lr", type=_positive_float, default=None,
                      help="peak learning rate (default: kanjax.train's default)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="kanjax-demo", help="output folder (default ./kanjax-demo)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run_demo(args) -> int:
    start = time.perf_counter()
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
    print(f"total: {time.perf_counter() - start:.2f} s")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return run_demo(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
