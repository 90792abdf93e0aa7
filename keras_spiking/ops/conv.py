r"""Event-driven convolution of spike maps (placeholder: the C++ kernel lands with issue 16).

:func:`conv_input` is the synaptic input of the spiking conv layers
(:mod:`keras_spiking.conv_layers`): ``inputs [N, *spatial, C]`` (time folded into ``N``)
convolved with ``kernel [*k, C / groups, F]``, channels last, as ``tf.nn.convolution``.
"""

from __future__ import annotations

import tensorflow as tf


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

    Args:
        inputs: ``[N, *spatial, C]`` float32/float64 (1 or 2 spatial axes).
        kernel: ``[*kernel_size, C // groups, F]``, same dtype.
        strides, dilation_rate: one int per spatial axis.
        padding: ``"valid"`` or ``"same"``.
        groups: feature groups (``C`` and ``F`` divisible by it).
        use_kernel: the dispatch allows the C++ event kernel for this call; it is then used
            where the input is sparse enough, else ``tf.nn.convolution``.

    Returns:
        ``[N, *spatial_out, F]``.
    """
    del use_kernel  # no kernel yet: always the dense twin
    return tf.nn.convolution(
        inputs,
        kernel,
        strides=list(strides),
        padding=padding.upper(),
        dilations=list(dilation_rate),
    )
