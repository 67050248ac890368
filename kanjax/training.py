"""``kanjax.train``: training as one compiled program per epoch.

The model is split once into (graph, trainable params, other state). One ``jax.jit``
function runs a whole epoch (:mod:`kanjax.epoch`): it shuffles with a JAX PRNG key,
``jax.lax.scan``s the optimizer step over the minibatches, evaluates the validation loss,
and keeps the last finite state if the epoch diverged. The host (:mod:`kanjax.driver`)
only reads a few scalars per epoch and merges the state back into the model at the end.
The arguments are validated once, into a :class:`kanjax.train_config.TrainConfig`, before
the model is touched.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from kanjax import objective as objective_lib
from kanjax._xla import fast_compile_jit
from kanjax.ensemble import ensemble_member, make_ensemble, train_ensemble
from kanjax.fit import check_model, fit
from kanjax.history import History, TrainingDiverged
from kanjax.schedule import CompileAhead, run_schedule
from kanjax.train_config import TrainConfig
from kanjax.train_data import output_shape, prepare_pair, prepare_tree

__all__ = [
    "History",
    "TrainConfig",
    "TrainingDiverged",
    "ensemble_member",
    "evaluate",
    "make_ensemble",
    "train",
    "train_ensemble",
]


def train(
    model: nnx.Module,
    data,
    *,
    epochs: int = 200,
    batch_size: int | None = 64,
    learning_rate: float = 2e-2,
    optimizer: optax.GradientTransformation | str | None = None,
    schedule: str | Callable | None = "cosine",
    loss: str | Callable = "mse",
    objective: Callable | None = None,
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
    """Train ``model`` on ``data`` and return ``(model, history)``.

    The model is updated in place and also returned. Every epoch is one compiled
    program: samples are shuffled by a pseudo-random permutation keyed by ``seed`` and the
    epoch number (a Feistel network, no sort) and ``jax.lax.scan`` runs the optimizer over
    ``ceil(n / batch_size)`` minibatches; the last, partial minibatch is masked, so every
    sample counts once per epoch. Epochs after the first reuse the compiled program.

    Args:
      model: an NNX module (``KAN``, ``MLP`` or your own) mapping ``(batch, n_in)`` to
        ``(batch, ...)``. Only ``nnx.Param`` variables are trained.
      data: with ``loss``, ``(x, y)``: ``x`` of shape ``(n, n_in)``; ``y`` of shape
        ``(n, n_out)`` (or ``(n,)`` for one output) for ``"mse"``, integer labels ``(n,)``
        for ``"cross_entropy"``. With ``objective``, any pytree of arrays sharing a leading
        sample axis (a tuple, a dict of named arrays, several inputs).
      epochs: number of passes over the data.
      batch_size: minibatch size; larger than ``n`` or ``None`` means full batch.
      learning_rate: peak learning rate of the default optimizer.
      optimizer: an ``optax.GradientTransformation``, or ``"lbfgs"`` for optax's L-BFGS
        with its zoom line search (best full-batch: ``batch_size >= n``); default
        ``optax.adam`` on ``schedule``. When given, ``learning_rate`` and ``schedule`` are
        not used.
      schedule: ``"cosine"`` (``optax.cosine_decay_schedule`` over all steps),
        ``"constant"``/``None``, or an optax schedule (step -> learning rate).
      loss: ``"mse"``, ``"cross_entropy"`` or ``fn(pred, target)`` returning one loss
        per sample (shape ``(batch,)`` or ``(batch, ...)``, averaged over trailing axes);
        a function returning a scalar is applied per sample. These are the short forms of
        an ``objective``.
      objective: ``fn(model, batch) -> loss`` or ``(loss, {name: metric})``, replacing
        ``loss``: ``batch`` has the structure of ``data`` (a minibatch of it); ``fn`` may
        differentiate ``model`` with respect to its inputs (``jax.grad``, ``jax.jvp``,
        ``jax.hessian`` of ``model(x)``), e.g. for a physics-informed residual. The metrics
        are recorded per epoch in ``history.metrics`` (averaged over the epoch's samples).
        When ``batch_size`` does not divide ``n``, the last minibatch is filled with samples
        from the start of the epoch's order (the objective sees whole batches).
      validation_data: optional, like ``data`` (``(x_val, y_val)``), evaluated after every
        epoch.
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
      checkpoint_dir: directory for the run's checkpoint (:func:`kanjax.save` format, one
        orbax ``CheckpointManager`` step, readable with :func:`kanjax.load`): the model,
        the optimizer state, the history, the number of completed epochs, the shuffling
        key and the options above. Written between compiled epochs only; an interrupted
        write keeps the previous step. Only for ``kanjax.KAN`` and ``kanjax.MLP`` models.
      checkpoint_every: write the checkpoint every this many epochs; it is also written
        after the last epoch. ``0``: only after the last epoch.
      resume: continue from the checkpoint in ``checkpoint_dir`` if there is one (else
        start from scratch). ``model`` must have the checkpointed model's architecture
        (build it as for the first run) and the other arguments must be those of the
        checkpointed run; the data order of an epoch depends only on ``(seed, epoch)`` and
        the schedule on the global step, so the result equals an uninterrupted run's
        (bitwise on CPU). ``history.wall_time`` continues from the checkpointed one. A
        finished run may be continued with a larger ``epochs`` (and no explicit
        ``grid_update_until``): the schedule is then the longer run's from the step reached.
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
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, optimizer=optimizer,
        schedule=schedule, loss=loss, objective=objective, seed=seed, progress=progress, l1=l1,
        entropy=entropy, grid_update_every=grid_update_every,
        grid_update_until=grid_update_until, grid_eps=grid_eps, grid_margin=grid_margin,
        grid_schedule=grid_schedule, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, resume=resume, mesh=mesh, callback=callback)
    return train_with_config(model, data, config, validation_data=validation_data)


