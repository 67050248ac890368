"""Bad inputs, as one table: each row builds one bad call and names the exception and a part
of its message (the argument, the value or the fix).

Every row must raise that exception before kanjax traces any of its own programs (JAX's
trace events are recorded during the call; eager operations are allowed), and a row that
hands a model to the call checks the model is exactly as it was (graph and every leaf).
Models are built once; every shape is tiny, so the whole table runs in seconds.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import pathlib
import tempfile
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import kanjax
from kanjax import cli, compile_cache

NAN, INF = float("nan"), float("inf")
NEVER_WRITTEN = os.path.join(tempfile.gettempdir(), "kanjax-bad-inputs-never-written")


class Row(NamedTuple):
    id: str
    call: Callable[[Any], Any]  # called with the shared context
    error: type[BaseException]
    fragment: str  # must occur in str(exception)
    model: str | None = None  # context attribute of a model the call must leave unchanged


ROWS: list[Row] = []


def row(id, call, error, fragment, model=None):
    ROWS.append(Row(id, call, error, fragment, model))


# ------------------------------------------------------------------ shared context

def _context():
    rng = np.random.default_rng(0)
    c = types.SimpleNamespace()
    c.rngs = lambda: nnx.Rngs(0)
    c.kan = kanjax.KAN([2, 3, 1], grid_size=3, rngs=nnx.Rngs(0))
    c.tay = kanjax.KAN([2, 3, 1], basis="taylor", degree=3, rngs=nnx.Rngs(1))
    c.cls = kanjax.KAN([2, 3], basis="taylor", degree=2, rngs=nnx.Rngs(2))
    c.mlp = kanjax.MLP([2, 3, 1], rngs=nnx.Rngs(3))
    c.layer = kanjax.KANLayer(2, 3, grid_size=3, rngs=nnx.Rngs(4))
    c.x = rng.uniform(-1, 1, (8, 2)).astype(np.float32)
    c.y = rng.uniform(-1, 1, (8, 1)).astype(np.float32)
    c.labels = rng.integers(0, 3, 8).astype(np.int32)
    c.history = kanjax.History(train_loss=[1.0, 0.5], config={"epochs": 2})
    c.tmp = pathlib.Path(tempfile.mkdtemp(prefix="kanjax-bad-inputs-"))
    (c.tmp / "a_file").write_text("keep")
    (c.tmp / "folder.png").mkdir()
    return c


def nan_rows(x, rows=(1,)):
    x = np.array(x, copy=True)
    x[list(rows), 0] = np.nan
    return x


def write(c, name, text):
    path = c.tmp / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def run_cli(argv):
    """``kanjax.cli.main(argv)`` in this process; its exit as ``SystemExit`` with stderr as message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            cli.main(argv)
    except SystemExit as exit_:
        raise SystemExit(f"exit {exit_.code}: {err.getvalue()}") from None


# ------------------------------------------------------------------ constructors

def kan(c, widths=(2, 3, 1), **kwargs):
    return kanjax.KAN(list(widths) if isinstance(widths, tuple) else widths,
                      **{"rngs": c.rngs(), **kwargs})


def layer(c, n_in=2, n_out=3, **kwargs):
    return kanjax.KANLayer(n_in, n_out, **{"rngs": c.rngs(), **kwargs})


def mlp(c, widths=(2, 3, 1), **kwargs):
    return kanjax.MLP(list(widths), **{"rngs": c.rngs(), **kwargs})


row("kan-widths-int", lambda c: kan(c, 3), TypeError, "widths must be a sequence")
row("kan-widths-str", lambda c: kan(c, "23"), TypeError, "widths must be a sequence")
row("kan-widths-one", lambda c: kan(c, [2]), ValueError, "at least 2 entries")
row("kan-widths-empty", lambda c: kan(c, []), ValueError, "at least 2 entries")
row("kan-widths-zero", lambda c: kan(c, [2, 0, 1]), ValueError, "widths[1] must be >= 1")
row("kan-widths-negative", lambda c: kan(c, [2, -3, 1]), ValueError, "widths[1] must be >= 1")
row("kan-mult-inputs", lambda c: kan(c, [[2, 1], 1]), ValueError, "inputs are not multiplied")
row("kan-mult-triple", lambda c: kan(c, [2, [1, 1, 1], 1]), ValueError, "[n_sum, n_mult]")
row("kan-mult-negative", lambda c: kan(c, [2, [1, -1], 1]), ValueError, "widths[1][1] must be >= 0")
row("kan-mult-float", lambda c: kan(c, [2, [1, 0.5], 1]), TypeError, "widths[1][1] must be an integer")
row("kan-mult-arity-one", lambda c: kan(c, [2, [0, 1], 1], mult_arity=1), ValueError,
    "mult_arity must be >= 2")
row("layer-mult-too-many", lambda c: kanjax.KANLayer(2, 3, mult_nodes=2, rngs=c.rngs()), ValueError,
    "needs 4 edge sums, but out_features=3")
row("layer-mult-arity-str", lambda c: kanjax.KANLayer(2, 4, mult_arity="2", rngs=c.rngs()),
    TypeError, "mult_arity must be an integer")
row("kan-widths-float", lambda c: kan(c, [2, 3.5, 1]), TypeError, "widths[1] must be an integer")
row("kan-widths-bool", lambda c: kan(c, [2, True, 1]), TypeError, "widths[1] must be an integer")
row("kan-widths-none", lambda c: kan(c, [2, None]), TypeError, "widths[1] must be an integer")
row("kan-basis-unknown", lambda c: kan(c, basis="fourier"), ValueError, "'fourier'")
row("kan-basis-none", lambda c: kan(c, basis=None), ValueError, "basis must be one of")
row("kan-basis-case", lambda c: kan(c, basis="Taylor"), ValueError, "'Taylor'")
row("kan-pykan-grid", lambda c: kan(c, grid=5), ValueError, "grid_size=5")
row("kan-pykan-k", lambda c: kan(c, k=3), TypeError, "k -> order")
row("kan-pykan-seed", lambda c: kan(c, seed=0), TypeError, "rngs=nnx.Rngs(seed)")
row("kan-pykan-width", lambda c: kan(c, width=[2, 1]), TypeError, "width -> widths")
row("kan-unknown-option", lambda c: kan(c, gridsize=5), TypeError, "'gridsize'")
row("kan-taylor-grid-size", lambda c: kan(c, basis="taylor", grid_size=7), ValueError,
    "grid_size is for basis='bspline'")
