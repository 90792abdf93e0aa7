"""Warnings for spiking layers that train without firing, and for spikes fed to membrane losses.

A spiking layer learns only from its spikes: with EventProp no spike means no gradient at all,
with a surrogate the gradient shrinks to nothing as the membrane sinks below threshold. A
network whose layer never fires trains to chance without an error, so each spiking layer
checks, in every training step, whether any of its neurons fired on the batch; the first time
none did it warns once (a :class:`SilentLayerWarning`, naming the layer and what to change).
The check is one reduction over the layer's output, traced into the train step; inference
and export carry no check.

To silence it::

    import warnings
    warnings.filterwarnings("ignore", category=keras_spiking.SilentLayerWarning)

The check reports through a ``tf.py_function``, which XLA cannot compile. ``model.fit`` never
XLA-compiles a model with these layers (see ``SpikingSequence.supports_jit``); a hand-written
``tf.function(jit_compile=True)`` train step (possible with ``use_custom_ops=False``) must
leave the check out of its graph: ``keras_spiking.silence.set_enabled(False)`` before it is
traced.
"""

from __future__ import annotations

import warnings

import tensorflow as tf

__all__ = [
    "SilentLayerWarning",
    "SpikesAsMembraneWarning",
    "check_fires",
    "enabled",
    "set_enabled",
    "tag_spikes",
]

_enabled = True


def set_enabled(value: bool) -> None:
    """Turns the silent-layer check on or off for train steps traced from now on."""
    global _enabled
    if not isinstance(value, bool):
        raise TypeError(f"set_enabled: `value` must be True or False, got {value!r}")
    _enabled = value


def enabled() -> bool:
    """Whether train steps traced now get the silent-layer check."""
    return _enabled


class SilentLayerWarning(UserWarning):
    """A spiking layer emitted no spike over a whole training batch."""


class SpikesAsMembraneWarning(UserWarning):
    """A loss that reads a membrane voltage was given a spiking layer's 0/1 spikes."""


#: attribute a spiking layer sets on its output tensor: "Class (name)" of the layer
SPIKES_ATTRIBUTE = "_keras_spiking_spikes_of"

_ADVICE = (
    "Make it fire: larger input weights (e.g. kernel_initializer="
    "keras_spiking.initializers.FanInNormal(), or a larger mean), stronger or longer input, a "
    "lower `threshold`, or check that `dt` and the time constants are in seconds (20e-3, not "
    "20)."
)


def _warn_once(layer, message: str) -> None:
    if getattr(layer, "_silence_warned", False):
        return
    layer._silence_warned = True
    # raised from the train step's py_function: no user frame to point at
    warnings.warn(message, SilentLayerWarning, stacklevel=1)


def check_fires(
    layer, fired: tf.Tensor, shape: tf.Tensor, *, axes: tuple[str, ...], gradient: str
) -> None:
    """Warns once (at run time, from the train step) if ``fired`` is False.

    Args:
        layer: the spiking layer (its ``_silence_warned`` flag makes the warning one-time).
        fired: scalar bool, whether any neuron of the layer fired on the batch.
        shape: the shape of the output the flag was computed on (reported in the message).
        axes: what each axis of that shape counts, e.g. ("samples", "steps", "neurons").
        gradient: "surrogate" or "eventprop" (what the silence means for the gradient).
    """
    if not _enabled or getattr(layer, "_silence_warned", False):
        return  # switched off, or already warned before this trace: nothing to add
    owner = f"{type(layer).__name__} layer {layer.name!r}"
    consequence = (
        "with EventProp no spike means no gradient at all"
        if gradient == "eventprop"
        else "the gradient through its spikes is then small or zero"
    )

    def report(shape_value):
        dims = " x ".join(f"{int(d)} {axis}" for d, axis in zip(shape_value.numpy(), axes))
        _warn_once(
            layer,
            f"{owner} emitted no spike over a whole training batch ({dims}); "
            f"{consequence}, so the layers before it learn little or nothing. {_ADVICE} "
            "(Warned once per layer; filter keras_spiking.SilentLayerWarning to silence it.)",
        )
        return []

    def silent():
        tf.py_function(report, [tf.cast(shape, tf.int64)], [])
        return tf.constant(False)

    tf.cond(fired, lambda: tf.constant(True), silent)


def tag_spikes(outputs: tf.Tensor, layer) -> tf.Tensor:
    """Marks ``outputs`` as the spikes of ``layer`` for the losses' input checks."""
    try:
        setattr(outputs, SPIKES_ATTRIBUTE, f"{type(layer).__name__} ({layer.name})")
    except AttributeError:  # a tensor type that takes no attributes: no check, no harm
        pass
    return outputs


def warn_if_spikes(y_pred, loss_name: str, advice: str) -> None:
    """Warns when a loss that reads a membrane was given a spiking layer's output."""
    source = getattr(y_pred, SPIKES_ATTRIBUTE, None)
    if source is None:
        return
    warnings.warn(
        f"{loss_name} reads a membrane voltage, but it was given the 0/1 spikes of {source}: "
        f"the loss then sees only spikes and the network usually stays at chance. {advice}",
        SpikesAsMembraneWarning,
        stacklevel=3,
    )
