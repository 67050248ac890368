"""Checkpoints: save a KAN or MLP, with its history and optimizer state, and load it back.

A checkpoint is a directory holding one ``orbax.checkpoint.CheckpointManager`` step with
the items ``state`` and ``optimizer`` (arrays, ``StandardSave``), ``config`` (the model's
structure, :func:`kanjax.nn.model_config`), ``history``, ``metadata`` and ``train`` (JSON)
and ``digest`` (SHA-256 of every other item). Loading never looks up a class, function or
attribute by a name read from a file: the model is rebuilt from its typed config under
``nnx.eval_shape``, orbax restores the arrays against that abstract state after their
stored shapes are checked, the digest is verified and ``nnx.merge`` gives the model.
Orbax writes a step to a temporary directory and renames it when complete, so a save that
dies leaves the previous step loadable; the next save removes what it left.
Orbax is imported where a checkpoint is read or written: it adds 0.3-0.5 s to a process's start.

    kanjax.save("ckpt", model, history=history, optimizer_state=opt_state)
    ckpt = kanjax.load("ckpt", optimizer=tx, with_extras=True)  # Checkpoint(model, ...)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from kanjax import nn as nn_lib
from kanjax import schema
from kanjax.history import History

try:
    import fcntl
except ImportError:  # not POSIX: saves to one path are not serialised
    fcntl = None

__all__ = ["FORMAT_VERSION", "Checkpoint", "CheckpointError", "load", "read_config", "save"]

FORMAT_VERSION = 2
"""Version of the on-disk layout; ``load`` refuses checkpoints of any other version."""

_JSON_ITEMS = ("config", "history", "metadata", "train")
_ARRAY_ITEMS = ("state", "optimizer")


class CheckpointError(ValueError):
    """A checkpoint cannot be read: missing, damaged, foreign, of another format version, or
    not matching the model or optimizer it is restored into. The message names the path."""


class Checkpoint(NamedTuple):
    """``load(path, with_extras=True)``: the model, ``History`` or ``None``, optimizer
    state (``None`` unless ``optimizer`` was given) and the ``metadata`` given to save."""

    model: nnx.Module
    history: Any
    optimizer_state: Any
    metadata: dict[str, Any]


def _json_digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def array_digests(tree) -> dict[str, str]:
    """``{path: sha256 of dtype, shape and bytes}`` for every array of ``tree``."""
    arrays = {k: np.ascontiguousarray(v) for k, v in flat_paths(jax.device_get(tree)).items()}
    return {k: hashlib.sha256(f"{a.dtype.name}{a.shape}".encode() + a.tobytes()).hexdigest()
            for k, a in arrays.items()}


def absolute_path(path) -> str:
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}") from None
    if not path:
        raise ValueError("path is empty")
    return os.path.abspath(os.path.expanduser(path))


LOCK_NAME = ".kanjax-lock"
"""The lock file inside a checkpoint directory that serialises saves to it."""


def _is_orbax_entry(name: str) -> bool:
    return name.isdigit() or ".orbax-checkpoint-tmp" in name or name == LOCK_NAME


def check_destination(path: str, overwrite: bool) -> None:
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        raise FileExistsError(f"{path} exists and is not a directory; refusing to replace it")
    names = os.listdir(path)
    if not all(_is_orbax_entry(n) for n in names):
        raise FileExistsError(f"{path} is a non-empty directory that is not a kanjax "
                              "checkpoint; refusing to write into it (choose another path)")
    if any(n.isdigit() for n in names) and not overwrite:
        raise FileExistsError(f"{path} already holds a checkpoint (pass overwrite=True to replace it)")


def _manager(path: str, *, writing: bool = False):
    import orbax.checkpoint as ocp
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1 if writing else None, enable_async_checkpointing=False, create=writing,
        cleanup_tmp_directories=writing)
    handlers = {k: ocp.StandardCheckpointHandler() for k in _ARRAY_ITEMS}
    handlers.update({k: ocp.JsonCheckpointHandler() for k in ("digest", *_JSON_ITEMS)})
    return ocp.CheckpointManager(path, options=options, item_handlers=handlers)


def flat_paths(tree) -> dict[str, Any]:
    """``{"a/0/b": leaf}`` for a pytree (the same names for an ``nnx.State`` and for the
    nested dicts orbax's metadata gives back)."""
    return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _json_ready(value, name: str):
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be JSON-serialisable: {err}") from None


def _members(model, config) -> int | None:
    """The ensemble size of ``model`` (``None`` for one model); ``config`` must rebuild it."""
    graphdef, state = nnx.split(model)
    abstract_def, abstract = _abstract({"model": config, "members": None})
    shapes, want = ([np.shape(x) for x in jax.tree.leaves(t)] for t in (state, abstract))
    if graphdef == abstract_def and shapes == want:
        return None
    if graphdef == abstract_def and len({s[:1] for s in shapes}) == 1 and [
            s[1:] for s in shapes] == want:
        return shapes[0][0]
    raise TypeError(f"cannot save this {type(model).__name__}: its config does not describe its "
                    "arrays (was it changed outside kanjax's methods?)")


def save(path: str | os.PathLike, model: nnx.Module, *, history=None,
         optimizer_state=None, metadata: Mapping[str, Any] | None = None,
         overwrite: bool = True) -> str:
    """Write ``model`` (a ``KAN`` or ``MLP`` or an ensemble of them, pruned, refined or
    symbolic), optionally its ``History``, optimizer state (any pytree of arrays) and a JSON
    ``metadata`` dict, to the directory ``path``; returns its absolute path. A checkpoint
    there is replaced (``overwrite=False`` refuses) and stays loadable until the new one is
    complete; anything else there is refused."""
    path = absolute_path(path)
    config = nn_lib.model_config(model)
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a kanjax.History or None, got {type(history).__name__}")
    items = {"config": {"model": config, "members": _members(model, config)},
             "history": None if history is None else _json_ready(history.to_dict(), "history"),
             "metadata": _json_ready(dict(metadata or {}), "metadata"), "train": None}
    check_destination(path, overwrite)
    write(path, items, {"state": nnx.state(model), "optimizer": optimizer_state})
    return path


def write(path: str, json_items: Mapping[str, Any], arrays: Mapping[str, Any]) -> int:
    """A new step at ``path`` with the JSON items, the array pytrees (``None`` ones left out)
    and their digest, under ``path``'s lock; then older steps and whatever interrupted saves
    left are removed. Returns the step."""
    arrays = {k: v for k, v in arrays.items() if v is not None}
    digest = {"format_version": FORMAT_VERSION,
              "json": {k: _json_digest(v) for k, v in json_items.items()},
              "arrays": {k: array_digests(v) for k, v in arrays.items()}}
    import orbax.checkpoint as ocp
    args = {**{k: ocp.args.JsonSave(v) for k, v in {**json_items, "digest": digest}.items()},
            **{k: ocp.args.StandardSave(v) for k, v in arrays.items()}}
    os.makedirs(path, exist_ok=True)
    with _locked(path, shared=False):
        try:
            with _manager(path, writing=True) as mngr:
                step = (mngr.latest_step() or 0) + 1
                mngr.save(step, args=ocp.args.Composite(**args), force=True)
        except Exception as err:
            raise CheckpointError(f"checkpoint {path}: could not save ({err!r:.300})") from err
        _remove_stale(path, step)
    return step


def _remove_stale(path: str, step: int) -> None:
    """Delete every entry of ``path`` but step ``step`` and the lock file."""
    for name in os.listdir(path):
        if name not in (str(step), LOCK_NAME) and _is_orbax_entry(name):
            shutil.rmtree(os.path.join(path, name), ignore_errors=True)


@contextlib.contextmanager
def _locked(path: str, *, shared: bool):
    """Hold ``path``'s lock: exclusive to write, shared to read. Readers never create the
    lock file; where there is none (or no ``fcntl``) they read without it."""
    lock = os.path.join(path, LOCK_NAME)
    try:
        fd = os.open(lock, os.O_RDONLY) if shared else os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if not shared:
            raise
        fd = None
    try:
        if fd is not None and fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _abstract(config):
    """``(graphdef, abstract state)`` of the model a file's ``config`` item describes."""
    with warnings.catch_warnings():  # e.g. float64 without x64: load reports it below
        warnings.simplefilter("ignore", UserWarning)
        model = nnx.eval_shape(lambda: nn_lib.model_from_config(config["model"],
                                                                rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    members = config["members"]
    if members is not None and members < 1:
        raise schema.ConfigError(f"config.members must be >= 1 or null, got {members}")
    if members is not None:
        state = jax.tree.map(lambda s: jax.ShapeDtypeStruct((members, *s.shape), s.dtype), state)
    return graphdef, state


class Reader:
    """The newest step of ``manager``'s checkpoint at ``path``: its JSON items, verified
    against the digest on construction, and :meth:`restore` for its arrays."""

    def __init__(self, path: str, manager):
        self.path, self.manager = path, manager
        self.step = manager.latest_step()
        if self.step is None:
            raise self.error("holds no complete checkpoint")
        names = ("digest", *_JSON_ITEMS)
        import orbax.checkpoint as ocp
        try:
            found = self.manager.restore(self.step, args=ocp.args.Composite(
                **{k: ocp.args.JsonRestore() for k in names}))
            self.items = {k: found[k] for k in names}
        except Exception as err:  # noqa: BLE001 - orbax and json raise many types
            raise self.error(f"step {self.step} is unreadable ({err!r:.300})") from None
        self.digest = self.items.pop("digest")
        if not isinstance(self.digest, dict) or self.digest.get("format_version") != FORMAT_VERSION:
            raise self.error(f"not a format-{FORMAT_VERSION} kanjax checkpoint")
        for key, value in self.items.items():
            if _json_digest(value) != self.digest.get("json", {}).get(key):
                raise self.error(f"its {key} item is corrupt (checksum mismatch)")

    def error(self, problem: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {self.path}: {problem}")

    def restore(self, name: str, abstract):
        """Item ``name`` restored against ``abstract`` and checked against the digest."""
        want = self.digest.get("arrays", {}).get(name)
        if want is None:
            raise self.error(f"holds no {name} arrays")
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(np.shape(s), s.dtype), abstract)
        self._check_shapes(name, target)
        import orbax.checkpoint as ocp
        try:
            tree = self.manager.restore(self.step, args=ocp.args.Composite(
                **{name: ocp.args.StandardRestore(target)}))[name]
        except Exception as err:  # noqa: BLE001 - orbax/tensorstore raise many types
            raise self.error(f"the {name} arrays could not be read ({err!r:.300})") from None
        got = array_digests(tree)
        bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        if bad:
            raise self.error(f"{name} arrays {bad[:5]} are corrupt or do not match (checksum)")
        return tree

    def _check_shapes(self, name: str, target) -> None:
        """Stored array shapes and dtypes against ``target``'s, before reading any array."""
        try:
            stored = {k: (tuple(m.shape), np.dtype(m.dtype).name) for k, m in
                      flat_paths(self.manager.item_metadata(self.step)[name].tree).items()}
        except Exception as err:  # noqa: BLE001 - orbax raises many types on damaged metadata
            raise self.error(f"the {name} metadata is unreadable ({err!r:.300})") from None
        wanted = {k: (tuple(t.shape), np.dtype(t.dtype).name) for k, t in flat_paths(target).items()}
        for key in sorted(set(stored) | set(wanted)):
            got, want = stored.get(key, "missing"), wanted.get(key, "unexpected")
            if got != want:
                hint = ("; to load float64 arrays, first jax.config.update('jax_enable_x64', "
                        "True)") if got[1:] == ("float64",) and not jax.config.jax_enable_x64 else ""
                raise self.error(f"array {name}/{key} (shape, dtype) is {got} in the file but "
                                 f"{want} in the model its config describes{hint}")

    def model(self):
        try:
            config = schema.check(self.items["config"], {"model": "dict", "members": "int?"},
                                  "config")
            graphdef, abstract = _abstract(config)
        except ValueError as err:
            raise self.error(f"invalid config: {err}") from None
        return nnx.merge(graphdef, self.restore("state", abstract))


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's verified ``{"model": model_config, "members": ensemble size | None}``."""
    with reading(path) as reader:
        return reader.items["config"]


def load(path: str | os.PathLike, *, optimizer=None, optimizer_state_like=None,
         with_extras: bool = False):
    """The model saved at ``path``, or with ``with_extras`` a :class:`Checkpoint`.

    The optimizer state is restored only against a structure the caller gives:
    ``optimizer`` (the optax transform whose state was saved; its ``init`` of the model's
    ``nnx.Param`` state, shapes only) or ``optimizer_state_like`` (any pytree with the saved
    structure, shapes and dtypes). Raises :class:`CheckpointError` for a missing, damaged or
    foreign checkpoint, or one that does not match the optimizer given.
    """
    if optimizer is not None and optimizer_state_like is not None:
        raise ValueError("pass optimizer or optimizer_state_like, not both")
    with reading(path) as step:
        model = step.model()
        if not with_extras:
            return model
        if optimizer is not None:
            optimizer_state_like = jax.eval_shape(optimizer.init, nnx.state(model, nnx.Param))
        opt = None if optimizer_state_like is None else step.restore("optimizer", optimizer_state_like)
        history = step.items["history"]
        try:
            history = None if history is None else History.from_dict(history)
        except (TypeError, ValueError, KeyError) as err:
            raise step.error(f"invalid history: {err}") from None
        return Checkpoint(model, history, opt, dict(step.items["metadata"] or {}))


@contextlib.contextmanager
def reading(path):
    """A :class:`Reader` of the checkpoint at ``path``, holding its lock so that no save
    replaces the step while it is read."""
    path = absolute_path(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path}: "
                              + ("does not exist" if not os.path.lexists(path) else "is not a directory"))
    if os.path.isfile(os.path.join(path, "metadata.json")):
        raise CheckpointError(
            f"checkpoint {path} is a format-1 kanjax checkpoint, which this kanjax no longer "
            f"reads; convert it with `kanjax convert-checkpoint {path} NEW_PATH`")
    with _locked(path, shared=True), _manager(path) as manager:
        yield Reader(path, manager)
