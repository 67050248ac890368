"""Plots of a KAN and of a training ``History`` (matplotlib, imported only when a plot is drawn).

* :func:`plot_network` (also ``kanjax.plot``): the whole network, each edge's learned
  function drawn in a small inset, faded by importance;
* :func:`plot_layer`: every edge function of one layer in a grid;
* :func:`plot_loss`, :func:`plot_grad_norms`: curves of a :class:`~kanjax.History`.

Every function returns the figure and, given ``path``, also saves it there (format from
the extension: PNG, SVG, PDF, ...). Figures are built with ``matplotlib.figure.Figure``
directly, so they render without a display and without touching pyplot's global state; in
a notebook the returned figure shows inline.
"""

from __future__ import annotations

import io
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kanjax.history import History
from kanjax.nn import KAN, KANLayer
from kanjax.pruning import layer_views, node_columns

__all__ = ["plot_network", "plot_layer", "plot_loss", "plot_grad_norms"]


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


def _check_path(path) -> str | None:
    """``path`` as a string, checked before anything is drawn: a file name with a format
    matplotlib writes, in a folder that exists; ``None`` stays ``None``."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name (str or os.PathLike) or None, got "
                        f"{type(path).__name__} {path!r}")
    path = os.fspath(path)
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in formats:
        raise ValueError(f"path {path!r}: the extension gives the format; use one of "
                         f"{', '.join('.' + f for f in sorted(formats))}, e.g. 'plot.png'")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder):
        raise FileNotFoundError(f"path {path!r}: " + (
            "is a folder; give a file name in it" if os.path.isdir(path) else
            f"the folder {folder!r} does not exist; create it first"))
    return path


def _check_history(what: str, history) -> None:
    if not isinstance(history, History):
        raise TypeError(f"{what} needs a kanjax.History (the second value kanjax.train "
                        f"returns, or kanjax.History.load(file)), got {type(history).__name__}")


def _finish(fig, path):
    if path is not None:
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}{os.path.splitext(path)[1]}"
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    return fig


def plot_loss(history: History, path: str | os.PathLike | None = None, *, title: str | None = None):
    """Train (and validation) loss per epoch on a log scale; saved to ``path`` if given."""
    _check_history("plot_loss", history)
    _check_path(path)
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
    _check_history("plot_grad_norms", history)
    _check_path(path)
    fig, ax = _figure()
    for name, values in history.grad_norm.items():
        ax.semilogy(range(1, len(values) + 1), values, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("gradient L2 norm")
    ax.set_title(title or "Gradient norm per layer")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
            hasattr(value, "dtype") and getattr(value, "shape", None) == ()):
        raise TypeError(f"{name} must be a finite number > 0, got {value!r}")
    if not 0 < float(value) < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_real(what: str, x) -> None:

    if x.dtype == object or np.iscomplexobj(x) or not (
            np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{what}: x must hold real numbers, got dtype {x.dtype}; pass e.g. "
                        "np.asarray(x, np.float32)")


def _check_layer_samples(layer, x) -> None:
    """Refuse ``x`` that is not ``(n, n_in)`` finite real samples of ``layer``, saying how to get them."""

    n_in = layer.in_features
    _check_real("plot_layer", x)
    if x.ndim != 2 or x.shape[1] != n_in or x.shape[0] == 0:
        raise ValueError(
            f"plot_layer: x must have shape (n, {n_in}) with n >= 1 (this layer's inputs), got "
            f"{x.shape}. For a hidden layer l of a KAN, pass what it receives: "
            f"kanjax.plot_layer(model.layers[l], kanjax.layer_inputs(model, x)[l])")
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(x), axis=-1)))
        raise ValueError(f"plot_layer: x has {bad} of {x.shape[0]} rows with nan or inf; the "
                         "curves span each column's range, so every sample must be finite")


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
      Masked (pruned) edges get an empty panel marked "masked"; edges marked symbolic by
      the layer's ``sym_mask`` are drawn in red.
    """

    if not isinstance(layer, KANLayer):
        raise TypeError(f"plot_layer needs a kanjax.KANLayer, got {type(layer).__name__}; for "
                        "a whole KAN pass one of its layers, e.g. model.layers[0]")
    x = np.asarray(x)
    n_in, n_out = layer.in_features, layer.out_features
    _check_layer_samples(layer, x)
    num = _check_count("num", num, 2)
    _check_path(path)
    names = ([f"x{p}" for p in range(n_in)] if input_names is None
             else _check_names("input_names", input_names, n_in, "x"))
    grid = np.linspace(x.min(axis=0), x.max(axis=0), num)  # (num, n_in)
    edges = np.asarray(layer.edge_activations(jnp.asarray(grid, layer.param_dtype)))
    fig = _figure_class()(figsize=(2.2 * n_in + 1, 1.6 * n_out + 1), layout="constrained")
    axes = np.asarray(fig.subplots(n_out, n_in, squeeze=False))
    drawn, symbolic = _edge_masks(layer)
    for q in range(n_out):
        for p in range(n_in):
            ax = axes[q, p]
            if drawn[p, q]:
                ax.plot(grid[:, p], edges[:, p, q], lw=1.5,
                        color=_SYMBOLIC_COLOR if symbolic[p, q] else "tab:blue")
                name = _symbolic_name(layer, p, q) if symbolic[p, q] else None
                if name:
                    ax.text(0.03, 0.95, name, transform=ax.transAxes, ha="left", va="top",
                            fontsize=7, color=_SYMBOLIC_COLOR)
            else:
                ax.text(0.5, 0.5, "masked", transform=ax.transAxes, ha="center",
                        va="center", fontsize=8, color="0.5")
                ax.set_xticks([])
                ax.set_yticks([])
            ax.tick_params(labelsize=7)
            if q == 0:
                ax.set_title(names[p], fontsize=9)
            if p == 0:
                ax.set_ylabel(f"out {q}", fontsize=9)
    fig.suptitle(title or "Edge functions phi[q, p]")
    return _finish(fig, path)


