"""Where a call runs: the one decision between the C++ kernels and the pure-TF twins.

A layer asks :func:`kernels_for_call` once per call, with what its kernels cannot do for this
call (``problem``, from :meth:`keras_spiking.sequence.SpikingSequence.kernel_problem`); the
answer depends, in this order, on:

1. the layer's ``use_custom_ops``: False never runs the kernels;
2. the call: graph-traced inference (``predict``, export, serving; ``training`` not True and
   not eager) runs standard TF ops, so that a saved or exported model never needs the ``.so``;
3. the call's configuration: a ``problem`` (e.g. a custom surrogate, recurrent weights, a mask,
   float16) makes the layer's own ``use_custom_ops=True`` raise an :class:`OpLibraryError`
   naming it; with "auto" the layer runs its TF scan, with the kernels that do serve the call
   (the event-driven synaptic input). A global ``True`` requires the library, not that every
   layer can use it;
4. the device (the kernels are CPU-only; a GPU/TPU call takes TF/XLA, or raises for True);
5. the library: ``"auto"`` falls back with one warning where it cannot load; True raises.

Inside a kernel wrapper, the event-driven synaptic input is chosen per call from the measured
input density (:func:`input_density` below :func:`density_cutoff`), in the graph.

:func:`count_kernel_calls` counts the kernel wrappers' invocations, so a test can tell that the
kernels really served a layer (in eager mode only the branch taken runs, so the count of the
event branch says whether the event kernel ran).
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import Iterator

import tensorflow as tf

from keras_spiking import surrogates
from keras_spiking.ops import library, settings
from keras_spiking.ops.library import OpLibraryError

KERNEL_DTYPES = (tf.float32, tf.float64)
# the scan kernels implement every registered surrogate shape (custom_ops/common.h)
KERNEL_SURROGATES = tuple(surrogates.available())
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
DENSITY_SAMPLE_ROWS = 64
# Event-driven convolution (keras_spiking.ops.conv.conv_input): below these fractions of
# nonzero inputs the event kernel replaces tf.nn.convolution (forward pass; the weight
# gradient has its own cutoffs, below). The earlier single cutoff for both was measured with
# benchmarks/event_conv.py on an "AMD EPYC" (as /proc/cpuinfo names it; AVX-512), 2 threads,
# N = 320, 5x5 valid, float32, forward + weight gradient against oneDNN:
# 12x12x15 -> 40: 4.5-5.7x faster at 1 %, 2.6-2.7x at 5 %, even (1.04-1.06x) at 20 %, 0.55x
# at 50 %; 28x28x1 -> 15: 2.3x at 1 %, 1.1x at 5 %, 0.57x at 20 %. With few input channels the
# dense convolution does little per output, so the event kernel wins only at lower densities.
#
# The forward pass and the weight gradient are chosen apart (one density count serves both):
# measured on the same machine, 2 threads, N = 320, 5x5 valid, float32, event kernel against
# oneDNN, each alone (time dense / time event):
#   12x12x15 -> 40 (sum-pooled spike counts): forward 2.2x at 5 %, 1.6x at 10 %, 1.3x at 15 %,
#     1.2x at 20 %, 1.3x at 30 %; weight gradient 1.4x at 5 %, 1.2x at 10 %, 0.86x at 15 %,
#     0.78x at 20 %, 0.63x at 30 %;
#   28x28x1 -> 15: forward 2.0x at 1 %, 1.3-1.5x at 2-5 %, 1.2x at 10 %; weight gradient
#     1.3x at 1 %, 0.65x at 2 %, 0.52x at 5 %, 0.54x at 10 % (with one channel the event
#     gradient reads about every output-gradient patch anyway, scattered).
# In the training step of benchmarks/conv_step.py (T = 20, batch 64, N = 1280) the same:
# conv1 at 5 % forward 16.6 ms event vs 20.1 dense, weight gradient 13.5 vs 7.4; conv2 at
# 15 % forward 20.6 vs 37.3, weight gradient 32.3 vs 29.6.
CONV_DENSITY_CUTOFF = 0.3
CONV_FEW_CHANNELS = 8
CONV_FEW_CHANNELS_DENSITY_CUTOFF = 0.1
CONV_GRAD_DENSITY_CUTOFF = 0.12
CONV_FEW_CHANNELS_GRAD_DENSITY_CUTOFF = 0.015

_active_counters: list[collections.Counter] = []


def call_setting(setting: str | bool, training) -> str | bool:
    """A layer's ``use_custom_ops`` for one call: False for graph-traced inference.

    The kernels run in training and eager calls only, so that graph-traced inference
    (``predict``, export, serving) and saved or exported models never need the kernel library.
    """
    if training or tf.executing_eagerly():
        return setting
    return False


@functools.cache
def accelerator_devices() -> tuple[str, ...]:
    """Names of the GPUs and TPUs TensorFlow sees (the kernels are CPU-only).

    Asked once per process: the logical devices are fixed once TensorFlow's runtime has
    started, and every layer call asks.
    """
    return tuple(
        device.name for kind in ("GPU", "TPU") for device in tf.config.list_logical_devices(kind)
    )


def placement() -> str:
    """The device an op created here is placed on ('' in a graph without a device scope)."""
    return tf.zeros([], name="keras_spiking_placement_probe").device


def accelerator_in_use() -> str | None:
    """The GPU/TPU the calling layer runs on, or None when it runs on the CPU.

    A call runs on an accelerator when an explicit device scope names one, or when none is
    named (``''`` in a graph) and TensorFlow sees one (it places ops there by default).
    """
    accelerators = accelerator_devices()
    if not accelerators:
        return None
    device = placement().upper()
    if "GPU" in device or "TPU" in device:
        return device
    if "CPU" in device:
        return None
    return accelerators[0]


def enabled(setting: str | bool = "auto") -> bool:
    """Resolves a ``use_custom_ops`` against the global setting, the device and the library.

    Returns True when the kernels should run. ``True`` (from the layer or, for a layer's
    ``"auto"``, from the global setting) raises if the library cannot load or the layer runs
    on a GPU/TPU (the kernels are CPU-only: on an accelerator the pure-TF/XLA path is the fast
    one, and CPU kernels would copy every tensor across); ``"auto"`` returns False on an
    accelerator, and warns once and returns False where the library cannot load.
    """
    setting = settings.resolve(setting)
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
        library.load()
        return True
    try:
        library.load()
    except OpLibraryError as error:
        library.warn_fallback(error)
        return False
    return True


def eventprop_enabled(setting: str | bool, dtype: tf.DType) -> bool:
    """Whether :mod:`keras_spiking.eventprop` runs the C++ kernels for this setting and dtype.

    As :func:`enabled`, and the dtype is float32/float64; a library without the EventProp
    kernels counts as one that does not load (``True`` raises, ``"auto"`` warns once and
    falls back to the TF twin).
    """
    if tf.as_dtype(dtype) not in KERNEL_DTYPES or not enabled(setting):
        return False
    try:
        library.eventprop_library()
    except OpLibraryError as error:
        if settings.resolve(setting) is True:
            raise
        library.warn_fallback(error)
        return False
    return True


def surrogate_problem(surrogate) -> str | None:
    """Why the scan kernels cannot apply ``surrogate`` (None: they can)."""
    if surrogates.registered_name(surrogate) is None:
        return (
            f"the surrogate {surrogate!r} is not one of the registered shapes the kernels "
            f"implement ({', '.join(KERNEL_SURROGATES)})"
        )
    return None


def dtype_problem(dtype) -> str | None:
    """Why the kernels cannot run in ``dtype`` (None: they can)."""
    if tf.as_dtype(dtype) not in KERNEL_DTYPES:
        return f"dtype {tf.as_dtype(dtype).name} (the kernels take float32 and float64)"
    return None


def supports(surrogate, dtype: tf.DType) -> bool:
    """Whether the scan kernels implement this surrogate and dtype (else the TF scan runs)."""
    return surrogate_problem(surrogate) is None and dtype_problem(dtype) is None


def kernels_for_call(
    setting: str | bool,
    training,
    *,
    problem: str | None = None,
    usable: bool = True,
    owner: str = "layer",
) -> bool:
    """Whether one layer call may run C++ kernels: the package's single dispatch point.

    Args:
        setting: the layer's ``use_custom_ops`` ("auto", True or False).
        training: the call's ``training`` argument.
        problem: what the layer's fused kernel path cannot do for this call (None when it
            can), e.g. ``"recurrent weights"``; see the module docstring for the order of
            checks. With ``"auto"`` it does not change the answer: the layer then runs its TF
            scan and may still take the kernels that do serve the call (the event-driven
            synaptic input).
        usable: whether any kernel could serve the call (False: the answer is False without
            loading the library, e.g. for a layer with no kernels or a masked call).
        owner: the layer, for the error message.

    Returns:
        True when the kernels may run (setting, call, device and library allow it).

    Raises:
        OpLibraryError: the layer's ``use_custom_ops=True`` cannot be honoured (``problem``,
            an accelerator, or a library that does not load), with the reason.
    """
    setting = settings.validate_setting(setting)
    if setting is False or call_setting(setting, training) is False:
        return False
    if problem is not None and setting is True:
        raise OpLibraryError(
            f"{owner}: use_custom_ops=True, but the C++ kernels cannot serve this call: "
            f"{problem}. Use use_custom_ops='auto' to run such calls on the pure-TensorFlow "
            "path (same numbers)."
        )
    return usable and enabled(setting)


def sample_rows(rows, count: int = DENSITY_SAMPLE_ROWS):
    """Indices of up to ``count`` rows spread over ``rows``, at phases spread over the stride.

    Row ``i`` of the sample is ``i * stride + (i * stride) // count``: one row per block of
    ``stride``, at a position within the block that sweeps the whole block as ``i`` goes
    from 0 to ``count``. A plain ``i * stride`` would hit the same phase of any period that
    divides the stride: with a ``[batch, T, ...]`` input folded batch-major and
    ``stride = T`` (batch 64) every sampled row was time step 0, where deeper layers have
    not fired yet; here the sampled steps are spread evenly over all T.
    """
    stride = tf.maximum(rows // count, 1)
    index = tf.range(tf.minimum(rows, count))
    return index * stride + (index * stride) // count


def input_density(inputs: tf.Tensor) -> tf.Tensor:
    """Fraction of nonzero entries, estimated from 64 rows spread over the input.

    The rows are picked by :func:`sample_rows`.
    """
    flat = as_matrix(inputs)
    sample = tf.gather(flat, sample_rows(tf.shape(flat)[0]))
    nonzero = tf.reduce_sum(tf.cast(tf.not_equal(sample, 0), tf.float32))
    return nonzero / tf.cast(tf.maximum(tf.size(sample), 1), tf.float32)


def density_cutoff(n_out: int | None) -> float:
    """Input density below which the event kernels run (0: never), by the number of outputs."""
    if n_out is None or n_out >= NARROW_OUTPUTS:
        return DENSITY_CUTOFF
    if n_out < MIN_EVENT_OUTPUTS:
        return 0.0
    return NARROW_DENSITY_CUTOFF


def conv_density_cutoff(channels: int | None) -> float:
    """Input density below which the event conv kernel runs, by the input channel count."""
    if channels is not None and channels < CONV_FEW_CHANNELS:
        return CONV_FEW_CHANNELS_DENSITY_CUTOFF
    return CONV_DENSITY_CUTOFF


def conv_grad_density_cutoff(channels: int | None) -> float:
    """Input density below which the event conv kernel computes the weight gradient.

    Lower than :func:`conv_density_cutoff` (the forward pass): the event weight gradient
    accumulates into a different filter slice per active channel, while the forward pass
    shares each output row between four active channels.
    """
    if channels is not None and channels < CONV_FEW_CHANNELS:
        return CONV_FEW_CHANNELS_GRAD_DENSITY_CUTOFF
    return CONV_GRAD_DENSITY_CUTOFF


def as_matrix(x):
    """[..., n] -> [prod(...), n]; spelled out so that empty shapes reshape too."""
    shape = tf.shape(x)
    return tf.reshape(x, tf.stack([tf.reduce_prod(shape[:-1]), shape[-1]]))


def with_leading_axes(out, inputs, kernel):
    """``out [rows, n_out]`` of ``as_matrix(inputs) @ kernel`` back on ``inputs``' leading axes."""
    return tf.reshape(out, tf.concat([tf.shape(inputs)[:-1], tf.shape(kernel)[-1:]], 0))


def record_call(name: str) -> None:
    """Counts one invocation of kernel wrapper ``name`` in every active counter."""
    for counter in _active_counters:
        counter[name] += 1


@contextlib.contextmanager
def count_kernel_calls() -> Iterator[collections.Counter]:
    """Counts the kernel wrappers invoked inside the block, by name.

    The counts are Python invocations: in eager mode one per kernel that ran (of a data-
    dependent choice, only the branch taken, e.g. ``"synaptic_input/events"`` vs
    ``"synaptic_input/dense"``); while tracing a graph, one per trace and both branches.

    Yields:
        A ``collections.Counter``, filled while the block runs.
    """
    counter: collections.Counter = collections.Counter()
    _active_counters.append(counter)
    try:
        yield counter
    finally:
        _active_counters.remove(counter)
