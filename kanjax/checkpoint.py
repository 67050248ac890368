"""Checkpoints: save a KAN or MLP (and optionally its history and optimizer state) and load it back.

A checkpoint is a directory::

    path/
      metadata.json   format version, versions, the architecture, array shapes, file checksums
      arrays/         every array, written by orbax (``orbax.checkpoint``)
      history.json    the training ``History`` (only when one was saved)

The architecture is rebuilt generically: ``metadata.json`` records, for the model and every
layer, each Python-level attribute (ints, floats, strings, bools, ``None``, dtypes and
tuples of those) and, for each ``nnx.Variable`` attribute, its class name; the arrays come
from ``arrays/``. Layers therefore come back exactly as they were saved, including changes
made after construction (``refine`` changes ``grid_size``, ``kanjax.prune`` changes the
widths and masks, symbolic edges add variables).

``save`` is atomic: it writes a temporary sibling directory ``path.tmp-XXXX`` and renames
it over ``path`` only once complete, so an interrupted save leaves the previous checkpoint
in place. ``load`` checks sizes and SHA-256 checksums of every file and the shapes and
dtypes of every array before it builds anything; a damaged, incomplete, foreign or
newer-format checkpoint raises :class:`CheckpointError`.

Example::

    kanjax.save("ckpt", model, history=history)
    model = kanjax.load("ckpt")
    ckpt = kanjax.load("ckpt", with_extras=True)   # Checkpoint(model, history, ...)
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kanjax import nn as nn_lib

__all__ = ["FORMAT_VERSION", "Checkpoint", "CheckpointError", "save", "load", "read_metadata"]

FORMAT_VERSION = 1
"""Version of the on-disk layout; ``load`` refuses checkpoints with a larger one."""

_METADATA = "metadata.json"
_ARRAYS = "arrays"
_HISTORY = "history.json"
_MODEL_CLASSES = ("KAN", "MLP")
# Modules whose NamedTuple classes (optimizer states) may be looked up by name on load.
_TRUSTED_MODULES = ("optax", "kanjax", "flax", "jax")


class CheckpointError(ValueError):
    """A checkpoint cannot be read: missing, truncated, corrupt, foreign or of a newer format.

    The message names the checkpoint's path and the problem.
    """


class Checkpoint(NamedTuple):
    """What ``load(path, with_extras=True)`` returns.

    Attributes:
      model: the rebuilt ``KAN`` or ``MLP``.
      history: the saved ``kanjax.History``, or ``None``.
      optimizer_state: the saved optimizer state (same pytree structure as when saved,
        leaves as ``jax.Array``), or ``None``.
      metadata: the ``metadata`` dict given to ``save`` (``{}`` when none was given).
    """

    model: nnx.Module
    history: Any
    optimizer_state: Any
    metadata: dict[str, Any]


# ----------------------------------------------------------------------------- encoding


def _encode_static(value, where: str):
    """JSON form of a static attribute value; ``TypeError`` for unsupported types."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_static(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode_static(v, where) for v in value]
    if isinstance(value, np.dtype):
        return {"__dtype__": value.name}
    if isinstance(value, type):  # a scalar type used as a dtype: jnp.float32, np.float64
        try:
            name = jnp.dtype(value).name
        except TypeError:
            name = None
        if name is not None and getattr(jnp, name, None) is value:
            return {"__dtype__": name, "type": "jax.numpy"}
        if name is not None and getattr(np, name, None) is value:
            return {"__dtype__": name, "type": "numpy"}
    raise TypeError(
        f"cannot save {where} = {value!r} of type {type(value).__name__}: checkpoints store "
        "ints, floats, strings, bools, None, dtypes and tuples of those, and nnx.Variables"
    )


def _decode_static(value):
    if isinstance(value, list):
        return [_decode_static(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_decode_static(v) for v in value["__tuple__"])
        if "__dtype__" in value:
            name, kind = value["__dtype__"], value.get("type")
            if kind == "jax.numpy":
                return getattr(jnp, name)
            if kind == "numpy":
                return getattr(np, name)
            return jnp.dtype(name)
        raise ValueError(f"unknown encoded value {value!r}")
    return value


def _variable_class(name: str) -> type[nnx.Variable]:
    """The ``nnx.Variable`` subclass called ``name`` in ``kanjax.nn`` or ``flax.nnx``."""
    for module in (nn_lib, nnx):
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, nnx.Variable):
            return cls
    raise KeyError(
        f"unknown variable class {name!r} (looked in kanjax.nn and flax.nnx; a checkpoint "
        "from a newer kanjax?)"
    )


def _variable_value(var: nnx.Variable):
    return var.get_value() if hasattr(var, "get_value") else var.value


