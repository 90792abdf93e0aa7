r"""How far int8 quantization can move an exported ``LIF -> LI`` model, for the export tests.

The int8 tests compare what the TFLite runtimes compute with the float Keras model. Where a
hidden membrane passes close to its threshold, int8 rounding may flip a spike, and a flipped
spike carries on (the membrane differs by the threshold afterwards) and moves the readout.
How often that happens depends on the trained weights (which differ between the C++-kernel
and the pure-TF training paths, and between seeds) and on the runtime's kernels (XNNPACK,
TFLM's reference kernels, another CPU's instructions). So the tests do not count agreements
against a fixed percentage: they compare only what int8 cannot change, with bounds derived
here from the float model and the int8 scales, in two parts:

1. **Hidden layer** (:func:`hidden_bounds`): a spike is *certain* where the float membrane is
   farther from the threshold than the int8 error bound at that step and at every earlier
   step of the neuron (after a neuron's first close call nothing of it is predicted). Certain
   spikes of the int8 model must equal the float ones, and its membranes (the streaming
   export's state output) must lie within the bound of the float ones while certain.
2. **Readout** (:func:`readout_bounds`): given the int8 model's *own* hidden spikes (read from
   the hidden layer's own export, which computes exactly the full export's hidden spikes, as
   test_export_tflite.py checks; each one checked by part 1 wherever the float model predicts
   it), the float readout of those spikes must match the int8 readout within its bound at
   every value, and the int8 decision (argmax over classes of the maximum over time) must be
   that readout's wherever its winner clears every other class by both bounds and one output
   step (*certified*).

Bounding the int8 decisions against the float model's directly is not useful: by the last of
8 steps the digits model's int8 membranes may be ~0.6 threshold off, dozens of hidden neurons
per image come that close, and their flips could move the readout by more than nearly every
image's margin (measured: no image certified that way).

**Scales.** TFLite's int8 scheme with the converter's min/max calibration: an activation
tensor calibrated over values in ``[lo, hi]`` gets the scale ``(max(hi, 0) - min(lo, 0)) /
255`` and saturates outside that range; weights are symmetric per output channel, ``max|w| /
127``. The scales are recomputed by running the float model over the calibration data, per
unrolled step for the sequence export (each step's tensors are their own) or pooled over the
steps for the streaming export (one tensor serves every step). The readout's steps are
packed into one output tensor, so they share one scale in both forms, and the hidden decay
MUL gets the scale of the ADD it feeds (the converter does both). A value that leaves its
range saturates: the hidden neuron is not predicted from that step on, a readout value is
not followed after its FULLY_CONNECTED or MUL saturates, and the output is clipped as int8
clips it.

**Errors.** Each requantizing op (the input-current FULLY_CONNECTED, the decay MUL, the ADD,
the reset SUB; the readout's FULLY_CONNECTED, MUL and ADD) rounds to the nearest step of its
output scale: at most half a step off, in every runtime. With a constant input these
roundings can repeat with the same sign step after step (measured: the membrane error of a
slowly drifting neuron grows by ~0.1 threshold per step), so they are added up worst case,
decayed by ``beta``. The weights' and inputs' roundings are fixed per weight and input; the
current error they cause is a sum over many inputs of independent roundings (uniform,
variance ``step**2 / 12``), bounded by ``Z`` standard deviations, and recurs at every step, so
it adds up too. A wrong scale, a wrong sign or a shifted time step moves values by whole
thresholds or logits, far outside these bounds (tests/test_export_tflite.py lists the
deliberate breakages these checks caught).

The bounds are derived for a feed-forward LIF with subtract reset followed by an LI readout,
the models of the export tests; other layers raise NotImplementedError here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# How many standard deviations of a sum of weight (or input) roundings a bound allows. The
# sums run over 64-128 independent uniform roundings, close to normal with lighter tails;
# for a normal P(|e| > 6 sigma) = 2e-9, so over the ~5e5 spikes and ~4e4 readout values of
# one test the chance of one false alarm is about 1e-3.
Z = 6.0
_UNIFORM_VAR = 1.0 / 12.0  # variance of a rounding error uniform over one step


def int8_params(values) -> tuple[float, float, float]:
    """``(scale, low, high)`` the converter gives a tensor calibrated over ``values``.

    The range is widened to hold zero, cut into 255 steps, and the zero point rounded to an
    integer, which shifts the representable ``[low, high]`` by up to half a step; values
    outside it saturate.
    """
    values = np.asarray(values)
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    if high == low:
        return 0.0, 0.0, 0.0
    scale = (high - low) / 255.0
    zero = np.clip(np.round(-128 - low / scale), -128, 127)
    return scale, (-128 - zero) * scale, (127 - zero) * scale


def _step_params(values: np.ndarray, pooled: bool) -> np.ndarray:
    """``[T, 3]`` params of a ``[n, T, ...]`` tensor: one set per step, or one for all."""
    if pooled:
        return np.tile(int8_params(values), (values.shape[1], 1))
    return np.array([int8_params(values[:, t]) for t in range(values.shape[1])])


def _inside(values: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``[n, T, units]``: each value within its step's representable range (no saturation)."""
    low, high = params[:, 1][None, :, None], params[:, 2][None, :, None]
    return (values >= low) & (values <= high)


