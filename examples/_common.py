"""Command-line options, data, training and reporting code shared by the example scripts.

The scripts import this module as ``import _common``. Running a script as
``python examples/NAME.py`` puts its folder first on ``sys.path`` whatever the working
directory, so the import needs no package or path set-up.

What lives here is what several scripts did the same way: the parser with the options they
share (``--epochs``, ``--batch-size``, ``--lr``, ``--seed``, ``--verbose``, the MNIST data
options), MNIST loading with the shared data folder as fallback, validation hold-out, the
learning-rate schedules, a timed ``model.fit``, and the lines of the printed report (firing
rates, spike counts, the machine the run used). Each script keeps its model, its defaults and
its headline result line.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import keras
import numpy as np

import keras_spiking as ks

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
"""The MNIST IDX files on this project's development machines (used when the folder exists)."""

RATE_LINE = "{name}: mean firing rate {mean:.3f} spikes/step, {silent} of {size} neurons silent"
"""Default format of one :func:`print_firing_rates` line."""


def make_parser(
    doc: str,
    *,
    epochs: int,
    epochs_help: str | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = 0,
    verbose: int | None = 2,
) -> argparse.ArgumentParser:
    """Creates a parser holding the options that the example scripts share.

    Args:
        doc: the script's docstring; its first line becomes the description.
        epochs: default of ``--epochs``.
        epochs_help: help text of ``--epochs``, if any.
        batch_size: default of ``--batch-size``; None leaves the option out.
        lr: default of ``--lr`` (Adam's initial learning rate); None leaves the option out.
        seed: default of ``--seed``; None leaves the option out.
        verbose: default of ``--verbose`` (Keras' ``fit`` verbosity); None leaves it out.

    Returns:
        The parser, for the script to add its own options to.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=epochs, help=epochs_help)
    if batch_size is not None:
        parser.add_argument("--batch-size", type=int, default=batch_size)
    if lr is not None:
        parser.add_argument("--lr", type=float, default=lr)
    if seed is not None:
        parser.add_argument("--seed", type=int, default=seed)
    if verbose is not None:
        parser.add_argument("--verbose", type=int, default=verbose)
    return parser


def add_mnist_options(
    parser: argparse.ArgumentParser,
    *,
    limit_help: str = "use only N training images",
    validation: bool = True,
) -> None:
    """Adds ``--data`` and ``--limit`` and, with ``validation``, ``--validation``.

    Args:
        parser: the parser to extend.
        limit_help: help text of ``--limit`` (what the script limits).
        validation: whether to add ``--validation N`` (hold out the last N training images).
    """
    parser.add_argument("--data", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--limit", type=int, default=None, help=limit_help)
    if validation:
        parser.add_argument(
            "--validation",
            type=int,
            default=0,
            help="hold out the last N training images as validation data (for tuning)",
        )


def add_eventprop_options(
    parser: argparse.ArgumentParser, *, hidden: int, steps: int, max_spikes_help: str
) -> None:
    """Adds the grid, buffer and schedule options of the two EventProp scripts.

    Args:
        parser: the parser to extend.
        hidden: default of ``--hidden`` (hidden neurons).
        steps: default of ``--steps`` (grid steps) and of ``--max-spikes`` (one slot per step,
            so no neuron can overflow).
        max_spikes_help: help text of ``--max-spikes``.
    """
    parser.add_argument("--hidden", type=int, default=hidden)
    parser.add_argument("--dt", type=float, default=1e-3, help="grid step, seconds")
    parser.add_argument("--steps", type=int, default=steps, help="window = steps * dt")
    parser.add_argument("--max-spikes", type=int, default=steps, help=max_spikes_help)
    parser.add_argument("--lr-decay", type=float, default=0.95, help="per epoch")
    parser.add_argument("--min-slope", type=float, default=10.0, help="1/s; 0 = exact")


def add_src_options(parser: argparse.ArgumentParser, *, default_note: str = "default on") -> None:
    """Adds ``--straight-through`` and ``--detach-recurrent`` (both on unless negated).

    Args:
        parser: the parser to extend.
        default_note: said in both help texts about the default.
    """
    parser.add_argument(
        "--straight-through",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"SRC: ReLU forward, identity backward ({default_note})",
    )
    parser.add_argument(
        "--detach-recurrent",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"SRC: no gradient through h, h_s across time ({default_note})",
    )


def load_mnist(data: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads one flattened MNIST split.

    Args:
        data: a folder of the four IDX files (raw or ``.gz``), or None to use the environment
            variable ``KERAS_SPIKING_DATA``, then the shared data folder when it exists, then
            tensorflow-datasets (which downloads).
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels)``: images ``[N, 784]`` in [0, 1], integer labels ``[N]``.
    """
    path = data or os.environ.get(ks.datasets.DATA_ENV_VAR)
    if path is None and SHARED_MNIST.exists():
        path = str(SHARED_MNIST)
    return ks.datasets.mnist(split, path=path, flatten=True)


def hold_out(x, y, n: int):
    """Splits the last ``n`` samples off as validation data.

    Args:
        x: inputs.
        y: labels.
        n: how many samples to hold out; 0 holds out none.

    Returns:
        ``((x_train, y_train), validation)`` where ``validation`` is ``(x_val, y_val)``, or
        None when ``n`` is 0.
    """
    if not n:
        return (x, y), None
    return (x[:-n], y[:-n]), (x[-n:], y[-n:])


