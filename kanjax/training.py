"""``kanjax.train``: training as one compiled program per epoch.

The model is split once into (graph, trainable params, other state). One ``jax.jit``
function runs a whole epoch: it shuffles with a JAX PRNG key, ``jax.lax.scan``s the
optimizer step over the minibatches, evaluates the validation loss, and keeps the last
finite state if the epoch diverged. The host only reads a few scalars per epoch (for the
history and the progress bar) and merges the state back into the model at the end.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from flax import nnx

from kanjax import lm as lm_lib
from kanjax._xla import cpu_compile_options, fast_compile_jit
from kanjax import losses as losses_lib
from kanjax.nn import KAN, _inputs_of_layers, _refined_like, _regrid_layers, _warm_refine

__all__ = [
    "History",
    "TrainingDiverged",
    "train",
    "train_ensemble",
    "make_ensemble",
    "ensemble_member",
    "evaluate",
]


@dataclasses.dataclass
class History:
    """What ``train`` records, one entry per completed epoch.

    Attributes:
      train_loss: mean minibatch loss over the epoch (weighted by samples).
      val_loss: loss on ``validation_data`` after the epoch (empty without it).
      learning_rate: learning rate at the last step of the epoch (``nan`` when a custom
        optimizer hides it).
      wall_time: seconds since training started (after compiling), at the end of each
        epoch; with ``grid_schedule``, since ``train`` was called (so later stages include
        their refits and compilation).
      grad_norm: per layer (``"layers.0"``, ...), the L2 norm of that layer's gradient,
        averaged over the epoch's steps.
      config: the settings of the run (epochs, batch size, steps per epoch, seed, ...).
    """

    train_loss: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    learning_rate: list[float] = dataclasses.field(default_factory=list)
    wall_time: list[float] = dataclasses.field(default_factory=list)
    grad_norm: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "History":
        return cls(**{f.name: d.get(f.name, f.default_factory()) for f in dataclasses.fields(cls)})

    def save(self, path: str | os.PathLike) -> None:
        """Write the history as JSON (atomically: a temporary file, then a rename)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1, allow_nan=True)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        with open(path) as f:
            return cls.from_dict(json.load(f))


class TrainingDiverged(FloatingPointError):
    """The loss became non-finite.

    Attributes:
      epoch: the (1-based) epoch whose loss was not finite.
      model: the model at the end of the last finite epoch (the same object that was
        passed to ``train``, updated in place).
      history: the history up to the last finite epoch.
    """

    def __init__(self, epoch: int, model, history: History):
        self.epoch, self.model, self.history = epoch, model, history
        super().__init__(
            f"training diverged: the loss became non-finite (nan or inf) in epoch {epoch}; "
            f"the model holds the parameters after epoch {epoch - 1}, the last finite one. "
            "Try a smaller learning rate, inputs scaled to the grid range, or squash='tanh'."
        )


# ----------------------------------------------------------------------------- checks


def _as_array(name: str, a) -> jax.Array:
    if a is None:
        raise TypeError(f"{name} is None; expected an array")
    try:
        arr = jnp.asarray(a)
    except TypeError as err:
        raise TypeError(f"{name} must be array-like, got {type(a).__name__}") from err
    if arr.dtype == jnp.bool_ or arr.dtype == object:
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _check_finite(**named) -> None:
    """Raise if a floating array contains nan or inf (checked on the host, once per call)."""
    for name, a in named.items():
        if jnp.issubdtype(a.dtype, jnp.inexact):
            count = int(np.count_nonzero(~np.isfinite(np.asarray(a))))
            if count:
                raise ValueError(f"{name} contains {count} non-finite value(s) (nan or inf)")


def _prepare_data(model, data, name: str, loss_name: str | None, out_shape):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (x, y), got {type(data).__name__}")
    x, y = _as_array(f"{name} x", data[0]), _as_array(f"{name} y", data[1])
    if x.ndim < 1 or y.ndim < 1:
        raise ValueError(f"{name}: x and y need a leading sample axis, got shapes {x.shape}, {y.shape}")
    in_features = getattr(model, "in_features", None)
    if in_features is not None and (x.ndim < 2 or x.shape[-1] != in_features):
        raise ValueError(
            f"{name}: the model takes {in_features} input features but x has shape "
            f"{tuple(x.shape)} (expected (n_samples, {in_features}))"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: x and y have different numbers of samples: {x.shape[0]} vs {y.shape[0]}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    _check_finite(**{f"{name} x": x, f"{name} y": y})
    if loss_name == "mse":
        if y.ndim == 1 and out_shape is not None and out_shape[-1] == 1:
            y = y[:, None]
        if out_shape is not None and tuple(y.shape[1:]) != tuple(out_shape):
            raise ValueError(
                f"{name}: the model outputs shape {tuple(out_shape)} per sample but y has "
                f"shape {tuple(y.shape[1:])} per sample"
            )
        if not jnp.issubdtype(y.dtype, jnp.floating):
            y = y.astype(x.dtype)
    elif loss_name == "cross_entropy":
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(
                f"{name}: loss='cross_entropy' takes integer class labels, got y of dtype {y.dtype}"
            )
        if y.ndim != 1:
            raise ValueError(f"{name}: class labels y must have shape (n_samples,), got {y.shape}")
        n_classes = out_shape[-1] if out_shape is not None else None
        if n_classes is not None and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise ValueError(
                f"{name}: labels must lie in [0, {n_classes}) for a model with "
                f"{n_classes} outputs, got range [{int(y.min())}, {int(y.max())}]"
            )
    return x, y


def _output_shape(model, data, apply) -> tuple[int, ...] | None:
    """Per-sample output shape: ``(out_features,)`` for kanjax models, else by tracing."""
    out_features = getattr(model, "out_features", None)
    if isinstance(out_features, int):
        return (out_features,)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        return None
    x = _as_array("x", data[0])
    if x.ndim < 2:
        return None
    return jax.eval_shape(apply, jax.ShapeDtypeStruct((1, *x.shape[1:]), jnp.float32)).shape[1:]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


# ----------------------------------------------------------------------------- pieces


def _layer_name(path) -> str:
    """``layers.0`` for a leaf under a list of layers, else its parent module's path."""
    keys = [getattr(e, "key", getattr(e, "name", getattr(e, "idx", None))) for e in path]
    keys = [k for k in keys if k != "value"]
    for i, key in enumerate(keys):
        if isinstance(key, int):
            return ".".join(str(k) for k in keys[: i + 1])
    return ".".join(str(k) for k in keys[:-1]) or "params"


def _layer_groups(params) -> tuple[list[str], list[int]]:
    """Layer names (first-seen order) and, for every parameter leaf, its layer's index."""
    leaf_names = [_layer_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    names = list(dict.fromkeys(leaf_names))
    return names, [names.index(name) for name in leaf_names]


def _flattener(tree):
    """``(ravel, unravel)`` between ``tree``'s structure and one flat vector."""
    leaves, treedef = jax.tree.flatten(tree)
    shapes = [leaf.shape for leaf in leaves]
    dtypes = [leaf.dtype for leaf in leaves]
    bounds = np.cumsum([0] + [math.prod(shape) for shape in shapes]).tolist()
    dtype = jnp.result_type(*dtypes)

    def ravel(t):
        return jnp.concatenate([jnp.ravel(leaf).astype(dtype) for leaf in jax.tree.leaves(t)])

    def unravel(v):
        parts = [v[a:b].reshape(shape).astype(d)
                 for a, b, shape, d in zip(bounds[:-1], bounds[1:], shapes, dtypes)]
        return jax.tree.unflatten(treedef, parts)

    return ravel, unravel


def _make_schedule(learning_rate, schedule, total_steps: int):
    if callable(schedule):
        return schedule
    if schedule == "cosine":
        return optax.cosine_decay_schedule(learning_rate, decay_steps=max(total_steps, 1))
    if schedule in ("constant", None):
        return optax.constant_schedule(learning_rate)
    raise ValueError(f"schedule must be 'cosine', 'constant', None or a callable, got {schedule!r}")


def _progress_bar(total: int):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[bold]epoch"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[metrics]}"),
        TimeElapsedColumn(),
    )


