r"""Event-driven convolution of spike maps: a C++ kernel that visits only the nonzero inputs.

:func:`conv_input` is the synaptic input of the spiking conv layers
(:mod:`keras_spiking.conv_layers`): ``inputs [N, *spatial, C]`` (time folded into ``N``)
convolved with ``kernel [*k, C / groups, F]``, channels last, the numbers of
``tf.nn.convolution`` (and so of Keras' ``Conv1D`` / ``Conv2D``), "valid" or "same" padding,
strides, dilations and feature groups. 1-D convolutions run as 2-D ones of height 1.

* :func:`event_conv` always runs the C++ kernel ``KerasSpiking>EventConv2D``
  (``custom_ops/event_conv.cc``): each nonzero input scatters its kernel slice into the
  outputs it reaches, so the work is ``(active inputs) x k_h x k_w x F / groups`` instead of
  ``(outputs) x k_h x k_w x C / groups x F``. Values other than 0 and 1 are multiplied in, so
  the result equals ``tf.nn.convolution`` for any input, up to the order of the additions (the
  one difference: a NaN or inf weight does not reach outputs whose inputs under it are all
  zero). Its weight gradient (``EventConv2DGradFilter``) is event-driven too: each active input
  gathers the output-gradient patch it reached. The input gradient is dense (TF's
  ``Conv2DBackpropInput``, the transposed convolution). The weight gradient scans the input
  for its active entries again instead of reusing a list from the forward pass: the input is
  ``k_h x k_w x F / groups`` times smaller than the work per active entry, so the scan costs
  little (unlike ``synaptic_input``'s, where reading ``x`` rivals the work).
* :func:`conv_input` takes that kernel when the dispatch allows kernels for the call
  (``use_kernel``) and the input density, counted on up to 64 images, is below
  :func:`keras_spiking.ops.dispatch.conv_density_cutoff` (its weight gradient below the lower
  :func:`keras_spiking.ops.dispatch.conv_grad_density_cutoff`); otherwise (and for dtypes other than
  float32/float64) ``tf.nn.convolution``, the pure-TF twin (without ``use_kernel`` with TF's
  own gradients; after the density check with the dense gradients below).

Strides and dilations above 1 are not combined (``tf.nn.convolution`` and Keras' conv layers
refuse it too; the C++ op itself computes that case as ``tf.nn.conv2d`` does).

TensorFlow 2.21's CPU kernels have no float64 gradient for grouped or dilated convolutions
(``Conv2DBackpropInput`` / ``Conv2DBackpropFilter`` raise), so the dense gradients here run
such convolutions one group at a time through ``tf.nn.convolution`` (which dilates by
space-to-batch): the numbers of the same sums, in float32 and float64. For the same reason the
float64 twin runs a grouped convolution one group at a time (:func:`split_conv`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import tensorflow as tf

from keras_spiking.ops import dispatch, library
from keras_spiking.ops.library import OpLibraryError

# the ops custom_ops/event_conv.cc registers (an older prebuilt library may lack them)
CONV_OPS = ("keras_spiking_event_conv2d", "keras_spiking_event_conv2d_grad_filter")


@dataclass(frozen=True)
class ConvSpec:
    """A call's convolution, in the 2-D form the kernel runs (1-D: height 1).

    Attributes:
        rank: spatial axes of the caller's tensors (1 or 2).
        strides, dilations: ``(height, width)``.
        padding: ``"VALID"`` or ``"SAME"``.
        groups: feature groups.
    """

    rank: int
    strides: tuple[int, int]
    dilations: tuple[int, int]
    padding: str
    groups: int

    def attrs(self) -> dict:
        """The attributes of the C++ ops."""
        return {
            "strides": list(self.strides),
            "dilations": list(self.dilations),
            "padding": self.padding,
            "groups": self.groups,
        }

    def nhwc(self, values: tuple[int, int]) -> list[int]:
        """``[1, h, w, 1]``: strides or dilations as TF's NHWC conv ops take them."""
        return [1, *values, 1]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _per_axis(value, rank: int, name: str) -> tuple[int, ...]:
    """``value`` (an int, or one int per spatial axis) as a tuple of ``rank`` ints >= 1."""
    values = (value,) * rank if _is_int(value) else value
    try:
        values = tuple(values)
    except TypeError:
        values = None
    if values is None or len(values) != rank or not all(_is_int(v) and v >= 1 for v in values):
        raise ValueError(
            f"conv_input: `{name}` must be an int >= 1 or {rank} such ints (one per spatial "
            f"axis), got {value!r}"
        )
    return tuple(int(v) for v in values)


