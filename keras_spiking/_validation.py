"""Argument checks shared by the layers: each error names the argument and the value received.

Wrong types raise a TypeError, values out of range a ValueError. Counts (units, steps,
max_spikes, ...) are bounded by :data:`MAX_COUNT`, and buffers whose size is a product of
such counts (and the batch) by :data:`MAX_BUFFER_ELEMENTS`, so that an absurd argument is
refused with a clear message before any kernel or allocation sees it.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import warnings

import numpy as np
import tensorflow as tf

#: Upper bound of every count argument: the kernels and the pure-TF paths index steps, spike
#: slots and neurons with int32.
MAX_COUNT = 2**31 - 1

#: Upper bound of the number of elements of one buffer that an argument sizes (e.g. the
#: EventProp spike buffers ``batch x units x max_spikes``, the ``"sequence"`` readout
#: ``batch x steps x units``): 2**40 elements are 4 TiB of float32, more than any single
#: machine holds, so a larger request can only fail; refusing it up front names the argument
#: instead of failing deep inside TensorFlow.
MAX_BUFFER_ELEMENTS = 2**40


def _as_float(name: str, value, owner: str) -> float:
    """``float(value)`` for a real number (bools and strings are not numbers here)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{owner}: `{name}` must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond the float range
        raise ValueError(f"{owner}: `{name}` must be a finite number, got {value!r}") from None
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: `{name}` must be a number, got {value!r}") from None


def positive_number(name: str, value, owner: str) -> float:
    """A finite float > 0 (subnormal floats, which TensorFlow flushes to zero, rejected)."""
    number = _as_float(name, value, owner)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{owner}: `{name}` must be a finite number > 0, got {value!r}")
    if number < sys.float_info.min:
        raise ValueError(
            f"{owner}: `{name}` must be a finite number > 0 and not subnormal (at least "
            f"{sys.float_info.min!r}; TensorFlow flushes smaller ones to 0), got {value!r}"
        )
    return number


#: The range of a time in seconds (time constant, step) that the layers accept: the values
#: of a float32 (the default dtype), whose smaller values flush to 0 and larger ones are inf.
SECONDS_RANGE = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))


def seconds(name: str, value, owner: str) -> float:
    """A time in seconds: a float within :data:`SECONDS_RANGE` (float32-representable, > 0)."""
    number = positive_number(name, value, owner)
    low, high = SECONDS_RANGE
    if not low <= number <= high:
        raise ValueError(
            f"{owner}: `{name}` must be a time in seconds within [{low!r}, {high!r}] (it is "
            f"used in float32), got {value!r}"
        )
    return number


def non_negative_number(name: str, value, owner: str) -> float:
    """A finite float >= 0."""
    number = _as_float(name, value, owner)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{owner}: `{name}` must be a finite number >= 0, got {value!r}")
    return number


def finite_number(name: str, value, owner: str) -> float:
    """Any finite float."""
    number = _as_float(name, value, owner)
    if not math.isfinite(number):
        raise ValueError(f"{owner}: `{name}` must be a finite number, got {value!r}")
    return number


def positive_int(name: str, value, owner: str, maximum: int = MAX_COUNT) -> int:
    """An int in ``[1, maximum]`` (bools, floats and strings rejected with a TypeError)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{owner}: `{name}` must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{owner}: `{name}` must be an integer >= 1, got {value!r}")
    if value > maximum:
        raise ValueError(
            f"{owner}: `{name}` must be an integer <= {maximum} (its upper limit), got {value!r}"
        )
    return int(value)


def buffer_size(
    argument: str, value: int, dims: dict[str, int | None], what: str, owner: str
) -> int | None:
    """Checks that a buffer sized by ``argument = value`` stays within MAX_BUFFER_ELEMENTS.

    ``dims`` maps each dimension's name to its size (``argument`` among them; None where not
    known yet, e.g. the batch before the call: the check then uses 1). Returns the element
    count, or raises a ValueError naming ``argument``, its value, the shape and the limit.
    """
    count = 1
    for size in dims.values():
        count *= 1 if size is None else int(size)
    if count > MAX_BUFFER_ELEMENTS:
        shape = ", ".join(f"{k}={'?' if v is None else v}" for k, v in dims.items())
        raise ValueError(
            f"{owner}: `{argument}`={value!r} makes {what} [{shape}] hold {count} elements, "
            f"more than the limit of {MAX_BUFFER_ELEMENTS} (2**40); lower `{argument}`"
        )
    return count


def time_constant(name: str, value, units: int | None, owner: str):
    """A time constant in seconds: a float > 0 or a per-neuron list/array of length ``units``.

    Returns a float or a tuple of floats (hashable and JSON-friendly for ``get_config``).
    """
    if value is None:
        raise ValueError(f"{owner}: `{name}` must be a time constant in seconds, got None")
    if np.isscalar(value):
        return positive_number(name, value, owner)
    try:
        array = np.asarray(value, dtype="float64")
    except (TypeError, ValueError, OverflowError):
        raise TypeError(
            f"{owner}: `{name}` must be a float or a list of {units} per-neuron values "
            f"(seconds), got {value!r}"
        ) from None
    if array.ndim != 1 or (units is not None and array.shape[0] != units):
        raise ValueError(
            f"{owner}: `{name}` must be a float or a list of {units} per-neuron values (seconds), "
            f"got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"{owner}: every `{name}` must be a finite number > 0, got {value!r}")
    return tuple(float(v) for v in array)


def _seconds_text(value: float) -> str:
    """``20`` -> ``"20e-3 (20 ms)"``: the value read as milliseconds, written in seconds."""
    text = f"{value:g}"
    return f"{text}e-3 ({text} ms)" if "e" not in text else f"{value * 1e-3:g} ({text} ms)"


def _range(value) -> tuple[float, float, str]:
    """(min, max, how to name it) of a time constant given as a float or per-neuron values."""
    array = np.asarray(value, dtype="float64").reshape(-1)
    if array.size == 1:
        return float(array[0]), float(array[0]), ""
    return float(array.min()), float(array.max()), " (per neuron: its {} value)"


def time_unit_problems(dt: float, **time_constants) -> list[str]:
    """The implausible-units findings of :func:`time_units`, one message each (no owner)."""
    problems = []
    for name, value in {"dt": dt, **time_constants}.items():
        _, high, per_neuron = _range(value)
        if high >= 1.0:
            problems.append(
                f"`{name}`={high:g}{per_neuron.format('largest')} is in seconds ({high:g} s), "
                f"far longer than the milliseconds of neuron dynamics; did you mean "
                f"{_seconds_text(high)}?"
            )
    dt_value = float(np.max(np.asarray(dt, dtype="float64")))
    for name, value in time_constants.items():
        low, _, per_neuron = _range(value)
        if dt_value >= low:
            decay = math.exp(-dt_value / low)
            problems.append(
                f"`dt`={dt_value:g} s >= `{name}`={low:g} s{per_neuron.format('smallest')}: the "
                f"decay per step exp(-dt / {name}) = {decay:.3g} <= 1/e, so the neuron forgets "
                f"most of its state within one step; use a smaller `dt` or a larger `{name}`"
            )
    return problems


def _user_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` in the caller of this function.

    It points at the first frame outside keras_spiking, Keras and TensorFlow: the user's
    constructor call, through however many library frames (Keras wraps ``__init__``).
    """
    library_dirs = tuple(
        os.path.dirname(module.__file__) + os.sep
        for module in (sys.modules[__package__], sys.modules.get("keras"), tf)
        if module is not None and getattr(module, "__file__", None)
    )
    level, frame = 2, sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(library_dirs):
        level, frame = level + 1, frame.f_back
    return level


