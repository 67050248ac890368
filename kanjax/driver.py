"""The host loop of ``train``: dispatch compiled epochs, read their statistics, call hooks.

The driver knows nothing of what the hooks do (record a history, draw a progress bar,
save a checkpoint, call the user, check for divergence or convergence); it gives each the
finished epoch and stops when one asks it to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np

__all__ = ["EpochResult", "Hook", "drive"]


class EpochResult(NamedTuple):
    """A finished epoch, as the hooks see it.

    ``stats`` are host NumPy arrays (one entry per ensemble member):
    ``(finite, train_loss, val_loss, lr, grad_norms, converged, metrics)``; ``params``,
    ``rest`` and ``opt_state`` are the device state after the epoch.
    """

    completed: int
    stats: tuple
    params: Any
    rest: Any
    opt_state: Any


class Hook(Protocol):
    def __call__(self, result: EpochResult) -> bool | None:
        """Called after every epoch, in order; return ``True`` to stop training."""


def drive(dispatch: Callable, state, *, start: int, epochs: int, pipelined: bool,
          hooks: Sequence[Hook], finish: Callable[[Any, Any], None], initial=None) -> None:
    """Run epochs ``start .. epochs - 1``.

    ``dispatch(state, epoch) -> (state, stats, params, rest)`` starts one compiled epoch
    and returns at once (JAX dispatches asynchronously); ``state = (p, opt_state, rest)``.
    With ``pipelined``, epoch ``e + 1`` is dispatched before epoch ``e``'s statistics are
    read, so the device works while the host runs the hooks; an epoch under way when a
    hook stops training is discarded. Without it (a hook that must see ``opt_state``
    before the next call donates its buffers, or one that stops on convergence), the next
    epoch waits for the hooks. ``finish(params, rest)`` receives the last finished
    epoch's state, also when a hook raises, or ``initial = (params, rest)`` when no epoch
    runs.
    """
    last = initial
    try:
        if start < epochs:
            outputs = dispatch(state, start)
        for epoch in range(start, epochs):
            state, stats, params, rest = outputs
            last = (params, rest)
            if pipelined and epoch + 1 < epochs:
                outputs = dispatch(state, epoch + 1)
            stats = tuple(jax.tree.map(np.atleast_1d, jax.device_get(stats)))
            result = EpochResult(epoch + 1, stats, params, rest, state[1])
            if _run_hooks(hooks, result):
                break
            if not pipelined and epoch + 1 < epochs:
                outputs = dispatch(state, epoch + 1)
    finally:
        if last is not None:
            finish(*last)


def _run_hooks(hooks, result) -> bool:
    """Call the hooks in order, up to the first that asks to stop; whether one did."""
    for hook in hooks:
        if hook(result):
            return True
    return False
