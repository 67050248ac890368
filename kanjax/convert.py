"""Convert a format-1 kanjax checkpoint (``metadata.json`` + ``arrays/``) to the current format.

Format 1 described a model by its Python attributes and named classes in the file. The
converter reads that description as plain data: it picks the constructor settings it knows
(widths, basis, degree, grid size, ... as JSON values checked against the config schema),
verifies every file against the SHA-256 manifest, reads the arrays with orbax as NumPy
arrays, places them into the abstract model the settings describe (every path, shape and
dtype must match) and saves that model with :func:`kanjax.save`. No class, function or
attribute named in the old file is looked up. The model, its history and its metadata are
converted; an optimizer state is not (format 1 did not record which optimizer made it):
resume from the converted checkpoint with a fresh optimizer state, or retrain.

    kanjax convert-checkpoint OLD_DIR NEW_DIR
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np
from flax import nnx

from kanjax import checkpoint as checkpoint_lib
from kanjax import nn as nn_lib
from kanjax.history import History

__all__ = ["convert_checkpoint"]

_LAYER_KEYS = ("in_features", "out_features", "basis", "degree", "squash", "grid_size", "order",
               "uniform", "dtype", "param_dtype", "sym_names")


def _fail(path: str, problem: str) -> checkpoint_lib.CheckpointError:
    return checkpoint_lib.CheckpointError(f"format-1 checkpoint {path}: {problem}")


def _read_json(path: str, name: str):
    try:
        with open(os.path.join(path, name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _fail(path, f"{name} is unreadable ({err})") from None


def _verify_files(path: str, files) -> None:
    if not isinstance(files, dict) or not files:
        raise _fail(path, "metadata.json has no file manifest")
    for rel, entry in files.items():
        parts = str(rel).split("/")
        if os.path.isabs(rel) or ".." in parts or not isinstance(entry, dict):
            raise _fail(path, f"invalid manifest entry {rel!r}")
        try:
            with open(os.path.join(path, *parts), "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            raise _fail(path, f"file {rel} is missing") from None
        if digest != entry.get("sha256"):
            raise _fail(path, f"file {rel} is corrupt (checksum mismatch)")


def _static(attributes: dict, key: str):
    """The plain JSON value format 1 stored for a static attribute (tuples and dtypes
    unwrapped to lists and names)."""
    entry = attributes.get(key)
    if not isinstance(entry, dict) or entry.get("kind") != "static":
        return None
    value = entry.get("value")
    if isinstance(value, dict) and "__tuple__" in value:
        return list(value["__tuple__"])
    if isinstance(value, dict) and "__dtype__" in value:
        return value["__dtype__"]
    return value


def _layer_config(attributes: dict) -> dict[str, Any]:
    values = {k: _static(attributes, k) for k in _LAYER_KEYS}
    bias = attributes.get("bias")
    config = {"in_features": values["in_features"], "out_features": values["out_features"],
              "basis": values["basis"], "dtype": values["dtype"],
              "param_dtype": values["param_dtype"], "symbolic": values["sym_names"] or [],
              "use_bias": isinstance(bias, dict) and bias.get("kind") == "variable",
              "mult_nodes": 0, "mult_arity": 2}  # format 1 had no multiplication nodes
    if values["basis"] == "taylor":
        config.update(degree=values["degree"], squash=values["squash"])
    else:
        config.update(grid_size=values["grid_size"], order=values["order"],
                      uniform=values["uniform"])
    return config


def _model_config(spec) -> dict[str, Any]:
    """The current model config equivalent to format 1's description ``spec``."""
    spec = spec if isinstance(spec, dict) else {}
    layers = spec.get("layers") if isinstance(spec.get("layers"), list) else []
    if spec.get("class") == "KAN":
        return {"class": "KAN", "config": {
            "widths": spec.get("widths"),
            "layers": [_layer_config(layer.get("attributes") or {}) if isinstance(layer, dict)
                       else {} for layer in layers]}}
    activation = spec.get("activation")
    name = activation.rsplit(".", 1)[-1] if isinstance(activation, str) else activation
    dtypes = {k: _static({k: {"kind": "static", "value": spec.get(k)}}, k)
              for k in ("dtype", "param_dtype")}
    return {"class": spec.get("class"), "config": {
        "widths": spec.get("widths"), "activation": name, **dtypes}}