# Fast-compile options (kanjax._xla) for small calls only: they cost run time on large
# tensors. `train` estimates the call's work and compiles without them above this.
_FAST_COMPILE_MAX_FLOPS = 5e9  # ~0.05-0.1 s of work on a 2-core CPU


def _compile(jitted, *args, work: float = 0.0, on_lowered=None):
    """Compile ``jitted`` once, ahead of time, for ``args``; the result never retraces.

    ``work`` estimates the floating-point operations that all calls of the program will
    run; on CPU it chooses between options that compile fast and ones that run fast
    (:func:`kanjax._xla.cpu_compile_options`). ``on_lowered()`` is called between tracing
    (Python, holds the GIL) and XLA's compile.
    """
    lowered = jitted.lower(*args)
    if on_lowered is not None:
        on_lowered()
    return lowered.compile(cpu_compile_options(fast=work < _FAST_COMPILE_MAX_FLOPS))


def _shuffle(key: jax.Array, n: int) -> jax.Array:
    """A random permutation of ``0 .. n-1`` (int32) from ``key``, without sorting.

    A 4-round Feistel network on ``2b``-bit integers (``4**b >= n``), with round keys from
    ``key``, is a bijection; "cycle walking" (re-encrypting values ``>= n``) restricts it
    to ``0 .. n-1``. Elementwise integer maths only: on CPU it takes microseconds where
    ``jax.random.permutation`` (several sorting rounds) took ~17 ms for 20,480 samples,
    a fifth of a [8, 64, 64, 1] epoch of 20 steps. The order it gives is a fine shuffle
    for minibatches, not a cryptographic one.
    """
    n = int(n)
    if n <= 1:
        return jnp.zeros((n,), jnp.int32)
    half = max(1, -(-(n - 1).bit_length() // 2))
    mask = jnp.uint32((1 << half) - 1)
    round_keys = jax.random.bits(key, (4,), jnp.uint32)

    def mix(right, round_key):  # a multiply-xorshift hash of the right half
        h = (right ^ round_key) * jnp.uint32(0x9E3779B1)
        h = (h ^ (h >> 15)) * jnp.uint32(0x85EBCA77)
        return (h ^ (h >> 13)) & mask

    def encrypt(v):
        left, right = v >> half, v & mask
        for i in range(4):
            left, right = right, left ^ mix(right, round_keys[i])
        return (left << half) | right

    out = encrypt(jnp.arange(n, dtype=jnp.uint32))
    out = jax.lax.while_loop(lambda v: jnp.any(v >= n),
                             lambda v: jnp.where(v >= n, encrypt(v), v), out)
    return out.astype(jnp.int32)


class _Program(NamedTuple):
    """A compiled epoch program and what it was compiled for."""

    signature: tuple
    epoch_fn: Callable


def _signature(graphdef, *args) -> tuple:
    """What decides a compiled epoch program besides the options: structure, shapes and
    placement of the arguments, and JAX's thread-local settings (a program compiled in
    another thread must not miss a ``with jax.default_matmul_precision(...)`` block)."""
    leaves, treedef = jax.tree.flatten(args)
    return graphdef, treedef, _trace_context(), tuple(
        (np.shape(a), str(getattr(a, "dtype", type(a))), getattr(a, "sharding", None))
        if hasattr(a, "shape") else a
        for a in leaves)


def _trace_context():
    try:
        from jax._src import config as jax_config

        return jax_config.trace_context()
    except (ImportError, AttributeError):  # unknown: never share programs across threads
        import threading

        return threading.get_ident()


def _program_result(program) -> _Program | None:
    """The program a future holds, or ``None`` if it failed (then the caller compiles)."""
    if program is None:
        return None
    try:
        return program.result()
    except Exception:  # the same error, if real, is raised where the stage runs
        return None


class _CompileAhead:
    """Compiles every grid-schedule stage's programs in background threads.

    The stages' shapes are known up front: a stand-in with each stage's structure (zero
    arrays of the refined shapes, :func:`kanjax.nn._refined_like`) has its epoch program
    compiled with ``compile_only``, and the forward pass that the refine into it needs,
    while the earlier stages refine and run on the main thread. XLA compiles without
    holding the GIL, so the threads overlap. A stage whose model turns out different (or
    whose compile fails) is compiled as usual.
    """

    def __init__(self, model, data, stages, options):
        import concurrent.futures

        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="kanjax-compile")
        # The tasks wait until the first stage's program is traced: tracing is Python and
        # holds the GIL, so it goes fastest alone, and XLA's compile of it then overlaps
        # with the tracing of the next programs.
        self._go = threading.Event()
        uniform = options["grid_eps"] == 1.0  # refined knots are uniform only then

        stand_ins = [nnx.merge(*nnx.split(model))]  # new modules sharing the arrays
        stand_ins += [_refined_like(model, g, uniform) for g, _ in stages]

        def compile_stage(i, epochs):
            self._go.wait()
            return _fit(stand_ins[i], data, epochs=epochs, compile_only=True, **options)

        def warm_refine(i, grid_size):
            self._go.wait()
            _warm_refine(stand_ins[i], data[0], grid_size)

        # two workers take the tasks in the order the stages need them: each refine's forward
        # pass (stage i's structure), then the epoch program of stage i + 1
        self.refits, self.programs = [], []
        for i, (grid_size, epochs) in enumerate(stages):
            self.refits.append(self._pool.submit(warm_refine, i, grid_size))
            self.programs.append(self._pool.submit(compile_stage, i + 1, epochs))

    def start(self):
        self._go.set()

    def close(self):
        self._go.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


# ----------------------------------------------------------------------------- train


def train(
    model: nnx.Module,
    data,
    *,
    epochs: int = 200,
    batch_size: int = 64,
    learning_rate: float = 2e-2,
    optimizer: optax.GradientTransformation | str | None = None,
    schedule: str | Callable | None = "cosine",
    loss: str | Callable = "mse",
    validation_data=None,
    seed: int = 0,
    progress: bool = True,
    l1: float = 0.0,
    entropy: float = 0.0,
    grid_update_every: int = 0,
    grid_update_until: int | None = None,
    grid_eps: float = 0.02,
    grid_margin: float = 0.0,
    grid_schedule=None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    mesh: Mesh | str | None = "auto",
    callback: Callable[[int, History], bool | None] | None = None,
):
    """Train ``model`` on ``data = (x, y)`` and return ``(model, history)``.

    The model is updated in place and also returned. Every epoch is one compiled
    program: samples are shuffled by a pseudo-random permutation keyed by ``seed`` and the
    epoch number (a Feistel network, no sort) and ``jax.lax.scan`` runs the optimizer over ``ceil(n / batch_size)``
    minibatches; the last, partial minibatch is masked, so every sample counts once per
    epoch. Epochs after the first reuse the compiled program.

    Args:
      model: an NNX module (``KAN``, ``MLP`` or your own) mapping ``(batch, n_in)`` to
        ``(batch, ...)``. Only ``nnx.Param`` variables are trained.
      data: ``(x, y)``, ``x`` of shape ``(n, n_in)``; ``y`` of shape ``(n, n_out)`` (or
        ``(n,)`` for one output) for ``"mse"``, integer labels ``(n,)`` for
        ``"cross_entropy"``.
      epochs: number of passes over the data.
      batch_size: minibatch size; larger than ``n`` means full batch.
      learning_rate: peak learning rate of the default optimizer.
      optimizer: an ``optax.GradientTransformation``, or ``"lbfgs"`` for optax's L-BFGS
        with its zoom line search (best full-batch: ``batch_size >= n``); default
        ``optax.adam`` on ``schedule``. When given, ``learning_rate`` and ``schedule`` are
        not used.
      schedule: ``"cosine"`` (``optax.cosine_decay_schedule`` over all steps),
        ``"constant"``/``None``, or an optax schedule (step -> learning rate).
      loss: ``"mse"``, ``"cross_entropy"`` or ``fn(pred, target)`` returning one loss
        per sample (shape ``(batch,)`` or ``(batch, ...)``, averaged over trailing axes);
        a function returning a scalar is applied per sample.
      validation_data: optional ``(x_val, y_val)``, evaluated after every epoch.
      seed: seed of the shuffling; the same seed and data give the same history.
      progress: show a progress bar (rich; also works in notebooks).
      grid_update_every, grid_update_until, grid_eps: B-spline KANs only. Every
        ``grid_update_every`` epochs before epoch ``grid_update_until`` (default: all), each
        layer's grid is moved to follow the activations of the whole training set and its
        coefficients are refitted (``KANLayer.update_grid``), inside the compiled epoch.
        ``grid_eps=1`` keeps the knots uniform (and the fast uniform B-spline path).
        ``grid_margin`` extends each grid beyond the activations by that fraction of their
        range on both sides (also for ``grid_schedule``).
      grid_schedule: grid extension, B-spline KANs only: ``[(grid_size, epochs), ...]``.
        After the ``epochs`` epochs on the model's current grids, each stage refines every
        layer to ``grid_size`` intervals (:meth:`KAN.refine` on the training inputs, with
        ``grid_eps`` and ``grid_margin``; every edge keeps its function) and trains
        ``epochs`` more with the same options. Parameter shapes change, so the optimizer
        state starts afresh in every stage. The history runs on over all stages (a staircase
        loss curve); ``history.config["grid_stages"]`` lists ``(first epoch, grid size)``.
        The later stages' epoch programs compile in background threads while the earlier
        stages run (``config["stage_compiled_ahead"]``; ``stage_compile_time`` is then the
        wait for them). Not combined with checkpoints or a callback.
      l1, entropy: strengths of the KAN paper's sparsity penalty on the edge activations
        (``KAN.forward_with_penalty``), added to the training loss of every minibatch;
        ``train_loss`` in the history includes it. Only for ``kanjax.KAN`` models.
      checkpoint_dir: directory for a checkpoint of the run (:func:`kanjax.save` format, in
        ``checkpoint_dir/latest``): the model, the optimizer state, the history, the number
        of completed epochs, the shuffling key and the options above. Written between
        compiled epochs only, atomically (an interrupted write keeps the previous one).
        Only for ``kanjax.KAN`` and ``kanjax.MLP`` models.
      checkpoint_every: write the checkpoint every this many epochs; it is also written
        after the last epoch. ``0``: only after the last epoch.
      resume: continue from the checkpoint in ``checkpoint_dir`` if there is one (else
        start from scratch). ``model`` must have the checkpointed model's architecture
        (build it as for the first run) and the other arguments must be those of the
        checkpointed run; the data order of an epoch depends only on ``(seed, epoch)`` and
        the schedule on the global step, so the result equals an uninterrupted run's
        (bitwise on CPU). ``history.wall_time`` continues from the checkpointed one.
      mesh: data parallelism with JAX's own sharding. ``"auto"`` (default): when more than
        one device is visible, a 1-D ``jax.sharding.Mesh`` over all of them; ``None``: one
        device; or your own ``Mesh`` (its first axis splits the batch). Parameters,
        optimizer state and the data set are replicated (``NamedSharding(mesh, P())``);
        every minibatch is split along the mesh's first axis, so each device computes the
        loss and gradient of its slice and XLA inserts the all-reduce of the gradients
        inside the compiled epoch (no host round trip per step). ``batch_size`` must be a
        multiple of that axis' size. Multi-host: call ``jax.distributed.initialize()`` in
        every process and pass the same data; ``jax.devices()`` then spans all hosts.
      callback: ``callback(epochs_done, history)`` after every epoch (on the host, between
        compiled epochs, after any checkpoint): return ``True`` to stop early (e.g. on a
        validation loss that stopped improving; ``history.config["stopped_at_epoch"]``
        records it). The model already holds that epoch's parameters; an exception raised
        here ends training with the model in that state.

    Returns:
      ``(model, history)``.

    Raises:
      TrainingDiverged: the loss became non-finite; the model keeps the last finite state.
    """
    stages = _check_grid_schedule(model, grid_schedule, checkpoint_dir, callback)
    options = dict(
        batch_size=batch_size, learning_rate=learning_rate, optimizer=optimizer,
        schedule=schedule, loss=loss, validation_data=validation_data, seed=seed,
        progress=progress, members=None, l1=l1, entropy=entropy,
        grid_update_every=grid_update_every, grid_update_until=grid_update_until,
        grid_eps=grid_eps, grid_margin=grid_margin, mesh=mesh,
    )
    start = time.perf_counter()
    # every later stage's programs compile in the background while this one runs
    ahead = _CompileAhead(model, data, stages, options) if stages else None
    try:
        model, (history,) = _fit(model, data, epochs=epochs, checkpoint_dir=checkpoint_dir,
                                 checkpoint_every=checkpoint_every, resume=resume,
                                 callback=callback, **options,
                                 on_lowered=ahead.start if ahead else None)
        if stages:
            ahead.start()  # (in case the first stage compiled nothing)
            history = _run_stages(model, data, stages, options, history, ahead, start)
    finally:
        if ahead is not None:
            ahead.close()
    return model, history


def _run_stages(model, data, stages, options, history, ahead, start) -> History:
    """The grid schedule's stages after the first: refine, train, extend ``history``."""

    def since_start(times):  # a stage's epoch times, shifted to seconds since train() began
        shift = time.perf_counter() - start - (times[-1] if times else 0.0)
        return [shift + t for t in times]

    history.wall_time = since_start(history.wall_time)
    history.config["grid_stages"] = [(0, model.layers[0].grid_size)]
    history.config["stage_compile_time"] = [history.config["compile_time"]]
    history.config["stage_compiled_ahead"] = []
    for i, (grid_size, stage_epochs) in enumerate(stages):
        first = history.epochs
        _program_result(ahead.refits[i])  # wait: its forward pass compiles ahead
        model.refine(grid_size, data[0], grid_eps=options["grid_eps"],
                     margin=options["grid_margin"])
        _, (stage,) = _fit(model, data, epochs=stage_epochs, program=ahead.programs[i],
                           **options)
        history.train_loss += stage.train_loss
        history.val_loss += stage.val_loss
        history.learning_rate += stage.learning_rate
        history.wall_time += since_start(stage.wall_time)
        for name, values in stage.grad_norm.items():
            history.grad_norm.setdefault(name, []).extend(values)
        history.config["grid_stages"].append((first, grid_size))
        history.config["stage_compile_time"].append(stage.config["compile_time"])
        history.config["stage_compiled_ahead"].append(stage.config["compiled_ahead"])
        for key in ("stopped_at_epoch", "converged"):
            if key in stage.config:
                history.config.setdefault("stage_" + key, []).append((grid_size, stage.config[key]))
    return history


def _check_grid_schedule(model, grid_schedule, checkpoint_dir, callback) -> list[tuple[int, int]]:
    if grid_schedule is None:
        return []
    try:
        stages = [(int(g), int(e)) for g, e in grid_schedule]
    except (TypeError, ValueError):
        raise TypeError("grid_schedule must be a sequence of (grid_size, epochs) pairs, got "
                        f"{grid_schedule!r}") from None
    if any(g < 1 or e < 0 for g, e in stages):
        raise ValueError(f"grid_schedule needs grid sizes >= 1 and epochs >= 0, got {stages}")
    layers = getattr(model, "layers", None)
    if not isinstance(model, KAN) or any(layer.basis != "bspline" for layer in layers):
        raise TypeError("grid_schedule needs a kanjax.KAN with B-spline layers")
    if checkpoint_dir is not None or callback is not None:
        raise ValueError("grid_schedule is not combined with checkpoint_dir or callback")
    return stages


def train_ensemble(
    model: nnx.Module,
    data,
    *,
    epochs: int = 200,
    batch_size: int = 64,
    learning_rate: float = 2e-2,
    optimizer: optax.GradientTransformation | str | None = None,
    schedule: str | Callable | None = "cosine",
    loss: str | Callable = "mse",
    validation_data=None,
    seed: int = 0,
    progress: bool = True,
    l1: float = 0.0,
    entropy: float = 0.0,
    grid_update_every: int = 0,
    grid_update_until: int | None = None,
    grid_eps: float = 0.02,
    shared_order: bool = False,
):
    """Train every member of an ensemble (see :func:`make_ensemble`) in one compiled program.

    ``model`` holds ``M`` independently initialised members stacked on a leading axis of
    every variable. The epoch program of :func:`train` is ``jax.vmap``-ed over the members:
    each member has its own optimizer state and its own shuffling order, the one
    ``train(member, ..., seed=seed + i)`` would use, so member ``i`` is that independent run
    (up to floating-point reassociation), sharing one compilation and one pass over the
    hardware with the others. With ``shared_order=True`` all members see the same
    minibatches (the order ``train(..., seed=seed)`` uses); they still differ by their
    initialisation, and the shared data work makes the ensemble cheaper. Other arguments
    are those of :func:`train`.

    Returns:
      ``(model, histories)``: the ensemble, updated in place, and one ``History`` per member.

    Raises:
      TrainingDiverged: some member's loss became non-finite; every member keeps its last
        finite parameters and ``history`` is the list of histories so far.
    """
    members = _ensemble_size(model)
    return _fit(
        model, data, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        optimizer=optimizer, schedule=schedule, loss=loss, validation_data=validation_data,
        seed=seed, progress=progress, members=members, l1=l1, entropy=entropy,
        grid_update_every=grid_update_every, grid_update_until=grid_update_until,
        grid_eps=grid_eps, shared_order=shared_order,
    )


def make_ensemble(factory: Callable[[nnx.Rngs], nnx.Module], members: int, *, seed: int = 0):
    """``members`` models built by ``factory(rngs)``, stacked on a leading axis of every variable.

    Member ``i`` is initialised from its own split of ``nnx.Rngs(seed)`` (``nnx.split_rngs``
    plus ``nnx.vmap`` over the constructor, the NNX idiom). Train it with
    :func:`train_ensemble`; take member ``i`` out with :func:`ensemble_member`.
    """
    members = _check_int("members", members, 1)

    @nnx.split_rngs(splits=members)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def build(rngs):
        return factory(rngs)

    return build(nnx.Rngs(seed))


def ensemble_member(model: nnx.Module, i: int) -> nnx.Module:
    """Member ``i`` of an ensemble from :func:`make_ensemble`, as an ordinary (copied) model."""
    graphdef, state = nnx.split(model)
    n = _ensemble_size(model)
    if not -n <= i < n:
        raise IndexError(f"member {i} out of range for an ensemble of {n}")
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))


