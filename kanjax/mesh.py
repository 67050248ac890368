"""Data-parallel placement for :func:`kanjax.train`: which mesh, and what the program does on it."""

from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["Placement", "batch_shards", "program_report", "replicate", "resolve_mesh"]


def resolve_mesh(mesh, members=None):
    """The mesh ``train`` shards batches over, or ``None`` for single-device training."""
    if isinstance(mesh, str):
        if mesh != "auto":
            raise ValueError(f"mesh must be 'auto', None or a jax.sharding.Mesh, got {mesh!r}")
        if jax.device_count() <= 1 or members is not None:
            return None
        return Mesh(np.asarray(jax.devices()), ("data",))
    if mesh is None:
        return None
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be 'auto', None or a jax.sharding.Mesh, got {type(mesh).__name__}")
    if members is not None:
        raise NotImplementedError("train_ensemble does not shard over a mesh yet; pass mesh=None")
    if mesh.size == 1:
        return None
    return mesh


def batch_shards(mesh) -> int:
    """How many slices a minibatch is split into (the size of the mesh's first axis)."""
    return 1 if mesh is None else int(mesh.shape[mesh.axis_names[0]])


class Placement:
    """Where the epoch program's arrays live: replicated state, minibatches split on the
    mesh's first axis. ``mesh=None``: one device, every method a no-op."""

    def __init__(self, mesh):
        self.mesh = mesh
        if mesh is not None:
            self.replicated = NamedSharding(mesh, PartitionSpec())
            self.batch = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))

    def replicate(self, tree):
        if self.mesh is None:
            return tree
        return jax.tree.map(lambda a: replicate(a, self.replicated), tree)

    def put(self, tree):
        """``tree`` (device arrays) replicated over the mesh."""
        return tree if self.mesh is None else jax.device_put(tree, self.replicated)

    def split_batch(self, tree):
        """Inside the program: each device gathers and differentiates its slice."""
        if self.mesh is None:
            return tree
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, self.batch), tree)


def replicate(a, sharding):
    """``a`` on every device of ``sharding``'s mesh (also across hosts: each process gives
    the same values)."""
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def program_report(compiled, mesh) -> dict:
    """What the compiled epoch does across devices: collective ops and any host transfer."""
    try:
        text = compiled.as_text()
    except Exception:  # noqa: BLE001  (some backends cannot print the optimized program)
        return {"devices": int(mesh.size), "axis": mesh.axis_names[0]}
    ops = re.findall(r"=\s*\S+\s+([a-z][a-z0-9-]*)\(", text)
    host = sum(ops.count(o) for o in ("send", "recv", "infeed", "outfeed")) + text.count(
        "xla_python_cpu_callback") + text.count("xla_ffi_python_cpu_callback")
    return {"devices": int(mesh.size), "axis": mesh.axis_names[0],
            "all_reduce_ops": ops.count("all-reduce") + ops.count("all-reduce-start"),
            "host_transfer_ops": int(host)}
