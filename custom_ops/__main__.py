"""``python -m keras_spiking.custom_ops build [--rebuild] | path``: build the kernels now."""

from keras_spiking.ops import _main

raise SystemExit(_main())
