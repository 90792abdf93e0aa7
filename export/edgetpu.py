"""Edge TPU compatibility report of a TFLite model, from the Edge TPU's published constraints.

The Edge TPU compiler (``edgetpu_compiler``) is **not** available here (its package
repository cannot be reached from this environment), so no model in this project has been
compiled for or run on an Edge TPU. Instead, :func:`edgetpu_report` checks a flatbuffer against
the requirements that Coral publishes in "TensorFlow models on the Edge TPU"
(coral.ai/docs/edgetpu/models-intro, section "Supported operations" and the model
requirements above it):

* every tensor quantized to 8 bits (int8 or uint8; int32 only for biases and constant index
  or shape parameters);
* tensor sizes constant at compile time (no dynamic dimension);
* tensors of 1, 2 or 3 dimensions (a tensor of more dimensions may only have size 1 outside
  its innermost three); the constant 4-D filters of ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` /
  ``TRANSPOSE_CONV`` (``[out, kh, kw, in]``, which those operators take by definition) are
  exempt: the limit is on the activations, and a conv network's maps ``[1, H, W, C]`` (batch 1)
  meet it;
* operators from the supported set (:data:`SUPPORTED`), with the per-operator limits that
  matter for our graphs (``PACK`` not on the batch axis; ``FULLY_CONNECTED`` with a
  one-dimensional output, i.e. batch 1).

The compiler maps operators in graph order until the first one it cannot map; that one and
everything after it run on the CPU. The report marks them so (``on_tpu``).

``to_tflite(..., quantize="int8", edgetpu=True)`` builds the spike as a clipped ramp so its
graphs contain only FULLY_CONNECTED, MUL, ADD, SUB, MINIMUM (ReLU fused), plus STRIDED_SLICE
and PACK for the unrolled sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# TFLite builtin names of the operators in Coral's published "Supported operations" table.
SUPPORTED = frozenset(
    {
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "LSTM",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "SQUARED_DIFFERENCE",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)

_EIGHT_BIT = {"INT8", "UINT8"}


@dataclass
class OpCheck:
    """One operator: whether the Edge TPU supports it here, and where it would run."""

    index: int
    name: str
    supported: bool
    problems: list[str] = field(default_factory=list)
    on_tpu: bool = False


@dataclass
class EdgeTpuReport:
    """Every operator of the model's subgraphs, checked against the published constraints.

    Attributes:
        ops: one :class:`OpCheck` per operator, in graph order.
        subgraphs: number of subgraphs (the compiler maps only the first).
    """

    ops: list[OpCheck]
    subgraphs: int = 1

    @property
    def all_supported(self) -> bool:
        """True when every operator would be mapped to the Edge TPU."""
        return self.subgraphs == 1 and all(op.on_tpu for op in self.ops)

    @property
    def cpu_ops(self) -> list[OpCheck]:
        """The operators that would fall back to the CPU."""
        return [op for op in self.ops if not op.on_tpu]

    @property
    def unsupported(self) -> list[OpCheck]:
        """The operators that break a constraint themselves (not only by coming after one)."""
        return [op for op in self.ops if not op.supported]

    def as_dict(self) -> dict:
        return {
            "all_supported": self.all_supported,
            "subgraphs": self.subgraphs,
            "ops": [vars(op) for op in self.ops],
        }

    def __str__(self) -> str:
        lines = [
            "Edge TPU report (published constraints; the compiler itself was not run)",
            f"{len(self.ops)} ops, {len(self.ops) - len(self.cpu_ops)} on the Edge TPU, "
            f"{len(self.cpu_ops)} on the CPU",
        ]
        counts: dict[tuple[str, bool], int] = {}
        for op in self.ops:
            counts[(op.name, op.on_tpu)] = counts.get((op.name, op.on_tpu), 0) + 1
        for (name, on_tpu), count in sorted(counts.items()):
            lines.append(f"  {name:<24} {count:>5}  {'Edge TPU' if on_tpu else 'CPU'}")
        for op in self.unsupported:
            lines.append(f"  op {op.index} {op.name}: {'; '.join(op.problems)}")
        return "\n".join(lines)


def _type_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.TensorType).items() if isinstance(v, int)}


# operators whose constant filter is 4-D by nature ([out, kh, kw, in]); the rank limit is on
# the activations they map
_FILTER_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"}


def _tensor_problems(
    tensor, constant: bool, role: str, types: dict[int, str], filter_op: bool = False
) -> list[str]:
    problems = []
    name = (tensor.name or b"").decode(errors="replace")
    kind = types.get(tensor.type, str(tensor.type))
    if kind not in _EIGHT_BIT and not (constant and kind == "INT32"):
        problems.append(f"{role} {name!r} is {kind}, not 8-bit")
    signature = tensor.shapeSignature
    if signature is not None and np.any(np.asarray(signature) < 0):
        problems.append(f"{role} {name!r} has a dynamic shape {list(signature)}")
    shape = [] if tensor.shape is None else [int(d) for d in tensor.shape]
    if len(shape) > 3 and any(d > 1 for d in shape[:-3]) and not (constant and filter_op):
        problems.append(f"{role} {name!r} has rank {len(shape)} with sizes {shape}")
    return problems


def edgetpu_report(model_bytes: bytes) -> EdgeTpuReport:
    """Checks every operator of a TFLite flatbuffer against the Edge TPU's published limits.

    Args:
        model_bytes: a TFLite flatbuffer (for the Edge TPU: full int8, from
            ``to_tflite(..., quantize="int8", edgetpu=True)``).

    Returns:
        An :class:`EdgeTpuReport` (``str()`` gives a table; ``as_dict()`` a plain dict).
    """
    from ai_edge_litert import schema_py_generated as schema

    from keras_spiking.export.tflite import _builtin_names

    if not isinstance(model_bytes, (bytes, bytearray)):
        raise TypeError(
            f"edgetpu_report: `model_bytes` expected bytes, got {type(model_bytes).__name__}"
        )
    model = schema.ModelT.InitFromPackedBuf(bytes(model_bytes), 0)
    names, types = _builtin_names(), _type_names()
    checks: list[OpCheck] = []
    for graph_index, graph in enumerate(model.subgraphs or []):
        for op in graph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            name = names.get(builtin, f"BUILTIN_{builtin}")
            if builtin == schema.BuiltinOperator.CUSTOM:
                name = f"CUSTOM:{(code.customCode or b'').decode()}"
            problems = []
            if graph_index > 0:
                problems.append("not in the first subgraph (the compiler maps one subgraph)")
            if name not in SUPPORTED:
                problems.append(f"{name} is not in the Edge TPU's supported operations")
            for role, indices in (("input", op.inputs), ("output", op.outputs)):
                for index in [] if indices is None else indices:
                    if index < 0:
                        continue
                    tensor = graph.tensors[index]
                    buffer = model.buffers[tensor.buffer] if tensor.buffer else None
                    constant = buffer is not None and buffer.data is not None
                    problems += _tensor_problems(
                        tensor, constant, role, types, filter_op=name in _FILTER_OPS
                    )
            if name == "PACK" and op.builtinOptions is not None:
                if getattr(op.builtinOptions, "axis", 0) == 0:
                    problems.append("PACK on the batch axis")
            if name == "FULLY_CONNECTED" and op.outputs is not None:
                shape = graph.tensors[op.outputs[0]].shape
                if shape is not None and int(np.prod(shape[:-1])) > 1:
                    problems.append(
                        f"FULLY_CONNECTED output {list(shape)} is not one-dimensional (batch > 1)"
                    )
            checks.append(OpCheck(len(checks), name, not problems, problems))
    mapping = True
    for check in checks:  # the compiler stops mapping at the first operator it cannot take
        mapping = mapping and check.supported
        check.on_tpu = mapping
    return EdgeTpuReport(checks, subgraphs=len(model.subgraphs or []))
