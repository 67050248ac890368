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
  (orbax CheckpointManager steps: arrays, the model's typed config, a SHA-256 digest), used
  by ``train(checkpoint_dir=...)``;
* :mod:`kanjax.functions`, :mod:`kanjax.symbolic` - closed-form edges: fitting
  (``suggest_symbolic``, ``auto_symbolic``, ``fix_symbolic``) and sympy formulas;
* :mod:`kanjax.compile_cache` - JAX's persistent compilation cache, on by default in a
  per-user directory (``KANJAX_COMPILATION_CACHE=0`` turns it off);
* :mod:`kanjax.plotting` - network plot (``kanjax.plot``), edge-function, loss and
  gradient-norm plots (matplotlib, imported lazily).

``import kanjax`` itself loads no JAX, Flax, Optax or Orbax (so ``kanjax --help`` answers at
once): every public name resolves on first access, through a fixed name -> submodule table
(PEP 562 ``__getattr__``), and ``from kanjax import KAN`` works as usual.
"""

import functools
import importlib
import pkgutil
import sys

__version__ = "0.1.0"

# Public name -> (submodule, attribute in it); attribute None: the submodule itself.
_EXPORTS = {
    "KAN": ("nn", "KAN"),
    "KANLayer": ("nn", "KANLayer"),
    "MLP": ("nn", "MLP"),
    "SplineGrid": ("nn", "SplineGrid"),
    "EdgeMask": ("nn", "EdgeMask"),
    "SymbolicMask": ("nn", "SymbolicMask"),
    "SymbolicIndex": ("nn", "SymbolicIndex"),
    "layer_inputs": ("pruning", "layer_inputs"),
    "edge_importance": ("pruning", "edge_importance"),
    "node_importance": ("pruning", "node_importance"),
    "attribution": ("pruning", "attribution"),
    "prune": ("pruning", "prune"),
    "suggest_symbolic": ("symbolic", "suggest_symbolic"),
    "fix_symbolic": ("symbolic", "fix_symbolic"),
    "auto_symbolic": ("symbolic", "auto_symbolic"),
    "symbolic_formula": ("symbolic", "symbolic_formula"),
    "layered_formula": ("symbolic", "layered_formula"),
    "refine_constants": ("symbolic", "refine_constants"),
    "plot": ("plotting", "plot_network"),
    "plot_network": ("plotting", "plot_network"),
    "plot_layer": ("plotting", "plot_layer"),
    "plot_loss": ("plotting", "plot_loss"),
    "plot_grad_norms": ("plotting", "plot_grad_norms"),
    "History": ("history", "History"),
    "TrainConfig": ("training", "TrainConfig"),
    "TrainingDiverged": ("history", "TrainingDiverged"),
    "train": ("training", "train"),
    "train_ensemble": ("training", "train_ensemble"),
    "make_ensemble": ("training", "make_ensemble"),
    "ensemble_member": ("training", "ensemble_member"),
    "evaluate": ("training", "evaluate"),
    "save": ("checkpoint", "save"),
    "load": ("checkpoint", "load"),
    "CheckpointError": ("checkpoint", "CheckpointError"),
    "cpu_compile_options": ("_xla", "cpu_compile_options"),
    "bspline_basis": ("basis", "bspline_basis"),
    "power_basis": ("basis", "power_basis"),
    "uniform_grid": ("basis", "uniform_grid"),
    "kan_layer": ("layer", "kan_layer"),
    "edge_activations": ("layer", "edge_activations"),
}

# Submodules that load no JAX and compile nothing: importing them leaves the compilation
# cache alone (the command line, and the cache's own controls).
_LIGHT = frozenset({"cli", "__main__", "compile_cache", "history"})


@functools.cache
def _submodules() -> frozenset[str]:
    """The package's public modules (``kanjax.nn``, ...), reachable as attributes without an
    import of their own: the module files next to this one, found without importing any."""
    return frozenset(m.name for m in pkgutil.iter_modules(__path__)
                     if not m.name.startswith("_"))


def _enable_compile_cache() -> None:
    """JAX's persistent compilation cache (:mod:`kanjax.compile_cache`), once per process.

    Called before any kanjax module that uses JAX is loaded, so it is set before the first
    compilation of a kanjax function, when JAX reads it.
    """
    from kanjax import compile_cache

    compile_cache.enable_default_once()


class _CacheBeforeSubmodules:
    """Import-system finder that enables the compilation cache before a kanjax submodule loads.

    ``import kanjax.nn`` (or ``from kanjax.training import train``) does not go through the
    package's ``__getattr__``; this finder sees such imports first, enables the cache, and
    finds nothing itself, so Python's own finders load the module as usual.
    """

    kanjax_compile_cache_hook = True

    @staticmethod
    def find_spec(name, path=None, target=None):
        parts = name.split(".")
        if len(parts) == 2 and parts[0] == __name__ and parts[1] not in _LIGHT:
            _enable_compile_cache()


def __getattr__(name: str):
    if name in _EXPORTS:
        module_name, attribute = _EXPORTS[name]
    elif name in _submodules():
        module_name, attribute = name, None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module_name not in _LIGHT:
        _enable_compile_cache()
    module = importlib.import_module(f"{__name__}.{module_name}")
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | _submodules())


if not any(getattr(f, "kanjax_compile_cache_hook", False) for f in sys.meta_path):
    sys.meta_path.insert(0, _CacheBeforeSubmodules())
# With JAX already loaded (a notebook that imported it first), enabling the cache costs
# nothing, so it is done now and also covers the user's own jax.jit programs.
if "jax" in sys.modules:
    _enable_compile_cache()

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
    "layer_inputs",
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
