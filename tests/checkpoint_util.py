"""Helpers shared by the checkpoint test modules: comparing models and editing a saved
checkpoint's files the way a user (or an attacker) with a text editor would."""

import hashlib
import json
import os
import pathlib

import jax
import numpy as np
from flax import nnx


def x_like(n=64, d=3, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, d), minval=-1.0, maxval=1.0)


def assert_same_model(a, b, x):
    """Bitwise-equal outputs, identical state (paths, variable types, values) and graphdef."""
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))
    fa, fb = nnx.to_flat_state(nnx.state(a)), nnx.to_flat_state(nnx.state(b))
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, va), (_, vb) in zip(fa, fb):
        assert type(va) is type(vb), path
        assert va[...].dtype == vb[...].dtype, path
        np.testing.assert_array_equal(np.asarray(va[...]), np.asarray(vb[...]), err_msg=str(path))
    assert nnx.graphdef(a) == nnx.graphdef(b)


def step_dir(path) -> pathlib.Path:
    steps = [n for n in os.listdir(path) if n.isdigit()]
    assert len(steps) == 1, os.listdir(path)
    return pathlib.Path(path) / steps[0]


def item_file(path, name) -> pathlib.Path:
    return step_dir(path) / name / "metadata"


def read_item(path, name):
    return json.loads(item_file(path, name).read_text())


def canonical_sha256(obj) -> str:
    """The digest a kanjax checkpoint records for a JSON item (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_item(path, name, value, *, redigest: bool) -> None:
    """Replace JSON item ``name``; with ``redigest`` also its checksum, as a deliberate
    forger would, so that only the schema stands between the file and the loader."""
    item_file(path, name).write_text(json.dumps(value))
    if redigest:
        digest = read_item(path, "digest")
        digest["json"][name] = canonical_sha256(value)
        item_file(path, "digest").write_text(json.dumps(digest))


def string_positions(tree, prefix=()):
    """Every path to a string in a JSON value."""
    if isinstance(tree, str):
        yield prefix
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from string_positions(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from string_positions(v, (*prefix, i))


def dict_positions(tree, prefix=()):
    """Every path to an object in a JSON value."""
    if isinstance(tree, dict):
        yield prefix
        for k, v in tree.items():
            yield from dict_positions(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from dict_positions(v, (*prefix, i))


def set_at(tree, path, value):
    node = tree
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


def get_at(tree, path):
    for k in path:
        tree = tree[k]
    return tree