def first(x, y, limit: int | None):
    """Returns the first ``limit`` samples of ``x`` and ``y`` (all of them when None or 0)."""
    return (x[:limit], y[:limit]) if limit else (x, y)


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """Number of batches that one epoch over ``n_samples`` takes."""
    return int(np.ceil(n_samples / batch_size))


def cosine_adam(args: argparse.Namespace, n_samples: int, **adam_options) -> keras.Optimizer:
    """Adam whose learning rate ``args.lr`` decays to zero over ``args.epochs`` (cosine).

    Args:
        args: parsed options with ``lr``, ``epochs`` and ``batch_size``.
        n_samples: training samples per epoch.
        **adam_options: further arguments of ``keras.optimizers.Adam``.

    Returns:
        The optimizer.
    """
    decay_steps = args.epochs * steps_per_epoch(n_samples, args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps)
    return keras.optimizers.Adam(schedule, **adam_options)


def epoch_decay_adam(args: argparse.Namespace, n_samples: int, **adam_options) -> keras.Optimizer:
    """Adam whose learning rate ``args.lr`` is multiplied by ``args.lr_decay`` after each epoch.

    Args:
        args: parsed options with ``lr``, ``lr_decay`` and ``batch_size``.
        n_samples: training samples per epoch.
        **adam_options: further arguments of ``keras.optimizers.Adam`` (e.g. ``clipnorm``).

    Returns:
        The optimizer.
    """
    schedule = keras.optimizers.schedules.ExponentialDecay(
        args.lr,
        decay_steps=steps_per_epoch(n_samples, args.batch_size),
        decay_rate=args.lr_decay,
        staircase=True,
    )
    return keras.optimizers.Adam(schedule, **adam_options)


def readout_accuracy(mode: str = "max") -> keras.metrics.Metric:
    """Readout accuracy (class = argmax of the readout reduced over time), named "accuracy"."""
    return ks.metrics.SparseReadoutAccuracy(mode, name="accuracy")


def timed_fit(model: keras.Model, x, y, args: argparse.Namespace, **fit_options) -> float:
    """Runs ``model.fit`` with the epochs, batch size and verbosity of ``args``.

    Args:
        model: a compiled model.
        x: training inputs.
        y: training labels.
        args: parsed options with ``epochs``, ``batch_size`` and ``verbose``.
        **fit_options: further arguments of ``fit`` (e.g. ``validation_data``).

    Returns:
        The wall time of the training, in seconds.
    """
    start = time.perf_counter()
    model.fit(
        x,
        y,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=args.verbose,
        **fit_options,
    )
    return time.perf_counter() - start


def print_firing_rates(model: keras.Model, x, line: str = RATE_LINE, indent: str = "  ") -> dict:
    """Prints one line per spiking layer: its mean firing rate and its silent neurons.

    Args:
        model: the trained model.
        x: inputs to measure the rates on.
        line: format of a line, with the fields ``name``, ``mean`` (mean rate over neurons),
            ``silent`` (neurons that never fired) and ``size`` (neurons).
        indent: printed before every line.

    Returns:
        The rates per layer, as ``keras_spiking.metrics.firing_rates`` returns them.
    """
    rates = ks.metrics.firing_rates(model, x)
    for name, rate in rates.items():
        fields = {"mean": rate.mean(), "silent": int((rate == 0).sum()), "size": rate.size}
        print(indent + line.format(name=name, **fields))
    return rates


def print_hidden_spike_counts(model: keras.Model, x, per: str = "sample") -> None:
    """Prints the spikes per neuron of an EventProp layer named "hidden", and its silent neurons.

    Args:
        model: a model with an ``EventPropCubaLIF`` layer named "hidden" (spike-time output,
            ``+inf`` where a slot holds no spike).
        x: inputs to count the spikes on.
        per: what one input is called in the printed line ("sample", "image").
    """
    hidden = keras.Model(model.inputs, model.get_layer("hidden").output)
    spikes = np.isfinite(hidden.predict(x, verbose=0)).sum(-1)
    print(
        f"  hidden: {spikes.mean():.2f} spikes per neuron and {per}, "
        f"{int((spikes.sum(0) == 0).sum())} of {spikes.shape[1]} neurons silent"
    )


def finish_report(model: keras.Model, x, *, line: str = RATE_LINE, save: str | None = None) -> None:
    """Ends a script's report: firing rates on ``x``, the machine, and the model if asked.

    Args:
        model: the trained model.
        x: inputs to measure the firing rates on.
        line: format of a firing-rate line (see :func:`print_firing_rates`).
        save: a ``.keras`` path to write the model to, or None.
    """
    print_firing_rates(model, x, line)
    print_machine()
    if save:
        model.save(save)


def cpu_model() -> str:
    """The CPU model as ``/proc/cpuinfo`` names it, or the platform's guess elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for entry in cpuinfo:
                key, _, value = entry.partition(":")
                # x86 names it "model name"; some ARM kernels "Hardware" or "Processor"
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def print_machine(indent: str = "  ") -> None:
    """Prints the CPU model and core count, the context every timing in a report needs."""
    print(f"{indent}machine: {cpu_model()}, {os.cpu_count()} cores")
