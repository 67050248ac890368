import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import BSpline

from kanjax import basis

# the scipy comparisons call the basis through jit: one compiled program per case instead
# of one per operation (eager dispatch), which is most of their time with a cold cache
_bspline_basis = jax.jit(basis.bspline_basis, static_argnums=2)
_uniform_basis = jax.jit(basis.uniform_bspline_basis, static_argnums=(3, 4))


def scipy_basis(x, knots, k):
    """All order-k B-splines on `knots` at `x` via scipy (zero outside the knots)."""
    n = len(knots) - k - 1
    out = np.zeros((len(x), n))
    for j in range(n):
        b = BSpline.basis_element(knots[j : j + k + 2], extrapolate=False)
        v = b(x)
        out[:, j] = np.nan_to_num(v, nan=0.0)
    return out


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("grid_size", [1, 3, 7])
def test_bspline_matches_scipy_uniform(order, grid_size, rng):
    knots = np.asarray(basis.uniform_grid(grid_size, order, (-1.5, 2.0)), np.float64)
    x = rng.uniform(knots[0] - 0.3, knots[-1] + 0.3, size=400)
    ours = np.asarray(_bspline_basis(jnp.asarray(x, jnp.float32)[:, None], knots, order))[:, 0]
    ref = scipy_basis(x, knots, order)
    # scipy's basis_element is closed on the right at the last knot; ours half-open.
    keep = ~np.isclose(x[:, None], knots[None, :], atol=1e-6).any(axis=1)
    np.testing.assert_allclose(ours[keep], ref[keep], atol=2e-5)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_bspline_matches_scipy_nonuniform_per_input(order, rng):
    n_in, g = 3, 6
    grids = np.sort(rng.uniform(-2, 2, size=(n_in, g + 2 * order + 1)), axis=1)
    x = np.stack([rng.uniform(grids[i, 0], grids[i, -1], 300) for i in range(n_in)], axis=1)
    ours = np.asarray(_bspline_basis(jnp.asarray(x, jnp.float32), grids, order))
    assert ours.shape == (300, n_in, g + order)
    for i in range(n_in):
        np.testing.assert_allclose(ours[:, i], scipy_basis(x[:, i], grids[i], order), atol=5e-5)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_partition_of_unity_inside_grid(order):
    knots = basis.uniform_grid(5, order, (-1.0, 1.0))
    x = jnp.linspace(-1.0, 1.0, 1001)[:, None]  # closed interval: both ends included
    total = basis.bspline_basis(x, knots, order).sum(-1)
    np.testing.assert_allclose(np.asarray(total), 1.0, atol=1e-5)


def test_zero_outside_extended_grid():
    knots = basis.uniform_grid(4, 3, (-1.0, 1.0))
    x = jnp.array([[-100.0], [float(knots[0]) - 1e-3], [float(knots[-1])], [7.0]])
    np.testing.assert_array_equal(np.asarray(basis.bspline_basis(x, knots, 3)), 0.0)


def test_bspline_any_leading_dims_and_jit_vmap():
    knots = basis.uniform_grid(5, 3, num_inputs=2)
    x = jax.random.uniform(jax.random.key(0), (3, 4, 2), minval=-1, maxval=1)
    full = basis.bspline_basis(x, knots, 3)
    assert full.shape == (3, 4, 2, 8)
    jitted = jax.jit(basis.bspline_basis, static_argnums=2)(x, knots, 3)
    mapped = jax.vmap(lambda r: basis.bspline_basis(r, knots, 3))(x.reshape(12, 2))
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(full), atol=1e-6)
    np.testing.assert_allclose(np.asarray(mapped).reshape(full.shape), np.asarray(full), atol=1e-6)


