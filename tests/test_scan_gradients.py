r"""Every scan's backward pass against float64 central finite differences.

Scans checked: the TF scans :func:`keras_spiking.scan.lif_scan`, ``cuba_lif_scan`` and
``li_scan`` (XLA-compiled and plain), the kernel scans ``ops.fused_lif_scan``,
``fused_cuba_lif_scan`` and ``fused_li_scan`` (float64), and the SRC scan
:func:`keras_spiking.src_scan.src_scan`. The reference numbers come from NumPy simulations
of the equations written here, not from the package.

The leaky integrator is linear and the SRC smooth away from the ReLU's kink, so their
gradients are compared with differences of the NumPy simulation itself (for the SRC with its
piecewise-constant parts fixed at the point of the differences, as below; see ``_src``).

The LIF and CubaLIF neurons spike with a Heaviside step ``H(x)``, ``x = u - theta``, whose true
derivative is zero almost everywhere; the scans use a surrogate ``sigma'(x)`` in its place.
The surrogate gradient is nonetheless the exact gradient of a smooth function, which is what
the differences are taken of. Run the neuron once with ``H`` and record ``x0`` for every
neuron and step. Then the model in which the spike of that neuron and step is

.. math::  s(x) = H(x_0) + P(x) - P(x_0), \qquad P' = \sigma'

(``P`` a primitive of the surrogate, e.g. the logistic function for the ``sigmoid``
surrogate) is smooth in every input, takes exactly the Heaviside trajectory at the recorded
point (``s(x_0) = H(x_0)``), and has ``ds/dx = sigma'(x)`` there. Its exact gradient at that
point is therefore the backpropagation through time of the Heaviside forward pass with
``sigma'`` for ``dS/dx``, i.e. what the scans compute, for every term: the reset's use of
``S`` (reset "zero" multiplies by ``1 - S``), the spikes themselves, the final states, the
decay factors. A detached reset (``detach_reset=True``) uses the constant ``H(x_0)`` in the
reset term, which is what ``stop_gradient`` means for the gradient at that point. The scans'
forward spikes are checked to equal the recorded ones, so both sides stand at the same
point.

Every check uses a loss that weighs every output (spikes, final states) with fixed random
numbers, so the gradients that enter through the final states are checked too, and the
spiking neurons a threshold other than 1.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import ops, scan, surrogates
from keras_spiking.src_scan import src_scan

B, T, N = 3, 8, 4
THETA = 0.75
EPS = 1e-5
# Fourth-order central differences (five points, step EPS) in float64. Their rounding error is
# about 1.5 * 1e-16 * |loss| / EPS < 1e-9 (|loss| < 100 here); their truncation error,
# EPS^4 / 30 times the fifth derivative, is smaller still (measured: the differences with steps
# EPS and 2 * EPS agree to 1e-9). Second-order differences were not enough: the steep default
# surrogates (k = 25) give third derivatives near 1e6, an error of 1e-7 at a step of 1e-6. A
# wrong term of a gradient is as large as the term, 1e-3 or more.
FD = {"rtol": 1e-6, "atol": 1e-7}
# The differences move every membrane by a few EPS: one that close to the threshold could
# change the recorded spikes (and one that close to a kink of a surrogate's primitive would
# break the expansion). The cases keep at least MARGIN away.
MARGIN = 1e-4


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


_ERF = np.vectorize(math.erf)

# A primitive P (P' = the surrogate derivative) of each surrogate at scale k, and the points
# where P'' is not smooth (central differences need P three times differentiable nearby).
PRIMITIVES = {
    "fast_sigmoid": (lambda x, k: x / (1.0 + k * np.abs(x)), lambda k: [0.0]),
    "arctan": (lambda x, k: np.arctan(math.pi * k * x) / (math.pi * k), lambda k: []),
    "sigmoid": (lambda x, k: _logistic(k * x), lambda k: []),
    "triangle": (
        lambda x, k: np.where(
            np.abs(x) < 1.0 / k, x - 0.5 * k * x * np.abs(x), np.sign(x) / (2.0 * k)
        ),
        lambda k: [0.0, -1.0 / k, 1.0 / k],
    ),
    "exponential": (lambda x, k: np.sign(x) * (1.0 - np.exp(-k * np.abs(x))) / k, lambda k: [0.0]),
    "gaussian": (
        lambda x, k: math.sqrt(math.pi / 2.0) / k * _ERF(k * x / math.sqrt(2.0)),
        lambda k: [],
    ),
    "straight_through": (lambda x, k: k * x, lambda k: []),
}


# --------------------------------------------------------------------------------------------
# Finite differences and the gradients under test
# --------------------------------------------------------------------------------------------
def _finite_differences(loss, params: dict, step: float = EPS) -> dict:
    """d loss / d params, element by element, by the five-point central difference."""
    params = {name: value.copy() for name, value in params.items()}
    grads = {}
    for name, value in params.items():
        grad = np.empty_like(value)
        for index in np.ndindex(value.shape):
            saved = value[index]
            at = []
            for offset in (-2.0, -1.0, 1.0, 2.0):
                value[index] = saved + offset * step
                at.append(loss(params))
            value[index] = saved
            grad[index] = (at[0] - 8.0 * at[1] + 8.0 * at[2] - at[3]) / (12.0 * step)
        grads[name] = grad
    return grads


def _weighted(outputs, weights) -> float:
    return sum(float(np.sum(o * w)) for o, w in zip(outputs, weights, strict=True))


def _tape(fn, params: dict, weights):
    """Outputs of ``fn(**params)`` and the tape's gradients of the weighted loss."""
    tensors = {name: tf.constant(value, tf.float64) for name, value in params.items()}
    with tf.GradientTape() as tape:
        tape.watch(list(tensors.values()))
        outputs = fn(**tensors)
        loss = sum(tf.reduce_sum(o * w) for o, w in zip(outputs, weights, strict=True))
    grads = tape.gradient(loss, tensors)
    grads = {n: np.zeros_like(params[n]) if g is None else g.numpy() for n, g in grads.items()}
    return [o.numpy() for o in outputs], grads


