"""Argument checks shared by the layers: each error names the argument and the value received."""

from __future__ import annotations

import math

import numpy as np


def positive_number(name: str, value, owner: str) -> float:
    """A finite float > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: `{name}` must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{owner}: `{name}` must be a finite number > 0, got {value!r}")
    return number


def non_negative_number(name: str, value, owner: str) -> float:
    """A finite float >= 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: `{name}` must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{owner}: `{name}` must be a finite number >= 0, got {value!r}")
    return number


def positive_int(name: str, value, owner: str) -> int:
    """An int >= 1 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: `{name}` must be an integer >= 1, got {value!r}")
    return int(value)


def time_constant(name: str, value, units: int | None, owner: str):
    """A time constant in seconds: a float > 0 or a per-neuron list/array of length ``units``.

    Returns a float or a tuple of floats (hashable and JSON-friendly for ``get_config``).
    """
    if value is None:
        raise ValueError(f"{owner}: `{name}` must be a time constant in seconds, got None")
    array = np.asarray(value, dtype="float64") if not np.isscalar(value) else None
    if array is None:
        return positive_number(name, value, owner)
    if array.ndim != 1 or (units is not None and array.shape[0] != units):
        raise ValueError(
            f"{owner}: `{name}` must be a float or a list of {units} per-neuron values (seconds), "
            f"got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"{owner}: every `{name}` must be a finite number > 0, got {value!r}")
    return tuple(float(v) for v in array)


def one_of(name: str, value, options: tuple, owner: str):
    """``value`` if it is one of ``options``."""
    if value not in options:
        raise ValueError(f"{owner}: `{name}` must be one of {options}, got {value!r}")
    return value
