"""kanjax: Kolmogorov-Arnold Networks in JAX and Flax NNX.

Layout, from the bottom up:

* :mod:`kanjax.basis` - pure basis functions (power/Taylor, B-spline);
* :mod:`kanjax.layer` - pure KAN layer maths;
* :mod:`kanjax.nn` - thin Flax NNX modules (``KANLayer``, ``KAN``, ``MLP``);
* :mod:`kanjax.training` - ``train``: one compiled ``lax.scan`` program per epoch;
* :mod:`kanjax.plotting` - loss and gradient-norm plots (matplotlib, imported lazily).
"""

from kanjax import basis, grids, layer, losses
from kanjax.basis import bspline_basis, power_basis, uniform_grid
from kanjax.layer import edge_activations, kan_layer
from kanjax.nn import KAN, MLP, EdgeMask, KANLayer, SplineGrid
from kanjax.pruning import edge_importance, node_importance, prune
from kanjax.training import (
    History,
    TrainingDiverged,
    ensemble_member,
    evaluate,
    make_ensemble,
    train,
    train_ensemble,
)

__version__ = "0.1.0"

__all__ = [
    "KAN",
    "KANLayer",
    "MLP",
    "SplineGrid",
    "EdgeMask",
    "edge_importance",
    "node_importance",
    "prune",
    "History",
    "TrainingDiverged",
    "train",
    "train_ensemble",
    "make_ensemble",
    "ensemble_member",
    "evaluate",
    "basis",
    "grids",
    "layer",
    "losses",
    "bspline_basis",
    "power_basis",
    "uniform_grid",
    "kan_layer",
    "edge_activations",
    "__version__",
]
