"""One ``train`` run: validate, build the epoch program, compile it, drive it.

:func:`fit` trains one model (``members=None``) or a stacked ensemble of ``members``
(:mod:`kanjax.ensemble`). Everything is checked before the model is touched: a call that
fails leaves it exactly as it was.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from kanjax import hooks as hooks_lib
from kanjax import lm as lm_lib
from kanjax import objective as objective_lib
from kanjax import optimizers
from kanjax import resume as resume_lib
from kanjax.compiling import Program, compile_program, program_result, signature
from kanjax.driver import drive
from kanjax.epoch import EpochSpec, build_epoch, flattener, layer_groups
from kanjax.history import History
from kanjax.mesh import Placement, batch_shards, program_report, resolve_mesh
from kanjax.nn import KAN
from kanjax.train_config import TrainConfig
from kanjax.train_data import n_samples, output_shape, prepare_pair, prepare_tree

__all__ = ["check_model", "fit", "grid_inputs", "use_general_bsplines", "validate"]


class _Plan(NamedTuple):
    """What validation found: everything ``fit`` needs besides the model."""

    mesh: Any
    checkpoints: Any
    objective: objective_lib.Objective
    data: Any
    val_data: Any
    spec: EpochSpec


def grid_inputs(data):
    """The model's inputs in ``data`` (its first array), for grid updates and refines."""
    if isinstance(data, (tuple, list)) and data and hasattr(data[0], "shape"):
        return data[0]
    raise TypeError("grid updates and grid_schedule take the model's inputs from the data: "
                    "pass data as a tuple whose first array is the model's input x")


def check_model(model, config: TrainConfig) -> None:
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    if config.grid_update_every or config.grid_schedule:
        layers = getattr(model, "layers", None)
        if not isinstance(model, KAN) or any(layer.basis != "bspline" for layer in layers):
            what = "grid_update_every" if config.grid_update_every else "grid_schedule"
            raise TypeError(f"{what} needs a kanjax.KAN with B-spline layers")
    if (config.l1 > 0 or config.entropy > 0) and not hasattr(model, "forward_with_penalty"):
        raise TypeError("l1/entropy regularization needs a kanjax.KAN (edge activations); got "
                        f"{type(model).__name__}")
    if not jax.tree.leaves(nnx.state(model, nnx.Param)):
        raise ValueError("model has no nnx.Param to train")


def _first_member(tree, members):
    return tree if members is None else jax.tree.map(lambda a: a[0], tree)


def _prepare(model, data, validation_data, config: TrainConfig, members):
    """``(objective, data, val_data)``: the objective and the checked arrays."""
    if config.objective is not None:
        objective = objective_lib.from_function(config.objective)
        data = prepare_tree(data, "data")
        val = None if validation_data is None else prepare_tree(validation_data, "validation_data")
    else:
        objective = objective_lib.from_loss(config.loss, l1=config.l1, entropy=config.entropy)
        graphdef, state = nnx.split(model)
        state0 = _first_member(state, members)
        shape = output_shape(model, data, lambda v: nnx.merge(graphdef, state0)(v))
        loss_name = config.loss if isinstance(config.loss, str) else None
        data = prepare_pair(model, data, "data", loss_name, shape)
        val = (None if validation_data is None else
               prepare_pair(model, validation_data, "validation_data", loss_name, shape))
    if config.grid_update_every:
        grid_inputs(data)
    return objective, data, val


def _check_lm(config, model, n, batch_size, mesh, members):
    if config.optimizer != "lm":
        return
    if mesh is not None:
        raise ValueError("optimizer='lm' runs on one device; pass mesh=None")
    if batch_size < n:
        raise ValueError(f"optimizer='lm' is full-batch: batch_size must be >= the {n} samples, "
                         f"got {batch_size}")
    params = _first_member(nnx.state(model, nnx.Param), members)
    n_theta = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
    if n_theta > lm_lib.MAX_PARAMS:
        raise ValueError(f"optimizer='lm' solves a {n_theta} x {n_theta} system per step; it is "
                         f"meant for models of at most {lm_lib.MAX_PARAMS} parameters (use "
                         "'lbfgs' or Adam)")


