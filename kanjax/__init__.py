"""kanjax: Kolmogorov-Arnold Networks in JAX and Flax NNX.

Layout, from the bottom up:

* :mod:`kanjax.basis` - pure basis functions (power/Taylor, B-spline);
* :mod:`kanjax.layer` - pure KAN layer maths;
* :mod:`kanjax.nn` - thin Flax NNX modules (``KANLayer``, ``KAN``, ``MLP``);
* :mod:`kanjax.training` - ``train``: one compiled ``lax.scan`` program per epoch, built from
  :mod:`kanjax.train_config` (validated arguments), :mod:`kanjax.objective`,
  :mod:`kanjax.optimizers` (every optimizer an optax transformation, :mod:`kanjax.lm`),
  :mod:`kanjax.epoch` (the pure epoch program), :mod:`kanjax.driver` and
  :mod:`kanjax.hooks` (the host loop), :mod:`kanjax.fit`, :mod:`kanjax.ensemble`,
  :mod:`kanjax.schedule` (grid schedules), :mod:`kanjax.mesh` and :mod:`kanjax.history`;
* :mod:`kanjax.checkpoint` - ``save``/``load`` of models, histories and optimizer states
  (orbax arrays, JSON architecture; atomic), used by ``train(checkpoint_dir=...)``;
* :mod:`kanjax.functions`, :mod:`kanjax.symbolic` - closed-form edges: fitting
  (``suggest_symbolic``, ``auto_symbolic``, ``fix_symbolic``) and sympy formulas;
* :mod:`kanjax.compile_cache` - JAX's persistent compilation cache, on by default in a
  per-user directory (``KANJAX_COMPILATION_CACHE=0`` turns it off);
* :mod:`kanjax.plotting` - network plot (``kanjax.plot``), edge-function, loss and
  gradient-norm plots (matplotlib, imported lazily).
"""

from kanjax import basis, compile_cache, functions, grids, interop, layer, losses, symbolic
from kanjax.basis import bspline_basis, power_basis, uniform_grid
from kanjax.layer import edge_activations, kan_layer
from kanjax.nn import KAN, MLP, EdgeMask, KANLayer, SplineGrid, SymbolicIndex, SymbolicMask
from kanjax.pruning import attribution, edge_importance, node_importance, prune
from kanjax.plotting import plot_grad_norms, plot_layer, plot_loss, plot_network
from kanjax.plotting import plot_network as plot
from kanjax.symbolic import auto_symbolic, fix_symbolic, suggest_symbolic, symbolic_formula
from kanjax.symbolic import layered_formula, refine_constants
from kanjax.training import (
    History,
    TrainConfig,
    TrainingDiverged,
    ensemble_member,
    evaluate,
    make_ensemble,
    train,
    train_ensemble,
)
from kanjax.checkpoint import CheckpointError, load, save
from kanjax._xla import cpu_compile_options

__version__ = "0.1.0"

# JAX's persistent compilation cache in a per-user directory (kanjax.compile_cache), set
# before the first compilation of the process, when JAX reads it.
compile_cache.enable_default()

__all__ = [
    "KAN",
    "KANLayer",
    "MLP",
    "SplineGrid",
    "EdgeMask",
    "edge_importance",
    "node_importance",
    "attribution",
    "prune",
    "SymbolicMask",
    "SymbolicIndex",
    "suggest_symbolic",
    "fix_symbolic",
    "auto_symbolic",
    "symbolic_formula",
    "functions",
    "symbolic",
    "plot",
    "plot_network",
    "plot_layer",
    "plot_loss",
    "plot_grad_norms",
    "History",
    "TrainConfig",
    "TrainingDiverged",
    "train",
    "train_ensemble",
    "save",
    "load",
    "CheckpointError",
    "make_ensemble",
    "ensemble_member",
    "evaluate",
    "cpu_compile_options",
    "compile_cache",
    "layered_formula",
    "refine_constants",
    "basis",
    "grids",
    "interop",
    "layer",
    "losses",
    "bspline_basis",
    "power_basis",
    "uniform_grid",
    "kan_layer",
    "edge_activations",
    "__version__",
]
