"""An exact, event-driven NumPy simulation of feed-forward current-based LIF layers.

Continuous time, no grid: between events ``V(s) = a(s) V0 + g(s) I0`` (see
``keras_spiking.eventprop``); a threshold crossing is bracketed on a fine sub-grid of each
inter-event interval and then bisected to machine precision. Used as the oracle for the
EventProp tests: its central finite differences are the exact event-time gradient, which the
gridded EventProp gradient must approach as ``dt -> 0``.
"""

from __future__ import annotations

import math

import numpy as np


def _voltage(s, v0, i0, tau_mem, tau_syn):
    a, b = np.exp(-s / tau_mem), np.exp(-s / tau_syn)
    return a * v0 + tau_syn / (tau_syn - tau_mem) * (b - a) * i0


def neuron_spike_times(
    in_times: np.ndarray,
    weights: np.ndarray,
    *,
    tau_mem: float,
    tau_syn: float,
    threshold: float,
    t_end: float,
    probes: int = 64,
) -> list[float]:
    """Spike times of one neuron (reset to 0) driven by ``weights[k]`` at ``in_times[k]``."""
    order = np.argsort(in_times, kind="stable")
    events = [(float(in_times[k]), float(weights[k])) for k in order if in_times[k] < t_end]
    events.append((t_end, 0.0))
    spikes: list[float] = []
    t, v, i = 0.0, 0.0, 0.0
    for t_event, w in events:
        while True:
            span = t_event - t
            if span <= 0:
                break
            grid = np.linspace(0.0, span, probes + 1)[1:]
            volts = _voltage(grid, v, i, tau_mem, tau_syn)
            above = np.nonzero(volts >= threshold)[0]
            if len(above) == 0:
                break
            hi = grid[above[0]]
            lo = 0.0 if above[0] == 0 else grid[above[0] - 1]
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                if mid in (lo, hi):
                    break
                if _voltage(mid, v, i, tau_mem, tau_syn) >= threshold:
                    hi = mid
                else:
                    lo = mid
            t_spike = t + hi
            spikes.append(t_spike)
            i = i * math.exp(-hi / tau_syn)
            v = 0.0
            t = t_spike
        # advance to the event, then apply it
        span = t_event - t
        v = float(_voltage(span, v, i, tau_mem, tau_syn))
        i = i * math.exp(-span / tau_syn) + w
        t = t_event
    return spikes


def layer_spike_times(in_times: list[np.ndarray], kernel: np.ndarray, **kin) -> list[np.ndarray]:
    """Spike times of every neuron of one layer; ``in_times[i]`` are input ``i``'s spikes."""
    flat_times = np.concatenate([np.asarray(t, float) for t in in_times] + [np.zeros(0)])
    sources = np.concatenate(
        [np.full(len(t), i) for i, t in enumerate(in_times)] + [np.zeros(0, int)]
    ).astype(int)
    return [
        np.asarray(neuron_spike_times(flat_times, kernel[sources, j], **kin))
        for j in range(kernel.shape[1])
    ]
