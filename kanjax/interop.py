"""Import trained models from other KAN libraries.

:func:`from_pykan` turns a `pykan <https://github.com/KindXiaoming/pykan>`_ 0.2.x
``KAN``/``MultKAN`` (or a single pykan ``KANLayer``) into a :class:`kanjax.KAN` that
computes the same function. ``torch`` and ``kan`` are imported only when a model is
converted, so ``kanjax`` itself never needs them.

How the numbers map. A pykan layer ``l`` (without multiplication nodes) computes, for
output node ``q``::

    s_q = sum_p mask[p,q] * (scale_base[p,q] * silu(x_p) + scale_sp[p,q] * spline_pq(x_p))
    y_q = node_scale[q] * (subnode_scale[q] * s_q + subnode_bias[q]) + node_bias[q]

with ``spline_pq = sum_i coef[p,q,i] B_i`` on the layer's knots ``grid`` (shape
``(n_in, G + 2k + 1)``). Both affine maps are per output column, so they fold into
kanjax's weights: ``w_base = mask * scale_base * a``, ``w_spline = mask * scale_sp * a``
with ``a = node_scale * subnode_scale``, and the layer bias is ``node_scale *
subnode_bias + node_bias``. The knots and coefficients are copied unchanged (adapted,
non-uniform knots included), so the B-spline basis is the same function of ``x``: both
libraries use the Cox-de Boor recursion on half-open order-0 intervals, which makes every
basis function, and hence the spline part of every edge, zero outside
``[grid[0], grid[-1])``. Beyond the knots both networks are left with the ``silu`` branch,
and the outputs agree there too.
"""

from __future__ import annotations

import numpy as np

__all__ = ["from_pykan"]