def _lif_run(spec, x):
    """Float run of a LIF layer over ``x [n, T, f]``: every step's tensors, ``[n, T, units]``."""
    if spec.kind != "lif" or spec.recurrent is not None or spec.reset != "subtract":
        raise NotImplementedError("the error model covers a feed-forward LIF, subtract reset")
    kernel = spec.kernel.astype(np.float64)
    bias = 0.0 if spec.bias is None else spec.bias.astype(np.float64)
    steps = {"current": [], "decayed": [], "u": [], "s": [], "v": []}
    v = np.zeros((x.shape[0], spec.units))
    for t in range(x.shape[1]):
        current = x[:, t] @ kernel + bias
        decayed = spec.beta * v
        u = decayed + current
        s = (u > spec.threshold).astype(np.float64)
        v = u - spec.threshold * s
        for key, value in zip(steps, (current, decayed, u, s, v)):
            steps[key].append(value)
    return {key: np.stack(value, 1) for key, value in steps.items()}


def _li_run(spec, x):
    """Float run of an LI layer over ``x [n, T, f]``: every step's tensors."""
    if spec.kind != "li":
        raise NotImplementedError("the error model's readout is an LI layer")
    kernel = spec.kernel.astype(np.float64)
    bias = 0.0 if spec.bias is None else spec.bias.astype(np.float64)
    steps = {"current": [], "decayed": [], "v": []}
    v = np.zeros((x.shape[0], spec.units))
    for t in range(x.shape[1]):
        current = x[:, t] @ kernel + bias
        decayed = spec.beta * v
        v = decayed + current
        for key, value in zip(steps, (current, decayed, v)):
            steps[key].append(value)
    return {key: np.stack(value, 1) for key, value in steps.items()}


@dataclass
class HiddenBounds:
    """Float hidden layer on the test inputs and what its int8 export must reproduce.

    ``spikes``, ``v`` ``[n, T, units]``: float spikes and membrane after the reset;
    ``certain``: spike certain at that step and every earlier one (compare only there);
    ``v_bound``: the bound on ``|int8 v - float v|`` (valid where ``certain``);
    ``calibration_spikes``: the float spikes on the calibration inputs (what the readout's
    calibration saw).
    """

    spikes: np.ndarray
    v: np.ndarray
    certain: np.ndarray
    v_bound: np.ndarray
    calibration_spikes: np.ndarray

    def first(self, n: int) -> HiddenBounds:
        """The bounds of the first ``n`` inputs only."""
        return HiddenBounds(
            self.spikes[:n], self.v[:n], self.certain[:n], self.v_bound[:n], self.calibration_spikes
        )