row("kan-taylor-order", lambda c: kan(c, basis="taylor", order=2), ValueError,
    "order is for basis='bspline'")
row("kan-taylor-grid-range", lambda c: kan(c, basis="taylor", grid_range=(0, 1)), ValueError,
    "grid_range is for basis='bspline'")
row("kan-taylor-grid", lambda c: kan(c, basis="taylor", grid=[0.0, 1.0]), ValueError,
    "grid is for basis='bspline'")
row("kan-bspline-degree", lambda c: kan(c, degree=3), ValueError,
    "degree is for basis='taylor'")
row("kan-bspline-squash", lambda c: kan(c, squash=None), ValueError,
    "squash is for basis='taylor'")
row("kan-bspline-degree-squash", lambda c: kan(c, basis="bspline", degree=3, squash="tanh"),
    ValueError, "degree, squash are for basis='taylor'")
row("kan-grid-range-inf", lambda c: kan(c, grid_range=(0, INF)), ValueError,
    "grid_range must be finite, got (0, inf)")
row("kan-grid-range-nan", lambda c: kan(c, grid_range=(NAN, 1)), ValueError,
    "grid_range must be finite")
row("kan-grid-range-three", lambda c: kan(c, grid_range=(0, 1, 2)), ValueError,
    "two numbers, got 3")
row("kan-grid-range-one", lambda c: kan(c, grid_range=(1,)), ValueError, "two numbers, got 1")
row("kan-grid-range-scalar", lambda c: kan(c, grid_range=1.0), ValueError,
    "grid_range must be (lo, hi), got 1.0")
row("kan-grid-range-reversed", lambda c: kan(c, grid_range=(1, -1)), ValueError, "lo < hi")
row("kan-grid-range-empty", lambda c: kan(c, grid_range=(0.5, 0.5)), ValueError, "lo < hi")
row("kan-grid-range-text", lambda c: kan(c, grid_range=("a", "b")), ValueError,
    "e.g. grid_range=(-1.0, 1.0)")
row("kan-grid-size-zero", lambda c: kan(c, grid_size=0), ValueError, "grid_size must be >= 1")
row("kan-grid-size-float", lambda c: kan(c, grid_size=5.0), TypeError,
    "grid_size must be an integer")
row("kan-grid-size-str", lambda c: kan(c, grid_size="5"), TypeError,
    "grid_size must be an integer")
row("kan-order-negative", lambda c: kan(c, order=-1), ValueError, "order must be >= 0")
row("kan-degree-negative", lambda c: kan(c, basis="taylor", degree=-1), ValueError,
    "degree must be >= 0")
row("kan-degree-float", lambda c: kan(c, basis="taylor", degree=3.0), TypeError,
    "degree must be an integer")
row("kan-squash-unknown", lambda c: kan(c, basis="taylor", squash="sigmoid"), ValueError,
    "unknown squash 'sigmoid'")
row("kan-grid-and-grid-size", lambda c: kan(c, grid=np.linspace(-1, 1, 10), grid_size=3),
    ValueError, "grid_size would be ignored")
row("kan-grid-and-grid-range", lambda c: kan(c, grid=np.linspace(-1, 1, 10), grid_range=(0, 1)),
    ValueError, "grid_range would be ignored")
row("kan-grid-unsorted", lambda c: kan(c, grid=np.linspace(1, -1, 10)), ValueError,
    "non-decreasing")
row("kan-grid-nan", lambda c: kan(c, grid=[0, 1, 2, 3, 4, 5, 6, NAN]), ValueError,
    "non-finite knots")
row("kan-grid-too-few", lambda c: kan(c, grid=[0.0, 1.0, 2.0]), ValueError,
    "needs at least 8 knots")
row("kan-grid-wrong-rows", lambda c: kan(c, grid=np.zeros((3, 10))), ValueError,
    "grid must have shape (n_knots,) or (2, n_knots)")
row("kan-base-init-nan", lambda c: kan(c, base_init=NAN), ValueError,
    "base_init must be a finite number")
row("kan-spline-init-inf", lambda c: kan(c, spline_init=INF), ValueError,
    "spline_init must be a finite number")
row("kan-coef-init-str", lambda c: kan(c, coef_init="0.1"), TypeError,
    "coef_init must be a finite number")
row("kan-use-bias-str", lambda c: kan(c, use_bias="yes"), TypeError,
    "use_bias must be True or False")
row("kan-param-dtype-int", lambda c: kan(c, param_dtype=jnp.int32), ValueError,
    "param_dtype must be a floating dtype")
row("kan-param-dtype-complex", lambda c: kan(c, param_dtype=jnp.complex64), ValueError,
    "param_dtype must be a floating dtype")
row("kan-param-dtype-unknown", lambda c: kan(c, param_dtype="float33"), TypeError,
    "'float33'")
row("kan-dtype-int", lambda c: kan(c, dtype=jnp.int8), ValueError, "dtype must be a floating")
row("kan-rngs-int", lambda c: kan(c, rngs=0), TypeError, "rngs=nnx.Rngs(0)")
row("kan-rngs-key", lambda c: kan(c, rngs=jax.random.key(0)), TypeError, "rngs must be an nnx.Rngs")
row("layer-in-zero", lambda c: layer(c, 0, 3), ValueError, "in_features must be >= 1")
row("layer-out-float", lambda c: layer(c, 2, 1.0), TypeError, "out_features must be an integer")
row("layer-pykan-grid", lambda c: layer(c, grid=7), ValueError, "grid_size=7")
row("layer-grid-range-inf", lambda c: layer(c, grid_range=(-INF, 1)), ValueError,
    "grid_range must be finite")