def _is_data(node, name: str) -> bool:
    """Whether NNX treats attribute ``name`` of ``node`` as data (a pytree leaf) or static."""
    nodes = getattr(node, "_pytree__nodes", None)
    return bool(nodes.get(name, False)) if nodes is not None else False


def _attributes(node) -> dict[str, Any]:
    return {k: v for k, v in vars(node).items() if not k.startswith(("_pytree__", "_object__"))}


def _describe_attributes(node, prefix: tuple[str, ...], arrays: dict, *,
                         skip=(), variables_only: bool = False) -> dict[str, Any]:
    """``{name: entry}`` for a module's attributes; Variable arrays go into ``arrays``.

    Entries: ``{"kind": "variable", "class": ...}``, ``{"kind": "static", "value": ...}``
    or ``{"kind": "data", "value": None}`` (an ``nnx.data(None)`` slot).
    """
    out = {}
    where_prefix = ".".join(prefix) or type(node).__name__
    for name, value in _attributes(node).items():
        if name in skip:
            continue
        where = f"{where_prefix}.{name}"
        if isinstance(value, nnx.Variable):
            cls_name = type(value).__name__
            try:
                known = _variable_class(cls_name) is type(value)
            except KeyError:
                known = False
            if not known:
                raise TypeError(
                    f"cannot save {where}: its variable class {type(value).__module__}."
                    f"{type(value).__qualname__} is not defined in kanjax.nn or flax.nnx, so "
                    "load could not find it"
                )
            arrays["/".join((*prefix, name))] = _variable_value(value)
            out[name] = {"kind": "variable", "class": cls_name}
        elif variables_only:
            continue
        elif isinstance(value, (nnx.Module, jax.Array)):
            raise TypeError(
                f"cannot save {where} of type {type(value).__name__}: layers may hold "
                "nnx.Variables and simple Python values only")
        elif value is None and _is_data(node, name):
            out[name] = {"kind": "data", "value": None}
        else:
            out[name] = {"kind": "static", "value": _encode_static(value, where)}
    return out


def _activation_name(fn: Callable) -> str:
    for module_name in ("jax.nn", "jax.numpy"):
        module = sys.modules[module_name]
        name = getattr(fn, "__name__", None)
        if name is not None and getattr(module, name, None) is fn:
            return f"{module_name}.{name}"
    raise TypeError(
        f"cannot save MLP activation {fn!r}: only functions of jax.nn and jax.numpy "
        "(e.g. jax.nn.silu, jax.numpy.tanh) can be stored by name"
    )


def _resolve_activation(name: str) -> Callable:
    module_name, _, fn_name = name.rpartition(".")
    if module_name not in ("jax.nn", "jax.numpy"):
        raise ValueError(f"activation {name!r} is not a function of jax.nn or jax.numpy")
    fn = getattr(sys.modules[module_name], fn_name, None)
    if not callable(fn):
        raise ValueError(f"activation {name!r} does not exist in this jax version")
    return fn


def _describe_model(model) -> tuple[dict, dict[str, Any]]:
    """``(spec, arrays)``: the JSON architecture and the Variable arrays keyed ``a/b/c``."""
    arrays: dict[str, Any] = {}
    # Exact classes: a subclass would come back as its base class.
    if type(model) is nn_lib.KAN:
        spec = {
            "class": "KAN",
            "widths": [int(w) for w in model.widths],
            "attributes": _describe_attributes(model, (), arrays, skip=("widths", "layers")),
            "layers": [
                {"attributes": _describe_attributes(layer, ("layers", str(i)), arrays)}
                for i, layer in enumerate(model.layers)
            ],
        }
    elif type(model) is nn_lib.MLP:
        first = model.layers[0]
        spec = {
            "class": "MLP",
            "widths": [int(w) for w in model.widths],
            "activation": _activation_name(model.activation),
            "dtype": _encode_static(first.dtype, "MLP dtype"),
            "param_dtype": _encode_static(first.param_dtype, "MLP param_dtype"),
            "layers": [
                {"attributes": _describe_attributes(layer, ("layers", str(i)), arrays,
                                                    variables_only=True)}
                for i, layer in enumerate(model.layers)
            ],
        }
    else:
        raise TypeError(
            f"kanjax.checkpoint.save supports kanjax.KAN and kanjax.MLP, got {type(model).__name__}"
        )
    return spec, arrays


# ----------------------------------------------------------------------------- optimizer state


