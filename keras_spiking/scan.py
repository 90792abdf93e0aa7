r"""Fused time scans of the neuron models with hand-written backpropagation through time.

The sequence layers compute the feed-forward synaptic input of all time steps in one matmul
and then call one of the scans here, which run only the neuron state through time. Each scan
is a ``tf.custom_gradient`` whose forward and backward passes are explicit ``tf.while_loop``\ s,
compiled with XLA by default (``jit=True``):

* Autodiff of a ``tf.while_loop`` keeps a stack per intermediate tensor and dispatches a dozen
  small ops per step; it cannot be XLA-compiled at all ("TensorList crossing the XLA/TF
  boundary"). The hand-written backward keeps one tensor per step (the pre-reset membrane),
  recomputes spikes and surrogate derivatives from it in one vectorised pass, and leaves a
  loop body of two or three fused element-wise ops.
* The semantics are exactly those of the step functions in :mod:`keras_spiking.dynamics`
  (``tests/test_scan.py`` compares both passes against autodiff of those step functions;
  ``tests/test_scan_gradients.py`` checks every backward against float64 finite differences
  of a smooth model whose exact gradient is the surrogate BPTT).

Inputs and outputs are batch-major ``[batch, time, n]`` like the layers (the loops read step
``t`` with a strided slice and keep their own per-step buffers time-major, so only the outputs
are transposed, fused with the pass that computes them); decay factors ``alpha``/``beta`` are
``[n]`` vectors (broadcast scalars before calling, so their gradients come out per neuron).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import tensorflow as tf

from keras_spiking.surrogates import Surrogate

_COMPILED: dict[tuple, Callable] = {}


def _compiled(fn: Callable, jit: bool, **static) -> Callable:
    """``fn`` with its static (Python) arguments bound, XLA-compiled once per configuration."""
    if static.pop("num_steps", None) == 0:
        jit = False  # XLA cannot compile the (never executed) loop body's slice of a 0-length axis
    key = (fn.__name__, jit, tuple(sorted(static.items())))
    if key not in _COMPILED:
        bound = functools.partial(fn, **static)
        compiled = tf.function(bound, jit_compile=True, autograph=False) if jit else bound

        def call(*tensors):
            # The surrounding tf.custom_gradient supplies the gradient; hiding the inputs from
            # any active tape stops TF from building the while-loop's own (non-XLA-compilable)
            # gradient bookkeeping around the compiled call.
            return compiled(*[tf.stop_gradient(t) for t in tensors])

        _COMPILED[key] = call
    return _COMPILED[key]


def _zeros_if_none(grad, like):
    return tf.zeros_like(like) if grad is None else grad


def _batch_major(x):
    """[T, batch, n] -> [batch, T, n]: the loops run time-major, the layers talk batch-major."""
    return tf.transpose(x, [1, 0, 2])


def _time_major(x):
    return tf.transpose(x, [1, 0, 2])


def _spikes(u, threshold):
    return tf.where(u > threshold, tf.ones_like(u), tf.zeros_like(u))


def _reset(u, s, threshold, reset):
    return u - threshold * s if reset == "subtract" else u * (1.0 - s)


def _time_loop(num_steps, body, loop_vars, reverse=False):
    """Runs ``body(t, *loop_vars)`` for t = 0..T-1 (or T-1..0); returns the final loop vars."""

    def step(k, *state):
        t = num_steps - 1 - k if reverse else k
        return (k + 1, *body(t, *state))

    out = tf.while_loop(
        lambda k, *_: k < num_steps,
        step,
        (tf.constant(0), *loop_vars),
        maximum_iterations=num_steps,
    )
    return out[1:]


def _array(like, num_steps):
    return tf.TensorArray(like.dtype, size=num_steps, element_shape=like.shape)


# --------------------------------------------------------------------------------------------
# LIF
# --------------------------------------------------------------------------------------------
def _lif_forward(currents, v0, s0, beta, rec, *, threshold, reset, recurrent):
    num_steps = tf.shape(currents)[1]

    def body(t, v, s, u_seq):
        current = currents[:, t]
        if recurrent:
            current = current + tf.matmul(s, rec)
        u = beta * v + current
        s = _spikes(u, threshold)
        return _reset(u, s, threshold, reset), s, u_seq.write(t, u)

    v, s, u_seq = _time_loop(num_steps, body, (v0, s0, _array(v0, num_steps)))
    u_all = u_seq.stack()
    return _batch_major(_spikes(u_all, threshold)), u_all, v, s


def _lif_backward(
    g_spikes,
    g_v_last,
    g_s_last,
    u_all,
    v0,
    s0,
    beta,
    rec,
    *,
    threshold,
    reset,
    detach_reset,
    surrogate,
    recurrent,
    decay_grad,
    final_spike_grad,
):
    num_steps = tf.shape(u_all)[0]

    def body(t, g_v, g_s_rec, g_u_seq):
        # Spikes and surrogate derivatives are recomputed from u[t] inside the loop body, where
        # XLA fuses them with the update instead of materialising [T, batch, n] temporaries.
        u = u_all[t]
        d = surrogate.derivative(u - threshold)
        if reset == "subtract":
            g_from_v = g_v if detach_reset else g_v * (1.0 - threshold * d)
        else:
            keep = 1.0 - _spikes(u, threshold)
            g_from_v = g_v * (keep if detach_reset else keep - u * d)
        g_s = g_spikes[:, t]
        if recurrent or final_spike_grad:
            g_s = g_s + g_s_rec
        g_u = g_from_v + g_s * d
        if recurrent:
            g_s_rec = tf.matmul(g_u, rec, transpose_b=True)
        elif final_spike_grad:
            # without recurrence the final spikes' gradient enters at t = T-1 only
            g_s_rec = tf.zeros_like(g_s_rec)
        return beta * g_u, g_s_rec, g_u_seq.write(t, g_u)

    g_v0, g_s0, g_u_seq = _time_loop(
        num_steps, body, (g_v_last, g_s_last, _array(v0, num_steps)), reverse=True
    )
    g_u = g_u_seq.stack()
    g_beta = tf.zeros_like(beta)
    if decay_grad or recurrent:
        s_all = _spikes(u_all, threshold)
    if decay_grad:
        v_prev = tf.concat([v0[None], _reset(u_all, s_all, threshold, reset)[:-1]], axis=0)
        g_beta = tf.reduce_sum(g_u * v_prev, axis=[0, 1])
    if recurrent:
        s_prev = tf.concat([s0[None], s_all[:-1]], axis=0)
        n = tf.shape(u_all)[-1]
        g_rec = tf.matmul(tf.reshape(s_prev, [-1, n]), tf.reshape(g_u, [-1, n]), transpose_a=True)
    else:
        g_rec = tf.zeros_like(rec)
    return _batch_major(g_u), g_v0, g_s0, g_beta, g_rec


def lif_scan(
    currents,
    v0,
    s0,
    beta,
    recurrent_kernel=None,
    *,
    threshold: float,
    surrogate: Surrogate,
    reset: str = "subtract",
    detach_reset: bool = True,
    jit: bool = True,
    decay_grad: bool = True,
):
    """Runs a LIF population over time; see :func:`keras_spiking.dynamics.lif_step`.

    Args:
        currents: feed-forward input currents, [batch, T, n].
        v0: initial membrane [batch, n].
        s0: initial spikes [batch, n] (used by the recurrent input only).
        beta: membrane decay per step, [n].
        recurrent_kernel: optional [n, n] recurrent weights.
        threshold: firing threshold > 0.
        surrogate: surrogate used for ``dS/du`` in the backward pass.
        reset: "subtract" or "zero".
        detach_reset: no gradient through the reset term.
        jit: XLA-compile the forward and backward loops.
        decay_grad: compute the gradient of the decay factors; with False they are treated
            as constants and get a zero gradient (saves a pass over [T, batch, n]).

    Returns:
        ``(spikes [batch, T, n], v_last [batch, n], s_last [batch, n])``.
    """
    recurrent = recurrent_kernel is not None
    rec = recurrent_kernel if recurrent else tf.zeros([0], currents.dtype)
    fwd = _compiled(
        _lif_forward,
        jit,
        num_steps=currents.shape[1],
        threshold=threshold,
        reset=reset,
        recurrent=recurrent,
    )

    def bwd(final_spike_grad):
        return _compiled(
            _lif_backward,
            jit,
            num_steps=currents.shape[1],
            threshold=threshold,
            reset=reset,
            detach_reset=detach_reset,
            surrogate=surrogate,
            recurrent=recurrent,
            decay_grad=decay_grad,
            final_spike_grad=final_spike_grad,
        )

    @tf.custom_gradient
    def scan(currents, v0, s0, beta, rec):
        spikes, u_all, v_last, s_last = fwd(currents, v0, s0, beta, rec)

        def grad(g_spikes, g_v_last, g_s_last):
            # a gradient on the final spikes exists only when the caller uses that state
            return bwd(final_spike_grad=g_s_last is not None)(
                _zeros_if_none(g_spikes, spikes),
                _zeros_if_none(g_v_last, v_last),
                _zeros_if_none(g_s_last, s_last),
                u_all,
                v0,
                s0,
                beta,
                rec,
            )

        return (spikes, v_last, s_last), grad

    return scan(currents, v0, s0, beta, rec)


# --------------------------------------------------------------------------------------------
# Current-based LIF
# --------------------------------------------------------------------------------------------
def _cuba_forward(currents, i0, v0, alpha, beta, rec, *, threshold, reset, recurrent):
    num_steps = tf.shape(currents)[1]

    def body(t, i, v, i_seq, v_seq):
        s = _spikes(v, threshold)
        current = currents[:, t]
        if recurrent:
            current = current + tf.matmul(s, rec)
        v_next = _reset(beta * v + i, s, threshold, reset)
        return alpha * i + current, v_next, i_seq.write(t, i), v_seq.write(t, v)

    i, v, i_seq, v_seq = _time_loop(
        num_steps, body, (i0, v0, _array(v0, num_steps), _array(v0, num_steps))
    )
    v_all = v_seq.stack()
    return _batch_major(_spikes(v_all, threshold)), i_seq.stack(), v_all, i, v


def _cuba_backward(
    g_spikes,
    g_i_last,
    g_v_last,
    i_all,
    v_all,
    alpha,
    beta,
    rec,
    *,
    threshold,
    reset,
    detach_reset,
    surrogate,
    recurrent,
    decay_grad,
):
    num_steps = tf.shape(v_all)[0]

    def body(t, g_i, g_v, g_x_seq, g_pre_seq):
        # g_i, g_v: dL/dI[t+1], dL/dU[t+1]; spikes and surrogate recomputed from U[t]
        v = v_all[t]
        d = surrogate.derivative(v - threshold)
        if reset == "subtract":
            g_pre = g_v  # d(reset(pre))/d(pre) with the spike detached
            g_s = g_spikes[:, t] if detach_reset else g_spikes[:, t] - threshold * g_v
        else:
            g_pre = g_v * (1.0 - _spikes(v, threshold))
            g_s = g_spikes[:, t]
            if not detach_reset:
                g_s = g_s - (beta * v + i_all[t]) * g_v
        if recurrent:
            g_s = g_s + tf.matmul(g_i, rec, transpose_b=True)
        g_v_now = beta * g_pre + g_s * d
        g_i_now = g_pre + alpha * g_i
        if decay_grad:
            g_pre_seq = g_pre_seq.write(t, g_pre)
        return g_i_now, g_v_now, g_x_seq.write(t, g_i), g_pre_seq

    pre_size = num_steps if decay_grad else 0
    g_i0, g_v0, g_x_seq, g_pre_seq = _time_loop(
        num_steps,
        body,
        (g_i_last, g_v_last, _array(g_v_last, num_steps), _array(g_v_last, pre_size)),
        reverse=True,
    )
    g_x = g_x_seq.stack()
    g_alpha, g_beta = tf.zeros_like(alpha), tf.zeros_like(beta)
    if decay_grad:
        g_alpha = tf.reduce_sum(g_x * i_all, axis=[0, 1])
        g_beta = tf.reduce_sum(g_pre_seq.stack() * v_all, axis=[0, 1])
    if recurrent:
        s_all = _spikes(v_all, threshold)
        n = tf.shape(v_all)[-1]
        g_rec = tf.matmul(tf.reshape(s_all, [-1, n]), tf.reshape(g_x, [-1, n]), transpose_a=True)
    else:
        g_rec = tf.zeros_like(rec)
    return _batch_major(g_x), g_i0, g_v0, g_alpha, g_beta, g_rec


def cuba_lif_scan(
    currents,
    i0,
    v0,
    alpha,
    beta,
    recurrent_kernel=None,
    *,
    threshold: float,
    surrogate: Surrogate,
    reset: str = "subtract",
    detach_reset: bool = True,
    jit: bool = True,
    decay_grad: bool = True,
):
    """Runs a current-based LIF population over time; see :func:`dynamics.cuba_lif_step`.

    Args:
        currents: feed-forward synaptic drive ``W S_in[n]``, [batch, T, n].
        i0: initial synaptic current [batch, n].
        v0: initial membrane [batch, n].
        alpha: synaptic decay per step, [n].
        beta: membrane decay per step, [n].
        recurrent_kernel: optional [n, n] recurrent weights ``V``.
        threshold: firing threshold > 0.
        surrogate: surrogate used for ``dS/dU`` in the backward pass.
        reset: "subtract" or "zero".
        detach_reset: no gradient through the reset term.
        jit: XLA-compile the forward and backward loops.
        decay_grad: compute the gradient of the decay factors; with False they are treated
            as constants and get a zero gradient (saves a pass over [T, batch, n]).

    Returns:
        ``(spikes [batch, T, n], i_last [batch, n], v_last [batch, n])``.
    """
    recurrent = recurrent_kernel is not None
    rec = recurrent_kernel if recurrent else tf.zeros([0], currents.dtype)
    fwd = _compiled(
        _cuba_forward,
        jit,
        num_steps=currents.shape[1],
        threshold=threshold,
        reset=reset,
        recurrent=recurrent,
    )
    bwd = _compiled(
        _cuba_backward,
        jit,
        num_steps=currents.shape[1],
        threshold=threshold,
        reset=reset,
        detach_reset=detach_reset,
        surrogate=surrogate,
        recurrent=recurrent,
        decay_grad=decay_grad,
    )

    @tf.custom_gradient
    def scan(currents, i0, v0, alpha, beta, rec):
        spikes, i_all, v_all, i_last, v_last = fwd(currents, i0, v0, alpha, beta, rec)

        def grad(g_spikes, g_i_last, g_v_last):
            return bwd(
                _zeros_if_none(g_spikes, spikes),
                _zeros_if_none(g_i_last, i_last),
                _zeros_if_none(g_v_last, v_last),
                i_all,
                v_all,
                alpha,
                beta,
                rec,
            )

        return (spikes, i_last, v_last), grad

    return scan(currents, i0, v0, alpha, beta, rec)


# --------------------------------------------------------------------------------------------
# Leaky integrator
# --------------------------------------------------------------------------------------------
def _li_forward(currents, v0, beta):
    num_steps = tf.shape(currents)[1]

    def body(t, v, v_seq):
        v = beta * v + currents[:, t]
        return v, v_seq.write(t, v)

    v, v_seq = _time_loop(num_steps, body, (v0, _array(v0, num_steps)))
    return _batch_major(v_seq.stack()), v


def _li_backward(g_v_all, g_v_last, v_all, v0, beta, *, decay_grad):
    num_steps = tf.shape(v_all)[1]

    def body(t, g_v, g_seq):
        g = g_v_all[:, t] + g_v
        return beta * g, g_seq.write(t, g)

    g_v0, g_seq = _time_loop(num_steps, body, (g_v_last, _array(v0, num_steps)), reverse=True)
    g_x = g_seq.stack()  # time-major
    if not decay_grad:
        return _batch_major(g_x), g_v0, tf.zeros_like(beta)
    v_prev = tf.concat([v0[None], _time_major(v_all)[:-1]], axis=0)
    return _batch_major(g_x), g_v0, tf.reduce_sum(g_x * v_prev, axis=[0, 1])


def li_scan(currents, v0, beta, *, jit: bool = True, decay_grad: bool = True):
    """Runs a leaky integrator over time; see :func:`keras_spiking.dynamics.li_step`.

    Args:
        currents: input currents, [batch, T, n].
        v0: initial membrane [batch, n].
        beta: decay per step, [n].
        jit: XLA-compile the forward and backward loops.
        decay_grad: compute the gradient of the decay factors; with False they are treated
            as constants and get a zero gradient (saves a pass over [T, batch, n]).

    Returns:
        ``(v [batch, T, n], v_last [batch, n])``: the membrane at every step and the final one.
    """
    fwd = _compiled(_li_forward, jit, num_steps=currents.shape[1])
    bwd = _compiled(_li_backward, jit, num_steps=currents.shape[1], decay_grad=decay_grad)

    @tf.custom_gradient
    def scan(currents, v0, beta):
        v_all, v_last = fwd(currents, v0, beta)

        def grad(g_v_all, g_v_last):
            return bwd(
                _zeros_if_none(g_v_all, v_all),
                _zeros_if_none(g_v_last, v_last),
                v_all,
                v0,
                beta,
            )

        return (v_all, v_last), grad

    return scan(currents, v0, beta)
