r"""The SRC sequence scan: a loop over ``src_step``, XLA-compiled, hand-written backward.

:func:`src_sequence` runs :func:`keras_spiking.spiking_recurrent_cell.src_step` over time
(time-major ``TensorArray``\ s; a masked step keeps the state and outputs zeros);
:func:`src_scan` wraps it in a ``tf.custom_gradient`` whose forward pass is XLA-compiled and
records the states of every step, and whose backward pass :func:`_src_backward` is a reverse
loop that recomputes each step's element-wise terms (equations in its docstring), also
XLA-compiled. With ``jit=False`` TensorFlow's autodiff differentiates the plain loop instead.
Why the backward is hand-written (TF autodiff inside XLA was slower): ``docs/src.md``.
"""

from __future__ import annotations

import tensorflow as tf

from keras_spiking.scan import _compiled, _zeros_if_none
from keras_spiking.spiking_recurrent_cell import SRCState, slow_gate, src_step

__all__ = ["src_sequence", "src_scan"]


def src_sequence(
    currents,
    i0,
    h0,
    hs0,
    mask,
    bias,
    *,
    constants: tuple = (),
    slow_gate_slope: float | None = 10.0,
    detach_recurrent: bool = False,
    straight_through: bool = False,
    masked: bool = False,
    record: bool = False,
):
    r"""Runs :func:`src_step` over a sequence with a ``tf.while_loop`` (pure function).

    For ``t = 0 .. T-1``: ``s[t], state[t] = src_step(state[t-1], I[t])``; where ``mask[b, t]``
    is 0 the state of sample ``b`` is kept (``state[t] = state[t-1]``) and ``s[t] = 0``. The
    output ``last`` is ``s`` of the last unmasked step (zeros if none).

    Args:
        currents: synaptic input ``I = W_s s_in``, [batch, T, n].
        i0: initial ``i`` [batch, n].
        h0: initial ``h`` [batch, n].
        hs0: initial ``h_s`` [batch, n].
        mask: [batch, T] with 1 (step used) or 0 (step skipped), in the dtype of ``currents``;
            ignored (pass any tensor) unless ``masked``.
        bias: ``b_h``, [n].
        constants: ``(name, value)`` pairs of the constants of :func:`src_step` (``alpha``,
            ``rho``, ``r``, ``r_s``, ``z``, ``z_hyp``, ``z_dep``), each a float or a tuple of
            ``n`` floats (hashable, so the pairs can key a compiled function).
        slow_gate_slope: as in :func:`src_step`.
        detach_recurrent: as in :func:`src_step`.
        straight_through: as in :func:`src_step`.
        masked: whether ``mask`` is used.
        record: also return the states after every step, time-major ``[T, batch, n]`` each
            (for the hand-written backward pass).

    Returns:
        ``(outputs [batch, T, n], last [batch, n], i [batch, n], h [batch, n], h_s [batch, n])``,
        then ``(i_all, h_all, hs_all)`` if ``record``.
    """
    dtype = currents.dtype
    params = {name: tf.constant(value, dtype=dtype) for name, value in constants}
    params.update(
        bias=bias,
        slow_gate_slope=slow_gate_slope,
        detach_recurrent=detach_recurrent,
        straight_through=straight_through,
    )
    num_steps = tf.shape(currents)[1]
    currents_ta = tf.TensorArray(dtype, size=num_steps, clear_after_read=False)
    currents_ta = currents_ta.unstack(tf.transpose(currents, [1, 0, 2]))
    masks = None
    if masked:
        masks = tf.transpose(mask, [1, 0])[..., None] > 0.5  # [T, batch, 1]
    arrays = [tf.TensorArray(dtype, size=num_steps) for _ in range(4 if record else 1)]

    def body(t, i, h, h_s, last, *arrays):
        state = SRCState(i, h, h_s)
        s, new_state = src_step(state, currents_ta.read(t), **params)
        if masks is not None:
            keep = masks[t]
            new_state = SRCState(*[tf.where(keep, a, b) for a, b in zip(new_state, state)])
            s = tf.where(keep, s, tf.zeros_like(s))
            last = tf.where(keep, s, last)
        else:
            last = s
        arrays = [a.write(t, v) for a, v in zip(arrays, (s, *new_state))]
        return (t + 1, *new_state, last, *arrays)

    _, i, h, h_s, last, *arrays = tf.while_loop(
        lambda t, *_: t < num_steps,
        body,
        (tf.constant(0), i0, h0, hs0, tf.zeros_like(i0), *arrays),
        maximum_iterations=num_steps,
    )
    outputs = tf.transpose(arrays[0].stack(), [1, 0, 2])
    outputs.set_shape(currents.shape)
    if record:
        return (outputs, last, i, h, h_s, *[a.stack() for a in arrays[1:]])
    return outputs, last, i, h, h_s


