"""Argument checks shared by kanjax's public functions: each names the argument and the value."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_int", "check_number"]


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an ``int`` >= ``minimum`` (``bool`` is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_number(name: str, value, *, positive: bool = False) -> float:
    """A finite real scalar (Python or NumPy number, or a 0-d array) as a ``float``,
    ``> 0`` if ``positive``, else ``>= 0``."""
    if isinstance(value, bool):
        ok = False
    else:
        try:
            arr = np.asarray(value)
        except Exception:  # noqa: BLE001  (any object numpy cannot read is not a number)
            arr = None
        ok = (arr is not None and arr.ndim == 0
              and (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)))
    number = float(arr) if ok else math.nan
    if not (math.isfinite(number) and (number > 0 if positive else number >= 0)):
        kind = "a positive finite number" if positive else "a finite number >= 0"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return number
