"""Turning analog values into spike trains.

Three codes, each as a function on tensors and as a thin Keras layer:

* **Rate** (:func:`rate_encode`, :class:`RateEncoder`): independent Bernoulli draws per time
  step, spike probability proportional to the value (the discrete-time form of a Poisson
  spike train).
* **Latency** (:func:`latency_encode`, :class:`LatencyEncoder`): time to first spike, one spike
  per feature, earlier for larger values.
* **Delta** (:func:`delta_encode`, :class:`DeltaEncoder`): send-on-delta coding of a time
  series, a spike whenever the signal moved by more than a threshold.

Shapes follow the rest of the library: the time axis is axis 1, ``[batch, time, ...]``. The
rate and latency encoders take static inputs ``[batch, ...features]`` and add the time axis;
the delta encoder takes sequences ``[batch, time, features]``. Time is counted in steps of
the simulation (``dt`` is up to the network that consumes the spikes).

Inputs to the rate and latency codes must lie in ``[0, 1]``. Called eagerly, a value outside
(or a NaN) raises ``ValueError``; inside a graph (``tf.function``, ``model.fit``) the check
becomes a ``tf.debugging.Assert`` that raises ``InvalidArgumentError`` when it runs (XLA
compilation drops such asserts, so there the check is skipped).

Longer than 600 lines because the three codes share their argument checks and are read
together (a function and a layer each); splitting them would spread those checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "rate_encode",
    "latency_encode",
    "latency_times",
    "delta_encode",
    "RateEncoder",
    "LatencyEncoder",
    "DeltaEncoder",
]


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------


def _check_num_steps(num_steps: Any, where: str) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise TypeError(f"{where}: `num_steps` must be a positive int, got {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"{where}: `num_steps` must be a positive int, got {num_steps!r}")
    return int(num_steps)


def _check_real(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: `{name}` must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: `{name}` must be finite, got {value!r}")
    return value


def _check_max_rate(max_rate: Any, where: str) -> float:
    max_rate = _check_real(max_rate, "max_rate", where)
    if not 0 < max_rate <= 1:
        raise ValueError(
            f"{where}: `max_rate` is a spike probability per step and must be in (0, 1], "
            f"got {max_rate!r}"
        )
    return max_rate


def _check_seed_int(seed: Any, where: str) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"{where}: `seed` must be None or an int >= 0, got {seed!r}")
    return int(seed)


def _check_latency_args(
    num_steps: Any,
    t_min: Any,
    normalize: Any,
    threshold: Any,
    linear: Any,
    tau: Any,
    where: str,
) -> tuple[int, int, bool, float, bool, float | None]:
    num_steps = _check_num_steps(num_steps, where)
    if isinstance(t_min, bool) or not isinstance(t_min, (int, np.integer)):
        raise TypeError(f"{where}: `t_min` must be an int step index, got {t_min!r}")
    if not 0 <= t_min < num_steps:
        raise ValueError(
            f"{where}: `t_min` must be in [0, num_steps - 1] = [0, {num_steps - 1}], got {t_min!r}"
        )
    for name, flag in (("normalize", normalize), ("linear", linear)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{where}: `{name}` must be a bool, got {flag!r}")
    threshold = _check_real(threshold, "threshold", where)
    if not 0 <= threshold < 1:
        raise ValueError(f"{where}: `threshold` must be in [0, 1), got {threshold!r}")
    if tau is not None:
        tau = _check_real(tau, "tau", where)
        if tau <= 0:
            raise ValueError(f"{where}: `tau` must be > 0 (time steps), got {tau!r}")
    if linear and normalize and tau is not None:
        raise ValueError(
            f"{where}: `tau` is unused by the normalized linear code (the latencies span "
            f"[t_min, num_steps - 1]); pass tau=None or normalize=False, got tau={tau!r}"
        )
    if (not linear or not normalize) and tau is None:
        code = "RC (linear=False)" if not linear else "un-normalized linear"
        raise ValueError(f"{where}: the {code} latency code needs `tau` > 0, got tau=None")
    if not linear and threshold <= 0:
        raise ValueError(
            f"{where}: the RC latency code (linear=False) needs `threshold` in (0, 1), "
            f"got {threshold!r}"
        )
    return num_steps, int(t_min), bool(normalize), threshold, bool(linear), tau


def _as_float_tensor(x: Any, where: str, name: str = "x") -> tf.Tensor:
    try:
        x = tf.convert_to_tensor(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{where}: `{name}` must be convertible to a tensor, got {x!r}") from err
    if not x.dtype.is_floating:
        if not (x.dtype.is_integer or x.dtype == tf.bool):
            raise TypeError(f"{where}: `{name}` must be numeric, got dtype {x.dtype.name}")
        x = tf.cast(x, keras.config.floatx())
    return x


def _check_unit_interval(x: tf.Tensor, where: str) -> tf.Tensor:
    """Values of ``x`` must lie in ``[0, 1]`` (NaN fails too); see the module docstring."""
    if x.shape.rank is None or x.shape.rank < 1:
        raise ValueError(
            f"{where}: `x` must have a batch axis, shape [batch, ...features], got shape {x.shape}"
        )
    if tf.executing_eagerly():
        arr = x.numpy()
        bad = ~((arr >= 0) & (arr <= 1))
        if bad.any():
            raise ValueError(
                f"{where}: `x` must lie in [0, 1] (no NaN), got {int(bad.sum())} value(s) "
                f"outside, e.g. {arr[bad].flat[0]!r}"
            )
        return x
    ok = tf.reduce_all((x >= 0) & (x <= 1))
    check = tf.debugging.Assert(ok, [f"{where}: `x` must lie in [0, 1] (no NaN)"])
    with tf.control_dependencies([check]):
        return tf.identity(x)


def _with_time_shape(x: tf.Tensor, num_steps: int) -> tf.Tensor:
    shape = tf.shape(x)
    return tf.concat([shape[:1], [num_steps], shape[1:]], axis=0)


def _static_with_time(shape: Sequence[Any], num_steps: int) -> tuple[Any, ...]:
    shape = tuple(shape)
    return (shape[0], num_steps, *shape[1:])


# --------------------------------------------------------------------------------------------
# rate code
# --------------------------------------------------------------------------------------------


def _spikes_from_uniform(x: tf.Tensor, u: tf.Tensor, max_rate: float) -> tf.Tensor:
    # u ~ U[0, 1): u < p has probability exactly p; p = 0 never spikes, p = 1 always does.
    p = tf.expand_dims(x * tf.constant(max_rate, dtype=x.dtype), axis=1)
    return tf.cast(u < p, x.dtype)


def _seed_pair(seed: Any, where: str) -> tf.Tensor:
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"{where}: `seed` must be >= 0, got {seed!r}")
        seed = int(seed)
        # split the int into two 31-bit halves: distinct seeds give distinct pairs up to 2**62
        return tf.constant([seed % 2**31, (seed // 2**31) % 2**31], dtype=tf.int64)
    try:
        pair = tf.convert_to_tensor(seed)
    except (TypeError, ValueError):
        pair = None
    if pair is None or not pair.dtype.is_integer or pair.shape.as_list() != [2]:
        raise TypeError(
            f"{where}: `seed` must be None, an int >= 0 or a pair of ints (shape [2]), got {seed!r}"
        )
    return tf.cast(pair, tf.int64)


def rate_encode(
    x: Any,
    num_steps: int,
    *,
    max_rate: float = 1.0,
    seed: int | Sequence[int] | tf.Tensor | None = None,
) -> tf.Tensor:
    r"""Bernoulli (discrete-time Poisson) rate code.

    Every feature spikes independently at every step with probability

    .. math::  P(s_{b,t,i} = 1) = p_{max} \, x_{b,i}

    so the expected spike count over ``T = num_steps`` steps is ``T p_max x`` and the rate is
    ``p_max x / dt`` spikes per second for a step of ``dt`` seconds.

    Args:
        x: values in ``[0, 1]``, shape ``[batch, ...features]``; integer or bool inputs are
            cast to ``keras.config.floatx()``.
        num_steps: number of time steps ``T`` (positive int).
        max_rate: ``p_max``, the spike probability per step of a feature equal to 1, in
            ``(0, 1]`` (dimensionless).
        seed: ``None`` for fresh, nondeterministic noise on every call (TensorFlow's global
            generator, so also fresh on every run of a traced graph); an int >= 0, or a pair of
            ints (a shape-``[2]`` tensor, e.g. computed in a graph), for reproducible noise
            from ``tf.random.stateless_uniform``.

    Returns:
        Spikes (0.0 / 1.0) of shape ``[batch, num_steps, ...features]`` in the dtype of ``x``.

    Raises:
        ValueError: if ``x`` has values outside ``[0, 1]`` or NaN (eagerly), or for bad
            ``num_steps`` / ``max_rate`` / ``seed``.
        TypeError: for arguments of the wrong type.
    """
    where = "rate_encode"
    num_steps = _check_num_steps(num_steps, where)
    max_rate = _check_max_rate(max_rate, where)
    x = _check_unit_interval(_as_float_tensor(x, where), where)
    shape = _with_time_shape(x, num_steps)
    if seed is None:
        u = tf.random.uniform(shape, dtype=x.dtype)
    else:
        u = tf.random.stateless_uniform(shape, seed=_seed_pair(seed, where), dtype=x.dtype)
    return _spikes_from_uniform(x, u, max_rate)


# --------------------------------------------------------------------------------------------
# latency code
# --------------------------------------------------------------------------------------------


def _latency_spikes(
    x: tf.Tensor,
    num_steps: int,
    t_min: int,
    normalize: bool,
    threshold: float,
    linear: bool,
    tau: float | None,
) -> tf.Tensor:
    # latencies computed in float64 so that e.g. (1 - 0.7) * 10 rounds the same way as in
    # exact arithmetic for the values users write by hand
    x64 = tf.cast(x, tf.float64)
    if linear:
        span = float(num_steps - 1 - t_min) if normalize else tau
        latency = (1.0 - x64) * span
    else:
        safe = tf.where(x64 > threshold, x64, tf.ones_like(x64))
        latency = tau * tf.math.log(safe / (safe - threshold))
        if normalize:
            latency = latency - tau * math.log(1.0 / (1.0 - threshold))
    # round half up (not TensorFlow's round-half-to-even), so 2.5 -> 3
    step = t_min + tf.floor(latency + 0.5)
    active = (x64 > threshold) & (step <= num_steps - 1)
    step = tf.cast(tf.where(active, step, -tf.ones_like(step)), tf.int32)

    rank = x.shape.rank
    time = tf.reshape(tf.range(num_steps, dtype=tf.int32), [1, num_steps] + [1] * (rank - 1))
    return tf.cast(tf.equal(time, tf.expand_dims(step, axis=1)), x.dtype)


def latency_encode(
    x: Any,
    num_steps: int,
    *,
    t_min: int = 0,
    normalize: bool = True,
    threshold: float = 0.0,
    linear: bool = True,
    tau: float | None = None,
) -> tf.Tensor:
    r"""Time-to-first-spike (latency) code: one spike per feature, earlier for larger values.

    Each feature with ``x > threshold`` spikes exactly once, at the step

    .. math::  k = t_{min} + \lfloor \ell(x) + 1/2 \rfloor

    (rounded half up), where the latency ``ell`` (in steps) is

    * linear, ``normalize=True`` (default): ``ell = (1 - x) (T - 1 - t_min)``, so ``x = 1``
      spikes at ``t_min`` and ``x -> 0`` at the last step ``T - 1``; with ``t_min = 0`` this is
      ``round((1 - x)(T - 1))``.
    * linear, ``normalize=False``: ``ell = tau (1 - x)``: ``tau`` steps per unit of ``1 - x``.
    * RC (``linear=False``): ``ell = tau ln(x / (x - theta))``, the time a leaky integrator
      with time constant ``tau`` steps, driven by a constant input ``x``, takes to charge to
      the threshold ``theta`` (``0 < theta < 1``). With ``normalize=True`` the latencies are
      shifted by ``-tau ln(1 / (1 - theta))`` so that ``x = 1`` spikes at ``t_min``.

    Features with ``x <= threshold`` never spike (with the default ``threshold = 0`` that is
    exactly the zeros), nor do features whose step ``k`` falls after the last step ``T - 1``.

    Args:
        x: values in ``[0, 1]``, shape ``[batch, ...features]``.
        num_steps: number of time steps ``T``.
        t_min: first step at which a spike may occur, ``0 <= t_min < T``.
        normalize: see above.
        threshold: ``theta``, in ``[0, 1)``; values at or below it never spike.
        linear: linear code (``True``) or RC code (``False``).
        tau: time constant in steps; required (> 0) by the RC and un-normalized linear codes,
            must be ``None`` for the normalized linear code.

    Returns:
        Spikes (0.0 / 1.0) of shape ``[batch, num_steps, ...features]`` in the dtype of ``x``,
        with at most one spike per feature.

    Raises:
        ValueError: if ``x`` has values outside ``[0, 1]`` or NaN (eagerly), or for
            inconsistent arguments.
        TypeError: for arguments of the wrong type.
    """
    where = "latency_encode"
    args = _check_latency_args(num_steps, t_min, normalize, threshold, linear, tau, where)
    x = _check_unit_interval(_as_float_tensor(x, where), where)
    return _latency_spikes(x, *args)


def latency_times(
    x: Any,
    t_max: float,
    *,
    invert: bool = False,
    bias_time: float | None = None,
) -> tf.Tensor:
    r"""Latency code as spike times in seconds, for the EventProp layers.

    Each feature spikes once, at

    .. math::  t = t_{max}\, x \quad\text{or, with } ``invert``,\quad t = t_{max} (1 - x)

    (Wunderlich & Pehle 2021: Yin-Yang uses ``t = 30 ms * x`` plus a bias spike at 0, MNIST
    ``t = 20 ms * (1 - pixel / 255)``). Unlike :func:`latency_encode` the times are not
    rounded to a grid: the EventProp layers take spikes at any time.

    Args:
        x: values in ``[0, 1]``, shape ``[batch, features]``.
        t_max: the time in seconds of ``x = 1`` (``x = 0`` with ``invert``), > 0.
        invert: larger values spike earlier.
        bias_time: if given, one more input that spikes at this time (seconds, >= 0) in every
            sample (the paper's bias spike).

    Returns:
        Spike times ``[batch, features (+ 1), 1]`` in the dtype of ``x`` (one slot each).
    """
    where = "latency_times"
    x = _check_unit_interval(_as_float_tensor(x, where), where)
    if x.shape.rank != 2:
        raise ValueError(f"{where}: `x` must have shape [batch, features], got {tuple(x.shape)}")
    t_max = _check_real(t_max, "t_max", where)
    if not t_max > 0:
        raise ValueError(f"{where}: `t_max` must be > 0 seconds, got {t_max!r}")
    times = t_max * ((1 - x) if invert else x)
    if bias_time is not None:
        bias_time = _check_real(bias_time, "bias_time", where)
        if not bias_time >= 0:
            raise ValueError(f"{where}: `bias_time` must be >= 0 seconds, got {bias_time!r}")
        bias = tf.fill([tf.shape(x)[0], 1], tf.constant(bias_time, x.dtype))
        times = tf.concat([times, bias], axis=1)
    return times[..., None]


# --------------------------------------------------------------------------------------------
# delta code
# --------------------------------------------------------------------------------------------


def _check_delta_args(threshold: Any, off_spikes: Any, where: str) -> tuple[float, bool]:
    threshold = _check_real(threshold, "threshold", where)
    if threshold < 0:
        raise ValueError(f"{where}: `threshold` must be >= 0, got {threshold!r}")
    if not isinstance(off_spikes, (bool, np.bool_)):
        raise TypeError(f"{where}: `off_spikes` must be a bool, got {off_spikes!r}")
    return threshold, bool(off_spikes)


def _delta_spikes(x: tf.Tensor, threshold: float, off_spikes: bool) -> tf.Tensor:
    xt = tf.transpose(x, [1, 0, 2])  # time-major for the scan
    thr = tf.constant(threshold, dtype=x.dtype)
    no_spikes = tf.zeros_like(xt[0], dtype=tf.bool)

    def step(carry, x_t):
        ref, _, _ = carry
        on = x_t - ref > thr
        off = x_t - ref < -thr
        return tf.where(on | off, x_t, ref), on, off

    _, on, off = tf.scan(step, xt[1:], initializer=(xt[0], no_spikes, no_spikes))
    # no spike at t = 0: the first sample is only the initial reference
    on = tf.concat([no_spikes[None], on], axis=0)
    off = tf.concat([no_spikes[None], off], axis=0)
    on = tf.cast(tf.transpose(on, [1, 0, 2]), x.dtype)
    off = tf.cast(tf.transpose(off, [1, 0, 2]), x.dtype)
    return tf.concat([on, off], axis=-1) if off_spikes else on - off


def delta_encode(x_seq: Any, *, threshold: float = 0.1, off_spikes: bool = True) -> tf.Tensor:
    r"""Send-on-delta code of a time series: spike when the signal moved by > ``threshold``.

    Per feature, a reference level ``r`` starts at the first sample, ``r_0 = x_0`` (no spike
    at ``t = 0``). At each later step,

    .. math::

        \text{ON}_t = [x_t - r_{t-1} > \theta], \quad
        \text{OFF}_t = [x_t - r_{t-1} < -\theta], \quad
        r_t = x_t \text{ if ON}_t \lor \text{OFF}_t \text{ else } r_{t-1}

    i.e. the reference is reset to the current sample whenever a spike is sent, so a slow
    drift accumulates until it crosses the threshold. At most one spike per feature and step
    is sent, however large the jump. ``theta`` is in the units of the signal.

    Output layout:

    * ``off_spikes=True``: ``[batch, time, 2 * features]``, 0/1 spikes, the ``features`` ON
      channels first, then the ``features`` OFF channels (feature ``i`` has ON channel ``i``
      and OFF channel ``features + i``), as in a DVS camera's two polarities.
    * ``off_spikes=False``: ``[batch, time, features]``, signed: +1 for ON, -1 for OFF.

    Args:
        x_seq: time series, shape ``[batch, time, features]``, numeric.
        threshold: ``theta`` >= 0 (0 sends a spike on every change).
        off_spikes: separate OFF channels (``True``) or one signed channel per feature.

    Returns:
        Spikes in the (floating) dtype of ``x_seq``.

    Raises:
        ValueError: if ``x_seq`` is not rank 3, or ``threshold`` < 0.
        TypeError: for arguments of the wrong type.
    """
    where = "delta_encode"
    threshold, off_spikes = _check_delta_args(threshold, off_spikes, where)
    x = _as_float_tensor(x_seq, where, "x_seq")
    if x.shape.rank != 3:
        raise ValueError(
            f"{where}: `x_seq` must have shape [batch, time, features], got shape {x.shape}"
        )
    return _delta_spikes(x, threshold, off_spikes)


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_spiking")
class RateEncoder(keras.layers.Layer):
    """Keras layer form of :func:`rate_encode`: ``[batch, ...] -> [batch, num_steps, ...]``.

    The noise comes from the layer's ``keras.random.SeedGenerator``, whose state advances on
    every call, so every call (training or inference, eager or in ``model.fit``) draws fresh
    spikes. ``seed`` fixes the generator's initial state: two freshly built layers with the
    same seed produce the same sequence of spike trains. The generator state is not part of
    the saved weights: a model loaded from a ``.keras`` file restarts the sequence from
    ``seed``, like a freshly built layer. For a fixed, repeatable encoding (e.g. of a test set)
    call :func:`rate_encode` with an int ``seed`` instead.

    Args:
        num_steps: number of time steps ``T``.
        max_rate: spike probability per step of an input equal to 1, in ``(0, 1]``.
        seed: None or an int >= 0, the seed of the layer's generator.
        **kwargs: passed to ``keras.layers.Layer`` (``name``, ``dtype``, ...).
    """

    def __init__(
        self, num_steps: int, max_rate: float = 1.0, seed: int | None = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        where = type(self).__name__
        self.num_steps = _check_num_steps(num_steps, where)
        self.max_rate = _check_max_rate(max_rate, where)
        self.seed = _check_seed_int(seed, where)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        where = type(self).__name__
        x = _check_unit_interval(_as_float_tensor(inputs, where, "inputs"), where)
        u = keras.random.uniform(
            _with_time_shape(x, self.num_steps), dtype=x.dtype, seed=self.seed_generator
        )
        return _spikes_from_uniform(x, u, self.max_rate)

    def compute_output_shape(self, input_shape):
        return _static_with_time(input_shape, self.num_steps)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_steps=self.num_steps, max_rate=self.max_rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_spiking")
class LatencyEncoder(keras.layers.Layer):
    """Keras layer form of :func:`latency_encode`: ``[batch, ...] -> [batch, num_steps, ...]``.

    Deterministic; has no weights. Arguments are those of :func:`latency_encode`.

    Args:
        num_steps: number of time steps ``T``.
        t_min: first step at which a spike may occur.
        normalize: see :func:`latency_encode`.
        threshold: values at or below it never spike, in ``[0, 1)``.
        linear: linear (``True``) or RC (``False``) latency code.
        tau: time constant in steps (see :func:`latency_encode`).
        **kwargs: passed to ``keras.layers.Layer``.
    """

    def __init__(
        self,
        num_steps: int,
        t_min: int = 0,
        normalize: bool = True,
        threshold: float = 0.0,
        linear: bool = True,
        tau: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        (
            self.num_steps,
            self.t_min,
            self.normalize,
            self.threshold,
            self.linear,
            self.tau,
        ) = _check_latency_args(
            num_steps, t_min, normalize, threshold, linear, tau, type(self).__name__
        )

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        where = type(self).__name__
        x = _check_unit_interval(_as_float_tensor(inputs, where, "inputs"), where)
        return _latency_spikes(
            x, self.num_steps, self.t_min, self.normalize, self.threshold, self.linear, self.tau
        )

    def compute_output_shape(self, input_shape):
        return _static_with_time(input_shape, self.num_steps)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_steps=self.num_steps,
            t_min=self.t_min,
            normalize=self.normalize,
            threshold=self.threshold,
            linear=self.linear,
            tau=self.tau,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_spiking")
class DeltaEncoder(keras.layers.Layer):
    """Keras layer form of :func:`delta_encode`: ``[batch, time, features]`` in.

    Output ``[batch, time, 2 * features]`` (ON then OFF channels) with ``off_spikes=True``,
    else ``[batch, time, features]`` signed. Deterministic; has no weights.

    Args:
        threshold: change (in signal units) needed to send a spike, >= 0.
        off_spikes: separate OFF channels or a signed output.
        **kwargs: passed to ``keras.layers.Layer``.
    """

    def __init__(self, threshold: float = 0.1, off_spikes: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.threshold, self.off_spikes = _check_delta_args(
            threshold, off_spikes, type(self).__name__
        )

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        where = type(self).__name__
        x = _as_float_tensor(inputs, where, "inputs")
        if x.shape.rank != 3:
            raise ValueError(
                f"{where}: inputs must have shape [batch, time, features], got {x.shape}"
            )
        return _delta_spikes(x, self.threshold, self.off_spikes)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"{type(self).__name__}: inputs must have shape [batch, time, features], "
                f"got {tuple(input_shape)}"
            )
        b, t, f = input_shape
        if self.off_spikes:
            f = None if f is None else 2 * f
        return (b, t, f)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(threshold=self.threshold, off_spikes=self.off_spikes)
        return config
