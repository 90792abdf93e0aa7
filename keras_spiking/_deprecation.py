"""Names kept for one release after a move: they warn and return the object at its new place."""

from __future__ import annotations

import importlib
import warnings


def moved(old: str, module: str, new: str):
    """Warns that ``old`` is deprecated for ``module.new`` and returns that object.

    Called from a module's ``__getattr__``, so the warning points at the caller's line.
    """
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {module}.{new}",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(module), new)
