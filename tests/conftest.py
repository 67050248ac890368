import os

import jax
import pytest

# The tests check maths, not speed, and most of their time on a fresh machine (an empty
# compilation cache) is XLA compiling hundreds of small programs. On CPU they compile with
# the options kanjax itself uses for small programs (kanjax._xla.FAST_COMPILE_OPTIONS), set
# here before JAX starts its backend (subprocesses and notebook kernels inherit them).
# KANJAX_TEST_XLA_DEFAULTS=1, or XLA_FLAGS set by the caller, keeps XLA's own defaults.
_FAST_COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=1"
if (not os.environ.get("XLA_FLAGS") and os.environ.get("KANJAX_TEST_XLA_DEFAULTS") != "1"
        and tuple(int(v) for v in jax.__version__.split(".")[:2]) >= (0, 10)):
    os.environ["XLA_FLAGS"] = _FAST_COMPILE_FLAGS

# Strict numerics for the whole suite: no silent rank promotion.
jax.config.update("jax_numpy_rank_promotion", "raise")
# The tests check float32 maths against float64 references on every backend. GPUs multiply
# float32 matrices in TF32 by default (XLA's "default" precision), ~1e-4 relative; ask for
# full float32 here. The library itself leaves the backend's default (users choose speed).
jax.config.update("jax_default_matmul_precision", "highest")


# Items that take longest (a notebook kernel, subprocesses importing JAX) run first, so that
# pytest-xdist's workers do not end with one of them while the other worker is idle.
_LONG_FIRST = ("notebooks/", "tests/test_checkpoint_faults.py", "tests/test_sharding.py",
               "tests/test_compile_cache.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((i for i, p in enumerate(_LONG_FIRST) if item.nodeid.startswith(p)),
                    len(_LONG_FIRST))
    items.sort(key=rank)  # stable: the order within each group is kept


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running checks (deselect with -m 'not slow')")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