def _describe_tree(tree, counter: list[int]):
    """JSON description of a pytree of tuples, lists, dicts, NamedTuples and None; ``None`` if other."""
    if tree is None:
        return {"t": "none"}
    if isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        cls = type(tree)
        fields = {f: _describe_tree(getattr(tree, f), counter) for f in cls._fields}
        if any(v is None for v in fields.values()):
            return None
        return {"t": "namedtuple", "class": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    if isinstance(tree, (tuple, list)):
        items = [_describe_tree(v, counter) for v in tree]
        if any(v is None for v in items):
            return None
        return {"t": type(tree).__name__, "items": items}
    if isinstance(tree, nnx.Variable):  # e.g. optax states over an nnx.State of Params
        try:
            known = _variable_class(type(tree).__name__) is type(tree)
        except KeyError:
            known = False
        value = _describe_tree(_variable_value(tree), counter)
        if not known or value is None or value["t"] != "leaf":
            return None
        return {"t": "variable", "class": type(tree).__name__, "value": value}
    if type(tree) is dict or type(tree) is nnx.State:
        mapping = tree if type(tree) is dict else tree.raw_mapping
        keys = list(mapping)
        if not (all(isinstance(k, str) for k in keys) or all(
                isinstance(k, int) and not isinstance(k, bool) for k in keys)):
            return None
        keys = sorted(keys)  # jax flattens dicts in sorted key order
        items = [_describe_tree(mapping[k], counter) for k in keys]
        if any(v is None for v in items):
            return None
        return {"t": "dict" if type(tree) is dict else "nnx.State", "keys": keys, "items": items}
    if jax.tree_util.all_leaves([tree]):
        counter[0] += 1
        return {"t": "leaf", "i": counter[0] - 1}
    return None


def _namedtuple_class(ref: str):
    module_name, _, qualname = ref.partition(":")
    if module_name.split(".")[0] not in _TRUSTED_MODULES:
        raise KeyError(
            f"optimizer state class {ref} is not from optax, flax, jax or kanjax; pass "
            "optimizer_state_like= (e.g. optimizer.init(params)) to load it"
        )
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _build_tree(desc, leaves):
    t = desc["t"]
    if t == "none":
        return None
    if t == "leaf":
        return leaves[desc["i"]]
    if t == "namedtuple":
        cls = _namedtuple_class(desc["class"])
        return cls(**{k: _build_tree(v, leaves) for k, v in desc["fields"].items()})
    if t in ("tuple", "list"):
        items = [_build_tree(v, leaves) for v in desc["items"]]
        return tuple(items) if t == "tuple" else items
    if t in ("dict", "nnx.State"):
        items = {k: _build_tree(v, leaves) for k, v in zip(desc["keys"], desc["items"])}
        return items if t == "dict" else nnx.State(items)
    if t == "variable":
        return _variable_class(desc["class"])(_build_tree(desc["value"], leaves))
    raise ValueError(f"unknown pytree node {t!r}")


def _describe_optimizer_state(state) -> tuple[dict, list]:
    leaves, treedef = jax.tree.flatten(state)
    desc = _describe_tree(state, [0])
    if desc is not None:  # the description must reproduce jax's leaf order exactly
        try:
            rebuilt = _build_tree(desc, list(range(len(leaves))))
            if (jax.tree.structure(rebuilt) != treedef
                    or jax.tree.leaves(rebuilt) != list(range(len(leaves)))):
                desc = None
        except Exception:  # noqa: BLE001 - any failure just means "no description"
            desc = None
    keys = []
    arrays = []
    for leaf in leaves:
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            keys.append(str(jax.random.key_impl(leaf)))
            arrays.append(jax.random.key_data(leaf))
        else:
            keys.append(None)
            arrays.append(leaf)
    return {"structure": desc, "num_leaves": len(leaves), "prng_key_impl": keys}, arrays


# ----------------------------------------------------------------------------- files


def _abspath(path) -> str:
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise ValueError("path is empty")
    return os.path.abspath(os.path.expanduser(path))


def _file_digest(path: str, *, sync: bool = False) -> tuple[int, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        if sync:
            try:
                os.fsync(f.fileno())
            except OSError:
                pass
    return os.path.getsize(path), digest.hexdigest()


def _manifest(root: str) -> dict[str, dict[str, Any]]:
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            size, sha = _file_digest(full, sync=True)
            files[rel] = {"size": size, "sha256": sha}
    return dict(sorted(files.items()))


def _fsync_dir(path: str) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: str, obj) -> None:
    # No trailing newline: then no proper prefix of the file is valid JSON, so any
    # truncation is detected when the file is parsed.
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1, allow_nan=True))
        f.flush()
        os.fsync(f.fileno())


def _is_checkpoint_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, _METADATA)) or os.path.isdir(
        os.path.join(path, _ARRAYS))