row("layer-taylor-grid-size", lambda c: layer(c, basis="taylor", grid_size=7), ValueError,
    "would be ignored with basis='taylor'")
row("layer-bspline-degree", lambda c: layer(c, degree=3), ValueError,
    "would be ignored with basis='bspline'")
row("layer-spline-eval-unknown", lambda c: layer(c, spline_eval="sparse"), ValueError,
    "spline_eval must be one of")
row("layer-taylor-spline-eval", lambda c: layer(c, basis="taylor", spline_eval="local"),
    ValueError, "would be ignored with basis='taylor'")
row("kan-spline-eval-none", lambda c: kan(c, spline_eval=None), ValueError,
    "spline_eval must be one of")
row("layer-rngs-none", lambda c: layer(c, rngs=None), TypeError, "rngs must be an nnx.Rngs")
row("mlp-widths-one", lambda c: mlp(c, [3]), ValueError, "at least 2 entries")
row("mlp-activation-str", lambda c: mlp(c, activation="relu"), TypeError,
    "activation=jax.nn.silu")
row("mlp-param-dtype-int", lambda c: mlp(c, param_dtype=jnp.int32), ValueError,
    "param_dtype must be a floating dtype")
row("mlp-rngs-int", lambda c: mlp(c, rngs=3), TypeError, "rngs must be an nnx.Rngs")

# ------------------------------------------------------------------ train


def train(c, model="kan", data=None, **kwargs):
    kwargs.setdefault("epochs", 1)
    kwargs.setdefault("progress", False)
    return kanjax.train(getattr(c, model), (c.x, c.y) if data is None else data(c), **kwargs)


def trow(id, error, fragment, model="kan", data=None, **kwargs):
    row(f"train-{id}", lambda c: train(c, model, data, **kwargs), error, fragment, model)


trow("epochs-negative", ValueError, "epochs must be >= 0", epochs=-1)
trow("epochs-float", TypeError, "epochs must be an integer", epochs=2.5)
trow("epochs-str", TypeError, "epochs must be an integer", epochs="10")
trow("epochs-bool", TypeError, "epochs must be an integer", epochs=True)
trow("batch-size-zero", ValueError, "batch_size must be >= 1", batch_size=0)
trow("batch-size-float", TypeError, "batch_size must be an integer", batch_size=8.0)
trow("lr-zero", ValueError, "learning_rate must be a positive finite number", learning_rate=0.0)
trow("lr-negative", ValueError, "learning_rate must be a positive", learning_rate=-1e-3)
trow("lr-nan", ValueError, "learning_rate must be a positive", learning_rate=NAN)
trow("lr-inf", ValueError, "learning_rate must be a positive", learning_rate=INF)
trow("lr-str", ValueError, "got '0.01'", learning_rate="0.01")
trow("lr-array", ValueError, "learning_rate must be a positive", learning_rate=np.ones(2))
trow("lr-complex", ValueError, "learning_rate must be a positive", learning_rate=1e-2 + 1j)
trow("seed-negative", ValueError, "seed must be >= 0", seed=-1)
trow("seed-float", TypeError, "seed must be an integer", seed=1.5)
trow("optimizer-name", TypeError, "'lbfgs' or 'lm'", optimizer="sgd")
trow("optimizer-class", TypeError, "optax.GradientTransformation", optimizer=optax.adam)
trow("schedule-unknown", ValueError, "schedule must be 'cosine'", schedule="linear")
trow("loss-unknown", ValueError, "unknown loss 'mae'", loss="mae")
trow("loss-int", TypeError, "loss must be a name or a callable", loss=3)
trow("objective-not-callable", TypeError, "objective must be a callable", objective="mse")
trow("objective-with-l1", ValueError, "l1/entropy penalties belong inside",
     objective=lambda m, b: 0.0, l1=0.1)
trow("l1-negative", ValueError, "l1 must be a finite number >= 0", l1=-0.1)
trow("entropy-nan", ValueError, "entropy must be a finite number >= 0", entropy=NAN)
trow("l1-mlp", TypeError, "l1/entropy regularization needs a kanjax.KAN", model="mlp", l1=0.1)
trow("grid-update-every-negative", ValueError, "grid_update_every must be >= 0",
     grid_update_every=-1)
trow("grid-update-taylor", TypeError, "grid_update_every needs a kanjax.KAN with B-spline",
     model="tay", grid_update_every=1)
trow("grid-update-mlp", TypeError, "needs a kanjax.KAN with B-spline", model="mlp",
     grid_update_every=1)
trow("grid-eps-negative", ValueError, "grid_eps must be a finite number >= 0", grid_eps=-0.1)
trow("grid-margin-inf", ValueError, "grid_margin must be a finite number", grid_margin=INF)
trow("grid-schedule-not-pairs", TypeError, "(grid_size, epochs) pairs", grid_schedule=[5, 10])
trow("grid-schedule-zero-grid", ValueError, "grid sizes >= 1", grid_schedule=[(0, 1)])
trow("grid-schedule-taylor", TypeError, "grid_schedule needs a kanjax.KAN with B-spline",
     model="tay", grid_schedule=[(4, 1)])
trow("checkpoint-dir-int", TypeError, "checkpoint_dir must be a folder path", checkpoint_dir=3)
trow("checkpoint-every-negative", ValueError, "checkpoint_every must be >= 0",
     checkpoint_every=-1, checkpoint_dir=NEVER_WRITTEN)
