"""``python -m keras_spiking.custom_ops build [--rebuild] | path | status``: the kernels now."""

from keras_spiking.ops.cli import main

raise SystemExit(main())
