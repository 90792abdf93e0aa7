r"""Custom C++ kernels: event-driven synaptic input and fused neuron scans, with pure-TF twins.

Two kinds of kernels accelerate the spiking layers on a CPU (sources in ``custom_ops/``):

* :func:`sparse_spike_matmul` computes the synaptic input ``y = x W`` of ``x: [rows, n_in]``
  iterating only over the nonzero entries of each row, so the work is
  ``(active inputs) x n_out`` instead of ``rows x n_in x n_out``; its weight gradient
  ``x^T g`` likewise. Values other than 0 and 1 are allowed and multiplied in, so the result
  equals ``tf.matmul`` for any input (zeros are skipped; the one difference is that a NaN or
  inf weight does not reach outputs whose input for it is zero). The input gradient
  ``g W^T`` is dense and uses ``tf.matmul``.
* :func:`lif_scan_with_input` runs both in one kernel for a LIF layer without bias or
  recurrent weights: each step's input current is summed from the active inputs and fed to the
  LIF update at once, so the ``[batch, T, n]`` currents never go through memory.
* In a training step the forward event kernels also return the active inputs they found (a
  compressed row list: offsets, input indices, values), and the weight gradient is computed
  from that list, so the backward pass does not read the ``[rows, n_in]`` input again.
* :func:`lif_scan`, :func:`cuba_lif_scan` and :func:`li_scan` run a whole ``[batch, T, n]``
  sequence of (non-recurrent) LIF, current-based LIF or leaky-integrator neurons in one op,
  and the surrogate-gradient BPTT backward in another, with the semantics of
  :mod:`keras_spiking.scan`, whose scans are the pure-TF twins (the tests check forward
  passes and every gradient against them and against float64 finite differences).

Switching: every spiking sequence layer takes ``use_custom_ops="auto" | True | False``.
``True`` requires the kernels (an error says how to rebuild if they cannot load); ``False``
never uses them; ``"auto"`` (default) defers to the global setting, :func:`set_use_custom_ops`,
whose default comes from the environment variable ``KERAS_SPIKING_CUSTOM_OPS``
(``auto``/``1``/``0``); a global ``"auto"`` uses the kernels when the library builds and loads,
and otherwise falls back to pure TF with one warning.

Where the kernels run: in training calls (``training=True``, as in ``model.fit``) and in eager
calls. Inference traced into a graph (``model.predict``, ``model.export``, serving) always uses
standard TF ops, so a saved or exported model never needs the ``.so``. The numbers are the
same on both paths up to float32 rounding (summation order).

The library is compiled on first use (about 20-40 s, once per TF version and source change;
see :mod:`keras_spiking._op_library` for the cache) or ahead of time with
``python -m keras_spiking.custom_ops build``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from keras_spiking import _op_library
from keras_spiking.scan import _zeros_if_none
from keras_spiking.surrogates import CustomSurrogate, Surrogate

OpLibraryError = _op_library.OpLibraryError

ENV_SETTING = "KERAS_SPIKING_CUSTOM_OPS"
KERNEL_SURROGATES = (
    "fast_sigmoid",
    "arctan",
    "sigmoid",
    "triangle",
    "exponential",
    "gaussian",
    "straight_through",
)
KERNEL_DTYPES = (tf.float32, tf.float64)
# Above this fraction of nonzero inputs the dense matmul is faster than the event kernel on
# the CPUs measured (benchmarks/sparse_ops.py: break-even near 15-20 % for both the forward
# pass and the weight gradient); `synaptic_input` picks the path per call from a sample.
DENSITY_CUTOFF = 0.15
# Narrow layers (e.g. a 10-20 class readout on hidden spikes): per active input the kernel
# does only n_out multiply-adds, while finding the active inputs costs the same as for a wide
# layer, so the event kernel wins only at lower densities. Layers with fewer than
# NARROW_OUTPUTS outputs take it below NARROW_DENSITY_CUTOFF; below MIN_EVENT_OUTPUTS outputs
# the dense matmul is always used. Measured for [6400, 256] spikes -> 20 outputs (CPU time,
# one thread): event forward + weight gradient 1.5 ms against 2.2 ms dense at 2.4 % (the
# hidden spikes of benchmarks/train_step.py), about even at 5 %; 10 outputs lose at 5 %.
MIN_EVENT_OUTPUTS = 16
NARROW_OUTPUTS = 64
NARROW_DENSITY_CUTOFF = 0.04
_DENSITY_SAMPLE_ROWS = 64

_lock = threading.Lock()
_library = None
_load_error: OpLibraryError | None = None
_warned = False
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


def load(rebuild: bool = False):
    """Builds (if needed) and loads the library; returns the op module.

    Raises:
        OpLibraryError: the compiler is missing, compiling failed, or the library was built
            for another TensorFlow version; the message says how to rebuild.
    """
    global _library, _load_error
    with _lock:
        if rebuild:
            _library, _load_error = None, None
        if _library is None and _load_error is None:
            try:
                _library = _op_library.build_and_load(rebuild=rebuild)
            except OpLibraryError as error:
                _load_error = error
        if _load_error is not None:
            raise _load_error
        return _library


def available() -> bool:
    """Whether the kernels load here (builds them on the first call)."""
    try:
        load()
    except OpLibraryError:
        return False
    return True


def call_setting(setting: str | bool, training) -> str | bool:
    """A layer's ``use_custom_ops`` for one call: False for graph-traced inference.

    The kernels run in training and eager calls only, so that graph-traced inference
    (``predict``, export, serving) and saved or exported models never need the kernel library.
    """
    if training or tf.executing_eagerly():
        return setting
    return False


@functools.cache
def _accelerator_devices() -> tuple[str, ...]:
    """Names of the GPUs and TPUs TensorFlow sees (the kernels are CPU-only).

    Asked once per process: the logical devices are fixed once TensorFlow's runtime has
    started, and every layer call asks.
    """
    return tuple(
        device.name for kind in ("GPU", "TPU") for device in tf.config.list_logical_devices(kind)
    )


def _placement() -> str:
    """The device an op created here is placed on ('' in a graph without a device scope)."""
    return tf.zeros([], name="keras_spiking_placement_probe").device


def accelerator_in_use() -> str | None:
    """The GPU/TPU the calling layer runs on, or None when it runs on the CPU.

    A call runs on an accelerator when an explicit device scope names one, or when none is
    named (``''`` in a graph) and TensorFlow sees one (it places ops there by default).
    """
    accelerators = _accelerator_devices()
    if not accelerators:
        return None
    device = _placement().upper()
    if "GPU" in device or "TPU" in device:
        return device
    if "CPU" in device:
        return None
    return accelerators[0]


def enabled(setting: str | bool = "auto") -> bool:
    """Resolves a layer's ``use_custom_ops`` against the global setting and the device.

    Returns True when the kernels should run. ``True`` (from the layer or, for a layer's
    ``"auto"``, from the global setting) raises if the library cannot load or the layer runs
    on a GPU/TPU (the kernels are CPU-only: on an accelerator the pure-TF/XLA path is the fast
    one, and CPU kernels would copy every tensor across); ``"auto"`` returns False on an
    accelerator, and warns once and returns False where the library cannot load.
    """
    global _warned
    setting = validate_setting(setting)
    if setting == "auto":
        setting = get_use_custom_ops()
    if setting is False:
        return False
    accelerator = accelerator_in_use()
    if accelerator is not None:
        if setting is True:
            raise OpLibraryError(
                f"keras_spiking custom ops: use_custom_ops=True, but this layer runs on "
                f"{accelerator} and the kernels run on the CPU only; use 'auto' (the "
                "pure-TensorFlow/XLA path runs on the accelerator) or place the layer under "
                "tf.device('/CPU:0')"
            )
        return False
    if setting is True:
        load()
        return True
    try:
        load()
    except OpLibraryError as error:
        if not _warned:
            _warned = True
            warnings.warn(
                f"{error}\nkeras_spiking falls back to its pure-TensorFlow path (same results, "
                f"slower); set {ENV_SETTING}=0 to silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
        return False
    return True


def status() -> str:
    """One line saying whether the kernels run here, for which target, or why not.

    Builds the library if needed (it never raises: a failure is part of the line).
    """
    setting = get_use_custom_ops()
    if setting is False:
        return f"keras_spiking kernels: off ({ENV_SETTING}=0); using the pure-TensorFlow path"
    accelerators = _accelerator_devices()
    where = f" (not used on {', '.join(accelerators)}: pure TF/XLA there)" if accelerators else ""
    try:
        load()
        path, record, _ = _op_library.locate(verbose=False)
    except OpLibraryError as error:
        reason = str(error).splitlines()[0]
        return f"keras_spiking kernels: NOT available ({reason}); using the pure-TensorFlow path"
    return (
        f"keras_spiking kernels: loaded, target {record.get('target', '?')} "
        f"{' '.join(record.get('flags', []))} on {_op_library.cpu_model()}{where} [{path}]"
    )


def supports(surrogate: Surrogate, dtype: tf.DType) -> bool:
    """Whether the scan kernels implement this surrogate and dtype (else the TF scan runs)."""
    return (
        not isinstance(surrogate, CustomSurrogate)
        and getattr(surrogate, "name", None) in KERNEL_SURROGATES
        and tf.as_dtype(dtype) in KERNEL_DTYPES
    )


def _as_matrix(x):
    """[..., n] -> [prod(...), n]; spelled out so that empty shapes reshape too."""
    shape = tf.shape(x)
    return tf.reshape(x, tf.stack([tf.reduce_prod(shape[:-1]), shape[-1]]))


# --------------------------------------------------------------------------------------------
# Synaptic input
# --------------------------------------------------------------------------------------------
def sparse_spike_matmul(spikes: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``spikes @ weights`` over the nonzero entries of ``spikes`` only (C++ kernel).

    Args:
        spikes: ``[..., n_in]`` float32/float64, typically 0/1 spikes (any values allowed).
        weights: ``[n_in, n_out]``, same dtype.

    Returns:
        ``[..., n_out]``. Gradients: weights through the event kernel, spikes densely.
    """
    lib = load()
    spikes = tf.convert_to_tensor(spikes)
    weights = tf.convert_to_tensor(weights, spikes.dtype)

    @tf.custom_gradient
    def matmul(flat, weights):
        def grad(g):
            g_spikes = tf.matmul(g, weights, transpose_b=True)
            g_weights = lib.keras_spiking_sparse_spike_matmul_grad_weights(flat, g)
            return g_spikes, g_weights

        return lib.keras_spiking_sparse_spike_matmul(flat, weights), grad

    if spikes.shape.rank == 2:  # no reshapes: a streaming step stays one op
        return matmul(spikes, weights)
    out = matmul(_as_matrix(spikes), weights)
    return tf.reshape(out, tf.concat([tf.shape(spikes)[:-1], tf.shape(weights)[-1:]], 0))