def _assert_gradients(got: dict, want: dict):
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], err_msg=name, **FD)


def _weights(rng, shapes):
    return [rng.normal(size=shape) for shape in shapes]


# --------------------------------------------------------------------------------------------
# NumPy simulations; `spike(t, x)` returns (S, the S that the reset uses)
# --------------------------------------------------------------------------------------------
def _lif(p, spike, reset, recurrent):
    v, s = p["v0"], p["s0"]
    spikes = []
    for t in range(T):
        current = p["x"][:, t] + (s @ p["rec"] if recurrent else 0.0)
        u = p["beta"] * v + current
        s, s_reset = spike(t, u - THETA)
        v = u - THETA * s_reset if reset == "subtract" else u * (1.0 - s_reset)
        spikes.append(s)
    return np.stack(spikes, axis=1), v, s


def _cuba(p, spike, reset, recurrent):
    i, v = p["i0"], p["v0"]
    spikes = []
    for t in range(T):
        s, s_reset = spike(t, v - THETA)
        current = p["x"][:, t] + (s @ p["rec"] if recurrent else 0.0)
        pre = p["beta"] * v + i
        v = pre - THETA * s_reset if reset == "subtract" else pre * (1.0 - s_reset)
        i = p["alpha"] * i + current
        spikes.append(s)
    return np.stack(spikes, axis=1), i, v


def _surrogate_loss(simulate, params, weights, primitive, scale, detach, kinks):
    """The loss of the smooth model around the Heaviside trajectory at ``params`` (docstring)."""
    recorded = []

    def heaviside(t, x):
        recorded.append(x)
        s = (x > 0).astype(np.float64)
        return s, s

    outputs = simulate(params, heaviside)
    x0 = np.stack(recorded)
    h0 = (x0 > 0).astype(np.float64)
    for kink in [0.0, *kinks]:
        assert np.min(np.abs(x0 - kink)) > MARGIN, "a membrane sits on a threshold or kink"

    def smooth(t, x):
        s = h0[t] + primitive(x, scale) - primitive(x0[t], scale)
        return s, (h0[t] if detach else s)

    return outputs, lambda p: _weighted(simulate(p, smooth), weights)


