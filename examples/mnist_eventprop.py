"""Train a 784-350-10 spiking network on MNIST with exact EventProp gradients (``model.fit``).

The setup of Wunderlich & Pehle (2021): each pixel spikes once, at ``20 ms * (1 - pixel)``
(``keras_spiking.encoders.latency_times``), with input dropout 0.2 (``SpikeTimeDropout``);
350 current-based LIF neurons (tau_mem 20 ms, tau_syn 5 ms, threshold 1, reset to 0) feed 10
non-spiking leaky integrators, and the class score is each integrator's maximum voltage over
the window (the paper's loss ``-log softmax(max_t V)[label]``, ``--readout max``), or by
default the integrated-voltage loss of Nowotny et al. 2022 (``--readout integral``), which
did better on the validation split (98.54 % vs 98.08 % after 15 epochs, seed 0). Simulated on
a grid of ``--dt`` with exact exponential updates and interpolated spike times; the gradient
is the adjoint of that simulation (``keras_spiking.eventprop``).

Data: ``--data DIR`` (the four IDX files), else ``KERAS_SPIKING_DATA``, else
``../shared/data/mnist`` when it exists, else tensorflow-datasets (which downloads).

Run: ``.venv/bin/python examples/mnist_eventprop.py``. ``docs/performance.md`` records the
accuracy this script printed, with its arguments.
"""

from __future__ import annotations

import _common
import keras

import keras_spiking as ks


def load(data: str | None, split: str):
    """One MNIST split as latency-coded spike times ``[N, 784]`` (seconds), and its labels."""
    x, y = _common.load_mnist(data, split)
    times = ks.encoders.latency_times(x, 20e-3, invert=True).numpy()
    return times, y


def build_model(args) -> keras.Model:
    common = {"steps": args.steps, "dt": args.dt}
    return keras.Sequential(
        [
            keras.Input((784, 1)),
            ks.layers.SpikeTimeDropout(args.input_dropout, seed=args.seed),
            ks.layers.EventPropCubaLIF(
                args.hidden,
                max_spikes=args.max_spikes,
                # with max_spikes >= steps no neuron can overflow (one spike per step at most);
                # a smaller buffer saves memory but drops spikes from the gradient ("warn")
                on_overflow="warn" if args.max_spikes < args.steps else "raise",
                kernel_initializer=keras.initializers.RandomNormal(args.w1_mean, args.w1_std),
                min_slope=args.min_slope or None,
                name="hidden",
                **common,
            ),
            ks.layers.EventPropLI(
                10,
                readout=args.readout,
                kernel_initializer=keras.initializers.RandomNormal(0.0, args.w2_std),
                name="readout",
                **common,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> float:
    parser = _common.make_parser(__doc__, epochs=15, batch_size=32, lr=5e-3)
    _common.add_mnist_options(parser, limit_help="use the first N train images", validation=False)
    _common.add_eventprop_options(
        parser, hidden=350, steps=40, max_spikes_help="40 = steps: no overflow"
    )
    parser.add_argument("--readout", choices=["max", "integral"], default="integral")
    parser.add_argument("--input-dropout", type=float, default=0.2)
    parser.add_argument("--w1-mean", type=float, default=0.0)
    parser.add_argument("--w1-std", type=float, default=0.4)
    parser.add_argument("--w2-std", type=float, default=0.5)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = _common.first(*load(args.data, "train"), args.limit)
    x_test, y_test = load(args.data, "test")
    # the last 5000 training images are the validation split (settings were tuned on it)
    (x_train, y_train), validation_data = _common.hold_out(x_train, y_train, 5000)

    model = build_model(args)
    model.compile(
        _common.epoch_decay_adam(args, len(x_train)),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train_seconds = _common.timed_fit(
        model, x_train, y_train, args, validation_data=validation_data
    )
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    print(
        f"MNIST EventProp test accuracy: {100 * accuracy:.2f}% ({args.epochs} epochs, "
        f"{train_seconds:.0f} s training, seed {args.seed}, dt {args.dt * 1e3:g} ms, "
        f"readout {args.readout})"
    )
    _common.print_hidden_spike_counts(model, x_test[:512], per="image")
    _common.print_machine()
    return accuracy


if __name__ == "__main__":
    main()