def _as_bool_edges(value, layer, name: str):
    """``value`` (array or NNX variable) as a boolean ``(n_in, n_out)`` array; None: all False."""

    shape = (layer.in_features, layer.out_features)
    if value is None:
        return np.zeros(shape, bool)
    arr = np.asarray(value[...] if isinstance(value, nnx.Variable) else value)
    if arr.shape != shape:
        raise ValueError(f"layer.{name} must have shape {shape}, got {arr.shape}")
    return arr != 0


def _edge_masks(layer):
    """``(drawn, symbolic)``: unmasked edges, and edges marked symbolic (``sym_mask``, if any)."""
    mask = getattr(layer, "mask", None)
    drawn = ~_as_bool_edges(None, layer, "mask") if mask is None else _as_bool_edges(
        mask, layer, "mask")
    symbolic = _as_bool_edges(getattr(layer, "sym_mask", None), layer, "sym_mask")
    return drawn, symbolic


def _symbolic_name(layer, p: int, q: int) -> str | None:
    """The name of edge ``(p, q)``'s symbolic function, when the layer records one."""

    names = getattr(layer, "sym_names", None)
    if names is None:
        return None
    try:
        index = getattr(layer, "sym_index", None)
        if index is not None:
            index = index[...] if isinstance(index, nnx.Variable) else index
            name = names[int(np.asarray(index)[p, q])]
        else:
            name = names[p][q]
    except (TypeError, IndexError, KeyError, ValueError):
        return None
    return name if isinstance(name, str) and name else None


def _check_names(what: str, names, n: int, default: str) -> list[str]:
    if names is None:
        return [f"${default}_{{{i}}}$" for i in range(n)]
    if isinstance(names, str):
        raise ValueError(f"{what} must be a sequence of {n} labels, got the string {names!r}")
    names = [str(v) for v in names]
    if len(names) != n:
        raise ValueError(f"{what} must have {n} entries (one per node), got {len(names)}")
    return names


_SPLINE_COLOR = "black"
_SYMBOLIC_COLOR = "tab:red"