def test_bspline_gradient_matches_derivative_spline(rng):
    k, knots = 3, np.asarray(basis.uniform_grid(5, 3), np.float64)
    c = rng.normal(size=len(knots) - k - 1)
    spline = BSpline(knots, c, k, extrapolate=False)
    x = rng.uniform(-0.95, 0.95, 50)
    f = lambda v: jnp.dot(basis.bspline_basis(v[None, None], knots, k)[0, 0], c)  # noqa: E731
    ours = np.asarray(jax.vmap(jax.grad(f))(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(ours, spline.derivative()(x), rtol=1e-3, atol=1e-3)


def test_repeated_knots_are_finite():
    knots = jnp.array([-1.0, -1.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    x = jnp.linspace(-1, 0.999, 50)[:, None]
    b = basis.bspline_basis(x, knots, 3)
    g = jax.grad(lambda v: basis.bspline_basis(v, knots, 3).sum())(x)
    assert np.all(np.isfinite(np.asarray(b))) and np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_allclose(np.asarray(b.sum(-1)), 1.0, atol=1e-5)  # clamped: unity everywhere


@pytest.mark.parametrize("degree", [0, 1, 4, 9])
def test_power_basis_matches_numpy(degree, rng):
    u = rng.uniform(-1.3, 1.3, size=(5, 3)).astype(np.float32)
    ours = np.asarray(basis.power_basis(jnp.asarray(u), degree))
    ref = u[..., None] ** np.arange(degree + 1)
    assert ours.shape == (5, 3, degree + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_power_basis_gradient_finite_at_zero():
    g = jax.grad(lambda u: basis.power_basis(u, 9).sum())(0.0)
    assert float(g) == pytest.approx(1.0)  # d/du (1 + u + ...) at 0


def test_squash_bounds_powers():
    u = basis.squash(jnp.array([-50.0, -3.0, 0.0, 3.0, 50.0]), "tanh")
    assert float(jnp.max(jnp.abs(basis.power_basis(u, 9)))) <= 1.0
    with pytest.raises(ValueError, match="unknown squash"):
        basis.squash(u, "sigmoid")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: basis.power_basis(jnp.ones(3), -1), "degree must be >= 0"),
        (lambda: basis.uniform_grid(0, 3), "grid_size must be >= 1"),
        (lambda: basis.uniform_grid(5, -1), "order must be >= 0"),
        (lambda: basis.uniform_grid(5, 3, (1.0, -1.0)), "lo < hi"),
        (lambda: basis.bspline_basis(jnp.ones((2, 1)), jnp.arange(4.0), 3), "need at least 5 knots"),
    ],
)
def test_basis_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _uniform_args(knots):
    knots = jnp.asarray(knots)
    step = (knots[..., -1] - knots[..., 0]) / (knots.shape[-1] - 1)
    return knots[..., 0], step


@pytest.mark.parametrize("order", [0, 1, 2, 3, 5, 7])
@pytest.mark.parametrize("grid_size", [1, 4, 10])
def test_uniform_fast_path_matches_reference_and_scipy(order, grid_size, rng):
    knots = basis.uniform_grid(grid_size, order, (-0.7, 1.9), num_inputs=3)
    x = jnp.asarray(rng.uniform(-3, 4, size=(257, 3)), jnp.float32)
    fast = _uniform_basis(x, *_uniform_args(knots), grid_size + order, order)
    ref = _bspline_basis(x, knots, order)
    assert fast.shape == ref.shape == (257, 3, grid_size + order)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(ref), atol=2e-6)
    k64 = np.asarray(knots, np.float64)[1]
    xs = np.asarray(x, np.float64)[:, 1]
    keep = ~np.isclose(xs[:, None], k64[None, :], atol=1e-5).any(axis=1)
    np.testing.assert_allclose(np.asarray(fast)[keep, 1], scipy_basis(xs, k64, order)[keep], atol=2e-5)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_uniform_fast_path_derivative_matches_scipy(order, rng):
    knots = np.asarray(basis.uniform_grid(6, order, (-1.0, 1.0)), np.float64)
    c = rng.normal(size=6 + order)
    deriv = BSpline(knots, c, order, extrapolate=False).derivative()
    x = rng.uniform(-0.99, 0.99, 64)
    start, step = _uniform_args(knots)

    def f(v):
        return jnp.dot(basis.uniform_bspline_basis(v[None], start, step, 6 + order, order)[0], c)

    ours = np.asarray(jax.jit(jax.vmap(jax.grad(f)))(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(ours, deriv(x), rtol=1e-3, atol=1e-3)
    from jax.test_util import check_grads

    check_grads(f, (jnp.float32(0.123),), order=1, modes=["fwd", "rev"], eps=1e-3, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_uniform_derivative_on_knots_matches_the_recursion(order):
    # On a knot the fast path's derivative is the right-hand one, as the recursion's on
    # half-open intervals (for order 1 the two sides differ; for order >= 2 both are equal).
    knots = basis.uniform_grid(4, order, (-1.0, 1.0), num_inputs=1)
    start, step = _uniform_args(knots)
    on_knots = jnp.asarray(knots)[0, 1:-1, None]  # interior knots, including the centres

    def fast(v):
        return basis.uniform_bspline_basis(v, start[:1], step[:1], 4 + order, order)

    def general(v):
        return basis.bspline_basis(v, knots[:1], order)

    d_fast = jax.vmap(jax.jacfwd(fast))(on_knots)
    d_general = jax.vmap(jax.jacfwd(general))(on_knots)
    np.testing.assert_allclose(np.asarray(d_fast), np.asarray(d_general), atol=1e-4)
    assert float(jnp.abs(d_fast).max()) > 0.5


def test_uniform_fast_path_jit_vmap_and_leading_dims():
    knots = basis.uniform_grid(5, 3, num_inputs=2)
    start, step = _uniform_args(knots)
    x = jax.random.uniform(jax.random.key(1), (4, 6, 2), minval=-1.2, maxval=1.2)
    full = basis.uniform_bspline_basis(x, start, step, 8, 3)
    jitted = jax.jit(basis.uniform_bspline_basis, static_argnums=(3, 4))(x, start, step, 8, 3)
    mapped = jax.vmap(lambda r: basis.uniform_bspline_basis(r, start, step, 8, 3))(x.reshape(24, 2))
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(full), atol=1e-6)
    np.testing.assert_allclose(np.asarray(mapped).reshape(full.shape), np.asarray(full), atol=1e-6)
    inside = jnp.linspace(-1, 1, 101)[:, None]
    total = basis.uniform_bspline_basis(inside, start[:1], step[:1], 8, 3).sum(-1)
    np.testing.assert_allclose(np.asarray(total), 1.0, atol=1e-5)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_bspline_derivatives_equal_autodiff_of_the_recursion(order):
    # bspline_basis carries an analytic x-derivative; every derivative (forward, reverse,
    # second order, knots) must equal plain autodiff through the Cox-de Boor recursion,
    # repeated knots included.
    from kanjax.basis import _cox_de_boor_kmajor

    knots = jnp.array([[-1.3, -1.0, -0.6, -0.6, -0.1, 0.3, 0.8, 1.0, 1.4],
                       [-1.2, -0.9, -0.5, -0.2, 0.0, 0.1, 0.7, 1.1, 1.5]])
    x = jnp.array([[-0.83, 0.41], [0.05, -0.67], [0.52, 0.93], [-0.35, 0.02]])
    w = jax.random.normal(jax.random.key(0), (1, 2, knots.shape[1] - order - 1))

    def ours(v, t):
        return jnp.sum(jnp.sin(basis.bspline_basis(v, t, order) * w))

    def plain(v, t):
        return jnp.sum(jnp.sin(jnp.swapaxes(_cox_de_boor_kmajor(v, t.T, order), -1, -2) * w))

    tangent = jnp.linspace(-1, 1, x.size).reshape(x.shape)

    @functools.partial(jax.jit, static_argnums=0)
    def derivatives(f, v, t):  # reverse (x and knots), second order in x, forward in x
        return (jax.grad(f, argnums=(0, 1))(v, t), jax.hessian(f)(v, t),
                jax.jvp(lambda u: f(u, t), (v,), (tangent,))[1])

    got, want = derivatives(ours, x, knots), derivatives(plain, x, knots)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    if order:  # the check is not vacuous: the basis moves with x
        assert float(jnp.abs(got[0][0]).max()) > 1e-2
