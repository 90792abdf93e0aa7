"""Fuzzing of the layer constructors: every argument value either builds a layer whose config
round-trips, or raises a ValueError/TypeError whose message names the argument.

One argument is fuzzed per example (the others keep valid values), so the error can be pinned
on it: integers from zero, negative and small to far past int64 (``10**400`` has no float),
floats with NaN, infinities, negatives and subnormals, and wrong types (None, bools, strings,
bytes, lists, dicts, complex numbers, arbitrary objects), mixed with valid values so that the
accepting branch is exercised too. Valid EventProp layers are also called once on a tiny input.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_spiking import cells, eventprop, layers

EDGE_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**61, 2**63 - 1, 2**63, -(2**63), 10**400]
EDGE_FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1e-300, 1e300, -1.0]

WRONG_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=6),
    st.binary(max_size=4),
    st.lists(st.floats(allow_nan=True), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.complex_numbers(allow_nan=True),
    st.builds(object),
    st.just(np.array([1.0, 2.0])),
)
INTS = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-(2**70), 2**70), st.integers(-3, 70))
FLOATS = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats(allow_nan=True, allow_infinity=True))
ANYTHING = st.one_of(INTS, FLOATS, WRONG_TYPES)


def count(valid_max=64):
    """An integer argument (units, steps, max_spikes): valid small counts, or anything."""
    return st.one_of(st.integers(1, valid_max), ANYTHING)


def positive(low=1e-4, high=1.0):
    """A positive float argument (time constants, dt, threshold)."""
    return st.one_of(st.floats(low, high), ANYTHING)


def choice(*valid):
    return st.one_of(st.sampled_from(valid), ANYTHING)


# layer class, the arguments it needs, and the fuzzed arguments with their strategies
CASES = {
    "LIF": (
        layers.LIF,
        {"units": 4},
        {
            "units": count(),
            "tau_mem": positive(),
            "threshold": positive(0.1, 2.0),
            "dt": positive(),
            "reset": choice("subtract", "zero"),
            "surrogate": choice("fast_sigmoid", "arctan", "triangle"),
        },
    ),
    "CubaLIF": (
        layers.CubaLIF,
        {"units": 4, "reset": "zero"},
        {
            "units": count(),
            "tau_syn": positive(),
            "tau_mem": positive(),
            "threshold": positive(0.1, 2.0),
            "dt": positive(),
            "gradient": choice("surrogate", "eventprop"),
        },
    ),
    "LI": (layers.LI, {"units": 4}, {"units": count(), "tau_mem": positive(), "dt": positive()}),
    "SRC": (
        layers.SRC,
        {"units": 4},
        {
            "units": count(),
            "alpha": positive(0.0, 0.99),
            "rho": positive(0.1, 5.0),
            "z": positive(0.0, 1.0),
            "z_hyp": positive(0.0, 1.0),
            "slow_gate_slope": positive(0.1, 20.0),
            "bias_max": positive(-8.0, 0.0),
        },
    ),
    "EventPropCubaLIF": (
        layers.EventPropCubaLIF,
        {"units": 4, "steps": 20},
        {
            "units": count(),
            "steps": count(200),
            "max_spikes": count(16),
            "dt": positive(),
            "tau_mem": positive(1e-3, 0.1),
            "tau_syn": positive(1e-3, 0.1),
            "threshold": positive(0.1, 2.0),
            "on_overflow": choice("raise", "warn"),
            "min_slope": st.one_of(st.none(), positive(1.0, 100.0)),
            "count_target": positive(0.0, 5.0),
            "count_strength": positive(0.0, 5.0),
            "silent_bump": positive(0.0, 1.0),
            "input_format": choice("times", "sequence"),
            "use_custom_ops": choice("auto", True, False),
        },
    ),
    "EventPropLI": (
        layers.EventPropLI,
        {"units": 4, "steps": 20},
        {
            "units": count(),
            "steps": count(200),
            "dt": positive(),
            "tau_mem": positive(1e-3, 0.1),
            "tau_syn": positive(1e-3, 0.1),
            "readout": choice(*eventprop.READOUTS),
        },
    ),
    "SpikeTimeDropout": (
        layers.SpikeTimeDropout,
        {"rate": 0.1},
        {"rate": positive(0.0, 0.9), "seed": st.one_of(st.none(), INTS, WRONG_TYPES)},
    ),
    "EventProp": (
        eventprop.EventProp,
        {},
        {
            "max_spikes": count(16),
            "on_overflow": choice("raise", "warn"),
            "min_slope": st.one_of(st.none(), positive(1.0, 100.0)),
            "count_target": positive(0.0, 5.0),
            "count_strength": positive(0.0, 5.0),
            "silent_bump": positive(0.0, 1.0),
        },
    ),
    "LIFCell": (cells.LIFCell, {"units": 4}, {"units": count(), "tau_mem": positive()}),
}


@pytest.mark.parametrize("name", ["rho", "slow_gate_slope"])
def test_src_int_beyond_float_range_is_named(name):
    with pytest.raises(ValueError, match=name):
        layers.SRC(4, **{name: 10**400})


def _round_trips(obj) -> None:
    config = obj.get_config()
    copy = type(obj).from_config(config)
    assert copy.get_config() == config


def _cheap_to_call(layer) -> bool:
    rule = getattr(layer, "rule", None)
    return (
        isinstance(layer, (layers.EventPropCubaLIF, layers.EventPropLI))
        and layer.input_format == "times"
        and layer.units <= 64
        and layer.steps <= 200
        and (rule is None or rule.max_spikes <= 16)
        and 1e-5 <= layer.dt <= 1.0
    )


def _call_tiny(layer) -> None:
    """One call on a batch of two, spikes in the middle of the window."""
    times = np.full((2, 3, 1), 0.5 * layer.window, "float32")
    try:
        out = layer(times)
    except tf.errors.InvalidArgumentError as error:  # on_overflow="raise", a documented error
        assert "max_spikes" in str(error)
        return
    assert tuple(out.shape) == layer.compute_output_shape(times.shape)


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_constructor_accepts_or_names_the_argument(case, data):
    cls, required, fuzzed = CASES[case]
    name = data.draw(st.sampled_from(sorted(fuzzed)), label="argument")
    value = data.draw(fuzzed[name], label=name)
    kwargs = {**required, name: value}
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as error:
        assert name in str(error), f"{case}({name}={value!r}) raised {error!r}"
        return
    _round_trips(obj)
    if _cheap_to_call(obj):
        _call_tiny(obj)


@settings(max_examples=15, deadline=None)
@given(
    units=st.integers(1, 8),
    steps=st.integers(1, 60),
    max_spikes=st.integers(1, 8),
    dt=st.floats(1e-4, 5e-3),
    tau_mem=st.floats(2e-3, 0.05),
    tau_syn=st.floats(1e-3, 0.02),
    recurrent=st.booleans(),
    readout=st.sampled_from(eventprop.READOUTS),
)
def test_valid_eventprop_layers_run(
    units, steps, max_spikes, dt, tau_mem, tau_syn, recurrent, readout
):
    shared = dict(steps=steps, dt=dt, tau_mem=tau_mem, tau_syn=tau_syn)
    hidden = layers.EventPropCubaLIF(
        units,
        max_spikes=max_spikes,
        recurrent=recurrent,
        on_overflow="warn",
        kernel_initializer=keras.initializers.Constant(2.0),
        **shared,
    )
    readout_layer = layers.EventPropLI(2, readout=readout, **shared)
    times = np.full((2, 3, 1), 0.25 * steps * dt, "float32")
    spikes = hidden(times)
    assert spikes.shape == (2, units, max_spikes)
    finite = spikes.numpy()[np.isfinite(spikes.numpy())]
    assert np.all((finite >= 0) & (finite <= steps * dt * (1 + 1e-6)))
    out = readout_layer(spikes)
    assert tuple(out.shape) == readout_layer.compute_output_shape(spikes.shape)
    assert np.all(np.isfinite(out.numpy()))