def _check_destination(path: str, overwrite: bool) -> None:
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        raise FileExistsError(f"{path} exists and is not a directory; refusing to replace it")
    if not os.listdir(path):
        return  # an empty directory is replaced
    if not _is_checkpoint_dir(path):
        raise FileExistsError(
            f"{path} is a non-empty directory that is not a kanjax checkpoint; refusing to "
            "replace it"
        )
    if not overwrite:
        raise FileExistsError(f"{path} already holds a checkpoint (pass overwrite=True to replace it)")


def _orbax():
    import orbax.checkpoint as ocp  # imported on first use: ~0.3-0.5 s

    return ocp


def _nested(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        parts = key.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def _flat(tree, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flat(value, name))
        else:
            out[name] = value
    return out


def _replace_dir(tmp: str, path: str) -> None:
    """Move the finished ``tmp`` to ``path``; an existing ``path`` survives until then."""
    if os.path.lexists(path):
        old = f"{path}.old-{uuid.uuid4().hex[:8]}"
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)
    _fsync_dir(os.path.dirname(path))


# ----------------------------------------------------------------------------- save


def save(
    path: str | os.PathLike,
    model: nnx.Module,
    *,
    history=None,
    optimizer_state=None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> str:
    """Write ``model`` (and optionally its history and optimizer state) to the directory ``path``.

    Args:
      path: the checkpoint directory (``str`` or ``os.PathLike``; made absolute). Missing
        parent directories are created. An existing checkpoint (or empty directory) there is
        replaced atomically; anything else there is refused.
      model: a ``kanjax.KAN`` (any layers: pruned, refined, symbolic) or ``kanjax.MLP``
        (activation a function of ``jax.nn`` or ``jax.numpy``).
      history: a ``kanjax.History`` to store alongside (``history.json``).
      optimizer_state: any pytree of arrays, e.g. an optax state. Tuples, lists, dicts and
        NamedTuples of optax/flax/jax/kanjax are rebuilt on load; other structures need
        ``load(..., optimizer_state_like=...)``.
      metadata: a JSON-serialisable dict returned as ``Checkpoint.metadata`` on load.
      overwrite: replace an existing checkpoint at ``path`` (``False``: raise
        ``FileExistsError``).

    Returns:
      The absolute path written.

    Raises:
      TypeError: ``model`` (or an attribute of it) or ``metadata`` cannot be stored; nothing
        is written.
      FileExistsError: ``path`` exists and may not be replaced; nothing is written.
    """
    path = _abspath(path)
    spec, model_arrays = _describe_model(model)
    user = {} if metadata is None else dict(metadata)
    try:
        json.dumps(user, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"metadata must be JSON-serialisable: {err}") from None
    history_dict = None
    if history is not None:
        if not hasattr(history, "to_dict"):
            raise TypeError(f"history must be a kanjax.History, got {type(history).__name__}")
        history_dict = history.to_dict()
        try:
            json.dumps(history_dict, allow_nan=True)
        except (TypeError, ValueError) as err:
            raise TypeError(f"history is not JSON-serialisable: {err}") from None

    flat = {f"model/{k}": v for k, v in model_arrays.items()}
    opt_meta = None
    if optimizer_state is not None:
        opt_meta, opt_leaves = _describe_optimizer_state(optimizer_state)
        flat.update({f"optimizer_state/{i}": leaf for i, leaf in enumerate(opt_leaves)})
    # One transfer to the host for everything; numpy arrays are device-independent on disk.
    flat = dict(zip(flat, jax.device_get(list(flat.values()))))
    flat = {k: np.asarray(v) for k, v in flat.items()}
    bad = [k for k, v in flat.items() if v.dtype == object]
    if bad:
        raise TypeError(f"cannot save non-numeric leaves: {bad}")
    arrays_meta = {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in flat.items()}

    _check_destination(path, overwrite)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f"{name}.tmp-", dir=parent)
    try:
        _write_arrays(os.path.join(tmp, _ARRAYS), _nested(flat))
        if history_dict is not None:
            _write_json(os.path.join(tmp, _HISTORY), history_dict)
        meta = {
            "format_version": FORMAT_VERSION,
            "kanjax_version": _kanjax_version(),
            "versions": _versions(),
            "model": spec,
            "arrays": arrays_meta,
            "optimizer_state": opt_meta,
            "history": history_dict is not None,
            "files": _manifest(tmp),
            "metadata": user,
        }
        _write_json(os.path.join(tmp, _METADATA), meta)
        _fsync_dir(tmp)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_arrays(directory: str, tree: dict) -> None:
    ocp = _orbax()
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    try:
        checkpointer.save(directory, args=ocp.args.PyTreeSave(tree))
    finally:
        checkpointer.close()


def _kanjax_version() -> str:
    import kanjax

    return str(getattr(kanjax, "__version__", "unknown"))