def time_units(owner: str, dt: float, **time_constants) -> None:
    """Warns (UserWarning) if ``dt`` or a time constant looks like a unit mistake.

    Plausibility only, values that can be legitimate, so warnings and not errors:

    - a value >= 1 (s): most likely milliseconds passed as seconds (``tau_mem=20`` for 20 ms);
    - ``dt >= tau`` for a time constant: the decay per step ``exp(-dt / tau)`` is <= 1/e, the
      neuron forgets most of its state within one step.

    Args:
        owner: the class name the user wrote (e.g. "LIF"), named in the message.
        dt: the simulation step in seconds (a float).
        **time_constants: each time constant in seconds by its argument name, a float or
            per-neuron values (their min and max are checked).

    The warning points at the first caller outside keras_spiking, Keras and TensorFlow.
    """
    problems = time_unit_problems(dt, **time_constants)
    if problems:
        stacklevel = _user_stacklevel()
        for problem in problems:
            warnings.warn(f"{owner}: {problem}", UserWarning, stacklevel=stacklevel)


def resolved(name: str, value, getter, owner: str):
    """``getter(value)`` (e.g. ``keras.initializers.get``), its error naming the argument."""
    try:
        return getter(value)
    except (TypeError, ValueError) as error:
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(f"{owner}: `{name}` could not be used ({error}), got {value!r}") from None


def one_of(name: str, value, options: tuple, owner: str):
    """``value`` if it is one of ``options``."""
    try:
        found = bool(value in options)
    except Exception:  # e.g. an array, whose == is elementwise
        found = False
    if not found:
        raise ValueError(f"{owner}: `{name}` must be one of {options}, got {value!r}")
    return value


def dense_sequence(inputs, owner: str, *, masking: bool) -> None:
    """Raises a TypeError if ``inputs`` is ragged or sparse (a tensor or a symbolic input).

    The sequence layers run one dense ``[batch, time, features]`` tensor through time; a
    ragged or sparse tensor would otherwise fail deep inside the scan with a message that
    names neither the input nor a way out. ``masking``: whether the layer takes a ``mask``
    (then the padded steps can be masked out instead of fed as zero input).
    """
    import tensorflow as tf  # here, not at import: this module stays NumPy-only

    if isinstance(inputs, tf.RaggedTensor) or getattr(inputs, "ragged", False) is True:
        kind = "a ragged tensor"
        if masking:
            fix = (
                "pad it with `inputs.to_tensor()` and pass `mask=` (or put keras.layers.Masking "
                "first) so the padded steps are skipped"
            )
        else:
            fix = (
                "pad it with `inputs.to_tensor()`: the padded steps are steps without input "
                "(the neurons keep decaying through them), so read each sequence's outputs "
                "from its own steps only"
            )
    elif isinstance(inputs, tf.SparseTensor) or getattr(inputs, "sparse", False) is True:
        kind, fix = "a sparse tensor", "convert it with `tf.sparse.to_dense(inputs)`"
    else:
        return
    raise TypeError(
        f"{owner}: `inputs` must be a dense [batch, time, features] tensor; ragged and sparse "
        f"inputs are not supported, got {kind} of shape {tuple(inputs.shape)}: {fix}."
    )


def static_dim(x, axis: int) -> int | None:
    """A dimension of ``x`` known before the call (None if unknown, e.g. a symbolic batch)."""
    try:
        size = tf.TensorShape(getattr(x, "shape", None))[axis]
    except (TypeError, ValueError, IndexError):
        return None
    return None if size is None else int(size)


def flag(name: str, value, owner: str) -> bool:
    """``value`` as a bool: True or False (NumPy's too), else a ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{owner}: `{name}` must be True or False, got {value!r}")