trow("checkpoint-every-float", TypeError, "checkpoint_every must be an integer",
     checkpoint_every=1.5, checkpoint_dir=NEVER_WRITTEN)
trow("checkpoint-every-without-dir", ValueError, "need a checkpoint_dir", checkpoint_every=2)
trow("resume-without-dir", ValueError, "need a checkpoint_dir", resume=True)
trow("resume-str", TypeError, "resume must be a bool", resume="yes", checkpoint_dir=NEVER_WRITTEN)
trow("mesh-unknown", ValueError, "mesh must be 'auto', None or a jax.sharding.Mesh", mesh="gpu")
trow("callback-not-callable", TypeError, "callback must be callable", callback=3)
trow("progress-str", TypeError, "progress must be a bool", progress="yes")
trow("lm-cross-entropy", ValueError, "optimizer='lm' fits least squares", optimizer="lm",
     loss="cross_entropy")
trow("lm-l1", ValueError, "optimizer='lm' does not support", optimizer="lm", l1=0.1)
trow("data-none", TypeError, "data must be a pair (x, y)", data=lambda c: None)
trow("data-one-array", TypeError, "data must be a pair (x, y)", data=lambda c: c.x)
trow("data-triple", TypeError, "data must be a pair", data=lambda c: (c.x, c.y, c.y))
trow("x-wrong-features", ValueError, "the model takes 2 input features",
     data=lambda c: (np.ones((8, 3), np.float32), c.y))
trow("x-1d", ValueError, "expected (n_samples, 2)", data=lambda c: (c.x[:, 0], c.y))
trow("x-nan", ValueError, "data x contains 1 non-finite value",
     data=lambda c: (nan_rows(c.x), c.y))
trow("y-inf", ValueError, "data y contains 1 non-finite", data=lambda c: (c.x, np.where(
    np.arange(8)[:, None] == 2, np.inf, c.y).astype(np.float32)))
trow("x-complex", TypeError, "data x is complex", data=lambda c: (c.x + 1j, c.y))
trow("x-strings", TypeError, "data x must hold numbers", data=lambda c: (c.x.astype(str), c.y))
trow("x-bool", TypeError, "data x must be numeric, got dtype bool",
     data=lambda c: (c.x > 0, c.y))
trow("x-none", TypeError, "data x is None", data=lambda c: (None, c.y))
trow("sample-mismatch", ValueError, "different numbers of samples: 8 vs 5",
     data=lambda c: (c.x, c.y[:5]))
trow("empty", ValueError, "data is empty (0 samples)", data=lambda c: (c.x[:0], c.y[:0]))
trow("y-wrong-outputs", ValueError, "the model outputs shape (1,) per sample but y has shape (2,)",
     data=lambda c: (c.x, np.ones((8, 2), np.float32)))
trow("labels-float", TypeError, "got y of dtype float64 (pass e.g. y.astype(int)", model="cls",
     data=lambda c: (c.x, c.labels.astype(np.float64)), loss="cross_entropy")
trow("labels-too-many-classes", ValueError, "4 classes need 4 outputs", model="cls",
     data=lambda c: (c.x, np.arange(8) % 4), loss="cross_entropy")
trow("labels-negative", ValueError, "labels must lie in [0, 3)", model="cls",
     data=lambda c: (c.x, c.labels - 1), loss="cross_entropy")
trow("labels-2d", ValueError, "class labels y must have shape (n_samples,)", model="cls",
     data=lambda c: (c.x, c.labels[:, None]), loss="cross_entropy")
trow("validation-wrong-features", ValueError, "validation_data: the model takes 2 input features",
     validation_data=(np.ones((4, 3), np.float32), np.ones((4, 1), np.float32)))
trow("validation-nan", ValueError, "validation_data x contains",
     validation_data=(nan_rows(np.zeros((4, 2), np.float32)), np.ones((4, 1), np.float32)))
trow("objective-empty-data", ValueError, "data is empty (0 samples)",
     objective=lambda m, b: jnp.mean(m(b[0]) ** 2), data=lambda c: (c.x[:0],))
trow("objective-mismatched", ValueError, "different numbers of samples",
     objective=lambda m, b: jnp.mean(m(b[0]) ** 2), data=lambda c: (c.x, c.y[:3]))
trow("objective-nan", ValueError, "non-finite", objective=lambda m, b: jnp.mean(m(b[0]) ** 2),
     data=lambda c: {"x": nan_rows(c.x)})
row("train-model-not-module", lambda c: kanjax.train(lambda x: x, (c.x, c.y), epochs=1,
                                                     progress=False),
    TypeError, "model must be a flax.nnx.Module")
row("trainconfig-epochs", lambda c: kanjax.TrainConfig(epochs=-3), ValueError,
    "epochs must be >= 0, got -3")
row("trainconfig-lr", lambda c: kanjax.TrainConfig(learning_rate=0), ValueError,
    "learning_rate must be a positive finite number, got 0")

# ------------------------------------------------------------------ evaluate


def evaluate(c, model="kan", data=None, **kwargs):
    return kanjax.evaluate(getattr(c, model), (c.x, c.y) if data is None else data(c), **kwargs)


def erow(id, error, fragment, model="kan", data=None, **kwargs):
    row(f"evaluate-{id}", lambda c: evaluate(c, model, data, **kwargs), error, fragment, model)


erow("loss-unknown", ValueError, "unknown loss 'l2'", loss="l2")
erow("metrics-string", TypeError, "metrics must be a sequence of names", metrics="accuracy")
erow("metrics-unknown", ValueError, "unknown metrics ['f1']", metrics=("f1",),
     loss="cross_entropy", model="cls", data=lambda c: (c.x, c.labels))
