import jax
import pytest

# Strict numerics for the whole suite: no silent rank promotion.
jax.config.update("jax_numpy_rank_promotion", "raise")
# The tests check float32 maths against float64 references on every backend. GPUs multiply
# float32 matrices in TF32 by default (XLA's "default" precision), ~1e-4 relative; ask for
# full float32 here. The library itself leaves the backend's default (users choose speed).
jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running checks (deselect with -m 'not slow')")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