def _read_arrays(path: str, names: list[str]) -> dict[str, np.ndarray]:
    import orbax.checkpoint as ocp

    nested: dict = {}
    for name in names:
        node = nested
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = ocp.RestoreArgs(restore_type=np.ndarray)
    try:
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
            tree = checkpointer.restore(os.path.join(path, "arrays"),
                                        args=ocp.args.PyTreeRestore(restore_args=nested))
    except Exception as err:  # noqa: BLE001 - orbax and tensorstore raise many types
        raise _fail(path, f"its arrays are unreadable ({type(err).__name__}: {str(err)[:300]})") from None
    return checkpoint_lib.flat_paths(tree)


def _model(path: str, meta: dict):
    """The model format 1's ``meta`` describes, with its arrays."""
    try:
        config = _model_config(meta.get("model"))
        abstract = nnx.eval_shape(lambda: nn_lib.model_from_config(config, rngs=nnx.Rngs(0)))
    except (TypeError, ValueError) as err:
        raise _fail(path, f"its model description cannot be converted: {err}") from None
    graphdef, state = nnx.split(abstract)
    wanted = {k.removesuffix("/value"): v for k, v in checkpoint_lib.flat_paths(state).items()}
    listed = sorted(str(k) for k in (meta.get("arrays") or {}))
    stored = [k for k in listed if k.startswith("model/")]
    if sorted(f"model/{k}" for k in wanted) != stored:
        raise _fail(path, f"its arrays {stored} do not match the described model's "
                          f"{sorted(wanted)}")
    arrays = _read_arrays(path, listed)  # orbax restores the whole tree
    values = []
    for key, target in wanted.items():
        array = arrays[f"model/{key}"]
        if array.shape != target.shape or array.dtype != target.dtype:
            raise _fail(path, f"array {key} has {array.shape} {array.dtype}, the model needs "
                              f"{target.shape} {target.dtype}")
        values.append(jax.numpy.asarray(array))
    leaves = jax.tree.unflatten(jax.tree.structure(state), values)
    return nnx.merge(graphdef, leaves)


def convert_checkpoint(old: str | os.PathLike, new: str | os.PathLike) -> str:
    """Write the format-1 checkpoint at ``old`` as a current checkpoint at ``new``; returns
    ``new``'s absolute path. ``old`` is only read."""
    old, new = checkpoint_lib.absolute_path(old), checkpoint_lib.absolute_path(new)
    if old == new:
        raise ValueError("convert_checkpoint: the new path must differ from the old one")
    if not os.path.isfile(os.path.join(old, "metadata.json")):
        raise _fail(old, "has no metadata.json: not a format-1 kanjax checkpoint (one that "
                         "kanjax.load reads needs no conversion)")
    meta = _read_json(old, "metadata.json")
    if not isinstance(meta, dict) or meta.get("format_version") != 1:
        raise _fail(old, "metadata.json is not a format-1 kanjax checkpoint description")
    _verify_files(old, meta.get("files"))
    model = _model(old, meta)
    history = None
    if meta.get("history") is True:
        try:
            history = History.from_dict(_read_json(old, "history.json"))
        except (TypeError, ValueError, KeyError) as err:
            raise _fail(old, f"invalid history.json: {err}") from None
    metadata = meta.get("metadata") if isinstance(meta.get("metadata"), dict) else {}
    return checkpoint_lib.save(new, model, history=history, metadata=metadata, overwrite=False)

