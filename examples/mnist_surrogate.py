"""Feed-forward spiking network on full MNIST, trained with surrogate gradients in ``model.fit``.

Each image is presented as a constant input current for ``--steps`` time steps ("direct"
encoding: the first LIF layer turns pixel intensities into spikes), through two LIF layers
(fast-sigmoid surrogate) into a leaky-integrator readout whose maximum membrane over time is
the class score (``MaxMembraneCrossEntropy``). ``--encoding rate`` feeds Poisson spikes instead.
Defaults: 784 -> LIF(512) -> LIF(512) -> LI(10), tau_mem 20 ms, fast-sigmoid surrogate with
scale 10, dropout 0.2 after each LIF layer, Adam 1e-3 with cosine decay, batch 128, 15 epochs.

Tuning: ``--validation N`` holds out the last N training images as validation data and
reports on them instead of the test set. The surrogate scale and dropout were chosen this way
(``--validation 10000``, 15 epochs, seed 0): defaults before (scale 25, no dropout) 98.20%,
dropout 0.2 98.20%, dropout 0.2 + scale 10 98.34%, same with lr 2e-3 98.27%, dropout 0.3 +
scale 10 98.32%. The test set was evaluated once, with the chosen defaults.

Measured: 98.47% MNIST test accuracy after 15 epochs on all 60000 training images, 11.0 min
of training on a 2-core CPU (shared machine), seed 0, command
``.venv/bin/python examples/mnist_surrogate.py``; mean firing rates 0.078 (lif1) and 0.104
(lif2) spikes/step on 500 test images.

Data: ``--data DIR`` (a folder of the four IDX files, raw or .gz), else the environment
variable ``KERAS_SPIKING_DATA``, else tensorflow-datasets (which downloads). In this
repository's development machines the files are in ``../shared/data/mnist``, which is the
default when it exists.

Run: ``.venv/bin/python examples/mnist_surrogate.py``.
"""

from __future__ import annotations

import _common
import keras

import keras_spiking as ks

LOSSES = {
    "max": ks.losses.MaxMembraneCrossEntropy,
    "mean": ks.losses.MeanMembraneCrossEntropy,
    "last": ks.losses.LastMembraneCrossEntropy,
}


def build_model(
    steps: int,
    hidden: tuple[int, ...],
    encoding: str,
    seed: int,
    *,
    tau_mem: float = 20e-3,
    surrogate_scale: float = 10.0,
    dropout: float = 0.2,
) -> keras.Model:
    """784 pixels -> (constant current or Poisson spikes) x steps -> LIF layers -> LI(10)."""
    model_layers: list = [keras.Input((784,))]
    if encoding == "direct":
        model_layers.append(keras.layers.RepeatVector(steps))
    else:
        model_layers.append(ks.encoders.RateEncoder(steps, seed=seed))
    surrogate = {"class_name": "fast_sigmoid", "config": {"scale": surrogate_scale}}
    for i, units in enumerate(hidden):
        model_layers.append(
            ks.layers.LIF(
                units, tau_mem=tau_mem, surrogate=surrogate, use_bias=True, name=f"lif{i + 1}"
            )
        )
        if dropout:
            # on [batch, time, units] spikes: an independent mask per time step
            model_layers.append(keras.layers.Dropout(dropout, seed=seed + i, name=f"drop{i + 1}"))
    model_layers.append(ks.layers.LI(10, tau_mem=tau_mem, name="readout"))
    return keras.Sequential(model_layers)


def main(argv: list[str] | None = None) -> float:
    parser = _common.make_parser(__doc__, epochs=15, batch_size=128, lr=1e-3)
    _common.add_mnist_options(parser)
    parser.add_argument("--steps", type=int, default=10, help="time steps per image")
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--encoding", choices=["direct", "rate"], default="direct")
    parser.add_argument("--tau-mem", type=float, default=20e-3, help="seconds (dt = 1 ms)")
    parser.add_argument("--surrogate-scale", type=float, default=10.0, help="fast sigmoid k")
    parser.add_argument("--dropout", type=float, default=0.2, help="after each LIF layer")
    parser.add_argument("--loss", choices=sorted(LOSSES), default="max", help="membrane readout")
    parser.add_argument("--save", default=None, help="write the trained model to this .keras")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x_test, y_test = _common.load_mnist(args.data, "test")
    (x_train, y_train), validation_data = _common.hold_out(
        *_common.load_mnist(args.data, "train"), args.validation
    )
    x_train, y_train = _common.first(x_train, y_train, args.limit)

    model = build_model(
        args.steps,
        tuple(args.hidden),
        args.encoding,
        args.seed,
        tau_mem=args.tau_mem,
        surrogate_scale=args.surrogate_scale,
        dropout=args.dropout,
    )
    model.compile(
        _common.cosine_adam(args, len(x_train)),
        LOSSES[args.loss](),
        metrics=[_common.readout_accuracy(args.loss)],
    )
    # by default all 60000 images train, and the test set is touched once, at the end;
    # tune with --validation instead (the last N training images, never the test set)
    seconds = _common.timed_fit(model, x_train, y_train, args, validation_data=validation_data)
    # a tuning run (--validation) reports on its held-out images and leaves the test set alone
    split, (x_eval, y_eval) = (
        ("validation", validation_data) if validation_data else ("test", (x_test, y_test))
    )
    _, accuracy = model.evaluate(x_eval, y_eval, batch_size=500, verbose=0)
    print(
        f"MNIST {split} accuracy: {100 * accuracy:.2f}% (hidden {args.hidden}, {args.steps} steps, "
        f"{args.encoding} encoding, {args.epochs} epochs, {seconds / 60:.1f} min, "
        f"seed {args.seed})"
    )
    _common.finish_report(model, x_eval[:500], save=args.save)
    return accuracy


if __name__ == "__main__":
    main()
