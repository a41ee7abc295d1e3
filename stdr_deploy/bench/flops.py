"""Count a model's floating-point operations from its ONNX graph at one concrete input shape.

Convention: one multiply-accumulate = 2 FLOPs, and only the ops that carry the arithmetic are
counted (Conv, ConvTranspose, MatMul, Gemm, LSTM, GRU, RNN); bias adds, activations, norms,
pooling and resizes are left out (under 2% of CRAFT, CRNN or PARSeq). Shapes come from ONNX
shape inference after the graph inputs are pinned to the measured shape, so the count is the
work of that exact call, dynamic axes included. Where inference cannot follow a shape (PARSeq's
attention reshapes), the graph runs once in ONNX Runtime on zeros of that shape, exposing just
the tensors still unknown, and reads their shapes off the outputs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from stdr_deploy.errors import require_onnx

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN")
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one call, in total and per op type; `unresolved` lists nodes without shapes."""

    total: int
    by_op: Mapping[str, int]
    input_shapes: Mapping[str, tuple[int, ...]]
    unresolved: tuple[str, ...] = ()

    @property
    def gflops(self) -> float:
        return self.total / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "gflops": self.gflops,
            "by_op": dict(self.by_op),
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "unresolved": list(self.unresolved),
        }


def count_flops(model: Any, input_shapes: Mapping[str, Sequence[int]]) -> FlopCount:
    """FLOPs of `model` (an `onnx.ModelProto` or a path) run on inputs of `input_shapes`."""
    onnx = require_onnx("counting FLOPs", "bench")

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    pinned = _pin_inputs(proto, input_shapes)
    shapes = _infer_shapes(pinned)
    needed = {name for node in pinned.graph.node if node.op_type in COUNTED_OPS for name in _needed(node)}
    if unknown := sorted(needed - set(shapes)):
        shapes.update(_run_for_shapes(pinned, unknown, input_shapes))
    by_op: dict[str, int] = defaultdict(int)
    unresolved: list[str] = []
    for node in pinned.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        flops = _node_flops(node, shapes)
        if flops is None:
            unresolved.append(node.name or node.output[0])
        else:
            by_op[node.op_type] += flops
    return FlopCount(
        total=sum(by_op.values()),
        by_op=dict(by_op),
        input_shapes={k: tuple(int(d) for d in v) for k, v in input_shapes.items()},
        unresolved=tuple(unresolved),
    )


def _pin_inputs(proto: Any, input_shapes: Mapping[str, Sequence[int]]) -> Any:
    """A copy of the model whose graph inputs have exactly the given dims."""
    import onnx

    pinned = onnx.ModelProto()
    pinned.CopyFrom(proto)
    initializers = {init.name for init in pinned.graph.initializer}
    graph_inputs = {i.name: i for i in pinned.graph.input if i.name not in initializers}
    missing = sorted(set(graph_inputs) - set(input_shapes))
    unknown = sorted(set(input_shapes) - set(graph_inputs))
    if missing or unknown:
        raise ValueError(f"input shapes must name exactly the graph inputs {sorted(graph_inputs)}; missing {missing}, unknown {unknown}")
    for name, shape in input_shapes.items():
        dims = graph_inputs[name].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ValueError(f"input {name!r} has rank {len(dims)}, got shape {list(shape)}")
        for dim, value in zip(dims, shape):
            dim.Clear()
            dim.dim_value = int(value)
    del pinned.graph.value_info[:]
    return pinned


def _infer_shapes(proto: Any) -> dict[str, tuple[int, ...]]:
    """Concrete shape of every tensor shape inference can resolve (initializers included)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    shapes: dict[str, tuple[int, ...]] = {}
    for init in inferred.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(int(d) for d in attr.t.dims)
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _needed(node: Any) -> list[str]:
    """Tensors whose shapes the count of `node` reads."""
    if node.op_type in ("Conv", "MatMul", "Gemm"):
        return [node.input[0], node.input[1], node.output[0]]
    return [node.input[0], node.input[1]]


def _run_for_shapes(
    pinned: Any, names: Sequence[str], input_shapes: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, ...]]:
    """Shapes of `names` read off one ONNX Runtime run on zeros (for shapes inference misses)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(pinned)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names)
    dtypes = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in pinned.graph.input}
    feeds = {name: np.zeros(tuple(shape), dtype=dtypes[name]) for name, shape in input_shapes.items()}
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return {name: tuple(int(d) for d in value.shape) for name, value in zip(names, session.run(list(names), feeds))}


def _node_flops(node: Any, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """FLOPs of one counted node, or None when a shape it needs is unknown."""

    def shape(index: int, outputs: bool = False) -> tuple[int, ...] | None:
        names = node.output if outputs else node.input
        return shapes.get(names[index]) if index < len(names) and names[index] else None

    op = node.op_type
    if op == "Conv":
        weight, out = shape(1), shape(0, outputs=True)
        # each output value: Cin/groups * kh * kw multiply-accumulates (weight is [Cout, Cin/g, k...])
        return None if weight is None or out is None else 2 * math.prod(out) * math.prod(weight[1:])
    if op == "ConvTranspose":
        x, weight = shape(0), shape(1)
        # each input value is scattered through Cout/groups * kh * kw weights (weight is [Cin, Cout/g, k...])
        return None if weight is None or x is None else 2 * math.prod(x) * math.prod(weight[1:])
    if op == "MatMul":
        a, out = shape(0), shape(0, outputs=True)
        return None if a is None or out is None else 2 * math.prod(out) * a[-1]
    if op == "Gemm":
        a, out = shape(0), shape(0, outputs=True)
        if a is None or out is None:
            return None
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        return 2 * math.prod(out) * (a[0] if trans_a else a[1])
    # LSTM / GRU / RNN: X [T, B, I] (layout 0) or [B, T, I] (layout 1); W [D, gates*H, I]
    x, w = shape(0), shape(1)
    if x is None or w is None:
        return None
    layout = next((attr.i for attr in node.attribute if attr.name == "layout"), 0)
    steps, batch = (x[1], x[0]) if layout else (x[0], x[1])
    directions, gate_rows, input_size = w
    hidden = gate_rows // _GATES[op]
    return 2 * steps * batch * directions * _GATES[op] * hidden * (input_size + hidden)
