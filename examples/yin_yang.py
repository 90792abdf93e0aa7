"""Train a spiking network on the Yin-Yang data set with plain ``model.fit``.

The four coordinates (x, y, 1 - x, 1 - y) are fed as a constant input current for ``--steps``
time steps ("direct" encoding) into two LIF layers trained with the fast-sigmoid surrogate
gradient; a leaky-integrator readout gives one membrane trace per class and the class score is
its maximum over time (``MaxMembraneCrossEntropy``).

Run: ``.venv/bin/python examples/yin_yang.py`` (about 2-4 minutes on 2 cores).
``docs/performance.md`` records the accuracy this script printed, with its arguments.
"""

from __future__ import annotations

import _common
import keras

import keras_spiking as ks


def build_model(steps: int, hidden: int, tau_mem: float = 20e-3) -> keras.Model:
    """4 inputs -> RepeatVector(steps) -> LIF(hidden) -> LIF(hidden) -> LI(3)."""
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.RepeatVector(steps),
            ks.layers.LIF(hidden, tau_mem=tau_mem, use_bias=True, name="hidden1"),
            ks.layers.LIF(hidden, tau_mem=tau_mem, name="hidden2"),
            ks.layers.LI(3, tau_mem=tau_mem, name="readout"),
        ]
    )


def main(argv: list[str] | None = None) -> float:
    parser = _common.make_parser(__doc__, epochs=40, batch_size=32, lr=2e-3)
    parser.add_argument("--steps", type=int, default=20, help="time steps per sample")
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    # the data set paper's standard split sizes; distinct seeds keep the sets disjoint draws
    x_train, y_train = ks.datasets.yin_yang(5000, seed=42)
    x_val, y_val = ks.datasets.yin_yang(1000, seed=41)
    x_test, y_test = ks.datasets.yin_yang(1000, seed=40)

    model = build_model(args.steps, args.hidden)
    model.compile(
        _common.cosine_adam(args, len(x_train)),
        ks.losses.MaxMembraneCrossEntropy(),
        metrics=[_common.readout_accuracy("max")],
    )
    train_seconds = _common.timed_fit(model, x_train, y_train, args, validation_data=(x_val, y_val))
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(
        f"Yin-Yang test accuracy: {100 * accuracy:.2f}% ({args.epochs} epochs, "
        f"{train_seconds:.0f} s training, seed {args.seed})"
    )
    _common.finish_report(model, x_test[:256])
    return accuracy


if __name__ == "__main__":
    main()