# --------------------------------------------------------------------------------------------
# LIF and CubaLIF
# --------------------------------------------------------------------------------------------
def _lif_case(rng, recurrent):
    params = {
        "x": rng.normal(0.35, 0.5, (B, T, N)),
        "v0": rng.normal(0.3, 0.4, (B, N)),
        "s0": (rng.random((B, N)) < 0.5).astype(np.float64),
        "beta": rng.uniform(0.6, 0.95, N),
    }
    if recurrent:
        params["rec"] = rng.normal(0.0, 0.3, (N, N))
    return params, _weights(rng, [(B, T, N), (B, N), (B, N)])


def _cuba_case(rng, recurrent):
    params = {
        "x": rng.normal(0.25, 0.4, (B, T, N)),
        "i0": rng.normal(0.2, 0.3, (B, N)),
        "v0": rng.normal(0.4, 0.4, (B, N)),
        "alpha": rng.uniform(0.5, 0.9, N),
        "beta": rng.uniform(0.6, 0.95, N),
    }
    if recurrent:
        params["rec"] = rng.normal(0.0, 0.3, (N, N))
    return params, _weights(rng, [(B, T, N), (B, N), (B, N)])


def _lif_scan_fn(impl, surrogate, reset, detach, recurrent):
    options = {"threshold": THETA, "surrogate": surrogate, "reset": reset, "detach_reset": detach}
    if impl == "kernel":
        return lambda x, v0, s0, beta: ops.fused_lif_scan(x, v0, s0, beta, **options)
    jit = impl == "xla"
    if recurrent:
        return lambda x, v0, s0, beta, rec: scan.lif_scan(x, v0, s0, beta, rec, jit=jit, **options)
    return lambda x, v0, s0, beta: scan.lif_scan(x, v0, s0, beta, jit=jit, **options)


def _cuba_scan_fn(impl, surrogate, reset, detach, recurrent):
    options = {"threshold": THETA, "surrogate": surrogate, "reset": reset, "detach_reset": detach}
    if impl == "kernel":
        return lambda x, i0, v0, alpha, beta: ops.fused_cuba_lif_scan(
            x, i0, v0, alpha, beta, **options
        )
    jit = impl == "xla"
    if recurrent:
        return lambda x, i0, v0, alpha, beta, rec: scan.cuba_lif_scan(
            x, i0, v0, alpha, beta, rec, jit=jit, **options
        )
    return lambda x, i0, v0, alpha, beta: scan.cuba_lif_scan(
        x, i0, v0, alpha, beta, jit=jit, **options
    )


NEURONS = {"lif": (_lif, _lif_case, _lif_scan_fn), "cuba": (_cuba, _cuba_case, _cuba_scan_fn)}


def _check_spiking(neuron, impl, surrogate, reset, detach, recurrent, seed):
    simulate, make_case, scan_fn = NEURONS[neuron]
    params, weights = make_case(np.random.default_rng(seed), recurrent)
    primitive, kinks = PRIMITIVES[surrogate.name]
    want_outputs, loss = _surrogate_loss(
        lambda p, spike: simulate(p, spike, reset, recurrent),
        params,
        weights,
        primitive,
        surrogate.scale,
        detach,
        kinks(surrogate.scale),
    )
    got_outputs, got = _tape(scan_fn(impl, surrogate, reset, detach, recurrent), params, weights)
    spikes = want_outputs[0]
    assert 0.1 < spikes.mean() < 0.9, "the case should spike, and not always"
    np.testing.assert_array_equal(got_outputs[0], spikes)  # the same Heaviside trajectory
    for a, b in zip(got_outputs[1:], want_outputs[1:], strict=True):
        # float64 states; the kernels may fuse a multiply-add where NumPy rounds twice
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    _assert_gradients(got, _finite_differences(loss, params))


