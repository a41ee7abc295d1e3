"""What the engine builder reads from an ONNX file: its hash, its inputs and the precision it is in.

Builds are strongly typed, so the graph decides the precision: fp16 when it computes in
float16 (the mixed-precision export of `stdr_deploy.precision`), int8 when it holds
QuantizeLinear nodes (the QDQ export of `stdr_deploy.quantize`), fp32 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from stdr_deploy.errors import UserInputError, require_onnx
from stdr_deploy.workspace import sha256_file

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class OnnxGraph:
    """The facts of one ONNX file that a build spec depends on."""

    path: Path
    sha256: str
    inputs: tuple[str, ...]  # graph inputs that are not initializers
    precision: str  # "fp32" | "fp16" | "int8"
    input_dtypes: tuple[str, ...] = ()  # numpy names, one per input ("uint8", "float32", ...)


def inspect_onnx(path: str | Path) -> OnnxGraph:
    """Read `path` and derive the build-relevant facts."""
    path = Path(path)
    onnx = require_onnx("building a TensorRT engine", "tensorrt")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError) as exc:
        raise UserInputError(
            f"cannot read ONNX model {path}: {exc}", hint="re-run `stdr-deploy export` to recreate it"
        ) from exc
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    values = [value for value in graph.input if value.name not in initializers]
    dtypes = tuple(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name for v in values)
    return OnnxGraph(path, sha256_file(path), tuple(v.name for v in values), graph_precision(graph), dtypes)


def graph_precision(graph: onnx.GraphProto) -> str:
    import onnx  # present: `graph` is one of its objects

    ops = {node.op_type for node in graph.node}
    if "QuantizeLinear" in ops:
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer):
        return "fp16"
    return "fp32"
