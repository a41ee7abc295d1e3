"""What the engine builder reads from an ONNX file: its hash, its inputs, the nodes to keep in FP32.

FP16 overflows (max 65504) or underflows where a network sums, squares or exponentiates:
Softmax, the Reduce* ops, and LayerNorm. Below opset 17 LayerNorm is exported as a chain
`ReduceMean -> Sub -> Pow(2) -> ReduceMean -> Add(eps) -> Sqrt -> Div`, where `(x - mean)^2`
overflows for |x - mean| > 256 and eps = 1e-5 is below FP16's normal range. Those nodes are
picked from the graph here and pinned to FP32 by name when an FP16 engine is built; the ONNX
parser names each TensorRT layer after its node (`node_of_<first output>` for unnamed nodes).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from stdr_deploy.errors import UserInputError
from stdr_deploy.workspace import sha256_file

# Ops that are numerically unsafe in FP16 wherever they appear.
FP32_OPS = frozenset(
    {
        "Softmax",
        "LogSoftmax",
        "ReduceMean",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL2",
        "ReduceLogSumExp",
        "LayerNormalization",
        "Pow",
        "Sqrt",
    }
)


@dataclass(frozen=True)
class OnnxGraph:
    """The facts of one ONNX file that a build spec depends on."""

    path: Path
    sha256: str
    inputs: tuple[str, ...]  # graph inputs that are not initializers
    fp32_nodes: tuple[str, ...]  # TensorRT layer names to pin under FP16, in graph order


def inspect_onnx(path: str | Path) -> OnnxGraph:
    """Read `path` (weights stay on disk) and derive the build-relevant facts."""
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError) as exc:
        raise UserInputError(
            f"cannot read ONNX model {path}: {exc}", hint="re-run `stdr-deploy export` to recreate it"
        ) from exc
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(value.name for value in graph.input if value.name not in initializers)
    return OnnxGraph(path, sha256_file(path), inputs, fp32_nodes(graph))


def layer_name(node: onnx.NodeProto) -> str:
    """The name the TensorRT ONNX parser gives the layer(s) it creates for `node`."""
    if not node.name and node.output:
        return f"node_of_{node.output[0]}"
    return node.name


def fp32_nodes(graph: onnx.GraphProto) -> tuple[str, ...]:
    """Layer names of the nodes that must stay FP32 in an FP16 engine (see the module docstring).

    Besides every op in `FP32_OPS`, the decomposed LayerNorm's `Sub` (the input of `Pow`), its
    `Add` (the eps, the input of `Sqrt`) and its `Div` (the consumer of `Sqrt`) are kept too.
    """
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers[name].append(i)

    def producer_of(node: onnx.NodeProto, op_type: str) -> list[int]:
        index = producer.get(node.input[0]) if node.input else None
        return [index] if index is not None and nodes[index].op_type == op_type else []

    keep: set[int] = set()
    for i, node in enumerate(nodes):
        if node.op_type not in FP32_OPS:
            continue
        keep.add(i)
        if node.op_type == "Pow":
            keep.update(producer_of(node, "Sub"))
        elif node.op_type == "Sqrt":
            keep.update(producer_of(node, "Add"))
            keep.update(j for j in consumers[node.output[0]] if nodes[j].op_type == "Div")
    names = (layer_name(nodes[i]) for i in sorted(keep))
    return tuple(dict.fromkeys(names))
