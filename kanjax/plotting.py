"""Plots of a training ``History`` (matplotlib, imported only when a plot is drawn).

Figures are built with ``matplotlib.figure.Figure`` directly, so they render without a
display and without touching pyplot's global state; in a notebook the returned figure
shows inline.
"""

from __future__ import annotations

import os

from kanjax.training import History

__all__ = ["plot_loss", "plot_grad_norms"]


def _figure(figsize=(6.0, 4.0)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _finish(fig, path):
    if path is not None:
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}{os.path.splitext(path)[1]}"
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    return fig


def plot_loss(history: History, path: str | os.PathLike | None = None, *, title: str | None = None):
    """Train (and validation) loss per epoch on a log scale; saved to ``path`` if given."""
    fig, ax = _figure()
    epochs = range(1, history.epochs + 1)
    ax.semilogy(epochs, history.train_loss, label="train")
    if history.val_loss:
        ax.semilogy(range(1, len(history.val_loss) + 1), history.val_loss, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss ({history.config.get('loss', 'loss')})")
    ax.set_title(title or "Loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def plot_grad_norms(
    history: History, path: str | os.PathLike | None = None, *, title: str | None = None
):
    """Per-layer gradient L2 norm per epoch (mean over the epoch's steps), log scale."""
    fig, ax = _figure()
    for name, values in history.grad_norm.items():
        ax.semilogy(range(1, len(values) + 1), values, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("gradient L2 norm")
    ax.set_title(title or "Gradient norm per layer")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _finish(fig, path)
