"""Checks and preparation of the data ``train`` and ``evaluate`` take (on the host, once)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_array",
    "check_finite",
    "n_samples",
    "output_shape",
    "prepare_pair",
    "prepare_tree",
]


def as_array(name: str, a) -> jax.Array:
    """``a`` as a real numeric JAX array, or an error naming ``name``."""
    if a is None:
        raise TypeError(f"{name} is None; expected an array")
    kind = getattr(getattr(a, "dtype", None), "kind", None)
    if kind is None:
        try:
            kind = np.asarray(a).dtype.kind
        except Exception:  # noqa: BLE001  (jnp.asarray below names the problem)
            kind = None
    if kind in ("U", "S", "O", "V"):
        raise TypeError(f"{name} must hold numbers, got an array of dtype "
                        f"{np.asarray(a).dtype} (convert it, e.g. np.asarray({name}, float))")
    if kind == "c":
        raise TypeError(f"{name} is complex; kanjax trains on real numbers (pass e.g. "
                        f"{name}.real, or the real and imaginary parts as separate features)")
    try:
        arr = jnp.asarray(a)
    except TypeError as err:
        raise TypeError(f"{name} must be array-like, got {type(a).__name__}") from err
    if arr.dtype == jnp.bool_ or arr.dtype == object:
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def check_finite(**named) -> None:
    """Raise if a floating array contains nan or inf (checked on the host, once per call)."""
    for name, a in named.items():
        if jnp.issubdtype(a.dtype, jnp.inexact):
            count = int(np.count_nonzero(~np.isfinite(np.asarray(a))))
            if count:
                raise ValueError(f"{name} contains {count} non-finite value(s) (nan or inf)")


def _check_mse_targets(name, x, y, out_shape):
    if y.ndim == 1 and out_shape is not None and out_shape[-1] == 1:
        y = y[:, None]
    if out_shape is not None and tuple(y.shape[1:]) != tuple(out_shape):
        labels = y.ndim == 1 and jnp.issubdtype(y.dtype, jnp.integer)
        raise ValueError(
            f"{name}: the model outputs shape {tuple(out_shape)} per sample but y has "
            f"shape {tuple(y.shape[1:])} per sample"
            + ("; if y holds class labels, pass loss='cross_entropy'" if labels else "")
        )
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(x.dtype)
    return y


def _check_labels(name, y, out_shape, given_dtype):
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(
            f"{name}: loss='cross_entropy' takes integer class labels, got y of dtype "
            f"{given_dtype} (pass e.g. y.astype(int) if it holds whole numbers)"
        )
    if y.ndim != 1:
        raise ValueError(f"{name}: class labels y must have shape (n_samples,), got {y.shape}")
    n_classes = out_shape[-1] if out_shape is not None else None
    if n_classes is None:
        return
    low, high = int(y.min()), int(y.max())
    if high >= n_classes and low >= 0:
        raise ValueError(
            f"{name}: labels in [0, {high}] mean {high + 1} classes, and {high + 1} classes need "
            f"{high + 1} outputs; the model has {n_classes} (labels must lie in [0, {n_classes}))")
    if low < 0:
        raise ValueError(
            f"{name}: labels must lie in [0, {n_classes}) for a model with "
            f"{n_classes} outputs, got range [{low}, {high}]"
        )


def prepare_pair(model, data, name: str, loss_name: str | None, out_shape):
    """``(x, y)`` checked against ``model`` and the loss; ``x`` as floats."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (x, y), got {type(data).__name__}")
    x, y = as_array(f"{name} x", data[0]), as_array(f"{name} y", data[1])
    if x.ndim < 1 or y.ndim < 1:
        raise ValueError(f"{name}: x and y need a leading sample axis, got shapes {x.shape}, {y.shape}")
    in_features = getattr(model, "in_features", None)
    if in_features is not None and (x.ndim < 2 or x.shape[-1] != in_features):
        raise ValueError(
            f"{name}: the model takes {in_features} input features but x has shape "
            f"{tuple(x.shape)} (expected (n_samples, {in_features}))"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: x and y have different numbers of samples: {x.shape[0]} vs {y.shape[0]}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    check_finite(**{f"{name} x": x, f"{name} y": y})
    if loss_name == "mse":
        y = _check_mse_targets(name, x, y, out_shape)
    elif loss_name == "cross_entropy":
        given = getattr(data[1], "dtype", None)  # before JAX narrows float64 to float32
        _check_labels(name, y, out_shape, y.dtype if given is None else given)
    return x, y


def prepare_tree(data, name: str):
    """Any pytree of arrays sharing a leading sample axis (for a custom objective)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(data)
    if not leaves:
        raise TypeError(f"{name} must be a pytree of arrays (a tuple, a dict, ...), got {data!r}")
    arrays, sizes = [], {}
    for path, leaf in leaves:
        where = f"{name}{jax.tree_util.keystr(path)}"
        arr = as_array(where, leaf)
        if arr.ndim < 1:
            raise ValueError(f"{where} needs a leading sample axis, got shape {arr.shape}")
        check_finite(**{where: arr})
        sizes[where] = arr.shape[0]
        arrays.append(arr)
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{name}: the arrays have different numbers of samples: {sizes}")
    if not next(iter(sizes.values())):
        raise ValueError(f"{name} is empty (0 samples)")
    return jax.tree.unflatten(treedef, arrays)


def n_samples(data) -> int:
    return int(jax.tree.leaves(data)[0].shape[0])


def output_shape(model, data, apply) -> tuple[int, ...] | None:
    """Per-sample output shape: ``(out_features,)`` for kanjax models, else by tracing."""
    out_features = getattr(model, "out_features", None)
    if isinstance(out_features, int):
        return (out_features,)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        return None
    x = as_array("x", data[0])
    if x.ndim < 2:
        return None
    return jax.eval_shape(apply, jax.ShapeDtypeStruct((1, *x.shape[1:]), jnp.float32)).shape[1:]
