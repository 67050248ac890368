"""Typed schemas for module configs: the only values a config read from a file may carry.

A config is a JSON object with a fixed set of keys, each of a fixed JSON type. Names that
stand for Python objects (dtypes, activation functions) are looked up in the fixed tables
here, never by import or attribute access, so a config from a file cannot reach any other
object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "ACTIVATIONS",
    "DTYPES",
    "ConfigError",
    "activation_name",
    "activation_of",
    "check",
    "dtype_name",
    "dtype_of",
]


class ConfigError(ValueError):
    """A module config does not follow its schema (unknown key, missing key, wrong type)."""


DTYPES = {"bfloat16": jnp.bfloat16, "float16": jnp.float16, "float32": jnp.float32,
          "float64": jnp.float64}
"""Parameter and compute dtypes a config may name."""

ACTIVATIONS = {
    "silu": jax.nn.silu, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid, "softplus": jax.nn.softplus, "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu, "identity": lambda x: x,
}
"""MLP activations a config may name."""

_TYPES = {"int": int, "bool": bool, "str": str, "list": list, "dict": dict}


def _type_ok(value, kind: str) -> bool:
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None:
        return optional
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def check(config: Any, schema: Mapping[str, str], where: str) -> dict:
    """``config`` as a dict after checking it has exactly ``schema``'s keys and types.

    ``schema`` maps each key to ``"int"``, ``"bool"``, ``"str"``, ``"list"`` or ``"dict"``,
    with a trailing ``"?"`` where ``None`` is allowed.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(schema))
    missing = sorted(set(schema) - set(config))
    if unknown or missing:
        raise ConfigError(f"{where} has unknown keys {unknown} / lacks keys {missing}")
    for key, kind in schema.items():
        if not _type_ok(config[key], kind):
            raise ConfigError(f"{where}.{key} must be {kind}, got {config[key]!r}")
    return dict(config)


def dtype_name(dtype) -> str | None:
    """The config name of ``dtype`` (``None`` stays ``None``)."""
    if dtype is None:
        return None
    name = jnp.dtype(dtype).name
    if name not in DTYPES:
        raise TypeError(f"dtype {name} cannot be described in a config (one of {list(DTYPES)})")
    return name


def dtype_of(name: str | None, where: str):
    """The dtype a config names, from :data:`DTYPES` only."""
    if name is None:
        return None
    if name not in DTYPES:
        raise ConfigError(f"{where} must be one of {list(DTYPES)} or null, got {name!r}")
    return DTYPES[name]


def activation_name(fn) -> str:
    """The config name of an MLP activation from :data:`ACTIVATIONS`."""
    for name, known in ACTIVATIONS.items():
        if fn is known:
            return name
    raise TypeError(
        f"activation {fn!r} cannot be described in a config; use one of "
        f"{sorted(ACTIVATIONS)} (kanjax.schema.ACTIVATIONS)")


def activation_of(name: str, where: str):
    if name not in ACTIVATIONS:
        raise ConfigError(f"{where} must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]