def _versions() -> dict[str, str]:
    import flax

    out = {"jax": jax.__version__, "flax": flax.__version__}
    try:
        from importlib.metadata import version

        out["orbax-checkpoint"] = version("orbax-checkpoint")
    except Exception:  # noqa: BLE001 - informational only
        pass
    return out


# ----------------------------------------------------------------------------- load


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The validated contents of ``path/metadata.json`` (format version, versions, architecture, ...).

    Raises:
      CheckpointError: no checkpoint at ``path``, or unreadable/incompatible metadata.
    """
    return _read_metadata(_abspath(path))


def _read_metadata(path: str) -> dict[str, Any]:
    def fail(problem):
        return CheckpointError(f"checkpoint {path}: {problem}")

    if not os.path.exists(path):
        parent, name = os.path.split(path)
        stale = sorted(n for n in os.listdir(parent) if n.startswith(f"{name}.old-")) if (
            os.path.isdir(parent)) else []
        hint = (f"; an interrupted save left {os.path.join(parent, stale[-1])}, which holds the "
                "previous checkpoint" if stale else "")
        raise fail(f"does not exist{hint}")
    if not os.path.isdir(path):
        raise fail("is not a directory")
    meta_path = os.path.join(path, _METADATA)
    if not os.path.isfile(meta_path):
        raise fail(f"missing {_METADATA} (not a kanjax checkpoint, or an incomplete one)")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail(f"{_METADATA} is unreadable (truncated or corrupt): {err}") from None
    if not isinstance(meta, dict):
        raise fail(f"{_METADATA} does not hold a JSON object")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise fail(f"{_METADATA} has no integer format_version (got {version!r})")
    if version > FORMAT_VERSION:
        raise fail(
            f"format_version {version} is newer than this kanjax reads ({FORMAT_VERSION}); "
            f"it was written by kanjax {meta.get('kanjax_version', '?')}: upgrade kanjax"
        )
    if version < 1:
        raise fail(f"invalid format_version {version}")
    for key, kind in (("model", dict), ("arrays", dict), ("files", dict)):
        if not isinstance(meta.get(key), kind):
            raise fail(f"{_METADATA} lacks a valid {key!r} entry")
    cls = meta["model"].get("class")
    if cls not in _MODEL_CLASSES:
        raise fail(f"unknown model class {cls!r} (kanjax loads {', '.join(_MODEL_CLASSES)})")
    return meta


def _verify_files(path: str, files: Mapping[str, Any]) -> None:
    for rel, expected in files.items():
        full = os.path.join(path, *rel.split("/"))
        if os.path.isabs(rel) or ".." in rel.split("/"):
            raise CheckpointError(f"checkpoint {path}: invalid file name {rel!r} in {_METADATA}")
        if not isinstance(expected, dict):
            raise CheckpointError(f"checkpoint {path}: invalid entry for {rel!r} in {_METADATA}")
        if not os.path.isfile(full):
            raise CheckpointError(f"checkpoint {path}: file {rel} is missing")
        size, sha = _file_digest(full)
        if size != expected.get("size"):
            raise CheckpointError(
                f"checkpoint {path}: file {rel} has {size} bytes, expected {expected.get('size')} "
                "(truncated or overwritten)"
            )
        if sha != expected.get("sha256"):
            raise CheckpointError(f"checkpoint {path}: file {rel} is corrupt (checksum mismatch)")


def _read_arrays(path: str, arrays_meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    ocp = _orbax()
    directory = os.path.join(path, _ARRAYS)
    restore_args = _nested({k: ocp.RestoreArgs(restore_type=np.ndarray) for k in arrays_meta})
    try:
        checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
        try:
            tree = checkpointer.restore(directory, args=ocp.args.PyTreeRestore(
                restore_args=restore_args))
        finally:
            checkpointer.close()
    except Exception as err:  # noqa: BLE001 - orbax/tensorstore raise many types
        first_line = (str(err).strip().splitlines() or [""])[0]
        summary = f"{type(err).__name__}: {first_line}"
        raise CheckpointError(
            f"checkpoint {path}: the arrays could not be read ({summary[:300]})"
        ) from None
    flat = _flat(tree)
    if set(flat) != set(arrays_meta):
        missing = sorted(set(arrays_meta) - set(flat))
        extra = sorted(set(flat) - set(arrays_meta))
        raise CheckpointError(
            f"checkpoint {path}: the arrays do not match {_METADATA} (missing {missing}, "
            f"unexpected {extra})"
        )
    for key, value in flat.items():
        expected = arrays_meta[key]
        value = np.asarray(value)
        if not isinstance(expected, dict) or list(value.shape) != expected.get("shape") or (
                value.dtype.name != expected.get("dtype")):
            raise CheckpointError(
                f"checkpoint {path}: array {key} has shape {list(value.shape)} and dtype "
                f"{value.dtype.name}, {_METADATA} says {expected.get('shape')} and "
                f"{expected.get('dtype')}"
            )
        flat[key] = value
    return flat


def _to_jax(key: str, array: np.ndarray) -> jax.Array:
    value = jnp.asarray(array)
    if value.dtype != array.dtype:  # e.g. float64 with jax_enable_x64 off: refuse to round
        raise TypeError(
            f"array {key} is {array.dtype.name} but JAX would hold it as {value.dtype.name} "
            "(enable jax_enable_x64 to load 64-bit checkpoints)"
        )
    return value


def _apply_attributes(node, attributes: Mapping[str, Any], arrays: Mapping[str, Any],
                      prefix: tuple[str, ...], *, drop_unsaved: bool = True) -> None:
    """Set ``node``'s saved attributes; with ``drop_unsaved``, delete the ones not saved."""
    for name, entry in attributes.items():
        kind = entry["kind"]
        if kind == "variable":
            key = "/".join(("model", *prefix, name))
            if key not in arrays:
                raise KeyError(f"no array {key} for variable {'.'.join((*prefix, name))}")
            cls = _variable_class(entry["class"])
            setattr(node, name, nnx.data(cls(_to_jax(key, arrays[key]))))
        elif kind == "data":
            setattr(node, name, nnx.data(None))
        elif kind == "static":
            setattr(node, name, nnx.static(_decode_static(entry["value"])))
        else:
            raise ValueError(f"unknown attribute kind {kind!r} for {name}")
    if drop_unsaved:  # attributes a fresh module has but the saved one did not
        for name in list(_attributes(node)):
            if name not in attributes:
                delattr(node, name)