def _src_backward(
    g_outputs,
    g_last,
    g_i,
    g_h,
    g_hs,
    currents,
    i0,
    h0,
    hs0,
    i_all,
    h_all,
    hs_all,
    mask,
    bias,
    *,
    constants: tuple = (),
    slow_gate_slope: float | None = 10.0,
    detach_recurrent: bool = False,
    straight_through: bool = False,
    masked: bool = False,
):
    r"""Hand-written BPTT of :func:`src_sequence` (reverse loop, element-wise per step).

    Step ``t`` is recomputed from the stored state ``[t-1]`` and ``I[t]``; with
    ``q = tanh(pre)``, ``pre = x + r h' + r_s h_s' + b`` and upstream gradients
    ``G_i, G_h, G_s`` of ``i[t], h[t], h_s[t]`` (``G_h`` including ``dL/ds[t] ReLU'(h[t])``):

    .. math::
        \bar p &= (1 - z)(1 - q^2) G_h, \qquad
        \bar\imath = G_i + \bar p\,(1 - \tanh^2(i / \rho)) \\
        \bar h' &= z G_h + r \bar p + (1 - z_s) G_s + (h_s' - h')\, z_s'(h') G_s, \qquad
        \bar h_s' = r_s \bar p + z_s G_s \\
        \bar\imath' &= \alpha \bar\imath, \quad \bar I[t] = \bar\imath, \quad
        \bar b \mathrel{+}= \textstyle\sum_{batch} \bar p

    with ``z_s'(h) = (z_dep - z_hyp) k sigma (1 - sigma)`` (0 for the Heaviside gate),
    ``\bar h' = \bar h_s' = 0`` from the step with ``detach_recurrent``, and masked steps
    passing the state gradients through unchanged.

    Returns:
        Gradients with respect to ``currents, i0, h0, hs0, bias``.
    """
    dtype = currents.dtype
    p = {name: tf.constant(value, dtype=dtype) for name, value in constants}
    alpha, rho, r, r_s, z = p["alpha"], p["rho"], p["r"], p["r_s"], p["z"]
    z_hyp, z_dep = p["z_hyp"], p["z_dep"]
    num_steps = tf.shape(currents)[1]
    currents_tm = tf.transpose(currents, [1, 0, 2])
    g_out_tm = tf.transpose(g_outputs, [1, 0, 2])
    prev = [tf.concat([s0[None], a[:-1]], axis=0) for s0, a in ((h0, h_all), (hs0, hs_all))]
    i_prev_all = tf.concat([i0[None], i_all[:-1]], axis=0)
    keep_all = tf.transpose(mask, [1, 0])[..., None] if masked else None  # [T, batch, 1]

    def body(t, g_i, g_h, g_hs, g_last, g_bias, g_cur):
        h_p, hs_p, i_p = prev[0][t], prev[1][t], i_prev_all[t]
        i = alpha * i_p + currents_tm[t]
        tanh_i = tf.tanh(i / rho)
        pre = rho * tanh_i + r * h_p + r_s * hs_p + bias
        q = tf.tanh(pre)
        h = z * h_p + (1.0 - z) * q
        g_s = g_out_tm[t]
        if masked:
            keep = keep_all[t]
            g_s = g_s + keep * g_last
            g_last = (1.0 - keep) * g_last
        else:
            g_s = g_s + g_last
            g_last = tf.zeros_like(g_last)
        relu_grad = 1.0 if straight_through else tf.cast(h > 0.0, dtype)
        g_h_total = g_h + g_s * relu_grad
        g_pre = (1.0 - z) * (1.0 - q * q) * g_h_total
        g_i_now = g_i + g_pre * (1.0 - tanh_i * tanh_i)
        if detach_recurrent:
            g_h_prev = tf.zeros_like(g_h)
            g_hs_prev = tf.zeros_like(g_hs)
        else:
            z_s = slow_gate(h_p, z_hyp=z_hyp, z_dep=z_dep, slope=slow_gate_slope)
            g_h_prev = z * g_h_total + r * g_pre + (1.0 - z_s) * g_hs
            if slow_gate_slope is not None:
                gate = tf.sigmoid(slow_gate_slope * (h_p - 0.5))
                dz_s = (z_dep - z_hyp) * slow_gate_slope * gate * (1.0 - gate)
                g_h_prev = g_h_prev + (hs_p - h_p) * dz_s * g_hs
            g_hs_prev = r_s * g_pre + z_s * g_hs
        g_i_prev = alpha * g_i_now
        if masked:
            g_i_prev = keep * g_i_prev + (1.0 - keep) * g_i
            g_h_prev = keep * g_h_prev + (1.0 - keep) * g_h
            g_hs_prev = keep * g_hs_prev + (1.0 - keep) * g_hs
            g_pre = keep * g_pre
            g_i_now = keep * g_i_now
        return (
            g_i_prev,
            g_h_prev,
            g_hs_prev,
            g_last,
            g_bias + g_pre,
            g_cur.write(t, g_i_now),
        )

    def step(k, *loop_vars):
        return (k + 1, *body(num_steps - 1 - k, *loop_vars))

    _, g_i0, g_h0, g_hs0, _, g_bias, g_cur = tf.while_loop(
        lambda k, *_: k < num_steps,
        step,
        (
            tf.constant(0),
            g_i,
            g_h,
            g_hs,
            g_last,
            tf.zeros_like(g_i),
            tf.TensorArray(dtype, size=num_steps),
        ),
        maximum_iterations=num_steps,
    )
    g_currents = tf.transpose(g_cur.stack(), [1, 0, 2])
    g_bias = tf.reduce_sum(g_bias, axis=0)
    return g_currents, g_i0, g_h0, g_hs0, g_bias