def plot_network(model, x, *, in_vars=None, out_vars=None, scale: float = 1.0,
                 beta: float = 3.0, title: str | None = None, ax=None,
                 path: str | os.PathLike | None = None, max_points: int = 200):
    """Draw a KAN as a graph: nodes in rows, each edge's learned function in a small inset.

    Layers run bottom to top (inputs at the bottom, outputs at the top). Every unmasked
    edge ``p -> q`` of layer ``l`` is a line from node ``p`` through an inset axes halfway
    up to node ``q``; the inset shows ``phi_qp`` over the values that edge receives from
    ``x`` (its input node's activations, sorted). Line and curve opacity is
    ``tanh(beta * A / max A)`` with ``A`` the layer's :func:`kanjax.edge_importance`
    (floored at 0.05 so weak edges stay faintly visible). Masked (pruned) edges are not
    drawn; edges marked symbolic by a layer's ``sym_mask`` are drawn in red.

    Args:
      model: a :class:`kanjax.KAN`.
      x: sample inputs, shape ``(n, n_in)``; they set each curve's range and the
        importance scores.
      in_vars, out_vars: labels of the input and output nodes (strings, mathtext such as
        ``"$x_1$"`` allowed); default ``x_i`` and ``y_i``.
      scale: size factor of the figure (and of the insets when ``ax`` is given).
      beta: opacity sharpness, see above.
      title: title of the plot.
      ax: draw into these axes (their limits are replaced) instead of a new figure.
      path: save the figure there (PNG, SVG, PDF, ... by extension).
      max_points: at most this many sorted sample points per curve (evenly spaced ranks,
        always including the smallest and largest value).

    Returns:
      The figure. The insets are ``ax.child_axes`` labelled ``"phi[l](p,q)"``; their
      single line holds the sample points and ``phi_qp`` there.
    """
    if not isinstance(model, KAN):
        raise TypeError(f"plot_network needs a kanjax.KAN, got {type(model).__name__}")
    layers = list(model.layers)
    widths = [layers[0].in_features] + [layer.out_nodes for layer in layers]
    x = _check_network_samples(x, widths[0])
    in_vars = _check_names("in_vars", in_vars, widths[0], "x")
    out_vars = _check_names("out_vars", out_vars, widths[-1], "y")
    scale, beta = _check_positive("scale", scale), _check_positive("beta", beta)
    max_points = _check_count("max_points", max_points, 2)
    _check_path(path)

    curves, edges = _network_numbers(model, x, beta, max_points)
    slots = max(1, max(len(e[0]) for e in edges))
    fig, ax, geometry = _network_axes(ax, scale, slots, len(layers), title)
    node_x = [(np.arange(n) + 0.5) / n for n in widths]
    font = 10 * min(scale, 1.5)
    _draw_edges(ax, layers, curves, edges, node_x, geometry, scale, font)
    for l, xs in enumerate(node_x):
        mult = model.mult_nodes[l]  # multiplication nodes (the last ones) drawn as squares
        for part, marker in ((xs[:len(xs) - mult], "o"), (xs[len(xs) - mult:], "s")):
            ax.scatter(part, np.full(len(part), float(l)), s=28 * min(scale, 1.5) ** 2,
                       c="black", marker=marker, zorder=3, linewidths=0)
    for xv, label in zip(node_x[0], in_vars):
        ax.text(xv, -0.12, label, ha="center", va="top", fontsize=font)
    for xv, label in zip(node_x[-1], out_vars):
        ax.text(xv, len(layers) + 0.12, label, ha="center", va="bottom", fontsize=font)
    if title:
        ax.set_title(title, fontsize=1.2 * font)
    return _finish(fig, path)


def _check_network_samples(x, n_in: int) -> np.ndarray:
    x = np.asarray(x)
    _check_real("plot_network", x)
    if x.ndim != 2 or x.shape[1] != n_in or x.shape[0] == 0:
        raise ValueError(f"x must have shape (n, {n_in}) with n >= 1 for this model, "
                         f"got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains non-finite values (nan or inf); every sample must be finite")
    return x