def _skeleton(build: Callable[[], nnx.Module]) -> nnx.Module:
    """``build()`` with abstract arrays; its dtype warnings (e.g. float64 without x64) are
    moot because every array is replaced, and ``_to_jax`` reports a dtype JAX cannot hold."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return nnx.eval_shape(build)


def _build_model(meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> nnx.Module:
    spec = meta["model"]
    widths = [int(w) for w in spec["widths"]]
    layers = spec["layers"]
    if len(layers) != len(widths) - 1:
        raise ValueError(f"{len(layers)} layer entries for widths {widths}")
    if spec["class"] == "KAN":
        first = {k: v for k, v in layers[0]["attributes"].items() if v["kind"] == "static"}
        kwargs = {}
        for key in ("basis", "dtype", "param_dtype"):
            if key in first:
                kwargs[key] = _decode_static(first[key]["value"])
        if "bias" in layers[0]["attributes"]:
            kwargs["use_bias"] = layers[0]["attributes"]["bias"]["kind"] == "variable"
        # Shapes only: every array is replaced below, so nothing is initialised.
        model = _skeleton(lambda: nn_lib.KAN(widths, rngs=nnx.Rngs(0), **kwargs))
        _apply_attributes(model, spec.get("attributes", {}), arrays, (), drop_unsaved=False)
        for i, (layer, layer_spec) in enumerate(zip(model.layers, layers)):
            _apply_attributes(layer, layer_spec["attributes"], arrays, ("layers", str(i)))
    else:
        activation = _resolve_activation(spec["activation"])
        model = _skeleton(lambda: nn_lib.MLP(
            widths, activation=activation, dtype=_decode_static(spec["dtype"]),
            param_dtype=_decode_static(spec["param_dtype"]), rngs=nnx.Rngs(0)))
        for i, (layer, layer_spec) in enumerate(zip(model.layers, layers)):
            _apply_attributes(layer, layer_spec["attributes"], arrays, ("layers", str(i)),
                              drop_unsaved=False)  # nnx.Linear's settings: from MLP(...)
    abstract = [
        ".".join(map(str, p)) for p, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model))
        if not isinstance(leaf, jax.Array)
    ]
    if abstract:
        raise ValueError(f"the checkpoint has no arrays for the model's variables {abstract}")
    return model


def load(
    path: str | os.PathLike,
    *,
    with_extras: bool = False,
    optimizer_state_like=None,
):
    """Load a checkpoint written by :func:`save`.

    Args:
      path: the checkpoint directory.
      with_extras: return a :class:`Checkpoint` ``(model, history, optimizer_state,
        metadata)`` instead of the model alone.
      optimizer_state_like: a pytree with the structure of the saved optimizer state
        (e.g. ``optimizer.init(params)``); its structure is used to rebuild the state, and
        its leaves' shapes and dtypes are checked. Needed only for states whose structure
        ``save`` could not describe (custom pytree nodes, NamedTuples outside
        optax/flax/jax/kanjax).

    Returns:
      The model (a ``KAN`` or ``MLP``, arrays on the default device), or a ``Checkpoint``.

    Raises:
      CheckpointError: the checkpoint is missing, incomplete, truncated or corrupt, of a newer
        format, of an unknown model class, or its arrays do not match its metadata.
    """
    path = _abspath(path)
    if optimizer_state_like is not None and not with_extras:
        raise ValueError("optimizer_state_like is used with with_extras=True only")
    meta, arrays = _open(path)
    model = _model(path, meta, arrays)
    if not with_extras:
        return model
    return Checkpoint(
        model,
        _history(path, meta),
        _optimizer_state(path, meta, arrays, optimizer_state_like),
        dict(meta.get("metadata") or {}),
    )


def _open(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The validated metadata and arrays (host numpy) of the checkpoint at absolute ``path``."""
    meta = _read_metadata(path)
    _verify_files(path, meta["files"])
    return meta, _read_arrays(path, meta["arrays"])