erow("accuracy-with-mse", ValueError, "pass loss='cross_entropy'", metrics=("accuracy",))
erow("x-nan", ValueError, "data x contains 1 non-finite", data=lambda c: (nan_rows(c.x), c.y))
erow("x-complex", TypeError, "data x is complex", data=lambda c: (c.x * 1j, c.y))
erow("empty", ValueError, "data is empty (0 samples)", data=lambda c: (c.x[:0], c.y[:0]))
erow("wrong-features", ValueError, "the model takes 2 input features",
     data=lambda c: (np.ones((4, 5), np.float32), np.ones((4, 1), np.float32)))
erow("labels-without-cross-entropy", ValueError, "but y has shape",
     model="cls", data=lambda c: (c.x, np.ones((8, 2), np.float32)))
erow("labels-without-loss", ValueError, "if y holds class labels, pass loss='cross_entropy'",
     model="cls", data=lambda c: (c.x, c.labels))
erow("labels-out-of-range", ValueError, "9 classes need 9 outputs", model="cls",
     data=lambda c: (c.x, np.full(8, 8)), loss="cross_entropy")
erow("objective-not-callable", TypeError, "objective must be a callable", objective=1)
row("evaluate-model-not-module", lambda c: kanjax.evaluate("model", (c.x, c.y)), TypeError,
    "model must be a flax.nnx.Module")

# ------------------------------------------------------------------ grids


row("refine-zero", lambda c: c.kan.refine(0, c.x), ValueError, "grid_size must be >= 1", "kan")
row("refine-float", lambda c: c.kan.refine(4.5, c.x), TypeError, "grid_size must be an integer",
    "kan")
row("refine-nan-x", lambda c: c.kan.refine(5, nan_rows(c.x)), ValueError, "non-finite", "kan")
row("refine-empty-x", lambda c: c.kan.refine(5, c.x[:0]), ValueError,
    "need at least one sample", "kan")
row("refine-wrong-features", lambda c: c.kan.refine(5, np.ones((4, 3))), ValueError,
    "expects inputs with 2 features", "kan")
row("refine-taylor", lambda c: c.tay.refine(5, c.x), Exception, "B-spline", "tay")
row("refine-unknown-option", lambda c: c.kan.refine(5, c.x, eps=0.1), TypeError,
    "unexpected keyword arguments ['eps']", "kan")
row("layer-update-grid-nan", lambda c: c.layer.update_grid(nan_rows(c.x)), ValueError,
    "non-finite", "layer")
row("layer-update-grid-empty", lambda c: c.layer.update_grid(c.x[:0]), ValueError,
    "need at least one sample", "layer")
row("layer-refine-zero", lambda c: c.layer.refine(0, c.x), ValueError, "grid_size must be >= 1",
    "layer")

# ------------------------------------------------------------------ pruning and layer inputs

for name in ("prune", "edge_importance", "node_importance", "attribution"):
    fn = getattr(kanjax, name)
    row(f"{name}-nan-rows", lambda c, fn=fn: fn(c.kan, nan_rows(c.x, (0, 3, 5))), ValueError,
        "x has 3 of 8 rows with nan or inf", "kan")
    row(f"{name}-empty", lambda c, fn=fn: fn(c.kan, c.x[:0]), ValueError, "x has no samples",
        "kan")
    row(f"{name}-wrong-features", lambda c, fn=fn: fn(c.kan, np.ones((4, 3))), ValueError,
        "x must have 2 features on the last axis", "kan")
    row(f"{name}-mlp", lambda c, fn=fn: fn(c.mlp, c.x), TypeError, "needs a kanjax.KAN", "mlp")
row("prune-threshold-negative", lambda c: kanjax.prune(c.kan, c.x, threshold=-1.0), ValueError,
    "threshold must be a finite number >= 0", "kan")
row("prune-threshold-nan", lambda c: kanjax.prune(c.kan, c.x, threshold=NAN), ValueError,
    "threshold must be a finite number >= 0", "kan")
row("prune-threshold-str", lambda c: kanjax.prune(c.kan, c.x, threshold="0.1"), ValueError,
    "got '0.1'", "kan")
row("prune-x-complex", lambda c: kanjax.prune(c.kan, c.x + 1j), TypeError,
    "x must hold real numbers", "kan")
row("prune-x-strings", lambda c: kanjax.prune(c.kan, c.x.astype(str)), TypeError,
    "x must hold real numbers", "kan")
row("layer-inputs-wrong-features", lambda c: kanjax.layer_inputs(c.kan, np.ones((4, 5))),
    ValueError, "x must have 2 features", "kan")
row("layer-inputs-mlp", lambda c: kanjax.layer_inputs(c.mlp, c.x), TypeError,
    "needs a kanjax.KAN", "mlp")
row("layer-inputs-empty", lambda c: kanjax.layer_inputs(c.kan, c.x[:0]), ValueError,
    "x has no samples", "kan")

# ------------------------------------------------------------------ symbolic and formula

row("suggest-mlp", lambda c: kanjax.suggest_symbolic(c.mlp, c.x, 0, 0, 0), TypeError,
    "expected a kanjax.KAN", "mlp")
row("suggest-layer-out-of-range", lambda c: kanjax.suggest_symbolic(c.kan, c.x, 5, 0, 0),
    IndexError, "layer 5 out of range", "kan")
row("suggest-edge-out-of-range", lambda c: kanjax.suggest_symbolic(c.kan, c.x, 0, 7, 0),
    IndexError, "edge (7, 0) is outside", "kan")
row("suggest-nan-x", lambda c: kanjax.suggest_symbolic(c.kan, nan_rows(c.x), 0, 0, 0),
    ValueError, "non-finite", "kan")
row("suggest-one-sample", lambda c: kanjax.suggest_symbolic(c.kan, c.x[:1], 0, 0, 0),
    ValueError, "at least 2 samples", "kan")
row("suggest-wrong-features", lambda c: kanjax.suggest_symbolic(c.kan, np.ones((4, 3)), 0, 0, 0),
    ValueError, "x must have 2 features", "kan")