def _spec(config: TrainConfig, n: int, mesh, has_val: bool) -> EpochSpec:
    batch_size = n if config.batch_size is None else min(config.batch_size, n)
    steps = -(-n // batch_size)
    shards = batch_shards(mesh)
    if batch_size % shards:
        raise ValueError(
            f"batch_size {batch_size} must be a multiple of the {shards} devices on mesh "
            f"axis {mesh.axis_names[0]!r} to split every minibatch evenly"
            + (f" (the data set has only {n} samples)" if batch_size == n else ""))
    # Full batch on one device: no shuffle and no gather (the sum over all samples does
    # not depend on their order). The last minibatch is padded (and its padding masked
    # out by per-sample weights) only when batch_size does not divide n; otherwise the
    # loss is the plain batch mean. Sharded runs keep the weights: with them the
    # partitioner reduces the gradients with one all-reduce.
    return EpochSpec(n=n, batch_size=batch_size, steps=steps,
                     full_batch=steps == 1 and mesh is None,
                     every_batch_full=n % batch_size == 0 and mesh is None, has_val=has_val,
                     grid_update_every=config.grid_update_every,
                     grid_update_until=config.until(), grid_eps=config.grid_eps,
                     grid_margin=config.grid_margin)


def validate(model, data, validation_data, config: TrainConfig, members=None) -> _Plan:
    """Every check of a run, before anything is mutated or traced."""
    mesh_arg = None if config.optimizer == "lm" and config.mesh == "auto" else config.mesh
    mesh = resolve_mesh(mesh_arg, members)
    check_model(model, config)
    checkpoints = resume_lib.training_checkpoints(
        model, config.checkpoint_dir, config.checkpoint_every, config.resume, members)
    objective, data, val = _prepare(model, data, validation_data, config, members)
    n = n_samples(data)
    spec = _spec(config, n, mesh, val is not None)
    _check_lm(config, model, n, spec.batch_size, mesh, members)
    if config.optimizer == "lm" and objective.residuals is None:
        raise ValueError("optimizer='lm' fits least squares: it needs loss='mse'")
    return _Plan(mesh, checkpoints, objective, data, val, spec)


def use_general_bsplines(model, config: TrainConfig) -> None:
    """Grid updates with ``grid_eps != 1`` make knots non-uniform inside the compiled
    program: switch the layers to the general Cox-de Boor evaluation before compiling
    (the fast path needs uniform knots). Called after validation only."""
    if (config.grid_update_every and config.grid_eps != 1.0
            and any(layer.uniform for layer in model.layers)):
        for layer in model.layers:
            layer.uniform = False


class _Run(NamedTuple):
    """The built (not yet compiled) run."""

    graphdef: Any
    params: Any
    rest: Any
    theta: Any
    opt_state: Any
    keys: Any
    program_fn: Any
    optimizer: optimizers.Optimizer
    group_names: list[str]
    n_theta: int


def _vectorize(run_epoch, config: TrainConfig, members):
    """``(keys, program)``: the epoch program for one model or vmapped over members."""
    base_key = jax.random.key(config.seed)
    if members is None:
        return base_key, run_epoch
    outs = (0, 0, 0, 0, 0)
    if config.shared_order:
        # One shuffle for all members: the minibatches (and the first layer's basis) are
        # computed once per step instead of once per member.
        return base_key, jax.vmap(run_epoch, in_axes=(0, 0, 0, None, None, None), out_axes=outs)
    # Member i shuffles exactly as train(..., seed=seed + i) would.
    keys = jax.vmap(jax.random.key)(config.seed + jnp.arange(members))
    return keys, jax.vmap(run_epoch, in_axes=(0, 0, 0, None, 0, None), out_axes=outs)


def _build(model, plan: _Plan, config: TrainConfig, members) -> _Run:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params0 = _first_member(params, members)
    dtype = jnp.result_type(*jax.tree.leaves(params0))
    opt = optimizers.resolve(config, plan.spec.steps * config.epochs, dtype)
    ravel = flattener(params0)[0] if opt.flat else (lambda t: t)

    def init(p):
        return ravel(p), opt.tx.init(ravel(p))

    # One compiled program for the initial state, not one small program per array shape.
    theta, opt_state = jax.jit(init if members is None else jax.vmap(init))(params)
    run_epoch = build_epoch(graphdef, plan.objective, opt.tx, plan.spec, params_like=params0,
                            flat=opt.flat, lr_fn=opt.lr_fn, placement=Placement(plan.mesh),
                            reports_gradient=opt.reports_gradient)
    keys, program_fn = _vectorize(run_epoch, config, members)
    n_theta = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params0))
    return _Run(graphdef, params, rest, theta, opt_state, keys, program_fn, opt,
                layer_groups(params0)[0], n_theta)


def _restore(run: _Run, plan: _Plan, config: TrainConfig):
    """``(run, history or None, first epoch)``, from the checkpoint when resuming."""
    if plan.checkpoints is None:
        return run, None, 0
    spec = plan.spec
    plan.checkpoints.configure(epochs=config.epochs, key=run.keys, options=config.run_options(
        n_samples=spec.n, batch_size=spec.batch_size, steps=spec.steps, validation=spec.has_val))
    restored = (plan.checkpoints.restore(run.graphdef, run.params, run.rest, run.opt_state)
                if config.resume else None)
    if restored is None:
        return run, None, 0
    params, rest, opt_state, history, epoch = restored
    ravel = flattener(params)[0] if run.optimizer.flat else (lambda t: t)
    run = run._replace(params=params, rest=rest, opt_state=opt_state, theta=jax.jit(ravel)(params))
    return run, history, epoch