def _model(path: str, meta, arrays) -> nnx.Module:
    try:
        return _build_model(meta, arrays)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild the model: {err}") from None


def _history(path: str, meta):
    if not meta.get("history"):
        return None
    from kanjax.history import History

    try:
        with open(os.path.join(path, _HISTORY), encoding="utf-8") as f:
            return History.from_dict(json.load(f))
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: {_HISTORY} is unreadable: {err}") from None


def _optimizer_state(path: str, meta, arrays, like):
    if meta.get("optimizer_state") is None:
        if like is not None:
            raise CheckpointError(f"checkpoint {path}: holds no optimizer state")
        return None
    return _load_optimizer_state(path, meta["optimizer_state"], arrays, like)


def _load_optimizer_state(path: str, opt_meta: Mapping[str, Any], arrays, like):
    n = int(opt_meta["num_leaves"])
    key_impls = opt_meta.get("prng_key_impl") or [None] * n
    leaves = []
    for i in range(n):
        try:
            value = _to_jax(f"optimizer_state/{i}", arrays[f"optimizer_state/{i}"])
        except TypeError as err:
            raise CheckpointError(f"checkpoint {path}: {err}") from None
        if key_impls[i] is not None:
            value = jax.random.wrap_key_data(value, impl=key_impls[i])
        leaves.append(value)
    if like is not None:
        like_leaves, treedef = jax.tree.flatten(like)
        if len(like_leaves) != n:
            raise CheckpointError(
                f"checkpoint {path}: the saved optimizer state has {n} arrays, "
                f"optimizer_state_like has {len(like_leaves)}"
            )
        for i, (saved, ref) in enumerate(zip(leaves, like_leaves)):
            ref_shape, ref_dtype = np.shape(ref), jnp.result_type(ref)
            if saved.shape != ref_shape or saved.dtype != ref_dtype:
                raise CheckpointError(
                    f"checkpoint {path}: optimizer state leaf {i} has shape {saved.shape} and "
                    f"dtype {saved.dtype}, optimizer_state_like has {ref_shape} and {ref_dtype}"
                )
        return jax.tree.unflatten(treedef, leaves)
    if opt_meta.get("structure") is None:
        raise CheckpointError(
            f"checkpoint {path}: the optimizer state's structure was not recorded; pass "
            "optimizer_state_like= (e.g. optimizer.init(params)) to load it"
        )
    try:
        return _build_tree(opt_meta["structure"], leaves)
    except (KeyError, TypeError, ValueError, AttributeError, ImportError, IndexError) as err:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild the optimizer state: {err}") from None


# ----------------------------------------------------------------------------- training runs

_CHECKPOINT_NAME = "latest"


def training_checkpoints(model, checkpoint_dir, checkpoint_every, resume, members):
    """The checkpoint of a ``train`` run (validated before any work); ``None`` without a dir.

    ``members`` is the ensemble size (``None`` for one model); ensembles are not
    checkpointed.
    """
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer)):
        raise TypeError(f"checkpoint_every must be an integer, got {checkpoint_every!r}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
    every = int(checkpoint_every)
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {resume!r}")
    if checkpoint_dir is None:
        if every or resume:
            raise ValueError("checkpoint_every and resume need a checkpoint_dir")
        return None
    if members is not None:
        raise ValueError("checkpoint_dir is not supported by train_ensemble")
    _describe_model(model)  # TypeError now, not after the first epoch
    directory = _abspath(checkpoint_dir)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"checkpoint_dir {directory} exists and is not a directory")
    return TrainingCheckpoints(directory, every)