row("fix-unknown-function", lambda c: kanjax.fix_symbolic(c.kan, 0, 0, 0, "sinh_of_cosh", c.x),
    Exception, "sinh_of_cosh", "kan")
row("fix-without-data", lambda c: kanjax.fix_symbolic(c.kan, 0, 0, 0, "sin"), ValueError,
    "needs data x", "kan")
row("fix-edge-out-of-range", lambda c: kanjax.fix_symbolic(c.kan, 0, 2, 0, "sin", c.x),
    IndexError, "edge (2, 0) is outside", "kan")
row("auto-r2-above-one", lambda c: kanjax.auto_symbolic(c.kan, c.x, r2_threshold=1.5),
    ValueError, "r2_threshold must be in [0, 1]", "kan")
row("auto-nan-x", lambda c: kanjax.auto_symbolic(c.kan, nan_rows(c.x)), ValueError,
    "non-finite", "kan")
row("auto-mlp", lambda c: kanjax.auto_symbolic(c.mlp, c.x), TypeError, "expected a kanjax.KAN",
    "mlp")
row("formula-numeric-spline", lambda c: kanjax.symbolic_formula(c.kan), ValueError, "symbolic",
    "kan")
row("formula-var-names-count", lambda c: kanjax.symbolic_formula(c.tay, ["a"]), ValueError,
    "the model has 2 inputs, got 1 names", "tay")
row("formula-var-names-string", lambda c: kanjax.symbolic_formula(c.tay, "ab"), TypeError,
    "var_names must be a sequence", "tay")
row("formula-var-names-invalid", lambda c: kanjax.symbolic_formula(c.tay, ["a b", "c"]),
    ValueError, "'a b' is not a valid symbol name", "tay")
row("formula-var-names-repeated", lambda c: kanjax.symbolic_formula(c.tay, ["a", "a"]),
    ValueError, "var_names must be distinct", "tay")
row("formula-tol-negative", lambda c: kanjax.symbolic_formula(c.tay, x=c.x, tol=-1.0), ValueError,
    "tol must be a finite number >= 0", "tay")
row("formula-tol-without-x", lambda c: kanjax.layered_formula(c.tay, tol=1e-3), ValueError,
    "tol needs data x", "tay")
row("formula-x-nan", lambda c: kanjax.layered_formula(c.tay, x=nan_rows(c.x)), ValueError,
    "only finite values", "tay")
row("formula-mlp", lambda c: kanjax.layered_formula(c.mlp), TypeError, "expected a kanjax.KAN",
    "mlp")
row("suggest-layer-float", lambda c: kanjax.suggest_symbolic(c.kan, c.x, 1.5, 0, 0), TypeError,
    "layer must be an integer", "kan")
row("suggest-edge-string", lambda c: kanjax.suggest_symbolic(c.kan, c.x, 0, "0", 0), TypeError,
    "i must be an integer", "kan")
row("suggest-top-k-zero", lambda c: kanjax.suggest_symbolic(c.kan, c.x, 0, 0, 0, top_k=0),
    ValueError, "top_k must be >= 1", "kan")
row("auto-library-string", lambda c: kanjax.auto_symbolic(c.kan, c.x, library="sin"), TypeError,
    "library must be a sequence of function names", "kan")
row("formula-digits-negative", lambda c: kanjax.symbolic_formula(c.tay, digits=-1), ValueError,
    "digits must be >= 0", "tay")
row("formula-digits-float", lambda c: kanjax.symbolic_formula(c.tay, digits=1.5), TypeError,
    "digits must be an integer", "tay")
row("formula-budget-nan", lambda c: kanjax.symbolic_formula(c.tay, time_budget=float("nan")),
    ValueError, "time_budget must be a positive finite number", "tay")
row("refine-constants-y-length", lambda c: kanjax.refine_constants(c.tay, c.x, c.y[:3]),
    ValueError, "samples of x need", "tay")
row("refine-constants-iters", lambda c: kanjax.refine_constants(c.tay, c.x, c.y, iters=-1),
    ValueError, "iters must be >= 1", "tay")
row("ensemble-factory-not-callable", lambda c: kanjax.make_ensemble(3, 2), TypeError,
    "factory must be a function")
row("refine-constants-mlp", lambda c: kanjax.refine_constants(c.mlp, c.x, c.y), TypeError,
    "expected a kanjax.KAN", "mlp")
row("refine-constants-nan", lambda c: kanjax.refine_constants(c.tay, nan_rows(c.x), c.y),
    ValueError, "x and y must be finite", "tay")
row("refine-constants-loss-tol", lambda c: kanjax.refine_constants(c.tay, c.x, c.y, loss_tol=-1),
    ValueError, "loss_tol and snap_rel must be >= 0", "tay")

# ------------------------------------------------------------------ plotting


def plot_row(id, call, error, fragment, model="kan"):
    row(f"plot-{id}", call, error, fragment, model)


plot_row("network-mlp", lambda c: kanjax.plot(c.mlp, c.x), TypeError, "needs a kanjax.KAN",
         "mlp")
plot_row("network-wrong-features", lambda c: kanjax.plot(c.kan, np.ones((4, 3))), ValueError,
         "x must have shape (n, 2)")
plot_row("network-empty", lambda c: kanjax.plot(c.kan, c.x[:0]), ValueError,
         "x must have shape (n, 2) with n >= 1")
plot_row("network-nan", lambda c: kanjax.plot(c.kan, nan_rows(c.x)), ValueError, "non-finite")
plot_row("network-complex", lambda c: kanjax.plot(c.kan, c.x + 1j), TypeError,
         "x must hold real numbers")
plot_row("network-in-vars-count", lambda c: kanjax.plot(c.kan, c.x, in_vars=["a"]), ValueError,
         "in_vars must have 2 entries")
plot_row("network-out-vars-string", lambda c: kanjax.plot(c.kan, c.x, out_vars="y"), ValueError,
         "out_vars must be a sequence of 1 labels")