def sparse_spike_matmul_reference(spikes: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Pure-TF twin of :func:`sparse_spike_matmul`: ``spikes @ weights`` over the last axis.

    The cells' dense synaptic input uses it too (any rank >= 2, empty shapes included).
    """
    spikes = tf.convert_to_tensor(spikes)
    weights = tf.cast(weights, spikes.dtype)
    if spikes.shape.rank == 2:
        return tf.matmul(spikes, weights)
    out = tf.matmul(_as_matrix(spikes), weights)
    return tf.reshape(out, tf.concat([tf.shape(spikes)[:-1], tf.shape(weights)[-1:]], 0))


def lif_step(
    spikes: tf.Tensor,
    weights: tf.Tensor,
    v: tf.Tensor,
    beta: tf.Tensor,
    *,
    threshold: float = 1.0,
    reset: str = "subtract",
) -> tuple[tf.Tensor, tf.Tensor]:
    r"""One LIF step for streaming inference, fused with its event-driven input (one op).

    .. math::
        u = \beta v + x W, \qquad S = H(u - \theta), \qquad
        v' = u - \theta S \;\text{(subtract)} \quad\text{or}\quad u (1 - S) \;\text{(zero)}

    Only the active inputs of each row are visited (as in :func:`sparse_spike_matmul`). The op
    has no gradient: use the layers (or :func:`lif_scan`) to train.

    Args:
        spikes: ``[batch, n_in]`` input spikes (any values; zeros are skipped).
        weights: ``[n_in, n]`` synaptic weights.
        v: ``[batch, n]`` membrane after the previous step's reset.
        beta: ``[n]`` membrane decay per step.
        threshold: firing threshold > 0.
        reset: "subtract" or "zero".

    Returns:
        ``(S [batch, n], v' [batch, n])``.
    """
    lib = load()
    spikes = tf.convert_to_tensor(spikes)
    dtype = spikes.dtype
    # a streaming host loop calls this once per step: no cast when the dtype already matches,
    # and the threshold tensor is made once, so the step stays close to one op dispatch
    return lib.keras_spiking_sparse_lif_step(
        spikes,
        _as_dtype(weights, dtype),
        _as_dtype(v, dtype),
        _as_dtype(beta, dtype),
        _scalar(threshold, dtype),
        reset=reset,
    )


_SCALARS: dict[tuple[float, tf.DType], tf.Tensor] = {}


def _as_dtype(x, dtype):
    return x if getattr(x, "dtype", None) == dtype else tf.cast(x, dtype)


def _scalar(value: float, dtype: tf.DType) -> tf.Tensor:
    """A scalar constant; in eager mode made once per value and dtype and reused."""
    if not tf.executing_eagerly():
        return tf.constant(value, dtype)
    key = (float(value), dtype)
    if key not in _SCALARS:
        _SCALARS[key] = tf.constant(value, dtype)
    return _SCALARS[key]


def lif_step_reference(spikes, weights, v, beta, *, threshold=1.0, reset="subtract"):
    """Pure-TF twin of :func:`lif_step`."""
    u = beta * v + tf.matmul(spikes, weights)
    s = tf.cast(u > threshold, u.dtype)
    return s, (u - threshold * s if reset == "subtract" else u * (1 - s))


def input_density(inputs: tf.Tensor) -> tf.Tensor:
    """Fraction of nonzero entries, estimated from 64 rows spread evenly over the input."""
    flat = _as_matrix(inputs)
    rows = tf.shape(flat)[0]
    stride = tf.maximum(rows // _DENSITY_SAMPLE_ROWS, 1)
    sample = tf.gather(flat, tf.range(0, rows, stride)[:_DENSITY_SAMPLE_ROWS])
    nonzero = tf.reduce_sum(tf.cast(tf.not_equal(sample, 0), tf.float32))
    return nonzero / tf.cast(tf.maximum(tf.size(sample), 1), tf.float32)


def density_cutoff(n_out: int | None) -> float:
    """Input density below which :func:`synaptic_input` takes the event kernel (0: never)."""
    if n_out is None or n_out >= NARROW_OUTPUTS:
        return DENSITY_CUTOFF
    if n_out < MIN_EVENT_OUTPUTS:
        return 0.0
    return NARROW_DENSITY_CUTOFF


def _no_events(dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """An empty event list (the dense branch's stand-in for the event kernels' extra outputs)."""
    return tf.zeros([0], tf.int64), tf.zeros([0], tf.int32), tf.zeros([0], dtype)


def _kernel_gradient(lib, use_events, events, flat, grad, kernel):
    """``flat^T @ grad``: the weight gradient of the forward branch that was taken.

    From the event list the event kernel recorded (``flat`` unread), or by ``tf.matmul`` after
    the dense branch.
    """
    offsets, inputs, values = events
    n_in = tf.shape(kernel, out_type=tf.int64)[0]
    return tf.cond(
        use_events,
        lambda: lib.keras_spiking_sparse_events_grad_weights(offsets, inputs, values, grad, n_in),
        lambda: tf.matmul(flat, grad, transpose_a=True),
    )


def synaptic_input(inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """``inputs @ kernel`` by the event kernel when the inputs are sparse, else ``tf.matmul``.

    Both branches compute the same product; the choice (at least :data:`MIN_EVENT_OUTPUTS`
    outputs and a sampled density below :func:`density_cutoff`) only affects speed.
    """
    kernel = tf.cast(kernel, inputs.dtype)
    cutoff = density_cutoff(kernel.shape[-1])
    if cutoff <= 0:
        return sparse_spike_matmul_reference(inputs, kernel)
    lib = load()

    @tf.custom_gradient
    def product(flat, kernel):
        use_events = input_density(flat) < cutoff
        out, *events = tf.cond(
            use_events,
            lambda: tuple(lib.keras_spiking_sparse_spike_matmul_events(flat, kernel)),
            lambda: (tf.matmul(flat, kernel), *_no_events(flat.dtype)),
        )

        def grad(g):
            # The input gradient stays outside the cond: a first layer's (unused) input
            # gradient is then pruned from the graph, which a branch of a cond never is.
            g_flat = tf.matmul(g, kernel, transpose_b=True)
            g_kernel = _kernel_gradient(lib, use_events, events, flat, g, kernel)
            return g_flat, g_kernel

        return out, grad

    out = product(_as_matrix(inputs), kernel)
    return tf.reshape(out, tf.concat([tf.shape(inputs)[:-1], tf.shape(kernel)[-1:]], 0))


# --------------------------------------------------------------------------------------------
# Fused scans
# --------------------------------------------------------------------------------------------
def _last_spikes(spikes, s0):
    steps = spikes.shape[1]
    if steps is not None:
        return spikes[:, -1] if steps > 0 else s0
    return tf.cond(tf.shape(spikes)[1] > 0, lambda: spikes[:, -1], lambda: s0)


def lif_scan(
    currents,
    v0,
    s0,
    beta,
    *,
    threshold: float,
    surrogate: Surrogate,
    reset: str = "subtract",
    detach_reset: bool = True,
    decay_grad: bool = True,
):
    """Fused-kernel twin of :func:`keras_spiking.scan.lif_scan` without recurrent weights.

    Args:
        currents: ``[batch, T, n]`` input currents.
        v0: initial membrane ``[batch, n]``.
        s0: initial spikes ``[batch, n]`` (returned as the final spikes when T = 0).
        beta: membrane decay per step ``[n]``.
        threshold: firing threshold > 0.
        surrogate: a registered surrogate (see :data:`KERNEL_SURROGATES`).
        reset: "subtract" or "zero".
        detach_reset: no gradient through the reset term.
        decay_grad: compute the gradient of ``beta`` (else zeros).

    Returns:
        ``(spikes [batch, T, n], v_last [batch, n], s_last [batch, n])``.
    """
    lib = load()
    theta = tf.constant(threshold, currents.dtype)

    @tf.custom_gradient
    def scan(currents, v0, beta):
        spikes, membrane, v_last = lib.keras_spiking_lif_scan(
            currents, v0, beta, theta, reset=reset
        )

        def grad(g_spikes, g_v_last):
            return lib.keras_spiking_lif_scan_grad(
                _zeros_if_none(g_spikes, spikes),
                _zeros_if_none(g_v_last, v_last),
                membrane,
                v0,
                beta,
                theta,
                reset=reset,
                detach_reset=detach_reset,
                surrogate=surrogate.name,
                scale=surrogate.scale,
                decay_grad=decay_grad,
            )

        return (spikes, v_last), grad

    spikes, v_last = scan(currents, v0, beta)
    return spikes, v_last, _last_spikes(spikes, s0)


def lif_scan_with_input(
    inputs,
    kernel,
    v0,
    s0,
    beta,
    *,
    threshold: float,
    surrogate: Surrogate,
    reset: str = "subtract",
    detach_reset: bool = True,
    decay_grad: bool = True,
):
    """:func:`lif_scan` of the synaptic input ``inputs @ kernel``, fused where it is sparse.

    Below the density cutoff of :func:`synaptic_input` one kernel computes each step's input
    current from the active inputs and runs the LIF update on it (the ``[batch, T, n]``
    currents never go through memory); above it, ``tf.matmul`` and the LIF scan kernel. The
    gradient is the LIF BPTT kernel, then the weight gradient of the branch taken (the event
    kernel on the active inputs the forward kernel recorded, or ``tf.matmul``) and the dense
    input gradient. Same numbers as
    ``lif_scan(synaptic_input(inputs, kernel), ...)``.

    Args:
        inputs: ``[batch, T, n_in]`` input spikes (any values; zeros are skipped).
        kernel: ``[n_in, n]`` synaptic weights.
        v0: initial membrane ``[batch, n]``.
        s0: initial spikes ``[batch, n]`` (returned as the final spikes when T = 0).
        beta: membrane decay per step ``[n]``.
        threshold: firing threshold > 0.
        surrogate: a registered surrogate (see :data:`KERNEL_SURROGATES`).
        reset: "subtract" or "zero".
        detach_reset: no gradient through the reset term.
        decay_grad: compute the gradient of ``beta`` (else zeros).

    Returns:
        ``(spikes [batch, T, n], v_last [batch, n], s_last [batch, n])``.
    """
    kernel = tf.cast(kernel, inputs.dtype)
    cutoff = density_cutoff(kernel.shape[-1])
    options = dict(
        threshold=threshold,
        surrogate=surrogate,
        reset=reset,
        detach_reset=detach_reset,
        decay_grad=decay_grad,
    )
    if cutoff <= 0 or inputs.shape.rank != 3:
        return lif_scan(synaptic_input(inputs, kernel), v0, s0, beta, **options)
    lib = load()
    theta = tf.constant(threshold, inputs.dtype)

    @tf.custom_gradient
    def scan(inputs, kernel, v0, beta):
        flat = _as_matrix(inputs)
        use_events = input_density(flat) < cutoff

        def dense():
            currents = tf.reshape(
                tf.matmul(flat, kernel),
                tf.concat([tf.shape(inputs)[:-1], tf.shape(kernel)[-1:]], 0),
            )
            scanned = lib.keras_spiking_lif_scan(currents, v0, beta, theta, reset=reset)
            return (*scanned, *_no_events(inputs.dtype))

        spikes, membrane, v_last, *events = tf.cond(
            use_events,
            lambda: tuple(
                lib.keras_spiking_sparse_lif_scan(inputs, kernel, v0, beta, theta, reset=reset)
            ),
            dense,
        )

        def grad(g_spikes, g_v_last):
            g_currents, g_v0, g_beta = lib.keras_spiking_lif_scan_grad(
                _zeros_if_none(g_spikes, spikes),
                _zeros_if_none(g_v_last, v_last),
                membrane,
                v0,
                beta,
                theta,
                reset=reset,
                detach_reset=detach_reset,
                surrogate=surrogate.name,
                scale=surrogate.scale,
                decay_grad=decay_grad,
            )
            g_flat = _as_matrix(g_currents)
            # outside the cond, so that a first layer's unused input gradient is pruned
            g_inputs = tf.reshape(tf.matmul(g_flat, kernel, transpose_b=True), tf.shape(inputs))
            g_kernel = _kernel_gradient(lib, use_events, events, flat, g_flat, kernel)
            return g_inputs, g_kernel, g_v0, g_beta

        return (spikes, v_last), grad

    spikes, v_last = scan(inputs, kernel, v0, beta)
    return spikes, v_last, _last_spikes(spikes, s0)


def cuba_lif_scan(
    currents,
    i0,
    v0,
    alpha,
    beta,
    *,
    threshold: float,
    surrogate: Surrogate,
    reset: str = "subtract",
    detach_reset: bool = True,
    decay_grad: bool = True,
):
    """Fused-kernel twin of :func:`keras_spiking.scan.cuba_lif_scan` without recurrence.

    Returns:
        ``(spikes [batch, T, n], i_last [batch, n], v_last [batch, n])``.
    """
    lib = load()
    theta = tf.constant(threshold, currents.dtype)

    @tf.custom_gradient
    def scan(currents, i0, v0, alpha, beta):
        spikes, i_all, v_all, i_last, v_last = lib.keras_spiking_cuba_lif_scan(
            currents, i0, v0, alpha, beta, theta, reset=reset
        )

        def grad(g_spikes, g_i_last, g_v_last):
            return lib.keras_spiking_cuba_lif_scan_grad(
                _zeros_if_none(g_spikes, spikes),
                _zeros_if_none(g_i_last, i_last),
                _zeros_if_none(g_v_last, v_last),
                i_all,
                v_all,
                alpha,
                beta,
                theta,
                reset=reset,
                detach_reset=detach_reset,
                surrogate=surrogate.name,
                scale=surrogate.scale,
                decay_grad=decay_grad,
            )

        return (spikes, i_last, v_last), grad

    return scan(currents, i0, v0, alpha, beta)


def li_scan(currents, v0, beta, *, decay_grad: bool = True):
    """Fused-kernel twin of :func:`keras_spiking.scan.li_scan`.

    Args:
        currents: ``[batch, T, n]`` input currents.
        v0: initial membrane ``[batch, n]``.
        beta: decay per step ``[n]``.
        decay_grad: compute the gradient of ``beta`` (else zeros).

    Returns:
        ``(v [batch, T, n], v_last [batch, n])``.
    """
    lib = load()

    @tf.custom_gradient
    def scan(currents, v0, beta):
        v_all, v_last = lib.keras_spiking_li_scan(currents, v0, beta)

        def grad(g_v_all, g_v_last):
            return lib.keras_spiking_li_scan_grad(
                _zeros_if_none(g_v_all, v_all),
                _zeros_if_none(g_v_last, v_last),
                v_all,
                v0,
                beta,
                decay_grad=decay_grad,
            )

        return (v_all, v_last), grad

    return scan(currents, v0, beta)


# --------------------------------------------------------------------------------------------
# EventProp
# --------------------------------------------------------------------------------------------
_EVENTPROP_OPS = (
    "keras_spiking_event_prop_spiking_forward",
    "keras_spiking_event_prop_readout_forward",
    "keras_spiking_event_prop_backward",
)


def _eventprop_library():
    """The loaded library, checked to hold the EventProp kernels (``custom_ops/eventprop.cc``).

    Raises:
        OpLibraryError: the library does not load, or was built without ``eventprop.cc``
            (e.g. an older ``KERAS_SPIKING_OPS_LIBRARY``).
    """
    lib = load()
    if not all(hasattr(lib, name) for name in _EVENTPROP_OPS):
        raise OpLibraryError(
            "keras_spiking custom ops: the loaded library has no EventProp kernels "
            "(custom_ops/eventprop.cc was not compiled into it: it must be listed in "
            "keras_spiking._op_library.SOURCES, and a prebuilt KERAS_SPIKING_OPS_LIBRARY "
            "rebuilt with `python -m keras_spiking.custom_ops build --rebuild`); or use "
            "use_custom_ops=False"
        )
    return lib


def eventprop_enabled(setting: str | bool, dtype: tf.DType) -> bool:
    """Whether :mod:`keras_spiking.eventprop` runs the C++ kernels for this setting and dtype.

    As :func:`enabled`, and the dtype is float32/float64; a library without the EventProp
    kernels counts as one that does not load (``True`` raises, ``"auto"`` warns once and
    falls back to the TF twin).
    """
    global _warned
    if tf.as_dtype(dtype) not in KERNEL_DTYPES or not enabled(setting):
        return False
    try:
        _eventprop_library()
    except OpLibraryError as error:
        if validate_setting(setting) is True or get_use_custom_ops() is True:
            raise
        if not _warned:
            _warned = True
            warnings.warn(
                f"{error}\nkeras_spiking falls back to its pure-TensorFlow path (same results, "
                f"slower); set {ENV_SETTING}=0 to silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
        return False
    return True


def _kinetics_vector(kinetics) -> tf.Tensor:
    """``[tau_mem, tau_syn, threshold, dt]`` as float64, the kernels' ``kinetics`` input.

    float64 whatever the layer's dtype: the TF twin derives its constants from these Python
    floats, and float attrs (32-bit) would round them before the kernels could.
    """
    return tf.constant(
        [kinetics.tau_mem, kinetics.tau_syn, kinetics.threshold, kinetics.dt], tf.float64
    )


def _no_recurrent(dtype):
    return tf.zeros([0, 0], dtype)


def _checked_eventprop_args(
    owner: str, times_in, kernel, kinetics, *, max_spikes=None, readout=None
) -> tuple[int, int | None]:
    """The EventProp kernels' attributes, checked before they reach an op.

    ``steps`` (from ``kinetics``) and ``max_spikes`` are integers in ``[1, 2**31 - 1]``
    (the kernels refuse others too, with an InvalidArgumentError), and the buffers they size
    with the batch and the units (``batch x units x max_spikes``; ``batch x steps x units``
    for the "sequence" readout) stay within ``2**40`` elements where those sizes are known.
    Returns ``(steps, max_spikes)``; raises TypeError / ValueError naming the argument.
    """
    from keras_spiking import _validation, eventprop

    steps = _validation.positive_int("kinetics.steps", getattr(kinetics, "steps", None), owner)
    batch, units = eventprop._dim(times_in, 0), eventprop._dim(kernel, -1)
    if max_spikes is not None:
        max_spikes = _validation.positive_int("max_spikes", max_spikes, owner)
        dims = {"batch": batch, "units": units, "max_spikes": max_spikes}
        _validation.buffer_size("max_spikes", max_spikes, dims, "the spike buffers", owner)
    if readout is not None:
        _validation.one_of("readout", readout, eventprop.READOUTS, owner)
        if readout == "sequence":
            dims = {"batch": batch, "steps": steps, "units": units}
            _validation.buffer_size("steps", steps, dims, 'the "sequence" readout', owner)
    return steps, max_spikes


def eventprop_spiking_forward(
    times_in, kernel, recurrent=None, *, kinetics, max_spikes: int, interpolate: bool = True
):
    """Kernel twin of ``keras_spiking.eventprop._spiking_forward`` (no gradient of its own).

    Args:
        times_in: ``[batch, inputs, slots]`` input spike times in seconds (``+inf`` = none).
        kernel: ``[inputs, units]``, same dtype (float32/float64).
        recurrent: optional ``[units, units]``.
        kinetics: a :class:`keras_spiking.eventprop.Kinetics`.
        max_spikes: buffer slots per neuron.
        interpolate: interpolated spike times (else on the grid).

    Returns:
        ``((times, step, phi, slope, current), counts, overflow)``: the per-spike record, each
        ``[batch, units, max_spikes]`` (``step`` int32), the spike counts ``[batch, units]``
        int32 and the number of spikes not recorded (int32 scalar).

    Raises:
        ValueError: ``kinetics.steps`` or ``max_spikes`` outside ``[1, 2**31 - 1]``, or
            ``batch x units x max_spikes`` above ``2**40`` elements.
    """
    steps, max_spikes = _checked_eventprop_args(
        "eventprop_spiking_forward", times_in, kernel, kinetics, max_spikes=max_spikes
    )
    lib = _eventprop_library()
    times_in = tf.convert_to_tensor(times_in)
    kernel = tf.convert_to_tensor(kernel, times_in.dtype)
    recurrent = (
        _no_recurrent(kernel.dtype)
        if recurrent is None
        else tf.convert_to_tensor(recurrent, kernel.dtype)
    )
    times, step, phi, slope, current, counts, overflow = (
        lib.keras_spiking_event_prop_spiking_forward(
            times_in,
            kernel,
            recurrent,
            _kinetics_vector(kinetics),
            steps=steps,
            max_spikes=max_spikes,
            interpolate=bool(interpolate),
        )
    )
    return (times, step, phi, slope, current), counts, overflow


def eventprop_spiking_forward_reference(
    times_in, kernel, recurrent=None, *, kinetics, max_spikes: int, interpolate: bool = True
):
    """Pure-TF twin of :func:`eventprop_spiking_forward` (``eventprop._spiking_forward``)."""
    from keras_spiking import eventprop

    _, max_spikes = _checked_eventprop_args(
        "eventprop_spiking_forward_reference", times_in, kernel, kinetics, max_spikes=max_spikes
    )
    spikes, counts, overflow = eventprop._spiking_forward(
        times_in,
        kernel,
        recurrent,
        kin=kinetics,
        max_spikes=max_spikes,
        interpolate=bool(interpolate),
    )
    return tuple(spikes), counts, overflow


def eventprop_readout_forward(times_in, kernel, *, kinetics, readout: str = "max"):
    """Kernel twin of ``keras_spiking.eventprop._readout_forward``.

    Returns:
        ``(output, argmax)``: ``[batch, units]`` (``[batch, steps, units]`` for "sequence") and
        the int32 step of each maximum ``[batch, units]`` (zeros unless ``readout="max"``).

    Raises:
        ValueError: an unknown ``readout``, ``kinetics.steps`` outside ``[1, 2**31 - 1]``, or
            for "sequence" ``batch x steps x units`` above ``2**40`` elements.
    """
    steps, _ = _checked_eventprop_args(
        "eventprop_readout_forward", times_in, kernel, kinetics, readout=readout
    )
    lib = _eventprop_library()
    times_in = tf.convert_to_tensor(times_in)
    return lib.keras_spiking_event_prop_readout_forward(
        times_in,
        tf.convert_to_tensor(kernel, times_in.dtype),
        _kinetics_vector(kinetics),
        steps=steps,
        readout=readout,
    )


def eventprop_readout_forward_reference(times_in, kernel, *, kinetics, readout: str = "max"):
    """Pure-TF twin of :func:`eventprop_readout_forward` (its argmax: zeros unless "max")."""
    from keras_spiking import eventprop

    _checked_eventprop_args(
        "eventprop_readout_forward_reference", times_in, kernel, kinetics, readout=readout
    )
    out, arg = eventprop._readout_forward(times_in, kernel, kin=kinetics, readout=readout)
    if arg is None:
        arg = tf.zeros(tf.stack([tf.shape(times_in)[0], tf.shape(kernel)[1]]), tf.int32)
    return out, arg


def eventprop_backward(
    times_in,
    kernel,
    recurrent=None,
    spikes=None,
    grad_times=None,
    *,
    kinetics,
    readout_grad=None,
    argmax=None,
    readout: str | None = None,
    interpolate: bool = True,
    min_slope: float | None = None,
):
    """Kernel twin of ``keras_spiking.eventprop._backward``: the adjoint pass of one layer.

    (Its twin is exercised through the layers: ``spiking_layer`` / ``readout_layer`` with
    ``use_custom_ops=False`` build the same arguments for ``_backward``.)

    A spiking layer passes ``spikes`` (the forward's ``(times, step, phi, slope, current)``)
    and ``grad_times`` (dL/d of each recorded spike time, zero in unused slots); a readout
    passes ``readout`` (its mode), ``readout_grad`` (dL/d its output) and, for "max", the
    forward's ``argmax``.

    Returns:
        ``(d_times_in, d_kernel, d_recurrent or None)``.
    """
    lib = _eventprop_library()
    times_in = tf.convert_to_tensor(times_in)
    dtype = times_in.dtype
    kernel = tf.convert_to_tensor(kernel, dtype)
    spiking = spikes is not None
    if spiking == (readout is not None):
        raise ValueError("eventprop_backward: pass either `spikes` (spiking) or `readout`")
    steps, _ = _checked_eventprop_args(
        "eventprop_backward", times_in, kernel, kinetics, readout=readout
    )
    rec = _no_recurrent(dtype) if recurrent is None else tf.convert_to_tensor(recurrent, dtype)
    empty3 = tf.zeros([0, 0, 0], dtype)
    empty2 = tf.zeros([0, 0], dtype)
    if spiking:
        _, step, phi, slope, current = spikes
        spike_args = (step, phi, slope, current, tf.convert_to_tensor(grad_times, dtype))
        readout_args = (empty2, tf.zeros([0, 0], tf.int32))
    else:
        spike_args = (tf.zeros([0, 0, 0], tf.int32), empty3, empty3, empty3, empty3)
        readout_args = (
            tf.convert_to_tensor(readout_grad, dtype),
            tf.zeros([0, 0], tf.int32) if argmax is None else argmax,
        )
    d_times, d_kernel, d_rec = lib.keras_spiking_event_prop_backward(
        times_in,
        kernel,
        rec,
        _kinetics_vector(kinetics),
        tf.constant(0.0 if min_slope is None else min_slope, tf.float64),
        *spike_args,
        *readout_args,
        steps=steps,
        spiking=spiking,
        readout=readout or "max",
        interpolate=bool(interpolate),
        clamp_slope=min_slope is not None,
    )
    return d_times, d_kernel, (None if recurrent is None else d_rec)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_spiking.custom_ops",
        description="Build the custom ops ahead of time, or show where they are.",
    )
    parser.add_argument("command", choices=["build", "path", "status"])
    parser.add_argument("--rebuild", action="store_true", help="compile even if cached")
    args = parser.parse_args(argv)
    try:
        if args.command == "path":
            print(_op_library.library_path())
            return 0
        if args.command == "status":
            print(status())
            return 0
        start = time.perf_counter()
        path, record, built = _op_library.locate(rebuild=args.rebuild)
        _op_library.load_library(path)  # checks that it loads, not only that it compiled
    except OpLibraryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    how = f"built in {time.perf_counter() - start:.0f} s" if built else "cached"
    print(
        f"keras_spiking kernels: target {record['target']} "
        f"({' '.join(record['flags']) or 'compiler default'}) on {_op_library.cpu_model()}, "
        f"{how}",
        file=sys.stderr,
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

# new names (the module is being split; these become the only names, the old ones aliases)
fused_lif_scan = lif_scan
fused_lif_scan_with_input = lif_scan_with_input
fused_cuba_lif_scan = cuba_lif_scan
fused_li_scan = li_scan