def _compile(run: _Run, plan: _Plan, config: TrainConfig, start_epoch, program, on_lowered):
    """``(Program, run, arrays, compiled_ahead, compile_time)``."""
    placement = Placement(plan.mesh)
    arrays = placement.replicate((plan.data, plan.val_data))
    theta, opt_state, rest = placement.put((run.theta, run.opt_state, run.rest))
    run = run._replace(theta=theta, opt_state=opt_state, rest=rest)
    spec = plan.spec
    started = time.perf_counter()
    # forward + backward ~ 6 flops per parameter and sample, times the optimizer's cost
    work = (6.0 * run.n_theta * spec.batch_size * spec.steps * (config.epochs - start_epoch)
            * run.optimizer.cost)
    sig = signature(run.graphdef, theta, opt_state, rest, run.keys, arrays, work)
    ahead = program_result(program)
    compiled_ahead = ahead is not None and ahead.signature == sig
    if compiled_ahead:
        epoch_fn = ahead.fn
    else:
        epoch_fn = compile_program(
            jax.jit(run.program_fn, donate_argnums=(0, 1)), theta, opt_state, rest,
            jnp.int32(0), run.keys, arrays, work=work, on_lowered=on_lowered)
    # (waiting for a program made ahead, if any)
    return Program(sig, epoch_fn), run, arrays, compiled_ahead, time.perf_counter() - started


def _histories(run: _Run, plan: _Plan, config: TrainConfig, members, facts: dict, restored):
    """The histories of the run (one per member) and the time offset of a resumed one.

    ``facts``: what the compile found (compile time, ...), recorded in ``config``.
    """
    spec = plan.spec
    record = config.record(n_samples=spec.n, batch_size=spec.batch_size, steps=spec.steps)
    record.update(backend=jax.default_backend(), compile_time=facts.pop("compile_time"),
                  devices=1 if plan.mesh is None else int(plan.mesh.size), **facts)
    histories = [History(grad_norm={name: [] for name in run.group_names},
                         config=dict(record) if members is None else dict(record, member=i))
                 for i in range(1 if members is None else members)]
    history, start_epoch = restored
    if history is None:
        return histories, 0.0
    finished_run = history.config.get("epochs")
    history.config = dict(histories[0].config, resumed_from_epoch=start_epoch)
    if finished_run != config.epochs:  # a finished run continued to more epochs
        history.config["extended_from_epochs"] = finished_run
    return [history], history.wall_time[-1] if history.wall_time else 0.0


def _hooks(model, run: _Run, plan: _Plan, config: TrainConfig, histories, time_offset,
           ensemble: bool, converges: bool):
    hooks = [hooks_lib.DivergenceCheck(model, histories, ensemble),
             hooks_lib.Recorder(histories, run.group_names, plan.spec.has_val, time_offset)]
    if plan.checkpoints is not None:
        hooks.append(hooks_lib.CheckpointSaver(plan.checkpoints, run.graphdef, histories[0]))
    if config.callback is not None:
        hooks.append(hooks_lib.UserCallback(config.callback, model, histories, ensemble))
    if converges:
        hooks.append(hooks_lib.ConvergenceCheck(histories))
    return hooks


def fit(model, data, config: TrainConfig, *, validation_data=None, members=None,
        compile_only: bool = False, program=None, on_lowered=None):
    """Train ``model`` as ``config`` says; ``(model, histories)``.

    ``compile_only``: return the compiled epoch program (a :class:`kanjax.compiling.Program`)
    instead of training. ``program``: a future of such a program, compiled ahead for this
    model's structure (grid schedules); used when its signature matches, else compiled
    here. ``on_lowered``: called once the epoch program is traced, before XLA compiles it.
    """
    plan = validate(model, data, validation_data, config, members)
    use_general_bsplines(model, config)  # the first change to the model: all checks passed
    run, history, start_epoch = _restore(_build(model, plan, config, members), plan, config)
    prog, run, arrays, ahead, compile_time = _compile(run, plan, config, start_epoch, program,
                                                      on_lowered)
    if compile_only:
        return prog
    facts = {"compile_time": compile_time}
    if program is not None:
        facts["compiled_ahead"] = ahead
    if plan.mesh is not None:
        facts["sharding"] = program_report(prog.fn, plan.mesh)
    histories, offset = _histories(run, plan, config, members, facts, (history, start_epoch))
    ensemble = members is not None
    # An optimizer whose state says "converged" stops training: its epochs run one by
    # one, as do those of a checkpointed run (saved before the next call donates them).
    converges = optax.tree_utils.tree_get(run.opt_state, "converged", None) is not None
    hooks = _hooks(model, run, plan, config, histories, offset, ensemble, converges)

    def dispatch(state, epoch):
        p, s, r = state
        p, s, stats, params, r = prog.fn(p, s, r, jnp.int32(epoch), run.keys, arrays)
        return (p, s, r), stats, params, r

    bar = (hooks_lib.ProgressBar(config.epochs, start_epoch, plan.spec.has_val)
           if config.progress and config.epochs > 0 else None)
    if bar is not None:
        hooks.insert(2, bar)
    with bar if bar is not None else contextlib.nullcontext():
        drive(dispatch, (run.theta, run.opt_state, run.rest), start=start_epoch,
              epochs=config.epochs, pipelined=plan.checkpoints is None and not converges,
              hooks=hooks, finish=lambda params, rest: nnx.update(model, params, rest),
              initial=(run.params, run.rest))
    return model, histories