def src_scan(currents, i0, h0, hs0, bias, mask=None, *, jit: bool = True, **static):
    """:func:`src_sequence` with an XLA-compiled forward and backward pass (``jit=True``).

    With ``jit=True`` the scan is a ``tf.custom_gradient``: the forward pass is
    :func:`src_sequence` compiled with XLA (recording the states of every step); the backward
    pass is the hand-written reverse loop :func:`_src_backward`, also compiled with XLA. With
    ``jit=False`` it is :func:`src_sequence` differentiated by TensorFlow's autodiff. Both give
    the same numbers (up to float rounding).

    Args:
        currents: [batch, T, n] synaptic input.
        i0: initial ``i`` [batch, n].
        h0: initial ``h`` [batch, n].
        hs0: initial ``h_s`` [batch, n].
        bias: ``b_h`` [n] (a tensor, not a variable: read it before calling).
        mask: optional [batch, T] boolean or 0/1 mask.
        jit: XLA-compile both passes.
        **static: the keyword arguments of :func:`src_sequence` (``constants``,
            ``slow_gate_slope``, ``detach_recurrent``, ``straight_through``).

    Returns:
        ``(outputs [batch, T, n], last [batch, n], i, h, h_s)``.
    """
    masked = mask is not None
    mask = tf.cast(mask, currents.dtype) if masked else tf.zeros([0], currents.dtype)
    static = dict(static, masked=masked)
    if currents.shape[1] == 0:  # no step: the states pass through
        return currents, tf.zeros_like(i0), i0, h0, hs0
    if not jit:
        return src_sequence(currents, i0, h0, hs0, mask, bias, **static)
    fwd = _compiled(src_sequence, True, record=True, **static)
    bwd = _compiled(_src_backward, True, **static)

    @tf.custom_gradient
    def scan(currents, i0, h0, hs0, bias):
        *results, i_all, h_all, hs_all = fwd(currents, i0, h0, hs0, mask, bias)

        def grad(*upstream):
            upstream = [_zeros_if_none(g, r) for g, r in zip(upstream, results)]
            return bwd(*upstream, currents, i0, h0, hs0, i_all, h_all, hs_all, mask, bias)

        return tuple(results), grad

    outputs, last, i, h, h_s = scan(currents, i0, h0, hs0, bias)
    outputs.set_shape(currents.shape)
    return outputs, last, i, h, h_s