IMPLS = [
    pytest.param("xla", False, id="xla"),
    pytest.param("loop", False, id="loop"),
    pytest.param("kernel", False, id="kernel"),
    pytest.param("loop", True, id="loop-recurrent"),
]


@pytest.mark.parametrize("neuron", ["lif", "cuba"])
@pytest.mark.parametrize("impl, recurrent", IMPLS)
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach", [True, False], ids=["detached", "attached"])
def test_spiking_scans_against_finite_differences(neuron, impl, recurrent, reset, detach):
    # the surrogate's primitive is the logistic function: the smooth model spikes with a sigmoid
    _check_spiking(neuron, impl, surrogates.Sigmoid(scale=4.0), reset, detach, recurrent, 7)


@pytest.mark.parametrize("neuron", ["lif", "cuba"])
@pytest.mark.parametrize("impl", ["loop", "kernel"])
@pytest.mark.parametrize("name", ops.KERNEL_SURROGATES)
def test_every_kernel_surrogate_against_finite_differences(neuron, impl, name):
    # default scales (exact in the kernels' float32 `scale` attribute); reset "zero" attached
    # uses S, dS/dx and the membrane in the reset term, the most the surrogate enters into
    _check_spiking(neuron, impl, surrogates.get(name), "zero", False, False, 11)


# --------------------------------------------------------------------------------------------
# Leaky integrator
# --------------------------------------------------------------------------------------------
def _li(p):
    v = p["v0"]
    out = []
    for t in range(T):
        v = p["beta"] * v + p["x"][:, t]
        out.append(v)
    return np.stack(out, axis=1), v


