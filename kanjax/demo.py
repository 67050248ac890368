"""The seed document's experiment, end to end.

Fit ``z = x^2 + y^2`` on ``[-1, 1]^2`` with a ``[2, 4, 4, 1]`` KAN (Taylor degree 9, i.e.
the seed's ten terms; or B-splines), 1000 training and 1000 test points, 200 epochs of
Adam with a cosine schedule at batch size 64. Report train/test MSE and per-layer gradient
norms; write ``history.json``, ``results.json``, ``loss.png`` and ``grad_norm.png``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
from flax import nnx

from kanjax.nn import KAN
from kanjax.training import History, evaluate, train

__all__ = ["seed_data", "SeedResult", "run_seed_experiment"]

WIDTHS = (2, 4, 4, 1)
# What ``write_outputs`` writes into its folder, in this order.
OUTPUT_FILES = ("history.json", "results.json", "loss.png", "grad_norm.png")


def seed_data(seed: int = 0, n_train: int = 1000, n_test: int = 1000):
    """``((x_train, z_train), (x_test, z_test))`` with ``x ~ U[-1, 1]^2``, ``z = x^2 + y^2``."""
    return _seed_data(jax.random.key(seed), int(n_train), int(n_test))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _seed_data(key, n_train, n_test):
    x = jax.random.uniform(key, (n_train + n_test, 2), minval=-1.0, maxval=1.0)
    z = jnp.sum(x**2, axis=-1, keepdims=True)
    return (x[:n_train], z[:n_train]), (x[n_train:], z[n_train:])


@dataclass
class SeedResult:
    model: KAN
    history: History
    train_mse: float
    test_mse: float
    train_seconds: float
    num_params: int
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "train_mse": self.train_mse,
            "test_mse": self.test_mse,
            "train_seconds": self.train_seconds,
            "compile_seconds": self.history.config.get("compile_time"),
            "num_params": self.num_params,
            "final_grad_norm": {k: v[-1] for k, v in self.history.grad_norm.items() if v},
            "settings": self.settings,
            "device": str(jax.devices()[0]),
            "versions": versions(),
        }


def versions() -> dict:
    import flax
    import optax

    import kanjax

    return {
        "kanjax": kanjax.__version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
    }


def run_seed_experiment(
    *,
    basis: str = "taylor",
    epochs: int = 200,
    batch_size: int = 64,
    learning_rate: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SeedResult:
    """Train the seed experiment's KAN and evaluate it (no files written)."""
    (x, z), (x_test, z_test) = seed_data(seed)
    basis_kwargs = {"degree": 9} if basis == "taylor" else {}  # the B-spline takes no degree
    model = KAN(WIDTHS, basis=basis, rngs=nnx.Rngs(seed), **basis_kwargs)
    kwargs = {} if learning_rate is None else {"learning_rate": learning_rate}
    start = time.perf_counter()
    model, history = train(
        model, (x, z), epochs=epochs, batch_size=batch_size, seed=seed, progress=progress,
        **kwargs,
    )
    seconds = time.perf_counter() - start
    num_params = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    settings = dict(basis=basis, widths=list(WIDTHS), degree=9 if basis == "taylor" else None,
                    epochs=epochs, batch_size=batch_size,
                    learning_rate=history.config.get("learning_rate"), seed=seed,
                    n_train=int(x.shape[0]), n_test=int(x_test.shape[0]))
    return SeedResult(model, history, evaluate(model, (x, z)), evaluate(model, (x_test, z_test)),
                      seconds, int(num_params), settings)


def write_outputs(result: SeedResult, out_dir: str | os.PathLike) -> list[str]:
    """Write history, results and the two plots into ``out_dir``; returns the paths."""
    from kanjax.plotting import plot_grad_norms, plot_loss

    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, name) for name in OUTPUT_FILES]
    result.history.save(paths[0])
    tmp = paths[1] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result.summary(), f, indent=1)
    os.replace(tmp, paths[1])
    basis = result.settings["basis"]
    plot_loss(result.history, paths[2], title=f"Seed experiment ({basis}): MSE")
    plot_grad_norms(result.history, paths[3], title=f"Seed experiment ({basis}): gradient norms")
    return paths