def hidden_bounds(spec, x, calibration, *, streaming: bool, z: float = Z) -> HiddenBounds:
    """The hidden LIF layer ``spec`` (``export._graph.NeuronLayer``) on ``x``.

    ``x`` and ``calibration`` (the exporter's ``representative_data``) are ``[n, T, f]`` float
    inputs (repeat a RepeatVector model's ``[n, f]`` over time first). ``streaming``: scales
    of the one-step export (pooled over the steps).
    """
    x = np.asarray(x, np.float64)
    calibration = np.asarray(calibration, np.float64)
    run, cal = _lif_run(spec, x), _lif_run(spec, calibration)
    params = {key: _step_params(cal[key], streaming) for key in cal}
    scale = {key: value[:, 0] for key, value in params.items()}
    # the decay MUL has the params of the ADD it feeds: it rounds at the coarser of the two
    # scales and saturates outside either range
    scale["decayed"] = np.maximum(scale["decayed"], scale["u"])
    inside = _inside(run["decayed"], params["u"])
    for key in ("current", "decayed", "u", "v"):
        inside &= _inside(run[key], params[key])
    x_scale, x_low, x_high = int8_params(calibration)
    inside &= np.all((x >= x_low) & (x <= x_high), axis=2, keepdims=True)

    kernel = spec.kernel.astype(np.float64)
    w_scale = np.abs(kernel).max(axis=0) / 127.0
    beta = spec.beta.astype(np.float64)
    beta_scale = int8_params(beta)[0]
    # the current's error from the rounded weights and inputs: Z standard deviations of a
    # sum over the inputs, [n, T, units]
    current_std = np.sqrt(
        _UNIFORM_VAR
        * ((x**2) @ (np.ones_like(kernel) * w_scale**2) + x_scale**2 * (kernel**2).sum(0))
    )
    statistical = np.zeros((x.shape[0], spec.units))
    rounding = np.zeros_like(statistical)  # the ops' own roundings, worst case
    bound_u, bound_v = [], []
    for t in range(x.shape[1]):
        statistical = beta * statistical + z * current_std[:, t]
        v_before = np.abs(run["v"][:, t - 1]) if t else 0.0
        rounding = beta * rounding + 0.5 * (
            scale["current"][t] + scale["decayed"][t] + scale["u"][t] + v_before * beta_scale
        )
        bound_u.append(statistical + rounding)
        rounding = rounding + 0.5 * scale["v"][t]  # the reset SUB
        bound_v.append(statistical + rounding)
    close = np.abs(run["u"] - spec.threshold) <= np.stack(bound_u, 1)
    return HiddenBounds(
        spikes=run["s"],
        v=run["v"],
        certain=np.cumsum(close | ~inside, axis=1) == 0,
        v_bound=np.stack(bound_v, 1),
        calibration_spikes=cal["s"],
    )


@dataclass
class ReadoutBounds:
    """The float readout of given hidden spikes and what its int8 export must reproduce.

    ``readout`` and ``bound`` ``[n, T, classes]``: float readout (clipped to the output's
    range) and the bound on ``|int8 - float|`` of each value (inf where not followed);
    ``output_scale`` and ``output_range``: the int8 output's scale and ``(low, high)``;
    ``decision`` ``[n]``: argmax over classes of the maximum over time; ``certified``
    ``[n]``: decisions no int8 rounding can change.
    """

    readout: np.ndarray
    bound: np.ndarray
    output_scale: float
    output_range: tuple[float, float]
    decision: np.ndarray
    certified: np.ndarray


