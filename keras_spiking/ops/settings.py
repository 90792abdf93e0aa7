"""The ``use_custom_ops`` setting: its values, the global default and the environment variable.

Every spiking layer takes ``use_custom_ops="auto" | True | False``; a layer's ``"auto"`` defers
to the global setting of this module, set with :func:`set_use_custom_ops` (or the
:func:`use_custom_ops` context manager), whose default comes from the environment variable
``KERAS_SPIKING_CUSTOM_OPS`` (``auto``/``1``/``0``). :mod:`keras_spiking.ops.dispatch` turns the
setting into a decision per layer call.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

ENV_SETTING = "KERAS_SPIKING_CUSTOM_OPS"

_global_setting: Any = None


def validate_setting(value: Any, name: str = "use_custom_ops") -> str | bool:
    """Returns ``value`` as ``"auto"``, True or False, or raises a ValueError naming ``name``."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered == "auto":
            return "auto"
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    elif value is True or value is False:
        return value
    raise ValueError(f"`{name}` must be 'auto', True or False, got {value!r}")


def get_use_custom_ops() -> str | bool:
    """The global setting: set by :func:`set_use_custom_ops`, else ``KERAS_SPIKING_CUSTOM_OPS``."""
    if _global_setting is not None:
        return _global_setting
    return validate_setting(os.environ.get(ENV_SETTING, "auto"), ENV_SETTING)


def set_use_custom_ops(value: str | bool | None) -> None:
    """Sets the global setting (``None``: back to the environment variable's)."""
    global _global_setting
    _global_setting = None if value is None else validate_setting(value)


@contextlib.contextmanager
def use_custom_ops(value: str | bool) -> Iterator[None]:
    """Context manager: the global setting is ``value`` inside the block."""
    previous = _global_setting
    set_use_custom_ops(value)
    try:
        yield
    finally:
        set_use_custom_ops(previous)


def resolve(setting: str | bool) -> str | bool:
    """A layer's setting with ``"auto"`` replaced by the global one (still possibly "auto")."""
    setting = validate_setting(setting)
    return get_use_custom_ops() if setting == "auto" else setting
