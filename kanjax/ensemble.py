"""Ensembles: ``M`` models stacked on a leading axis, trained by one vmapped epoch program."""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax
from flax import nnx

from kanjax.checks import check_int
from kanjax.fit import fit
from kanjax.train_config import TrainConfig

__all__ = ["ensemble_member", "ensemble_size", "make_ensemble", "train_ensemble"]


def train_ensemble(
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
    shared_order: bool = False,
):
    """Train every member of an ensemble (see :func:`make_ensemble`) in one compiled program.

    ``model`` holds ``M`` independently initialised members stacked on a leading axis of
    every variable. The epoch program of :func:`kanjax.train` is ``jax.vmap``-ed over the
    members: each member has its own optimizer state and its own shuffling order, the one
    ``train(member, ..., seed=seed + i)`` would use, so member ``i`` is that independent run
    (up to floating-point reassociation), sharing one compilation and one pass over the
    hardware with the others. With ``shared_order=True`` all members see the same
    minibatches (the order ``train(..., seed=seed)`` uses); they still differ by their
    initialisation, and the shared data work makes the ensemble cheaper. Other arguments
    are those of :func:`kanjax.train`.

    Returns:
      ``(model, histories)``: the ensemble, updated in place, and one ``History`` per member.

    Raises:
      TrainingDiverged: some member's loss became non-finite; every member keeps its last
        finite parameters and ``history`` is the list of histories so far.
    """
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        optimizer=optimizer, schedule=schedule, loss=loss, objective=objective, seed=seed,
        progress=progress, l1=l1, entropy=entropy, grid_update_every=grid_update_every,
        grid_update_until=grid_update_until, grid_eps=grid_eps, shared_order=shared_order,
        mesh=None)
    members = ensemble_size(model)
    return fit(model, data, config, validation_data=validation_data, members=members)


def make_ensemble(factory: Callable[[nnx.Rngs], nnx.Module], members: int, *, seed: int = 0):
    """``members`` models built by ``factory(rngs)``, stacked on a leading axis of every variable.

    Member ``i`` is initialised from its own split of ``nnx.Rngs(seed)`` (``nnx.split_rngs``
    plus ``nnx.vmap`` over the constructor, the NNX idiom). Train it with
    :func:`train_ensemble`; take member ``i`` out with :func:`ensemble_member`.
    """
    if not callable(factory):
        raise TypeError(f"factory must be a function rngs -> model (e.g. lambda rngs: "
                        f"kanjax.KAN([2, 5, 1], rngs=rngs)), got {factory!r}")
    members = check_int("members", members, 1)

    @nnx.split_rngs(splits=members)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def build(rngs):
        return factory(rngs)

    return build(nnx.Rngs(seed))


def ensemble_member(model: nnx.Module, i: int) -> nnx.Module:
    """Member ``i`` of an ensemble from :func:`make_ensemble`, as an ordinary (copied) model."""
    graphdef, state = nnx.split(model)
    n = ensemble_size(model)
    if not -n <= i < n:
        raise IndexError(f"member {i} out of range for an ensemble of {n}")
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))


def ensemble_size(model) -> int:
    """The number of members of a stacked ensemble (an error for an ordinary model)."""
    leaves = jax.tree.leaves(nnx.state(model))
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "model is not an ensemble: every variable needs the same leading member axis "
            "(build it with kanjax.make_ensemble)"
        )
    return sizes.pop()