@pytest.mark.parametrize("impl", ["xla", "loop", "kernel"])
def test_li_scan_against_finite_differences(impl):
    rng = np.random.default_rng(3)
    params = {
        "x": rng.normal(size=(B, T, N)),
        "v0": rng.normal(size=(B, N)),
        "beta": rng.uniform(0.5, 0.99, N),
    }
    weights = _weights(rng, [(B, T, N), (B, N)])

    def fn(x, v0, beta):
        if impl == "kernel":
            return ops.fused_li_scan(x, v0, beta)
        return scan.li_scan(x, v0, beta, jit=impl == "xla")

    outputs, got = _tape(fn, params, weights)
    for a, b in zip(outputs, _li(params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    _assert_gradients(got, _finite_differences(lambda p: _weighted(_li(p), weights), params))


# --------------------------------------------------------------------------------------------
# SRC
# --------------------------------------------------------------------------------------------
SRC_DEFAULTS = {
    "alpha": 0.9,
    "rho": 3.0,
    "r": 2.0,
    "r_s": -7.0,
    "z": 0.0,
    "z_hyp": 0.9,
    "z_dep": 0.0,
}


def _src(p, c, options, base=None):
    """The SRC equations (docstring of keras_spiking.spiking_recurrent_cell.src_step).

    Without ``base`` the plain forward pass, which also returns the record of its trajectory.
    With the record of the point of the differences as ``base``, the smooth model around it:
    what is piecewise constant there is fixed at its value there (the Heaviside slow gate for
    ``slope=None``, the ReLU's active set), the identity replaces the ReLU's slope for
    ``straight_through``, and with ``detach_recurrent`` the previous states are the recorded
    constants in the step's equations (``stop_gradient``), as in the docstring above.
    """
    slope, mask = options["slow_gate_slope"], options["mask"]
    i, h, h_s = p["i0"], p["h0"], p["hs0"]
    last = np.zeros_like(h)
    record = {"h_prev": [], "hs_prev": [], "h": []}
    outputs = []
    for t in range(T):
        i_new = c["alpha"] * i + p["x"][:, t]
        x = c["rho"] * np.tanh(i_new / c["rho"])
        h_prev, hs_prev = h, h_s
        if base and options["detach_recurrent"]:
            h_prev, hs_prev = base["h_prev"][t], base["hs_prev"][t]
        if slope is None:
            gate = ((base["h_prev"][t] if base else h_prev) > 0.5).astype(np.float64)
        else:
            gate = _logistic(slope * (h_prev - 0.5))
        z_s = c["z_hyp"] + (c["z_dep"] - c["z_hyp"]) * gate
        drive = x + c["r"] * h_prev + c["r_s"] * hs_prev + p["bias"]
        h_new = c["z"] * h_prev + (1.0 - c["z"]) * np.tanh(drive)
        hs_new = z_s * hs_prev + (1.0 - z_s) * h_prev
        if base is None:
            s = np.maximum(h_new, 0.0)
        elif options["straight_through"]:
            s = np.maximum(base["h"][t], 0.0) + (h_new - base["h"][t])
        else:
            s = np.where(base["h"][t] > 0, h_new, 0.0)
        record["h_prev"].append(h)
        record["hs_prev"].append(h_s)
        record["h"].append(h_new)
        if mask is not None:  # a masked step keeps the state and outputs zeros
            keep = mask[:, t][:, None] > 0.5
            i_new, h_new, hs_new = (
                np.where(keep, new, old) for new, old in ((i_new, i), (h_new, h), (hs_new, h_s))
            )
            s = np.where(keep, s, 0.0)
            last = np.where(keep, s, last)
        else:
            last = s
        i, h, h_s = i_new, h_new, hs_new
        outputs.append(s)
    return (np.stack(outputs, axis=1), last, i, h, h_s), record


SRC_CASES = {
    "defaults": {},
    "per_neuron": {
        "constants": {"alpha": (0.5, 0.7, 0.8, 0.95), "z": 0.3, "z_dep": 0.2, "r_s": -4.0}
    },
    "heaviside_gate": {"slow_gate_slope": None},
    "detach_recurrent": {"detach_recurrent": True},
    "straight_through": {"straight_through": True},
    "masked": {"mask": True},
}


@pytest.mark.parametrize("jit", [True, False], ids=["xla", "autodiff"])
@pytest.mark.parametrize("case", list(SRC_CASES))
def test_src_scan_against_finite_differences(case, jit):
    rng = np.random.default_rng(5)
    setting = SRC_CASES[case]
    constants = {**SRC_DEFAULTS, **setting.get("constants", {})}
    c = {name: np.asarray(value, np.float64) for name, value in constants.items()}
    mask = (rng.random((B, T)) < 0.7).astype(np.float64) if setting.get("mask") else None
    options = {
        "slow_gate_slope": setting.get("slow_gate_slope", 10.0),
        "detach_recurrent": setting.get("detach_recurrent", False),
        "straight_through": setting.get("straight_through", False),
    }
    # inputs that make pulses (h crossing 0 and 0.5) within the few steps, states off rest
    params = {
        "x": rng.normal(0.8, 1.0, (B, T, N)),
        "i0": rng.normal(0.5, 0.5, (B, N)),
        "h0": rng.uniform(-0.9, 0.9, (B, N)),
        "hs0": rng.uniform(-0.5, 0.5, (B, N)),
        "bias": rng.uniform(-2.0, 0.0, N),
    }
    weights = _weights(rng, [(B, T, N), (B, N), (B, N), (B, N), (B, N)])
    reference = {**options, "mask": mask}
    want_outputs, record = _src(params, c, reference)
    h = np.stack(record["h"])
    assert np.min(np.abs(h)) > MARGIN  # the ReLU's kink
    assert 0.1 < np.mean(h > 0) < 0.9 and np.any(h > 0.5)  # pulses, and the gate opens
    if options["slow_gate_slope"] is None:
        assert np.min(np.abs(np.stack(record["h_prev"]) - 0.5)) > MARGIN  # the gate's step

    def fn(x, i0, h0, hs0, bias):
        return src_scan(
            x,
            i0,
            h0,
            hs0,
            bias,
            None if mask is None else tf.constant(mask),
            jit=jit,
            constants=tuple(constants.items()),
            **options,
        )

    got_outputs, got = _tape(fn, params, weights)
    for a, b in zip(got_outputs, want_outputs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)  # float64, same formulas
    loss = lambda p: _weighted(_src(p, c, reference, base=record)[0], weights)  # noqa: E731
    _assert_gradients(got, _finite_differences(loss, params))