def _ensemble_size(model) -> int:
    leaves = jax.tree.leaves(nnx.state(model))
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "model is not an ensemble: every variable needs the same leading member axis "
            "(build it with kanjax.make_ensemble)"
        )
    return sizes.pop()


def _fit(model, data, *, epochs, batch_size, learning_rate, optimizer, schedule, loss,
         validation_data, seed, progress, members, l1=0.0, entropy=0.0,
         grid_update_every=0, grid_update_until=None, grid_eps=0.02, grid_margin=0.0,
         shared_order=False,
         checkpoint_dir=None, checkpoint_every=0, resume=False, mesh=None, callback=None,
         compile_only=False, program=None, on_lowered=None):
    """``train`` for one model (``members=None``) or for a stacked ensemble of ``members``.

    ``compile_only``: return the compiled epoch program (a :class:`_Program`) instead of
    training. ``program``: a future of such a program, compiled ahead for this model's
    structure (grid schedules); used when its signature matches, else compiled here.
    ``on_lowered``: called once the epoch program is traced, before XLA compiles it.
    """
    lm = isinstance(optimizer, str) and optimizer == "lm"
    if lm and isinstance(mesh, str) and mesh == "auto":
        mesh = None  # Levenberg-Marquardt solves on one device
    mesh = _resolve_mesh(mesh, members)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(epochs_done, history), got {callback!r}")
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    epochs = _check_int("epochs", epochs, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    checkpoints = _checkpoints_from_args(model, checkpoint_dir, checkpoint_every, resume,
                                         members)
    lbfgs = isinstance(optimizer, str) and optimizer == "lbfgs"
    if optimizer is None:
        if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)
                and learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    elif not (lbfgs or lm) and not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "optimizer must be an optax.GradientTransformation, 'lbfgs' or 'lm', got "
            f"{optimizer!r}"
        )
    if lm:
        if loss != "mse":
            raise ValueError(f"optimizer='lm' fits least squares: it needs loss='mse', got {loss!r}")
        if l1 or entropy:
            raise ValueError("optimizer='lm' does not support the l1/entropy penalties; use "
                             "'lbfgs' or Adam for sparsity training")
        if mesh is not None:
            raise ValueError("optimizer='lm' runs on one device; pass mesh=None")
    loss_name = loss if isinstance(loss, str) else None
    per_example_loss = losses_lib.get(loss)
    ensemble = members is not None
    for name, value in (("l1", l1), ("entropy", entropy)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    grid_update_every = _check_int("grid_update_every", grid_update_every, 0)
    grid_update_until = epochs if grid_update_until is None else _check_int(
        "grid_update_until", grid_update_until, 0)
    if grid_update_every:
        layers = getattr(model, "layers", None)
        if not isinstance(model, KAN) or any(layer.basis != "bspline" for layer in layers):
            raise TypeError("grid_update_every needs a kanjax.KAN with B-spline layers")
        if any(layer.uniform for layer in layers) and grid_eps != 1.0:
            # Non-uniform knots inside the compiled program: switch the layers to the general
            # Cox-de Boor evaluation before compiling (the fast path needs uniform knots).
            for layer in layers:
                layer.uniform = False
    penalized = l1 > 0 or entropy > 0
    if penalized and not hasattr(model, "forward_with_penalty"):
        raise TypeError(
            f"l1/entropy regularization needs a kanjax.KAN (edge activations); got {type(model).__name__}"
        )

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if not jax.tree.leaves(params):
        raise ValueError("model has no nnx.Param to train")
    # Everything below is written for one member; an ensemble vmaps it over axis 0.
    member = (lambda t: jax.tree.map(lambda a: a[0], t)) if ensemble else (lambda t: t)
    params0, rest0 = member(params), member(rest)

    def forward(p, r, xb):
        return nnx.merge(graphdef, p, r)(xb)

    # The default optimizer (Adam, elementwise) runs on one flat parameter vector: the same
    # numbers as per-array Adam, but one fused update for XLA to compile instead of one per
    # parameter array. A user's optimizer sees the parameter pytree, as optax expects.
    if optimizer is None or lbfgs or lm:
        ravel, unravel = _flattener(params0)
    else:
        ravel = unravel = lambda p: p  # noqa: E731

    out_shape = _output_shape(model, data, lambda v: forward(params0, rest0, v))
    x, y = _prepare_data(model, data, "data", loss_name, out_shape)
    has_val = validation_data is not None
    if has_val:
        xv, yv = _prepare_data(model, validation_data, "validation_data", loss_name, out_shape)
    else:
        xv, yv = x[:1], y[:1]

    n = x.shape[0]
    if lm and batch_size < n:
        raise ValueError(f"optimizer='lm' is full-batch: batch_size must be >= the {n} samples, "
                         f"got {batch_size}")
    n_theta = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params0))
    if lm and n_theta > lm_lib.MAX_PARAMS:
        raise ValueError(f"optimizer='lm' solves a {n_theta} x {n_theta} system per step; it is "
                         f"meant for models of at most {lm_lib.MAX_PARAMS} parameters (use "
                         "'lbfgs' or Adam)")
    batch_size = min(batch_size, n)
    steps = -(-n // batch_size)
    # Full batch on one device: no shuffle and no gather (XLA:CPU spends ~0.3 s compiling a
    # permutation, and the sum over all samples does not depend on their order).
    full_batch = steps == 1 and mesh is None
    if mesh is not None:
        shards = mesh.shape[mesh.axis_names[0]]
        if batch_size % shards:
            raise ValueError(
                f"batch_size {batch_size} must be a multiple of the {shards} devices on mesh "
                f"axis {mesh.axis_names[0]!r} to split every minibatch evenly"
                + (f" (the data set has only {n} samples)" if batch_size == n else "")
            )
        replicated = NamedSharding(mesh, PartitionSpec())
        batch_sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
        x, y, xv, yv = (_replicate(a, replicated) for a in (x, y, xv, yv))
    total_steps = steps * epochs
    # The last minibatch is padded (and its padding masked out by per-sample weights) only
    # when batch_size does not divide n. Otherwise the loss is the plain batch mean: the
    # same number, but XLA:CPU fused the weighted form's gradient into the layers'
    # backward kernels badly enough to make a [8, 64, 64, 1] step ~30% slower. Sharded
    # runs keep the weights: with them the partitioner reduces the gradients with one
    # all-reduce (tests/test_sharding.py), with the plain mean it chose another plan.
    every_batch_full = n % batch_size == 0 and mesh is None
    if optimizer is None:
        lr_fn = _make_schedule(learning_rate, schedule, total_steps)
        tx = optax.adam(lr_fn)
    elif lbfgs:  # optax's L-BFGS with its zoom line search; step size from the search
        lr_fn, tx = None, optax.lbfgs()
    elif lm:  # kanjax.lm: Levenberg-Marquardt, its state is (damping, converged)
        lr_fn, tx = None, None
    else:
        lr_fn, tx = None, optimizer
    group_names, group_of_leaf = _layer_groups(params0)

    def init(p):
        return ravel(p), lm_lib.lm_init(ravel(p)) if lm else tx.init(ravel(p))

    # One compiled program for the initial state, not one small program per array shape.
    theta, opt_state = jax.jit(jax.vmap(init) if ensemble else init)(params)

    def batch_loss(p, r, xb, yb, wb):
        if penalized:
            pred, penalty = nnx.merge(graphdef, p, r).forward_with_penalty(xb, l1=l1, entropy=entropy)
        else:
            pred, penalty = forward(p, r, xb), 0.0
        per = per_example_loss(pred, yb)
        if every_batch_full:  # every weight is 1: the plain mean (see every_batch_full)
            return jnp.mean(per) + penalty
        return jnp.sum(per * wb) / jnp.sum(wb) + penalty

    def regrid(p, r, x):
        """Every layer's grid from the activations of all training inputs; coef refitted."""
        m = nnx.merge(graphdef, unravel(p), r)
        # every layer's inputs from the current model, as KAN.update_grid takes them
        refits = _regrid_layers(m.layers, _inputs_of_layers(m, x),
                                [layer.grid_size for layer in m.layers], float(grid_eps),
                                float(grid_margin), 1e-6)
        for layer, (grid, coef) in zip(m.layers, refits):
            layer.grid[...], layer.coef[...] = grid, coef
        _, new_params, new_rest = nnx.split(m, nnx.Param, ...)
        return ravel(new_params), new_rest

    def run_epoch(p, s, r, epoch, key, arrays):
        # The data are arguments, not constants baked into the program: no copy of the data
        # set inside the executable and nothing for XLA to constant-fold.
        x, y, xv, yv = arrays
        if grid_update_every:
            due = (epoch % grid_update_every == 0) & (epoch < grid_update_until)
            p, r = jax.lax.cond(due, regrid, lambda p, r, x: (p, r), p, r, x)

        def step(carry, batch):
            p, s = carry
            idx, wb = batch
            if mesh is not None:  # each device gathers and differentiates its slice
                idx = jax.lax.with_sharding_constraint(idx, batch_sharding)
                wb = jax.lax.with_sharding_constraint(wb, batch_sharding)
            xb, yb = (x, y) if full_batch else (x[idx], y[idx])
            if lm:
                # residuals whose squares sum to the weighted MSE of batch_loss
                scale = 1.0 / (jnp.sum(wb) * math.prod(yb.shape[1:]))

                def residual_one(q, xi, yi, wi):
                    pred = forward(unravel(q), r, xi[None])[0]
                    return ((pred - yi) * jnp.sqrt(wi * scale)).reshape(-1)

                p, s, value, grads = lm_lib.lm_update(
                    lambda q: batch_loss(unravel(q), r, xb, yb, wb),
                    lambda q: lm_lib.normal_equations(residual_one, q, xb, yb, wb), p, s)
                tree_grads = unravel(grads)
            else:
                value, tree_grads = jax.value_and_grad(batch_loss)(unravel(p), r, xb, yb, wb)
                grads = ravel(tree_grads)
                if lbfgs or isinstance(tx, optax.GradientTransformationExtraArgs):
                    # line-search optimizers (optax.lbfgs, scale_by_zoom_linesearch chains)
                    # need the loss; transformations that do not use these arguments ignore them
                    updates, s = tx.update(
                        grads, s, p, value=value, grad=grads,
                        value_fn=lambda q: batch_loss(unravel(q), r, xb, yb, wb),
                    )
                else:
                    updates, s = tx.update(grads, s, p)
                p = optax.apply_updates(p, updates)
            sq = [jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree_grads)]
            norms = jnp.stack(
                [jnp.sqrt(sum(v for v, gi in zip(sq, group_of_leaf) if gi == g))
                 for g in range(len(group_names))]
            )
            return (p, s), (value * jnp.sum(wb), norms)

        if full_batch:  # one step on all samples: their order does not matter
            idx, mask = jnp.zeros((1, 0), jnp.int32), jnp.ones((1, n), x.dtype)
        else:
            perm = _shuffle(jax.random.fold_in(key, epoch), n)
            pad = steps * batch_size - n
            idx = jnp.concatenate([perm, perm[:pad]]).reshape(steps, batch_size)
            mask = (jnp.arange(steps * batch_size) < n).astype(x.dtype).reshape(steps, batch_size)
        if full_batch:  # one step: no loop for XLA to compile
            (p_new, s_new), (sums, norms) = step((p, s), (idx[0], mask[0]))
            sums, norms = sums[None], norms[None]
        else:
            (p_new, s_new), (sums, norms) = jax.lax.scan(step, (p, s), (idx, mask))
        train_loss = jnp.sum(sums) / n
        finite = jnp.isfinite(train_loss) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(p_new)])
        )
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        p_out = jax.tree.map(keep, p_new, p)
        s_out = jax.tree.map(keep, s_new, s)
        val = (jnp.mean(per_example_loss(forward(unravel(p_out), r, xv), yv))
               if has_val else jnp.nan)
        lr = lr_fn((epoch + 1) * steps - 1) if lr_fn is not None else jnp.nan
        done = s_out.converged if lm else jnp.asarray(False)  # LM: no step lowers the loss much
        stats = (finite, train_loss, val, lr, jnp.mean(norms, axis=0), done)
        # The parameter pytree comes back too, so that no separate unravel program has to
        # be compiled to hand the result to the model.
        return p_out, s_out, stats, unravel(p_out), r

    base_key = jax.random.key(seed)
    if ensemble and shared_order:
        # One shuffle for all members: the minibatches (and the first layer's basis) are
        # computed once per step instead of once per member.
        keys = base_key
        program_fn = jax.vmap(run_epoch, in_axes=(0, 0, 0, None, None, None), out_axes=(0, 0, 0, 0, 0))
    elif ensemble:
        # Member i shuffles exactly as train(..., seed=seed + i) would.
        keys = jax.vmap(jax.random.key)(seed + jnp.arange(members))
        program_fn = jax.vmap(run_epoch, in_axes=(0, 0, 0, None, 0, None), out_axes=(0, 0, 0, 0, 0))
    else:
        keys, program_fn = base_key, run_epoch

    resumed_from, restored_history = 0, None
    if checkpoints is not None:
        # What defines the run's numbers (not the hardware it runs on): a resumed run must
        # have the same, so that it continues the checkpointed one exactly.
        checkpoints.configure(epochs=epochs, key=keys, options=dict(
            epochs=epochs, batch_size=batch_size, steps_per_epoch=steps, n_samples=n,
            learning_rate=learning_rate if optimizer is None else None,
            schedule=(schedule if optimizer is None and isinstance(schedule, (str, type(None)))
                      else "custom"),
            optimizer="adam" if optimizer is None else optimizer if lbfgs or lm else "custom",
            loss=loss_name or getattr(loss, "__name__", "custom"), seed=seed, l1=l1,
            entropy=entropy, grid_update_every=grid_update_every,
            grid_update_until=grid_update_until, grid_eps=grid_eps, validation=has_val,
            # recorded only when used, so checkpoints written before the option still resume
            **({"grid_margin": grid_margin} if grid_margin else {}),
        ))
        restored = checkpoints.restore(graphdef, params, rest, opt_state) if resume else None
        if restored is not None:
            params, rest, opt_state, restored_history, resumed_from = restored
            theta = jax.jit(ravel)(params)

    arrays = (x, y, xv, yv)
    if mesh is not None:
        theta, opt_state, rest = jax.device_put((theta, opt_state, rest), replicated)
    compile_start = time.perf_counter()
    # forward + backward ~ 6 flops per parameter and sample (more with a line search)
    work = 6.0 * n_theta * batch_size * steps * (epochs - resumed_from) * (1 + 2 * lbfgs)
    if lm:  # normal equations and Cholesky solves: dense linear algebra, compiled either way
        work = 0.0
    signature = _signature(graphdef, theta, opt_state, rest, keys, arrays, work)
    ahead = _program_result(program)
    compiled_ahead = ahead is not None and ahead.signature == signature
    if compiled_ahead:
        epoch_fn = ahead.epoch_fn
    else:
        epoch_fn = _compile(
            jax.jit(program_fn, donate_argnums=(0, 1)), theta, opt_state, rest, jnp.int32(0),
            keys, arrays, work=work, on_lowered=on_lowered,
        )
    compile_time = time.perf_counter() - compile_start  # waiting for a program made ahead, if any
    if compile_only:
        return _Program(signature, epoch_fn)

    config = dict(epochs=epochs, batch_size=batch_size, steps_per_epoch=steps, n_samples=n,
                  learning_rate=learning_rate if optimizer is None else None,
                  schedule=schedule if optimizer is None and isinstance(schedule, (str, type(None))) else "custom",
                  loss=loss_name or getattr(loss, "__name__", "custom"), seed=seed,
                  backend=jax.default_backend(), compile_time=compile_time,
                  devices=1 if mesh is None else int(mesh.size))
    if program is not None:
        config["compiled_ahead"] = compiled_ahead
    if mesh is not None:
        config["sharding"] = _program_report(epoch_fn, mesh)
    n_hist = members if ensemble else 1
    histories = [
        History(grad_norm={name: [] for name in group_names},
                config=dict(config, member=i) if ensemble else dict(config))
        for i in range(n_hist)
    ]
    start_epoch, time_offset = resumed_from, 0.0
    if restored_history is not None:
        restored_history.config = dict(histories[0].config, resumed_from_epoch=start_epoch)
        histories = [restored_history]
        time_offset = restored_history.wall_time[-1] if restored_history.wall_time else 0.0
    bar = _progress_bar(epochs) if progress and epochs > 0 else None
    task = bar.add_task("train", total=epochs, completed=start_epoch, metrics="") if bar else None
    start = time.perf_counter()
    diverged_at = None
    try:
        if bar:
            bar.start()
        # Epoch e + 1 is dispatched before epoch e's statistics are read, so the device
        # works while the host records them (JAX dispatches asynchronously; on a 2-core CPU
        # the host's share was ~1.3 ms per epoch, ~2.4 ms with a callback). Not with
        # checkpoints, which save epoch e's optimizer state before the next call donates
        # it, nor with Levenberg-Marquardt, whose epochs stop on convergence. When training
        # stops early the epoch already under way is discarded.
        pipelined = checkpoints is None and not lm

        def dispatch(e):  # epoch e from the current state; returns at once (async dispatch)
            return epoch_fn(theta, opt_state, rest, jnp.int32(e), keys, arrays)

        if start_epoch < epochs:
            outputs = dispatch(start_epoch)
        for epoch in range(start_epoch, epochs):
            theta, opt_state, stats, params, rest = outputs
            if pipelined and epoch + 1 < epochs:
                outputs = dispatch(epoch + 1)
            finite, train_loss, val, lr, norms, done = (
                np.atleast_1d(v) for v in jax.device_get(stats))
            norms = norms.reshape(n_hist, len(group_names))
            if not finite.all():
                diverged_at = epoch + 1
                break
            now = time.perf_counter() - start + time_offset
            for i, h in enumerate(histories):
                h.train_loss.append(float(train_loss[i]))
                if has_val:
                    h.val_loss.append(float(val[i]))
                h.learning_rate.append(float(lr[i]))
                h.wall_time.append(now)
                for name, v in zip(group_names, norms[i]):
                    h.grad_norm[name].append(float(v))
            if bar:
                metrics = f"loss {np.mean(train_loss):.3e}" + (f"  val {np.mean(val):.3e}" if has_val else "")
                bar.update(task, advance=1, metrics=metrics)
            if checkpoints is not None and checkpoints.due(epoch + 1):
                # Between compiled epochs, before the next call donates opt_state's buffers.
                checkpoints.save(graphdef, params, rest, opt_state, histories[0], epoch + 1)
            if callback is not None:
                nnx.update(model, params, rest)  # the callback sees this epoch's model
                if callback(epoch + 1, histories if ensemble else histories[0]):
                    for h in histories:
                        h.config["stopped_at_epoch"] = epoch + 1
                    break
            if done.all():  # Levenberg-Marquardt converged: further epochs would not move
                for h in histories:
                    h.config["stopped_at_epoch"] = epoch + 1
                    h.config["converged"] = True
                break
            if not pipelined and epoch + 1 < epochs:
                outputs = dispatch(epoch + 1)
    finally:
        if bar:
            bar.stop()
        nnx.update(model, params, rest)
    if diverged_at is not None:
        raise TrainingDiverged(diverged_at, model, histories if ensemble else histories[0])
    return model, histories