def _variable_summary(state) -> dict[str, tuple[str, tuple[int, ...], str]]:
    return {
        ".".join(map(str, path)): (type(var).__name__, tuple(np.shape(var[...])),
                                   str(jnp.result_type(var[...])))
        for path, var in nnx.to_flat_state(state)
    }


class TrainingCheckpoints:
    """The checkpoint of one ``train`` run, ``directory/latest``, replaced at every save."""

    def __init__(self, directory: str, every: int):
        self.path = os.path.join(directory, _CHECKPOINT_NAME)
        self.every = every
        self.epochs = 0
        self.options: dict[str, Any] = {}
        self.key: dict[str, Any] = {}

    def configure(self, *, epochs: int, key, options: dict[str, Any]) -> None:
        self.epochs = epochs
        # Normalised through JSON, as they will be read back from metadata.json.
        self.options = json.loads(json.dumps(options))
        self.key = {"impl": str(jax.random.key_impl(key)),
                    "data": np.asarray(jax.random.key_data(key)).tolist()}

    def due(self, completed: int) -> bool:
        return completed == self.epochs or bool(self.every and completed % self.every == 0)

    def save(self, graphdef, params, rest, opt_state, history, completed: int) -> None:
        save(
            self.path, nnx.merge(graphdef, params, rest), history=history,
            optimizer_state=opt_state,
            metadata={"train": {"epoch": completed, "options": self.options, "key": self.key}},
        )

    def restore(self, graphdef, params, rest, opt_state):
        """``(params, rest, opt_state, history, epoch)`` from the checkpoint, or ``None`` if none.

        ``params``, ``rest`` and ``opt_state`` of the fresh run give the structures (and are
        checked against the checkpoint's shapes); the returned ones have those structures.
        """
        if not os.path.exists(self.path):
            parent, name = os.path.split(self.path)
            if os.path.isdir(parent) and any(n.startswith(f"{name}.old-") for n in os.listdir(parent)):
                read_metadata(self.path)  # raises, naming the interrupted save
            return None
        # In order: the run's options, the model, then the optimizer state, so that the
        # error names the first difference.
        file_meta, arrays = _open(self.path)
        meta = (file_meta.get("metadata") or {}).get("train")
        history = _history(self.path, file_meta)
        if not isinstance(meta, dict) or history is None:
            raise CheckpointError(
                f"checkpoint {self.path}: was not written by kanjax.train (no training state)")
        epoch = self._check_run(meta, history)
        params, rest = self._restore_model(file_meta, arrays, graphdef, params, rest)
        opt_state = _optimizer_state(self.path, file_meta, arrays, opt_state)
        return params, rest, opt_state, history, epoch

    def _incompatible(self, problem):
        return ValueError(f"cannot resume from checkpoint {self.path}: {problem}")

    def _check_run(self, meta, history) -> int:
        saved = meta.get("options", {})
        diffs = [
            f"{k}: {saved.get(k, '<unset>')!r} in the checkpoint, {self.options.get(k, '<unset>')!r} now"
            for k in sorted(set(saved) | set(self.options)) if saved.get(k) != self.options.get(k)
        ]
        if diffs:
            raise self._incompatible(
                "it was written by a run with other options (" + "; ".join(diffs) + ")")
        if meta.get("key") != self.key:
            raise self._incompatible(
                f"its shuffling key {meta.get('key')} differs from this run's {self.key} (another "
                "jax PRNG implementation?)")
        epoch = meta.get("epoch")
        if (isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= self.epochs
                or history.epochs != epoch):
            raise CheckpointError(
                f"checkpoint {self.path}: invalid epoch counter {epoch!r} (history has "
                f"{history.epochs} epochs)")
        return epoch

    def _restore_model(self, file_meta, arrays, graphdef, params, rest):
        model = _model(self.path, file_meta, arrays)
        loaded_graphdef, loaded_params, loaded_rest = nnx.split(model, nnx.Param, ...)
        for what, fresh, loaded in (("trainable", params, loaded_params),
                                    ("non-trainable", rest, loaded_rest)):
            a, b = _variable_summary(loaded), _variable_summary(fresh)
            if a != b:
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[:5]
                raise self._incompatible(
                    f"its model's {what} variables differ from `model`'s at {diff} "
                    f"(checkpoint {[a.get(k) for k in diff]}, model {[b.get(k) for k in diff]}); "
                    "build `model` as for the checkpointed run")
        if loaded_graphdef != graphdef:
            raise self._incompatible(
                "its model's static attributes (basis, grids, symbolic edges, ...) differ from "
                "`model`'s; build `model` as for the checkpointed run")
        params = jax.tree.unflatten(jax.tree.structure(params), jax.tree.leaves(loaded_params))
        rest = jax.tree.unflatten(jax.tree.structure(rest), jax.tree.leaves(loaded_rest))
        return params, rest
