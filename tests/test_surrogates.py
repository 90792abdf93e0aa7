import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import surrogates

X = np.linspace(-2.0, 2.0, 41)

# Closed-form derivatives written independently of the implementation.
CLOSED_FORM = {
    "fast_sigmoid": lambda x, k: 1.0 / (k * np.abs(x) + 1.0) ** 2,
    "arctan": lambda x, k: 1.0 / (1.0 + (math.pi * k * x) ** 2),
    "sigmoid": lambda x, k: k * np.exp(-k * x) / (1.0 + np.exp(-k * x)) ** 2,
    "triangle": lambda x, k: np.maximum(0.0, 1.0 - k * np.abs(x)),
    "exponential": lambda x, k: np.exp(-k * np.abs(x)),
    "gaussian": lambda x, k: np.exp(-0.5 * (k * x) ** 2),
    "straight_through": lambda x, k: np.full_like(x, k),
}


def test_registry_lists_every_shape():
    assert surrogates.available() == sorted(CLOSED_FORM)


@pytest.mark.parametrize("name", sorted(CLOSED_FORM))
@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_gradient_equals_closed_form(name, scale):
    surrogate = surrogates.get({"class_name": name, "config": {"scale": scale}})
    x = tf.constant(X)
    upstream = np.linspace(0.5, 1.5, X.size)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = surrogate(x)
        loss = tf.reduce_sum(y * upstream)
    np.testing.assert_array_equal(y.numpy(), (X > 0).astype(float))  # Heaviside, H(0) = 0
    # float64 evaluation of the same formula; only rounding differs
    np.testing.assert_allclose(
        tape.gradient(loss, x).numpy(),
        upstream * CLOSED_FORM[name](X, scale),
        rtol=1e-12,
        atol=1e-15,
    )


def test_get_accepts_name_dict_instance_callable():
    assert isinstance(surrogates.get("arctan"), surrogates.ArcTan)
    assert surrogates.get(None) == surrogates.FastSigmoid()
    instance = surrogates.Gaussian(scale=2.0)
    assert surrogates.get(instance) is instance
    assert surrogates.get(surrogates.serialize(instance)) == instance
    custom = surrogates.get(lambda x: 2.0 * tf.ones_like(x))
    x = tf.constant([0.3, -0.3])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = custom(x)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [2.0, 2.0])


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="known surrogates: arctan, exponential"):
        surrogates.get("boxcar")


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf")])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match="`scale` must be a finite number > 0"):
        surrogates.FastSigmoid(scale=scale)


def test_bad_identifier_type():
    with pytest.raises(TypeError, match="`surrogate` must be"):
        surrogates.get(3)


@pytest.mark.parametrize("name", sorted(CLOSED_FORM))
def test_keras_serialization_round_trip(name):
    surrogate = surrogates.get(name)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(surrogate))
    assert restored == surrogate and restored is not surrogate