plot_row("network-scale-zero", lambda c: kanjax.plot(c.kan, c.x, scale=0), ValueError,
         "scale must be a finite number > 0")
plot_row("network-scale-inf", lambda c: kanjax.plot(c.kan, c.x, scale=INF), ValueError,
         "scale must be a finite number > 0")
plot_row("network-beta-str", lambda c: kanjax.plot(c.kan, c.x, beta="3"), TypeError,
         "beta must be a finite number > 0")
plot_row("network-max-points-one", lambda c: kanjax.plot(c.kan, c.x, max_points=1), ValueError,
         "max_points must be >= 2")
plot_row("network-max-points-str", lambda c: kanjax.plot(c.kan, c.x, max_points="many"),
         TypeError, "max_points must be a whole number")
plot_row("layer-model-input-for-hidden-layer",
         lambda c: kanjax.plot_layer(c.kan.layers[1], c.x), ValueError,
         "kanjax.layer_inputs(model, x)[l]")
plot_row("layer-whole-model", lambda c: kanjax.plot_layer(c.kan, c.x), TypeError,
         "e.g. model.layers[0]")
plot_row("layer-nan", lambda c: kanjax.plot_layer(c.kan.layers[0], nan_rows(c.x)), ValueError,
         "x has 1 of 8 rows with nan or inf")
plot_row("layer-empty", lambda c: kanjax.plot_layer(c.kan.layers[0], c.x[:0]), ValueError,
         "with n >= 1")
plot_row("layer-strings", lambda c: kanjax.plot_layer(c.kan.layers[0], c.x.astype(str)),
         TypeError, "x must hold real numbers")
plot_row("layer-num-one", lambda c: kanjax.plot_layer(c.kan.layers[0], c.x, num=1), ValueError,
         "num must be >= 2")
plot_row("layer-input-names-count",
         lambda c: kanjax.plot_layer(c.kan.layers[0], c.x, input_names=["a", "b", "c"]),
         ValueError, "input_names must have 2 entries")

plot_row("loss-not-history", lambda c: kanjax.plot_loss({"train_loss": [1.0]}), TypeError,
         "plot_loss needs a kanjax.History", None)
plot_row("grad-norms-not-history", lambda c: kanjax.plot_grad_norms([1.0]), TypeError,
         "plot_grad_norms needs a kanjax.History", None)
plot_row("loss-path-missing-folder",
         lambda c: kanjax.plot_loss(c.history, c.tmp / "no-folder" / "loss.png"),
         FileNotFoundError, "no-folder' does not exist; create it first", None)
plot_row("loss-path-unknown-format", lambda c: kanjax.plot_loss(c.history, c.tmp / "loss.xyz"),
         ValueError, "the extension gives the format", None)
plot_row("loss-path-no-extension", lambda c: kanjax.plot_loss(c.history, c.tmp / "loss"),
         ValueError, "e.g. 'plot.png'", None)
plot_row("loss-path-is-a-folder", lambda c: kanjax.plot_loss(c.history, c.tmp / "folder.png"),
         FileNotFoundError, "is a folder", None)
plot_row("loss-path-int", lambda c: kanjax.plot_loss(c.history, 3), TypeError,
         "path must be a file name", None)
plot_row("network-path-missing-folder",
         lambda c: kanjax.plot(c.kan, c.x, path=c.tmp / "no-folder" / "net.png"),
         FileNotFoundError, "does not exist")
plot_row("layer-path-unknown-format",
         lambda c: kanjax.plot_layer(c.kan.layers[0], c.x, c.tmp / "layer.docx"), ValueError,
         "the extension gives the format")

# ------------------------------------------------------------------ command line