def readout_bounds(spec, spikes, calibration_spikes, *, streaming: bool, z: float = Z):
    """The LI readout ``spec`` driven by ``spikes [n, T, hidden]`` (the int8 model's own).

    ``calibration_spikes``: the hidden spikes the exporter's calibration fed the readout
    (:attr:`HiddenBounds.calibration_spikes`). Returns :class:`ReadoutBounds`.
    """
    spikes = np.asarray(spikes, np.float64)
    run, cal = _li_run(spec, spikes), _li_run(spec, calibration_spikes)
    params = {key: _step_params(cal[key], streaming) for key in cal}
    params["v"] = _step_params(cal["v"], True)  # packed into the one output tensor
    scale = {key: value[:, 0] for key, value in params.items()}
    inside = _inside(run["current"], params["current"]) & _inside(run["decayed"], params["decayed"])
    followed = np.cumsum(~inside, axis=1) == 0

    kernel = spec.kernel.astype(np.float64)
    w_scale = np.abs(kernel).max(axis=0) / 127.0
    beta = spec.beta.astype(np.float64)
    # each weight's rounding recurs at every step its neuron spikes, so the error of class c
    # is sum_j e_jc * trace_j with trace_j = sum_k beta^(t-k) s_jk: Z standard deviations of
    # that sum (the slowest class decay bounds every class's traces; all are equal unless
    # trained); the ops' own roundings, worst case
    trace = np.zeros((spikes.shape[0], spikes.shape[2]))
    rounding = np.zeros(spec.units)
    bound = []
    for t in range(spikes.shape[1]):
        trace = beta.max() * trace + spikes[:, t]
        rounding = beta * rounding + 0.5 * (
            scale["current"][t] + scale["decayed"][t] + scale["v"][t]
        )
        weights = np.sqrt(_UNIFORM_VAR * (trace**2).sum(axis=1, keepdims=True)) * w_scale
        bound.append(z * weights + rounding)
    bound = np.where(followed, np.stack(bound, 1), np.inf)
    output_scale, low, high = params["v"][0]
    readout = np.clip(run["v"], low, high)
    decision = readout.max(axis=1).argmax(axis=-1)
    winner = np.take_along_axis(readout - bound, decision[:, None, None], axis=-1)
    others = readout + bound
    others[np.arange(len(decision)), :, decision] = -np.inf
    # more than one output step apart, so the two cannot round to one int8 value
    certified = winner.max(axis=(1, 2)) - others.max(axis=(1, 2)) > output_scale
    return ReadoutBounds(readout, bound, output_scale, (low, high), decision, certified)


def check_spikes(hidden: HiddenBounds, spikes, *, steps: int | None = None) -> float:
    """Asserts the int8 ``spikes`` equal the float ones wherever certain (first ``steps``).

    Returns the fraction of the spikes compared.
    """
    steps = hidden.spikes.shape[1] if steps is None else steps
    certain = hidden.certain[:, :steps]
    got, want = np.asarray(spikes)[:, :steps], hidden.spikes[:, :steps]
    wrong = certain & (got != want)
    if wrong.any():
        image, step, neuron = np.argwhere(wrong)[0]
        raise AssertionError(
            f"{wrong.sum()} of {certain.sum()} certain spikes differ from the float model; "
            f"first: image {image}, step {step}, neuron {neuron}: float {want[image, step, neuron]}"
            f", int8 {got[image, step, neuron]}"
        )
    return float(certain.mean())


def check_membranes(hidden: HiddenBounds, v, *, steps: int | None = None) -> None:
    """Asserts the dequantized int8 membranes ``v`` lie within the bound where certain."""
    steps = hidden.spikes.shape[1] if steps is None else steps
    certain = hidden.certain[:, :steps]
    error = np.abs(np.asarray(v)[:, :steps] - hidden.v[:, :steps])
    over = certain & (error > hidden.v_bound[:, :steps])
    if over.any():
        image, step, neuron = np.argwhere(over)[0]
        raise AssertionError(
            f"{over.sum()} int8 membranes outside the bound; first: image {image}, step {step}, "
            f"neuron {neuron}: |error| {error[image, step, neuron]:.4g} > "
            f"{hidden.v_bound[image, step, neuron]:.4g}"
        )


def check_readout(want: ReadoutBounds, outputs) -> float:
    """Asserts the dequantized int8 ``outputs`` lie within ``want.bound`` of ``want.readout``
    at every value and give its decision wherever certified. Returns the fraction certified.
    """
    outputs = np.asarray(outputs)
    error = np.abs(outputs - want.readout)
    over = error > want.bound
    if over.any():
        image, step, unit = np.argwhere(over)[0]
        raise AssertionError(
            f"{over.sum()} of {over.size} int8 readout values outside the bound; first: image "
            f"{image}, step {step}, class {unit}: |error| {error[image, step, unit]:.4g} > "
            f"{want.bound[image, step, unit]:.4g} ({want.output_scale:.4g} per int8 step)"
        )
    decision = outputs.max(axis=1).argmax(axis=-1)
    wrong = want.certified & (decision != want.decision)
    if wrong.any():
        raise AssertionError(
            f"{wrong.sum()} of {want.certified.sum()} certified decisions differ; images "
            f"{np.flatnonzero(wrong)[:10].tolist()}"
        )
    return float(want.certified.mean())
