"""Symbolic edges, edge fitting and closed-form formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from flax import nnx

import kanjax
from kanjax import functions, symbolic

# edges set by hand to known functions: (name, (a, b, c, d)) in canonical form
KNOWN = [
    ("sin", (3.0, 0.4, 1.2, -0.3)),
    ("exp", (1.5, 0.0, 0.7, 0.2)),
    ("x^2", (1.0, 0.5, 2.0, 0.1)),
    ("tanh", (3.0, -0.5, 1.0, 0.0)),
    ("gaussian", (2.0, 0.5, 1.0, 0.0)),
    ("arctan", (4.0, 1.0, -0.5, 0.3)),
    ("cos", (2.0, 0.0, 1.0, 0.0)),
    ("x^3", (1.0, 0.2, 0.8, 0.0)),
]


def _eval(name, affine, x):
    a, b, c, d = affine
    return c * np.asarray(functions.get_function(name).fn(jnp.asarray(a * x + b))) + d


def test_fit_edges_recovers_functions_and_affine_parameters():
    x = np.linspace(-1, 1, 128, dtype=np.float32)
    xs = np.broadcast_to(x, (len(KNOWN), x.size))
    ys = np.stack([_eval(n, aff, x) for n, aff in KNOWN]).astype(np.float32)
    names, theta, r2 = symbolic.fit_edges(xs, ys)
    assert theta.shape == (len(names), len(KNOWN), 4) and r2.shape == (len(names), len(KNOWN))
    for e, (name, affine) in enumerate(KNOWN):
        best = symbolic._rank(names, theta[:, e], r2[:, e], 2.0, 0.5)[0]
        assert best.name == name, (name, best)
        assert best.r2 > 1 - 1e-5
        np.testing.assert_allclose(best.affine, affine, atol=2e-3, rtol=2e-3, err_msg=name)


def test_suggest_symbolic_on_a_hand_set_edge():
    model = kanjax.KAN([2, 2, 1], rngs=nnx.Rngs(0))
    model.layers[0].set_symbolic(1, 0, "sin", (2.5, 0.3, 0.8, 0.1))
    x = jax.random.uniform(jax.random.key(0), (500, 2), minval=-1, maxval=1)
    top = symbolic.suggest_symbolic(model, x, 0, 1, 0, top_k=3)
    assert len(top) == 3 and top[0].name == "sin"
    np.testing.assert_allclose(top[0].affine, (2.5, 0.3, 0.8, 0.1), atol=2e-3)
    assert top[0].score >= top[1].score


def test_symbolic_edge_values_and_layer_sum():
    model = kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(1))
    layer = model.layers[0]
    x = jax.random.uniform(jax.random.key(1), (16, 2), minval=-1, maxval=1)
    numeric = layer.edge_activations(x)
    layer.set_symbolic(0, 1, "x^2", (1.0, 0.5, 2.0, 0.1))
    edges = layer.edge_activations(x)
    np.testing.assert_allclose(edges[:, 0, 1], _eval("x^2", (1.0, 0.5, 2.0, 0.1), np.asarray(x[:, 0])),
                               rtol=1e-5, atol=1e-6)
    # the other edges are untouched; the layer output is the sum of its edges
    keep = np.ones((2, 3), bool)
    keep[0, 1] = False
    np.testing.assert_allclose(np.asarray(edges)[:, keep], np.asarray(numeric)[:, keep], rtol=1e-6)
    np.testing.assert_allclose(layer(x), edges.sum(axis=1), rtol=1e-5, atol=1e-6)
    assert layer.symbolic_edge(0, 1)[0] == "x^2" and layer.symbolic_edge(0, 0) is None
    layer.unset_symbolic(0, 1)
    np.testing.assert_allclose(layer.edge_activations(x), numeric, rtol=1e-6)


def test_symbolic_layer_jit_equals_eager_and_guarded_gradients_are_finite():
    model = kanjax.KAN([2, 2], rngs=nnx.Rngs(2))
    layer = model.layers[0]
    layer.set_symbolic(0, 0, "1/x", (1.0, 0.0, 1.0, 0.0))
    layer.set_symbolic(0, 1, "log", (1.0, 0.0, 1.0, 0.0))
    layer.set_symbolic(1, 0, "sqrt", (1.0, 0.0, 1.0, 0.0))
    layer.set_symbolic(1, 1, "tan", (1.0, 0.0, 1.0, 0.0))
    x = jnp.array([[0.0, np.pi / 2], [-0.5, -1.0], [0.3, 0.2]], jnp.float32)
    eager = model(x)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(model, x), eager, rtol=1e-5)
    grads = nnx.grad(lambda m: jnp.sum(m(x)))(model)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert bool(jnp.isfinite(eager).all())


def _random_symbolic_model(seed):
    model = kanjax.KAN([2, 3, 1], rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    choices = [("sin", (2.0, 0.3, 1.0, 0.1)), ("x^2", (1.0, -0.2, 0.5, 0.0)),
               ("tanh", (1.5, 0.0, 0.7, -0.2)), ("exp", (0.5, 0.0, 0.3, 0.0)), ("x", (1.0, 0.0, -0.8, 0.2))]
    for layer in model.layers:
        for i in range(layer.in_features):
            for j in range(layer.out_features):
                name, aff = choices[rng.integers(len(choices))]
                layer.set_symbolic(i, j, name, tuple(np.asarray(aff) * rng.uniform(0.7, 1.3, 4)))
    return model


def test_formula_of_an_all_symbolic_model_equals_the_model():
    model = _random_symbolic_model(3)
    model.layers[1].mask[...] = model.layers[1].mask[...].at[2, 0].set(0)  # a pruned edge drops out
    exprs, syms = symbolic.symbolic_formula(model, digits=None, simplify=False)
    f = sympy.lambdify(syms, exprs[0], "numpy")
    x = np.asarray(jax.random.uniform(jax.random.key(3), (200, 2), minval=-1, maxval=1))
    np.testing.assert_allclose(f(x[:, 0].astype(np.float64), x[:, 1].astype(np.float64)),
                               np.asarray(model(x))[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("squash", ["tanh", None])
def test_formula_of_a_taylor_kan_is_exact(squash):
    model = kanjax.KAN([2, 3, 2], basis="taylor", degree=4, squash=squash, use_bias=True,
                       rngs=nnx.Rngs(4))
    exprs, syms = symbolic.symbolic_formula(model, ["u", "v"], digits=None, simplify=False)
    assert [s.name for s in syms] == ["u", "v"] and len(exprs) == 2
    x = np.asarray(jax.random.uniform(jax.random.key(4), (100, 2), minval=-1, maxval=1), np.float64)
    got = np.stack([sympy.lambdify(syms, e, "numpy")(x[:, 0], x[:, 1]) for e in exprs], -1)
    np.testing.assert_allclose(got, np.asarray(model(x.astype(np.float32))), rtol=1e-4, atol=1e-5)


def test_formula_needs_symbolic_bspline_edges():
    model = kanjax.KAN([2, 1], rngs=nnx.Rngs(0))
    model.layers[0].set_symbolic(0, 0, "sin", (1.0, 0.0, 1.0, 0.0))
    with pytest.raises(ValueError, match=r"edge \(1, 0\) is a numeric B-spline"):
        symbolic.symbolic_formula(model)


def test_rounding_is_user_controlled():
    model = kanjax.KAN([1, 1], rngs=nnx.Rngs(0))
    model.layers[0].set_symbolic(0, 0, "sin", (3.14159265, 0.0, 1.0000004, 0.0))
    (e2,), (x,) = symbolic.symbolic_formula(model, ["x"], digits=2, exact_constants=False)
    assert e2 == sympy.sin(sympy.Float(3.14, 15) * x)
    (e6,), _ = symbolic.symbolic_formula(model, ["x"], digits=6, exact_constants=False)
    assert sympy.Float(3.141593, 15) in e6.atoms(sympy.Float)
    # at float32 precision the constants are pi and 1: written exactly by default
    (exact,), _ = symbolic.symbolic_formula(model, ["x"], digits=2)
    assert exact == sympy.sin(sympy.pi * x)


def test_fix_symbolic_edges_keep_training():
    x = jax.random.uniform(jax.random.key(5), (256, 1), minval=-1, maxval=1)
    y = 0.8 * jnp.sin(2.0 * x) + 0.1
    model = kanjax.KAN([1, 1], rngs=nnx.Rngs(5))
    symbolic.fix_symbolic(model, 0, 0, 0, "sin", affine=(1.5, 0.0, 0.5, 0.0))
    coef_before = np.asarray(model.layers[0].coef[...])
    model, hist = kanjax.train(model, (x, y), epochs=60, batch_size=256, optimizer="lbfgs",
                               progress=False)
    name, (a, b, c, d) = model.layers[0].symbolic_edge(0, 0)
    assert name == "sin" and hist.train_loss[-1] < 1e-8 < hist.train_loss[0]
    np.testing.assert_allclose((a, b, c, d), (2.0, 0.0, 0.8, 0.1), atol=1e-3)
    # the spline behind a symbolic edge gets no gradient
    np.testing.assert_array_equal(np.asarray(model.layers[0].coef[...]), coef_before)


def test_fix_symbolic_fits_the_current_curve():
    model = kanjax.KAN([1, 1], rngs=nnx.Rngs(6))  # one numeric edge: output == edge
    xs = np.linspace(-1, 1, symbolic._NUM_SAMPLES, dtype=np.float32)[:, None]
    before = np.asarray(model(xs), np.float64)[:, 0]
    fit = symbolic.fix_symbolic(model, 0, 0, 0, "tanh", jnp.linspace(-1, 1, 301)[:, None])
    after = np.asarray(model(xs), np.float64)[:, 0]
    assert model.layers[0].symbolic_edge(0, 0) == ("tanh", fit.affine)
    # the reported R^2 is that of the edge now in the model against the numeric curve
    # (the fit's 301 points and these samples differ, and with them R^2 in the 4th digit)
    r2 = 1 - np.sum((after - before) ** 2) / np.sum((before - before.mean()) ** 2)
    np.testing.assert_allclose(fit.r2, r2, atol=1e-3)
    assert r2 > 0.5


def test_auto_symbolic_recovers_trained_edges_and_prune_keeps_them():
    x = jax.random.uniform(jax.random.key(7), (512, 2), minval=-1, maxval=1)
    y = jnp.sin(jnp.pi * x[:, :1]) + x[:, 1:] ** 2
    model = kanjax.KAN([2, 1], grid_size=10, rngs=nnx.Rngs(7))
    model, _ = kanjax.train(model, (x, y), epochs=80, batch_size=512, optimizer="lbfgs",
                            progress=False)
    fixed = symbolic.auto_symbolic(model, x, r2_threshold=0.999)
    assert {k: v.name for k, v in fixed.items()} == {(0, 0, 0): "sin", (0, 1, 0): "x^2"}
    model, _ = kanjax.train(model, (x, y), epochs=30, batch_size=512, optimizer="lbfgs",
                            progress=False)
    (expr,), (u, v) = symbolic.symbolic_formula(model, ["u", "v"], digits=3,
                                                 exact_constants=False)
    assert sympy.simplify(expr - (sympy.sin(sympy.Float(3.142, 15) * u) + v**2)) == 0
    pruned = kanjax.prune(model, x, threshold=0.0)
    assert pruned.layers[0].symbolic_edge(0, 0)[0] == "sin"
    np.testing.assert_allclose(pruned(x), model(x), rtol=1e-6)


def test_bad_symbolic_requests_raise_clear_errors():
    model = kanjax.KAN([2, 2], rngs=nnx.Rngs(0))
    with pytest.raises(KeyError, match="unknown symbolic function 'sinc'"):
        model.layers[0].set_symbolic(0, 0, "sinc")
    with pytest.raises(IndexError, match=r"edge \(2, 0\) is outside"):
        model.layers[0].set_symbolic(2, 0, "sin")
    with pytest.raises(ValueError, match="affine must be 4 finite numbers"):
        model.layers[0].set_symbolic(0, 0, "sin", (1.0, np.nan, 1.0, 0.0))
    with pytest.raises(ValueError, match="needs data x"):
        symbolic.fix_symbolic(model, 0, 0, 0, "sin")
    with pytest.raises(ValueError, match="non-finite"):
        symbolic.fit_edges(np.full((1, 8), np.nan), np.zeros((1, 8)))
    with pytest.raises(ValueError, match="already in the library"):
        functions.register_function("sin", jnp.sin, sympy.sin)


def test_user_registered_function_is_fitted_and_written():
    name = "sinh_test"
    functions.register_function(name, jnp.sinh, sympy.sinh, complexity=2, overwrite=True)
    try:
        x = np.linspace(-1, 1, 64, dtype=np.float32)
        names, theta, r2 = symbolic.fit_edges(x, 0.5 * np.sinh(1.7 * x) + 0.2, (name, "x", "x^3"))
        best = symbolic._rank(names, theta[:, 0], r2[:, 0], 2.0, 0.5)[0]
        assert best.name == name
        model = kanjax.KAN([1, 1], rngs=nnx.Rngs(0))
        model.layers[0].set_symbolic(0, 0, name, best.affine)
        (expr,), (u,) = symbolic.symbolic_formula(model, ["u"], digits=2)
        assert expr.has(sympy.sinh)
    finally:
        functions.LIBRARY.pop(name)


def test_ranking_prefers_the_quadratic_over_a_cosine_in_disguise():
    # a trained y**2 edge: flattened a little at the ends (as -c cos(0.29 y) is) plus noise;
    # the cosine fits marginally better, within the noise
    x = np.linspace(-1, 1, 128)
    y = x**2 - 0.00716 * x**4 + 8e-4 * np.random.default_rng(0).standard_normal(128)
    names, theta, r2 = symbolic.fit_edges(x, y)
    r2 = dict(zip(names, r2[:, 0]))
    assert r2["cos"] > r2["x^2"] > 1 - 2e-5  # the case: cos scores higher on R^2 alone
    k = names.index("cos")
    ranked = symbolic._rank(names, theta[:, 0], np.array(list(r2.values())), 2.0, 0.5, x, y)
    assert ranked[0].name == "x^2"
    # equivalence is judged against the quadratic's error, independently computed here
    quad = np.polynomial.polynomial.polyfit(x, y, 2)
    resid = np.polynomial.polynomial.polyval(x, quad) - y
    assert np.sum(resid**2) / np.sum((y - y.mean()) ** 2) <= 2 * (1 - r2["cos"])
    assert abs(theta[k, 0, 0]) * 2.0 > 0.3  # not the tiny-use rule: cos spans > 0.3 rad
    # a genuine cosine is still read as one
    yc = np.cos(2.5 * x)
    names, theta, r2c = symbolic.fit_edges(x, yc)
    assert symbolic._rank(names, theta[:, 0], r2c[:, 0], 2.0, 0.5, x, yc)[0].name in ("cos", "sin")


def _trained_sqrt_edge(lo):
    x = jnp.linspace(lo, 1.0, 512)[:, None]
    y = jnp.sqrt(jnp.maximum(x, 0.0))
    model = kanjax.KAN([1, 1], grid_size=20, rngs=nnx.Rngs(0))
    model, _ = kanjax.train(model, (x, y), epochs=60, batch_size=512, optimizer="lbfgs",
                            progress=False)
    return model, x


def test_auto_symbolic_skips_functions_whose_guard_is_active_on_the_data():
    model, x = _trained_sqrt_edge(-1.0)  # sqrt(max(x, 0)): the guarded sqrt fits it
    top = symbolic.suggest_symbolic(model, x, 0, 0, 0, top_k=30)
    sq = next(s for s in top if s.name == "sqrt")
    assert sq.r2 > 0.999 and not sq.guard_free
    with pytest.warns(UserWarning, match=r"layer 0 edge \(0,0\): sqrt"):
        fixed = symbolic.auto_symbolic(model, x, r2_threshold=0.9)
    assert fixed[(0, 0, 0)].name != "sqrt"
    (expr,), syms = symbolic.symbolic_formula(model, ["x"], digits=None)
    got = sympy.lambdify(syms, expr, "numpy")(np.asarray(x[:, 0], np.float64))
    np.testing.assert_allclose(got, np.asarray(model(x))[:, 0], rtol=1e-5, atol=1e-5)


def test_auto_symbolic_chooses_a_guarded_function_inside_its_domain():
    model, x = _trained_sqrt_edge(0.05)
    fixed = symbolic.auto_symbolic(model, x, r2_threshold=0.999)
    assert fixed[(0, 0, 0)].name == "sqrt"
    (expr,), syms = symbolic.symbolic_formula(model, ["x"], digits=None)
    got = sympy.lambdify(syms, expr, "numpy")(np.asarray(x[:, 0], np.float64))
    np.testing.assert_allclose(got, np.asarray(model(x))[:, 0], rtol=1e-5, atol=1e-5)


def test_guard_free_marks_singular_points():
    u = np.linspace(-1, 1, 11)
    assert not functions.guard_free("1/x", u).all()  # crosses 0
    assert functions.guard_free("1/x", u + 1.5).all()
    assert not functions.guard_free("log", u).all() and functions.guard_free("log", u + 1.01).all()
    assert functions.guard_free("sin", u).all()
    # where it says so, the guarded JAX function equals the exact one
    v = np.linspace(-3, 3, 601)
    for name in ("1/x", "log", "sqrt", "tan"):
        ok = functions.guard_free(name, v)
        guarded = np.asarray(functions.get_function(name).fn(jnp.asarray(v, jnp.float32)))
        with np.errstate(all="ignore"):
            exact = functions.numpy_fn(name)(v)
        np.testing.assert_allclose(guarded[ok], exact[ok], rtol=2e-5, atol=1e-6, err_msg=name)
        if name != "tan":  # no sample sits on a pole of tan: only its neighbours are flagged
            assert not np.allclose(guarded[~ok], exact[~ok], rtol=1e-2), name