def _network_numbers(model, x: np.ndarray, beta: float, max_points: int):
    """Per layer: the sorted sample points and ``phi`` there (one compiled program for all
    layers), and the drawn edges ``(k, 2)`` with their opacities and symbolic flags."""
    ranks = np.unique(np.linspace(0, x.shape[0] - 1, min(x.shape[0], max_points)).round())
    # the sorted samples at those ranks ("nearest" quantiles hit them exactly)
    q = jnp.asarray(ranks / max(x.shape[0] - 1, 1), jnp.float32)
    per_layer = jax.device_get(
        layer_views(model, jnp.asarray(x, model.layers[0].param_dtype), q, "nearest"))
    curves, edges = [], []
    for layer, (score, points, phi) in zip(model.layers, per_layer):
        drawn, sym = _edge_masks(layer)
        top = float(score[drawn].max()) if drawn.any() else 0.0
        alpha = np.tanh(beta * score / top) if top > 0 else np.zeros_like(score)
        curves.append((points, phi))
        edges.append((np.argwhere(drawn), np.clip(alpha, 0.05, 1.0), sym))  # p-major
    return curves, edges


def _network_axes(ax, scale: float, slots: int, n_layers: int, title):
    """``(fig, ax, (inset_w, inset_h))``: layer l's nodes at height l, insets at l + 1/2,
    x in [0, 1]; a new figure sized to the widest layer unless ``ax`` is given."""
    if ax is None:
        width_in = scale * float(np.clip(0.45 * slots, 5.0, 28.0))
        inset_w_in = min(0.82 * width_in / slots, 1.1 * scale)
        inset_h_in = float(np.clip(inset_w_in, 0.3 * scale, 0.8 * scale))
        gap_in = max(inset_h_in / 0.35, 1.4 * scale)  # between two rows of nodes
        title_in = 0.4 * scale if title else 0.0
        height_in = gap_in * (n_layers + 0.9) + title_in
        fig = _figure_class()(figsize=(width_in, height_in))
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - title_in / height_in))
    else:
        fig = ax.figure
    bbox = ax.get_position()
    ax_w_in = bbox.width * fig.get_figwidth()
    ax_h_in = bbox.height * fig.get_figheight()
    y_lo, y_hi = -0.45, n_layers + 0.45
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(y_lo, y_hi)
    ax.set_axis_off()
    inset_w = min(0.82 / slots, 1.1 * scale / ax_w_in)  # data units
    inset_h_in = float(np.clip(inset_w * ax_w_in, 0.3 * scale, 0.8 * scale))
    return fig, ax, (inset_w, min(inset_h_in * (y_hi - y_lo) / ax_h_in, 0.6))


def _draw_edges(ax, layers, curves, edges, node_x, geometry, scale: float, font: float) -> None:
    """Each drawn edge: a line from its input node through its inset to its output node."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgba

    inset_w, inset_h = geometry
    segments, colors = [], []
    for l, ((layer_edges, alpha, sym), (points, phi)) in enumerate(zip(edges, curves)):
        centres = (np.arange(len(layer_edges)) + 0.5) / max(len(layer_edges), 1)
        node_of = np.zeros(layers[l].out_features, int)  # edge column -> node it feeds
        for node, cols in enumerate(node_columns(layers[l])):
            node_of[cols] = node
        for (p, q), cx in zip(layer_edges, centres):
            color = _SYMBOLIC_COLOR if sym[p, q] else _SPLINE_COLOR
            a = float(alpha[p, q])
            segments.append([(node_x[l][p], l), (cx, l + 0.5 - inset_h / 2)])
            segments.append([(cx, l + 0.5 + inset_h / 2), (node_x[l + 1][node_of[q]], l + 1)])
            colors += [(color, a), (color, a)]
            inset = ax.inset_axes((cx - inset_w / 2, l + 0.5 - inset_h / 2, inset_w, inset_h),
                                  transform=ax.transData, label=f"phi[{l}]({p},{q})")
            inset.plot(points[:, p], phi[:, p, q], color=color, alpha=a, lw=1.2 * min(scale, 1.5))
            _style_inset(inset, color, a)
            name = _symbolic_name(layers[l], p, q) if sym[p, q] else None
            if name:
                inset.set_title(name, fontsize=0.7 * font, color=color, alpha=a, pad=1.5)
    ax.add_collection(LineCollection(segments, colors=[to_rgba(c, a) for c, a in colors],
                                     linewidths=0.8 * min(scale, 1.5), zorder=1))


def _style_inset(inset, color, alpha: float) -> None:
    inset.set_xticks([])
    inset.set_yticks([])
    inset.set_facecolor("none")
    for spine in inset.spines.values():
        spine.set_edgecolor(color)
        spine.set_alpha(alpha)
        spine.set_linewidth(0.6)