for argv, fragment in [
    ([], "the following arguments are required: COMMAND"),
    (["train"], "invalid choice: 'train'"),
    (["demo", "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["demo", "--epochs", "ten"], "must be a whole number >= 1, got 'ten'"),
    (["demo", "--epochs", "2.5"], "got '2.5'"),
    (["demo", "--batch-size", "-4"], "argument --batch-size: must be >= 1"),
    (["demo", "--lr", "nan"], "argument --lr: must be a finite number > 0, got 'nan'"),
    (["demo", "--lr", "-1"], "argument --lr"),
    (["demo", "--lr", "fast"], "must be a number > 0, got 'fast'"),
    (["demo", "--basis", "fourier"], "argument --basis: invalid choice: 'fourier'"),
    (["demo", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["demo", "--out", ""], "is empty"),
    (["demo", "--unknown"], "unrecognized arguments: --unknown"),
]:
    row(f"cli-{'-'.join(argv) or 'no-command'}", lambda c, argv=argv: run_cli(argv), SystemExit,
        fragment)
row("cli-out-is-a-file", lambda c: run_cli(["demo", "--out", str(c.tmp / "a_file")]), SystemExit,
    "is an existing file, not a folder")
row("cli-out-under-a-file", lambda c: run_cli(["demo", "--out", str(c.tmp / "a_file" / "run")]),
    SystemExit, "is a file, not a folder")

# ------------------------------------------------------------------ files: history, checkpoints, cache

row("history-load-not-json", lambda c: kanjax.History.load(write(c, "h1.json", "loss: 1")),
    ValueError, "is not a JSON history file")
row("history-load-binary", lambda c: kanjax.History.load(write(c, "h2.json", b"\xff\xfe\x00")),
    ValueError, "is not a JSON history file")
row("history-load-list", lambda c: kanjax.History.load(write(c, "h3.json", "[1, 2]")),
    ValueError, "a history must be a dict of its fields, got list")
row("history-load-missing-train-loss",
    lambda c: kanjax.History.load(write(c, "h4.json", '{"config": {}}')), ValueError,
    "h4.json': no field 'train_loss'")
row("history-load-missing-config",
    lambda c: kanjax.History.load(write(c, "h5.json", '{"train_loss": []}')), ValueError,
    "no field 'config'")
row("history-load-int-loss",
    lambda c: kanjax.History.load(write(c, "h6.json", '{"train_loss": 3, "config": {}}')),
    ValueError, "field 'train_loss' must be a list of numbers, got int 3")
row("history-load-text-in-loss", lambda c: kanjax.History.load(
    write(c, "h7.json", '{"train_loss": [1, "a"], "config": {}}')), ValueError,
    "field 'train_loss' must be a list of numbers")
row("history-load-grad-norm-type", lambda c: kanjax.History.load(
    write(c, "h8.json", '{"train_loss": [], "config": {}, "grad_norm": [1]}')), ValueError,
    "field 'grad_norm' must be a dict of name -> list of numbers")
row("history-load-config-list", lambda c: kanjax.History.load(
    write(c, "h9.json", '{"train_loss": [], "config": [1]}')), ValueError,
    "field 'config' must be a dict")
row("history-load-unknown-field", lambda c: kanjax.History.load(
    write(c, "h10.json", '{"train_loss": [], "config": {}, "loss": []}')), ValueError,
    "unknown field(s) 'loss'")
row("history-load-missing-file", lambda c: kanjax.History.load(c.tmp / "absent.json"),
    FileNotFoundError, "absent.json")
row("history-save-missing-folder",
    lambda c: c.history.save(c.tmp / "no-folder" / "history.json"), FileNotFoundError,
    "is in a folder that does not exist")
row("history-save-to-folder", lambda c: c.history.save(c.tmp), FileNotFoundError,
    "is a folder; give a file name")
row("history-from-dict-str", lambda c: kanjax.History.from_dict("train_loss"), ValueError,
    "a history must be a dict")
row("load-missing-checkpoint", lambda c: kanjax.load(c.tmp / "no-such-checkpoint"), Exception,
    "no-such-checkpoint")
row("save-not-a-model", lambda c: kanjax.save(c.tmp / "ckpt", {"w": 1}), TypeError, "dict")
row("save-bad-history", lambda c: kanjax.save(c.tmp / "ckpt2", c.kan, history={"a": 1}),
    TypeError, "history must be a kanjax.History", "kan")
row("compile-cache-threshold", lambda c: compile_cache.enable(c.tmp / "never", min_compile_time_secs=-1),
    ValueError, "min_compile_time_secs must be a number of seconds >= 0")
row("compile-cache-empty-directory", lambda c: compile_cache.enable(""), ValueError,
    "directory is empty")
row("compile-cache-directory", lambda c: compile_cache.enable(3), TypeError,
    "directory must be a path")
row("package-unknown-name", lambda c: kanjax.KAN_layer, AttributeError,
    "module 'kanjax' has no attribute 'KAN_layer'")


# ------------------------------------------------------------------ the checks

def _kanjax_function_names() -> frozenset[str]:
    """Names of every function kanjax defines (nested ones too), as JAX reports traced ones,
    less the names of jax.numpy / lax functions (whose eager use traces a tiny program)."""
    names = {"<lambda>"}
    for path in pathlib.Path(kanjax.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
    return frozenset(names - set(dir(jnp)) - set(dir(jax.lax)) - set(dir(jax.nn)))


_TRACED: list[str] | None = None


def _on_event(event, duration, **kwargs):
    if _TRACED is not None and event == "/jax/core/compile/jaxpr_trace_duration":
        _TRACED.append(str(kwargs.get("fun_name", "?")))


jax.monitoring.register_event_duration_secs_listener(_on_event)


@pytest.fixture(scope="module")
def ctx():
    return _context()


@pytest.fixture(scope="module")
def kanjax_functions():
    return _kanjax_function_names()


def _snapshot(model):
    graphdef, state = nnx.split(model)
    leaves = [np.array(leaf) for leaf in jax.tree.leaves(state)]
    return graphdef, jax.tree.structure(state), leaves


def test_table_size_and_unique_ids():
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(ROWS) >= 150, len(ROWS)


@pytest.mark.parametrize("r", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(r, ctx, kanjax_functions):
    global _TRACED
    before = None if r.model is None else _snapshot(getattr(ctx, r.model))
    _TRACED = []
    try:
        with pytest.raises(r.error) as info:
            r.call(ctx)
    finally:
        traced, _TRACED = _TRACED, None
    assert r.fragment in str(info.value), f"{type(info.value).__name__}: {info.value}"
    own = [name for name in traced if name in kanjax_functions]
    assert own == [], f"kanjax programs traced before the error: {own}"
    if before is not None:
        graphdef, treedef, leaves = _snapshot(getattr(ctx, r.model))
        assert graphdef == before[0] and treedef == before[1]
        assert len(leaves) == len(before[2])
        for a, b in zip(leaves, before[2]):
            np.testing.assert_array_equal(a, b)


def test_the_trace_check_sees_kanjax_programs(ctx, kanjax_functions):
    # the same check on a good call of a structure traced nowhere else: it must see programs
    global _TRACED
    _TRACED = []
    try:
        kanjax.edge_importance(kanjax.KAN([2, 2, 2], rngs=nnx.Rngs(0)), ctx.x)
    finally:
        traced, _TRACED = _TRACED, None
    assert [name for name in traced if name in kanjax_functions]


def test_cli_errors_exit_with_usage_code(ctx):
    # argparse's convention: exit status 2 and the usage line, for every command-line row
    with pytest.raises(SystemExit) as info:
        run_cli(["demo", "--epochs", "0"])
    assert str(info.value).startswith("exit 2: usage: kanjax demo")


def test_rows_name_real_models_and_write_nothing(ctx):
    assert {r.model for r in ROWS if r.model} <= set(vars(ctx))
    json.dumps([r.id for r in ROWS])  # ids are plain text
    assert not os.path.exists(NEVER_WRITTEN)  # no failed call created its checkpoint folder