def train_with_config(model: nnx.Module, data, config: TrainConfig, *, validation_data=None):
    """:func:`train` with its arguments as a :class:`TrainConfig`."""
    if not config.grid_schedule:
        model, (history,) = fit(model, data, config, validation_data=validation_data)
        return model, history
    check_model(model, config)
    start = time.perf_counter()
    # every later stage's programs compile in the background while this one runs
    ahead = CompileAhead(model, data, config, validation_data)
    try:
        model, (history,) = fit(model, data, config, validation_data=validation_data,
                                on_lowered=ahead.start)
        ahead.start()  # (in case the first stage compiled nothing)
        history = run_schedule(model, data, config, history, ahead, start, validation_data)
    finally:
        ahead.close()
    return model, history


def evaluate(model: nnx.Module, data, *, loss: str | Callable = "mse",
             objective: Callable | None = None, metrics: Sequence[str] = ()):
    """Mean per-sample ``loss`` of ``model`` on ``data = (x, y)`` (or ``objective`` on any
    ``data``), as one compiled call.

    Uses the same checks and losses as :func:`train`. ``metrics=("accuracy",)`` (class
    labels ``y``): returns ``{"loss": ..., "accuracy": mean(argmax(model(x), -1) == y)}``
    instead of the loss alone.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    config = TrainConfig(loss=loss, objective=objective)  # validates loss / objective
    metrics = _check_metrics(metrics, config)
    graphdef, state = nnx.split(model)
    if objective is not None:
        batch = prepare_tree(data, "data")
        value = objective_lib.from_function(objective).validation
        return float(_evaluate(graphdef, state, batch, value))
    out_shape = output_shape(model, data, lambda v: nnx.merge(graphdef, state)(v))
    batch = prepare_pair(model, data, "data", loss if isinstance(loss, str) else None, out_shape)
    value = float(_evaluate(graphdef, state, batch, objective_lib.from_loss(loss).validation))
    if not metrics:
        return value
    return {"loss": value, **{name: float(_evaluate(graphdef, state, batch, _METRICS[name]))
                              for name in metrics}}


def _accuracy(model, batch):
    x, labels = batch
    return jnp.mean(jnp.argmax(model(x), axis=-1) == labels)


_METRICS = {"accuracy": _accuracy}


def _check_metrics(metrics, config: TrainConfig) -> tuple[str, ...]:
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise TypeError(f"metrics must be a sequence of names such as ('accuracy',), got {metrics!r}")
    unknown = [m for m in metrics if m not in _METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(_METRICS)}")
    if metrics and config.loss != "cross_entropy":
        raise ValueError("metrics=('accuracy',) needs class labels: pass loss='cross_entropy'")
    return tuple(metrics)


@functools.partial(fast_compile_jit, static_argnums=(0, 3))
def _evaluate(graphdef, state, batch, value):
    return value(nnx.merge(graphdef, state), batch)
