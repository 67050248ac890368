"""Refining and snapping the constants of symbolic edges."""

import numpy as np
import pytest
import sympy
from flax import nnx

import kanjax
from kanjax import symbolic


def _sin_model(a, c):
    model = kanjax.KAN([1, 1], rngs=nnx.Rngs(0))
    model.layers[0].set_symbolic(0, 0, "sin", (a, 0.0, c, 0.0))
    return model


def _data(c):
    x = np.linspace(-1, 1, 200)[:, None]
    return x, c * np.sin(np.pi * x)


def test_constants_near_pi_and_one_become_pi_and_one():
    model = _sin_model(3.14159, 0.99998)
    x, y = _data(1.0)
    out = symbolic.refine_constants(model, x, y)
    rmse_before, rmse_after = out["rmse"]
    assert rmse_after < 1e-7 < rmse_before
    (expr,), (u,) = symbolic.symbolic_formula(model, ["u"], digits=4)
    assert expr == sympy.sin(sympy.pi * u)


def test_a_constant_stays_when_snapping_would_raise_the_loss():
    model = _sin_model(3.1416, 0.70003)
    x, y = _data(0.7)
    symbolic.refine_constants(model, x, y)
    (expr,), (u,) = symbolic.symbolic_formula(model, ["u"], digits=4)
    assert expr == sympy.Float(0.7, 15) * sympy.sin(sympy.pi * u)
    # snapping 0.7 to the nearest simple value (2/3) would raise the RMSE far beyond tol
    snapped = np.sqrt(np.mean((2 / 3 * np.sin(np.pi * x) - y) ** 2))
    assert snapped > 1e-2
    # on noisy data (sigma 0.05) 2/3 raises the RMSE by about 1%: the tolerance decides
    noisy = y + 0.05 * np.random.default_rng(0).standard_normal(y.shape)
    for loss_tol, snapped in ((0.1, True), (0.001, False)):
        model = _sin_model(3.1416, 0.70003)
        symbolic.refine_constants(model, x, noisy, loss_tol=loss_tol)
        (expr,), _ = symbolic.symbolic_formula(model, ["u"], digits=4)
        assert (sympy.Rational(2, 3) in expr.atoms(sympy.Rational)) == snapped, expr


def test_refine_leaves_the_model_alone_on_bad_input():
    model = _sin_model(3.0, 1.0)
    before = model.layers[0].symbolic_edge(0, 0)
    with pytest.raises(ValueError, match="finite"):
        symbolic.refine_constants(model, np.full((4, 1), np.nan), np.zeros((4, 1)))
    numeric = kanjax.KAN([1, 1], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"edge \(0, 0\) is a numeric B-spline"):
        symbolic.refine_constants(numeric, np.zeros((4, 1)), np.zeros((4, 1)))
    assert model.layers[0].symbolic_edge(0, 0) == before


def test_one_over_two_pi_is_a_simple_value_but_not_every_multiple_of_one_over_pi():
    from kanjax import hostnet

    assert hostnet.simple_value(1 / (2 * np.pi), 1.2e-7) == 1 / (2 * sympy.pi)
    assert hostnet.simple_value(-3 / (4 * np.pi), 1.2e-7) == -3 / (4 * sympy.pi)
    # 11/(5 pi) = 0.70028 has a large numerator: not offered, so 0.7003 is no simple value
    assert hostnet.simple_value(11 / (5 * np.pi), 1.2e-7) is None