def _to_numpy(t) -> np.ndarray:
    """A torch tensor (or anything array-like) as a float64 NumPy array, detached, on the host."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _base_kind(act_fun, where: str) -> str:
    """``"silu"`` or ``"zero"``: the residual function of a pykan ``KANLayer``."""
    import torch

    fun = act_fun.base_fun
    if isinstance(fun, torch.nn.SiLU):
        return "silu"
    # pykan's base_fun='zero' is an anonymous ``x * 0``; recognise it by its values.
    if not isinstance(fun, torch.nn.Module) and callable(fun):
        probe = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0])
        try:
            out = fun(probe)
        except Exception:  # noqa: BLE001 - any failure means "not the zero function"
            out = None
        if isinstance(out, torch.Tensor) and out.shape == probe.shape and not bool(out.any()):
            return "zero"
    raise NotImplementedError(
        f"{where}: pykan base function {fun!r} is not supported; kanjax edges use silu, so "
        "only pykan's base_fun='silu' (the default) and base_fun='zero' can be converted"
    )


def _layer_arrays(act_fun, col_scale, bias, where: str):
    """``(knots, order, w_base, w_spline, coef, mask, bias)`` of one kanjax layer."""
    mask = _to_numpy(act_fun.mask)  # (n_in, n_out); may hold fractions after set_mode
    scale_base = _to_numpy(act_fun.scale_base)
    if _base_kind(act_fun, where) == "zero":
        scale_base = np.zeros_like(scale_base)
    w_base = mask * scale_base * col_scale[None, :]
    w_spline = mask * _to_numpy(act_fun.scale_sp) * col_scale[None, :]
    coef = _to_numpy(act_fun.coef)  # (n_in, n_out, G + k)
    knots = _to_numpy(act_fun.grid)  # (n_in, G + 2k + 1)
    order = int(act_fun.k)
    if knots.shape[-1] - order - 1 != coef.shape[-1]:
        raise ValueError(
            f"{where}: grid of {knots.shape[-1]} knots and order {order} do not match "
            f"coef with {coef.shape[-1]} coefficients per edge"
        )
    return knots, order, w_base, w_spline, coef, (mask != 0).astype(np.float64), bias


def _symbolic_bias(model, l: int, n_out: int) -> np.ndarray:
    """Constant contribution of layer ``l``'s active symbolic edges; error on any other kind.

    Only pykan's zero function ``'0'`` is supported: its edge is the constant
    ``mask * affine[..., 3]`` (``c * 0 + d``), which folds into the bias.
    """
    out = np.zeros(n_out)
    if not getattr(model, "symbolic_enabled", False):
        return out
    sym = model.symbolic_fun[l]
    mask = _to_numpy(sym.mask)  # (n_out, n_in)
    affine = _to_numpy(sym.affine)  # (n_out, n_in, 4): c * f(a x + b) + d
    for j, i in zip(*np.nonzero(mask)):
        name = sym.funs_name[j][i]
        if name != "0":
            raise NotImplementedError(
                f"layer {l}, edge (input {i} -> output {j}) is symbolic ({name!r}); kanjax "
                "has no symbolic branch. Call model.unfix_symbolic(l, i, j) (or "
                "unfix_symbolic_all()) to go back to the spline, or convert before "
                "fix_symbolic/auto_symbolic"
            )
        out[j] += mask[j, i] * affine[j, i, 3]
    return out


def _check_pykan_model(model) -> list[int]:
    """Widths ``[n_0, ..., n_L]`` of a pykan MultKAN without multiplication nodes."""
    width = [list(w) if isinstance(w, (list, tuple)) else [int(w), 0] for w in model.width]
    mult = [(l, int(w[1])) for l, w in enumerate(width) if l > 0 and int(w[1]) > 0]
    if mult:
        where = ", ".join(f"{n} in layer {l}" for l, n in mult)
        raise NotImplementedError(
            f"pykan model has multiplication nodes ({where}; width={model.width}); their "
            "conversion (with pykan's node and subnode scales) is not supported, only models "
            "whose width entries are [n, 0] (or plain ints). Build the model in kanjax "
            "instead: kanjax.KAN(widths) takes the same [n_sum, n_mult] entries"
        )
    widths = [int(w[0]) + int(w[1]) for w in width]
    input_id = getattr(model, "input_id", None)
    if input_id is not None and not np.array_equal(_to_numpy(input_id), np.arange(widths[0])):
        raise NotImplementedError(
            f"pykan model selects input columns {_to_numpy(input_id).astype(int).tolist()} "
            "(after prune_input); the kanjax model would take the selected columns only. "
            "Convert before prune_input, or rebuild with input_id = arange(width[0]) and "
            "index the inputs yourself"
        )
    return widths


def from_pykan(model, *, dtype=None):
    """A :class:`kanjax.KAN` computing the same function as a pykan model.

    Args:
      model: a pykan 0.2.x ``KAN`` / ``MultKAN`` (``kan.KAN``) without multiplication
        nodes, or a single pykan ``KANLayer``. Every layer's knots (uniform or adapted by
        ``update_grid_from_samples`` / ``refine``), spline order, coefficients, residual
        and spline scales and edge mask are carried over; pykan's per-node
        ``subnode_scale/subnode_bias`` and ``node_scale/node_bias`` are folded into the
        kanjax weights and a layer bias (``use_bias=True``).
      dtype: parameter dtype of the kanjax model (default float32). float64 needs
        ``jax_enable_x64``.

    Returns:
      ``kanjax.KAN`` with ``widths == [n_0, ..., n_L]`` and B-spline layers, such that
      ``kan(x) == model(x)`` up to rounding for any inputs, inside the grids and outside.

    Raises:
      NotImplementedError: multiplication nodes; a base function other than silu (or
        pykan's ``'zero'``); an active symbolic edge other than the zero function; an input
        selection left by ``prune_input``.
      TypeError: ``model`` is not a pykan model.
    """
    import jax.numpy as jnp
    from flax import nnx

    from kanjax.nn import KAN, KANLayer

    dtype = jnp.float32 if dtype is None else dtype
    specs = []
    if hasattr(model, "act_fun") and hasattr(model, "width"):  # MultKAN
        widths = _check_pykan_model(model)
        for l, act_fun in enumerate(model.act_fun):
            where = f"layer {l}"
            n_out = widths[l + 1]
            if (act_fun.in_dim, act_fun.out_dim) != (widths[l], n_out):
                raise ValueError(
                    f"{where}: act_fun is {act_fun.in_dim} -> {act_fun.out_dim} but width "
                    f"says {widths[l]} -> {n_out}"
                )
            sub_s, sub_b = _to_numpy(model.subnode_scale[l]), _to_numpy(model.subnode_bias[l])
            node_s, node_b = _to_numpy(model.node_scale[l]), _to_numpy(model.node_bias[l])
            sub_b = sub_b + _symbolic_bias(model, l, n_out)
            specs.append(_layer_arrays(act_fun, node_s * sub_s, node_s * sub_b + node_b, where))
    elif all(hasattr(model, a) for a in ("grid", "coef", "scale_base", "scale_sp", "mask", "k")):
        widths = [int(model.in_dim), int(model.out_dim)]  # a lone pykan KANLayer
        specs.append(_layer_arrays(model, np.ones(widths[1]), np.zeros(widths[1]), "KANLayer"))
    else:
        raise TypeError(
            f"from_pykan expects a pykan KAN/MultKAN or KANLayer, got {type(model).__name__}"
        )

    rngs = nnx.Rngs(0)  # the weights are overwritten below; only shapes come from here
    kan = KAN(widths, rngs=rngs, use_bias=True, param_dtype=dtype)
    for l, (knots, order, w_base, w_spline, coef, mask, bias) in enumerate(specs):
        layer = KANLayer(
            widths[l], widths[l + 1], basis="bspline", grid=knots, order=order,
            use_bias=True, param_dtype=dtype, rngs=rngs,
        )
        layer.w_base[...] = jnp.asarray(w_base, dtype)
        layer.w_spline[...] = jnp.asarray(w_spline, dtype)
        layer.coef[...] = jnp.asarray(coef, dtype)
        layer.mask[...] = jnp.asarray(mask, dtype)
        layer.bias[...] = jnp.asarray(bias, dtype)
        kan.layers[l] = layer
    return kan