def output_size(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    """Output length of one axis, as TF computes it (``padding`` "VALID" or "SAME")."""
    if padding == "SAME":
        return -(-size // stride)
    effective = (k - 1) * dilation + 1
    return (size - effective) // stride + 1 if size >= effective else 0


def check_conv(
    inputs_shape: tf.TensorShape,
    kernel_shape: tf.TensorShape,
    *,
    strides,
    padding,
    dilation_rate,
    groups,
) -> ConvSpec:
    """Validates a convolution's arguments and the shapes known statically.

    Raises:
        ValueError: naming the argument, the expected form and the received value.
    """
    inputs_shape = tf.TensorShape(inputs_shape)
    kernel_shape = tf.TensorShape(kernel_shape)
    if inputs_shape.rank not in (3, 4):
        raise ValueError(
            "conv_input: `inputs` must have rank 3 ([batch, width, channels]) or 4 ([batch, "
            f"height, width, channels]), got shape {inputs_shape}"
        )
    rank = inputs_shape.rank - 2
    if kernel_shape.rank != rank + 2:
        raise ValueError(
            f"conv_input: `kernel` must have rank {rank + 2} ([*kernel_size, channels / groups, "
            f"filters]) for {rank}-D `inputs` of shape {inputs_shape}, got shape {kernel_shape}"
        )
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(f"conv_input: `padding` must be 'valid' or 'same', got {padding!r}")
    padding = padding.upper()
    strides = _per_axis(strides, rank, "strides")
    dilations = _per_axis(dilation_rate, rank, "dilation_rate")
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"conv_input: `groups` must be an int >= 1, got {groups!r}")
    groups = int(groups)
    channels, kernel_channels, filters = inputs_shape[-1], kernel_shape[-2], kernel_shape[-1]
    if channels is not None and channels % groups:
        raise ValueError(
            f"conv_input: `groups`={groups} must divide the {channels} input channels "
            f"(`inputs` shape {inputs_shape})"
        )
    if (
        channels is not None
        and kernel_channels is not None
        and kernel_channels * groups != channels
    ):
        raise ValueError(
            f"conv_input: `kernel` has {kernel_channels} input channels (axis -2, shape "
            f"{kernel_shape}) but `inputs` has {channels} channels and `groups`={groups}; "
            f"expected {channels // groups} (channels / groups)"
        )
    if filters is not None and filters % groups:
        raise ValueError(
            f"conv_input: `groups`={groups} must divide the {filters} filters of `kernel` "
            f"(axis -1, shape {kernel_shape})"
        )
    names = ("width",) if rank == 1 else ("height", "width")
    for axis, name in enumerate(names):
        size, k = inputs_shape[1 + axis], kernel_shape[axis]
        if k is not None and k < 1:
            raise ValueError(
                f"conv_input: the kernel {name} must be >= 1, got shape {kernel_shape}"
            )
        if size is None or k is None:
            continue
        out = output_size(size, k, strides[axis], dilations[axis], padding)
        if out <= 0:
            raise ValueError(
                f"conv_input: the output {name} would be {out} (input {name} {size}, kernel "
                f"{name} {k}, dilation {dilations[axis]}, stride {strides[axis]}, padding "
                f"{padding.lower()!r}); it must be >= 1"
            )
    if max(strides) > 1 and max(dilations) > 1:
        raise ValueError(
            f"conv_input: `strides` > 1 cannot be combined with `dilation_rate` > 1 (as in "
            f"tf.nn.convolution and Keras' conv layers), got strides={strides} and "
            f"dilation_rate={dilations}"
        )
    if rank == 1:
        strides, dilations = (1, *strides), (1, *dilations)
    return ConvSpec(rank, strides, dilations, padding, groups)


def _to_2d(inputs, kernel, spec: ConvSpec):
    if spec.rank == 2:
        return inputs, kernel
    return tf.expand_dims(inputs, 1), tf.expand_dims(kernel, 0)


def _from_2d(out, spec: ConvSpec):
    return out if spec.rank == 2 else tf.squeeze(out, 1)


def _output_shape(x, k, spec: ConvSpec):
    """``[N, out_h, out_w, F]`` of ``x [N, H, W, C]`` convolved with ``k`` (a shape tensor)."""
    x_shape, k_shape = tf.shape(x), tf.shape(k)
    dims = [x_shape[0]]
    for axis in range(2):
        size, kernel_size = x.shape[1 + axis], k.shape[axis]
        stride, dilation = spec.strides[axis], spec.dilations[axis]
        if size is not None and kernel_size is not None:
            dims.append(output_size(size, kernel_size, stride, dilation, spec.padding))
            continue
        size = x_shape[1 + axis]
        if spec.padding == "SAME":
            dims.append((size + stride - 1) // stride)
        else:
            effective = (k_shape[axis] - 1) * dilation + 1
            dims.append(tf.maximum(size - effective, -1) // stride + 1)
    dims.append(k_shape[3])
    return tf.stack(dims)


def dense_conv(x, k, spec: ConvSpec):
    """The pure-TF twin on the 2-D form: ``tf.nn.convolution`` (groups from ``k``'s shape).

    TF 2.21's CPU convolution returns a tensor of the *input's* shape for an empty batch; the
    result is reshaped to the output's shape (free: a reshape of an empty tensor).
    """
    out = tf.nn.convolution(
        x, k, strides=spec.strides, padding=spec.padding, dilations=spec.dilations
    )
    if x.shape[0] is None or x.shape[0] == 0:
        out = tf.reshape(out, _output_shape(x, k, spec))
    return out


def split_conv(x, k, spec: ConvSpec):
    """:func:`dense_conv` one feature group at a time (the same sums; see the module notes)."""
    if spec.groups == 1:
        return dense_conv(x, k, spec)
    pairs = zip(tf.split(x, spec.groups, axis=-1), tf.split(k, spec.groups, axis=-1))
    return tf.concat([dense_conv(x_g, k_g, spec) for x_g, k_g in pairs], axis=-1)


def _raw_gradients(spec: ConvSpec) -> bool:
    # the cases TF's CPU backprop kernels take in float32 and float64 alike
    return spec.groups == 1 and spec.dilations == (1, 1)


def _tape_gradient(x, k, g, spec: ConvSpec, wrt: int):
    with tf.GradientTape() as tape:
        source = (x, k)[wrt]
        tape.watch(source)
        out = split_conv(x, k, spec)
    return tape.gradient(out, source, output_gradients=g)


def dense_grad_input(x, k, g, spec: ConvSpec):
    """``d(loss)/d(x)`` of a 2-D convolution: the transposed convolution of ``g`` (TF's ops)."""
    if not _raw_gradients(spec):
        return _tape_gradient(x, k, g, spec, 0)
    return tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(x),
        filter=k,
        out_backprop=g,
        strides=spec.nhwc(spec.strides),
        padding=spec.padding,
    )


def dense_grad_kernel(x, k, g, spec: ConvSpec):
    """``d(loss)/d(k)`` of a 2-D convolution by TF's ops."""
    if not _raw_gradients(spec):
        return _tape_gradient(x, k, g, spec, 1)
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x,
        filter_sizes=tf.shape(k),
        out_backprop=g,
        strides=spec.nhwc(spec.strides),
        padding=spec.padding,
    )


def conv_library():
    """The loaded library, checked to hold the event conv kernels.

    Raises:
        OpLibraryError: the library does not load, or was built without ``event_conv.cc``
            (e.g. an older prebuilt ``KERAS_SPIKING_OPS_LIBRARY``).
    """
    lib = library.load()
    if not all(hasattr(lib, name) for name in CONV_OPS):
        raise OpLibraryError(
            "keras_spiking custom ops: the loaded library has no event conv kernels "
            "(custom_ops/event_conv.cc was not compiled into it; rebuild a prebuilt "
            "KERAS_SPIKING_OPS_LIBRARY with `python -m keras_spiking.custom_ops build "
            "--rebuild`), or use use_custom_ops=False"
        )
    return lib


def _prepare(inputs, kernel, strides, padding, dilation_rate, groups):
    inputs = tf.convert_to_tensor(inputs)
    kernel = tf.cast(kernel, inputs.dtype)
    spec = check_conv(
        inputs.shape,
        kernel.shape,
        strides=strides,
        padding=padding,
        dilation_rate=dilation_rate,
        groups=groups,
    )
    return inputs, kernel, spec


def image_density(x) -> tf.Tensor:
    """Fraction of nonzero entries of ``x [N, ...]``, counted on up to 64 images spread out.

    Whole images, counted exactly: a convolution's work per input entry is large, so counting
    costs a few percent of it, and with one or few channels a sample of pixels (as
    :func:`~keras_spiking.ops.dispatch.input_density` takes of rows) would be noisy. Few ops
    (none to pick the images when the batch is known to hold at most 64), so that it stays
    cheap in eager calls too. 0 for an empty batch.
    """
    batch = x.shape[0]
    if batch is not None and batch <= dispatch.DENSITY_SAMPLE_ROWS:
        sample = x  # all images: no gather
    else:
        # images at every phase of the stride (dispatch.sample_rows): with time folded into
        # the batch a plain stride can land on one time step only
        sample = tf.gather(x, dispatch.sample_rows(tf.shape(x)[0]))
    nonzero = tf.reduce_sum(tf.cast(tf.not_equal(sample, tf.zeros([], x.dtype)), tf.float32))
    if sample.shape.is_fully_defined():
        return nonzero / float(max(sample.shape.num_elements(), 1))
    return nonzero / tf.cast(tf.maximum(tf.size(sample), 1), tf.float32)


def event_conv(
    inputs: tf.Tensor,
    kernel: tf.Tensor,
    *,
    strides,
    padding: str,
    dilation_rate,
    groups: int = 1,
) -> tf.Tensor:
    """The convolution of :func:`conv_input` by the C++ event kernel, whatever the density.

    Arguments and result as :func:`conv_input`; float32/float64 only. Gradients: the kernel
    through the event kernel, the inputs densely (TF's transposed convolution).

    Raises:
        ValueError: a bad argument or shape (see :func:`check_conv`).
        OpLibraryError: the kernel library does not load.
    """
    inputs, kernel, spec = _prepare(inputs, kernel, strides, padding, dilation_rate, groups)
    if dispatch.dtype_problem(inputs.dtype):
        raise ValueError(
            f"event_conv: the kernel takes float32 and float64 inputs, got {inputs.dtype.name}"
        )
    lib = conv_library()
    dispatch.record_call("event_conv")
    attrs = spec.attrs()

    @tf.custom_gradient
    def conv(x, k):
        def grad(g):
            g_kernel = lib.keras_spiking_event_conv2d_grad_filter(x, g, tf.shape(k), **attrs)
            return dense_grad_input(x, k, g, spec), g_kernel

        return lib.keras_spiking_event_conv2d(x, k, **attrs), grad

    return _from_2d(conv(*_to_2d(inputs, kernel, spec)), spec)


def conv_input(
    inputs: tf.Tensor,
    kernel: tf.Tensor,
    *,
    strides: tuple[int, ...],
    padding: str,
    dilation_rate: tuple[int, ...],
    groups: int = 1,
    use_kernel: bool = False,
) -> tf.Tensor:
    """Convolution ``inputs * kernel`` (cross-correlation, as Keras' conv layers).

    Both paths compute the same numbers (up to the order of float additions); the choice only
    affects speed. With ``use_kernel``, the input density is measured on up to 64 images of the
    batch, in the graph, and the event kernel runs the forward pass below
    :func:`~keras_spiking.ops.dispatch.conv_density_cutoff` and the weight gradient below
    :func:`~keras_spiking.ops.dispatch.conv_grad_density_cutoff` (``tf.nn.convolution`` and
    its gradients otherwise).

    Args:
        inputs: ``[N, *spatial, C]`` float32/float64 (1 or 2 spatial axes).
        kernel: ``[*kernel_size, C // groups, F]``, cast to the inputs' dtype.
        strides: one int per spatial axis (or one int for all).
        padding: ``"valid"`` or ``"same"``.
        dilation_rate: one int per spatial axis (or one int for all); not > 1 with strides > 1.
        groups: feature groups (``C`` and ``F`` divisible by it).
        use_kernel: the dispatch allows the C++ event kernel for this call; it is then used
            where the input is sparse enough, else ``tf.nn.convolution``. A library without the
            conv kernels falls back with one warning.

    Returns:
        ``[N, *spatial_out, F]``.

    Raises:
        ValueError: a bad argument or shape, naming it and the value received.
    """
    inputs, kernel, spec = _prepare(inputs, kernel, strides, padding, dilation_rate, groups)
    x4, k4 = _to_2d(inputs, kernel, spec)
    cutoff = dispatch.conv_density_cutoff(inputs.shape[-1]) if use_kernel else 0.0
    lib = None
    if cutoff > 0 and dispatch.dtype_problem(inputs.dtype) is None:
        try:
            lib = conv_library()
        except OpLibraryError as error:
            library.warn_fallback(error)
    if lib is None:
        dispatch.record_call("conv_input/dense")
        if inputs.dtype == tf.float64:  # TF has no float64 grouped gradient on the CPU
            return _from_2d(split_conv(x4, k4, spec), spec)
        return _from_2d(dense_conv(x4, k4, spec), spec)
    attrs = spec.attrs()
    grad_cutoff = dispatch.conv_grad_density_cutoff(inputs.shape[-1])

    def events(x, k):
        dispatch.record_call("conv_input/events")
        return lib.keras_spiking_event_conv2d(x, k, **attrs)

    def dense(x, k):
        dispatch.record_call("conv_input/dense")
        return dense_conv(x, k, spec)

    def event_grad_kernel(x, g, k):
        dispatch.record_call("conv_input/events_grad_filter")
        return lib.keras_spiking_event_conv2d_grad_filter(x, g, tf.shape(k), **attrs)

    @tf.custom_gradient
    def conv(x, k):
        density = image_density(x)
        out = tf.cond(density < cutoff, lambda: events(x, k), lambda: dense(x, k))

        def grad(g):
            # the input gradient stays outside the cond, so that a first layer's (unused)
            # input gradient is pruned from the graph; the weight gradient has its own cutoff
            # (the event kernel wins there at lower densities than in the forward pass)
            if grad_cutoff <= 0:
                g_kernel = dense_grad_kernel(x, k, g, spec)
            else:
                g_kernel = tf.cond(
                    density < grad_cutoff,
                    lambda: event_grad_kernel(x, g, k),
                    lambda: dense_grad_kernel(x, k, g, spec),
                )
            return dense_grad_input(x, k, g, spec), g_kernel

        return out, grad

    return _from_2d(conv(x4, k4), spec)
