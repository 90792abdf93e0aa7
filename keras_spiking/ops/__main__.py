"""``python -m keras_spiking.ops build | path | status``, as ``keras_spiking.custom_ops``."""

from keras_spiking.ops.cli import main

raise SystemExit(main())
