import jax
import pytest

# Strict numerics for the whole suite: no silent rank promotion.
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running checks (deselect with -m 'not slow')")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