def evaluate(model: nnx.Module, data, *, loss: str | Callable = "mse") -> float:
    """Mean per-sample ``loss`` of ``model`` on ``data = (x, y)``, as one compiled call.

    Uses the same checks and losses as :func:`train` (for ``"cross_entropy"`` it returns
    the mean cross-entropy; accuracy is ``mean(argmax(model(x), -1) == y)``).
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    per_example_loss = losses_lib.get(loss)
    graphdef, state = nnx.split(model)
    out_shape = _output_shape(model, data, lambda v: nnx.merge(graphdef, state)(v))
    x, y = _prepare_data(model, data, "data", loss if isinstance(loss, str) else None, out_shape)
    return float(_evaluate(graphdef, state, x, y, per_example_loss))


@functools.partial(fast_compile_jit, static_argnums=(0, 4))
def _evaluate(graphdef, state, x, y, per_example_loss):
    return jnp.mean(per_example_loss(nnx.merge(graphdef, state)(x), y))


# ----------------------------------------------------------------------------- checkpoints

_CHECKPOINT_NAME = "latest"


def _checkpoints_from_args(model, checkpoint_dir, checkpoint_every, resume, members):
    """Validate the checkpoint arguments of ``train`` (before any work); ``None`` without a dir."""
    every = _check_int("checkpoint_every", checkpoint_every, 0)
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {resume!r}")
    if checkpoint_dir is None:
        if every or resume:
            raise ValueError("checkpoint_every and resume need a checkpoint_dir")
        return None
    if members is not None:
        raise ValueError("checkpoint_dir is not supported by train_ensemble")
    from kanjax import checkpoint as checkpoint_lib

    checkpoint_lib._describe_model(model)  # TypeError now, not after the first epoch
    directory = checkpoint_lib._abspath(checkpoint_dir)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"checkpoint_dir {directory} exists and is not a directory")
    return _TrainCheckpoints(directory, every)


def _variable_summary(state) -> dict[str, tuple[str, tuple[int, ...], str]]:
    return {
        ".".join(map(str, path)): (type(var).__name__, tuple(np.shape(var[...])),
                                   str(jnp.result_type(var[...])))
        for path, var in nnx.to_flat_state(state)
    }


class _TrainCheckpoints:
    """The checkpoint of one ``train`` run, ``directory/latest``, replaced at every save."""

    def __init__(self, directory: str, every: int):
        self.path = os.path.join(directory, _CHECKPOINT_NAME)
        self.every = every
        self.epochs = 0
        self.options: dict[str, Any] = {}
        self.key: dict[str, Any] = {}

    def configure(self, *, epochs: int, key, options: dict[str, Any]) -> None:
        self.epochs = epochs
        # Normalised through JSON, as they will be read back from metadata.json.
        self.options = json.loads(json.dumps(options))
        self.key = {"impl": str(jax.random.key_impl(key)),
                    "data": np.asarray(jax.random.key_data(key)).tolist()}

    def due(self, completed: int) -> bool:
        return completed == self.epochs or bool(self.every and completed % self.every == 0)

    def save(self, graphdef, params, rest, opt_state, history: History, completed: int) -> None:
        from kanjax import checkpoint as checkpoint_lib

        checkpoint_lib.save(
            self.path, nnx.merge(graphdef, params, rest), history=history,
            optimizer_state=opt_state,
            metadata={"train": {"epoch": completed, "options": self.options, "key": self.key}},
        )

    def restore(self, graphdef, params, rest, opt_state):
        """``(params, rest, opt_state, history, epoch)`` from the checkpoint, or ``None`` if none.

        ``params``, ``rest`` and ``opt_state`` of the fresh run give the structures (and are
        checked against the checkpoint's shapes); the returned ones have those structures.
        """
        from kanjax import checkpoint as checkpoint_lib

        if not os.path.exists(self.path):
            parent, name = os.path.split(self.path)
            if os.path.isdir(parent) and any(n.startswith(f"{name}.old-") for n in os.listdir(parent)):
                checkpoint_lib.read_metadata(self.path)  # raises, naming the interrupted save
            return None

        def incompatible(problem):
            return ValueError(f"cannot resume from checkpoint {self.path}: {problem}")

        # In order: the run's options, the model, then the optimizer state, so that the
        # error names the first difference.
        file_meta, arrays = checkpoint_lib._open(self.path)
        meta = (file_meta.get("metadata") or {}).get("train")
        history = checkpoint_lib._history(self.path, file_meta)
        if not isinstance(meta, dict) or history is None:
            raise checkpoint_lib.CheckpointError(
                f"checkpoint {self.path}: was not written by kanjax.train (no training state)")
        saved = meta.get("options", {})
        diffs = [
            f"{k}: {saved.get(k, '<unset>')!r} in the checkpoint, {self.options.get(k, '<unset>')!r} now"
            for k in sorted(set(saved) | set(self.options)) if saved.get(k) != self.options.get(k)
        ]
        if diffs:
            raise incompatible("it was written by a run with other options (" + "; ".join(diffs) + ")")
        if meta.get("key") != self.key:
            raise incompatible(
                f"its shuffling key {meta.get('key')} differs from this run's {self.key} (another "
                "jax PRNG implementation?)")
        epoch = meta.get("epoch")
        if (isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= self.epochs
                or history.epochs != epoch):
            raise checkpoint_lib.CheckpointError(
                f"checkpoint {self.path}: invalid epoch counter {epoch!r} (history has "
                f"{history.epochs} epochs)")

        model = checkpoint_lib._model(self.path, file_meta, arrays)
        loaded_graphdef, loaded_params, loaded_rest = nnx.split(model, nnx.Param, ...)
        for what, fresh, loaded in (("trainable", params, loaded_params),
                                    ("non-trainable", rest, loaded_rest)):
            a, b = _variable_summary(loaded), _variable_summary(fresh)
            if a != b:
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[:5]
                raise incompatible(
                    f"its model's {what} variables differ from `model`'s at {diff} "
                    f"(checkpoint {[a.get(k) for k in diff]}, model {[b.get(k) for k in diff]}); "
                    "build `model` as for the checkpointed run")
        if loaded_graphdef != graphdef:
            raise incompatible(
                "its model's static attributes (basis, grids, symbolic edges, ...) differ from "
                "`model`'s; build `model` as for the checkpointed run")
        params = jax.tree.unflatten(jax.tree.structure(params), jax.tree.leaves(loaded_params))
        rest = jax.tree.unflatten(jax.tree.structure(rest), jax.tree.leaves(loaded_rest))
        opt_state = checkpoint_lib._optimizer_state(self.path, file_meta, arrays, opt_state)
        return params, rest, opt_state, history, epoch


# ----------------------------------------------------------------------------- sharding


def _resolve_mesh(mesh, members):
    """The mesh ``train`` shards batches over, or ``None`` for single-device training."""
    if isinstance(mesh, str):
        if mesh != "auto":
            raise ValueError(f"mesh must be 'auto', None or a jax.sharding.Mesh, got {mesh!r}")
        if jax.device_count() <= 1 or members is not None:
            return None
        return Mesh(np.asarray(jax.devices()), ("data",))
    if mesh is None:
        return None
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be 'auto', None or a jax.sharding.Mesh, got {type(mesh).__name__}")
    if members is not None:
        raise NotImplementedError("train_ensemble does not shard over a mesh yet; pass mesh=None")
    if mesh.size == 1:
        return None
    return mesh


def _replicate(a, sharding):
    """``a`` on every device of ``sharding``'s mesh (also across hosts: each process gives
    the same values)."""
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def _program_report(compiled, mesh) -> dict:
    """What the compiled epoch does across devices: collective ops and any host transfer."""
    try:
        text = compiled.as_text()
    except Exception:  # some backends cannot print the optimized program
        return {"devices": int(mesh.size), "axis": mesh.axis_names[0]}
    ops = re.findall(r"=\s*\S+\s+([a-z][a-z0-9-]*)\(", text)
    host = sum(ops.count(o) for o in ("send", "recv", "infeed", "outfeed")) + text.count(
        "xla_python_cpu_callback") + text.count("xla_ffi_python_cpu_callback")
    return {"devices": int(mesh.size), "axis": mesh.axis_names[0],
            "all_reduce_ops": ops.count("all-reduce") + ops.count("all-reduce-start"),
            "host_transfer_ops": int(host)}
