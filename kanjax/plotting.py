"""Plots of a training ``History`` (matplotlib, imported only when a plot is drawn).

Figures are built with ``matplotlib.figure.Figure`` directly, so they render without a
display and without touching pyplot's global state; in a notebook the returned figure
shows inline.
"""

from __future__ import annotations

import io
import os

from kanjax.training import History

__all__ = ["plot_loss", "plot_grad_norms", "plot_layer"]


def _figure_class():
    from matplotlib.figure import Figure

    class KanjaxFigure(Figure):
        """A pyplot-free figure that notebooks display inline (as PNG)."""

        def _repr_png_(self):
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)
            return buffer.getvalue()

    return KanjaxFigure


def _figure(figsize=(6.0, 4.0)):
    fig = _figure_class()(figsize=figsize, layout="constrained")
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


def plot_layer(layer, x, path: str | os.PathLike | None = None, *, num: int = 200,
               input_names=None, title: str | None = None):
    """Every edge function ``phi_qp`` of one ``KANLayer`` over the range its inputs take in ``x``.

    Args:
      layer: a :class:`kanjax.KANLayer`.
      x: sample inputs of that layer, shape ``(n, n_in)``; each input's curve spans
        ``[min, max]`` of its column.
      path: save the figure there (PNG, SVG, PDF, ... by extension).
      num: points per curve.
      input_names: labels of the inputs (default ``x0, x1, ...``).

    Returns:
      The figure: a grid with one row per output ``q`` and one column per input ``p``.
    """
    import jax.numpy as jnp
    import numpy as np

    x = np.asarray(x)
    n_in, n_out = layer.in_features, layer.out_features
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(f"x must have shape (n, {n_in}) for this layer, got {x.shape}")
    names = list(input_names) if input_names is not None else [f"x{p}" for p in range(n_in)]
    grid = np.linspace(x.min(axis=0), x.max(axis=0), num)  # (num, n_in)
    edges = np.asarray(layer.edge_activations(jnp.asarray(grid, jnp.float32)))  # (num, in, out)
    fig = _figure_class()(figsize=(2.2 * n_in + 1, 1.6 * n_out + 1), layout="constrained")
    axes = np.asarray(fig.subplots(n_out, n_in, squeeze=False))
    for q in range(n_out):
        for p in range(n_in):
            ax = axes[q, p]
            ax.plot(grid[:, p], edges[:, p, q], lw=1.5)
            ax.tick_params(labelsize=7)
            if q == 0:
                ax.set_title(names[p], fontsize=9)
            if p == 0:
                ax.set_ylabel(f"out {q}", fontsize=9)
    fig.suptitle(title or "Edge functions phi[q, p]")
    return _finish(fig, path)
