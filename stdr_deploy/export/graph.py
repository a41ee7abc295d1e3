"""One ONNX graph: torch export (legacy TorchScript exporter), the checks it must pass, IO renames.

The legacy exporter (`dynamo=False`) is the only one in torch 2.13 that keeps opset 11/14 and a
truly dynamic batch (see the PARSeq oracle's export facts). A graph must pass `onnx.checker`
(full check, i.e. with shape inference) and load in ONNX Runtime (a too-old opset fails there).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from stdr_deploy.errors import UserInputError, ValidationError

if TYPE_CHECKING:
    import onnx
    import torch

    from stdr_deploy.models import ModelSpec

# The TorchScript exporter's range in torch 2.x. Measured (torch 2.13, ORT 1.32): craft, crnn-en
# and parseq export correctly from their spec opset up to 20; below it craft 9/10 export an
# Upsample that differs from torch by 0.09 (parity fails), crnn-en 7/8 use ConstantFill, which
# ONNX Runtime lacks, and parseq <= 13 lacks unflatten / scaled_dot_product_attention.
MIN_OPSET = 7
MAX_OPSET = 20
ORT_THREADS = 2  # fixed, so check and parity figures do not depend on the host's core count


def torch_export(
    spec: ModelSpec, model: torch.nn.Module, path: Path, opset: int, output_names: list[str], with_features: bool
) -> None:
    """Trace with a batch-2 example so no batch-1 shortcut gets baked into the graph."""
    import torch

    example = torch.from_numpy(spec.example_input(batch=2, seed=0))
    try:
        quiet = _native_stderr_discarded() if opset != spec.opset else contextlib.nullcontext()
        with warnings.catch_warnings(), torch.no_grad(), quiet:
            # The legacy exporter is deprecated in torch 2.9+ and traces Python-side shape
            # arithmetic: these warnings are expected and say nothing about this export. Its
            # UserWarnings (e.g. "LSTM traced at batch 2") concern what the parity stage checks.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[t.name for t in spec.inputs],
                output_names=output_names,
                dynamic_axes=spec.dynamic_axes(with_optional=with_features),
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except torch.onnx.errors.OnnxExporterError as exc:
        if opset == spec.opset:
            raise
        raise UserInputError(
            f"{spec.name} cannot be expressed in ONNX opset {opset}: {first_line(exc)}", hint=opset_hint(spec, opset)
        ) from exc


@contextlib.contextmanager
def _native_stderr_discarded() -> Iterator[None]:
    """Silence C++ writes to stderr (and everything else on fd 2, progress included).

    Used only at a non-default opset, where an export may fail for want of an operator: torch
    then dumps the whole TorchScript graph there (thousands of lines) although the exception
    already says what failed. At the tested opset a failure is a bug and the dump helps.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def renamed(model: onnx.ModelProto, names: dict[str, str], spec: ModelSpec) -> onnx.ModelProto:
    """A copy whose graph inputs/outputs (and every node edge using them) carry our names."""
    import onnx

    graph_io = {v.name for v in (*model.graph.input, *model.graph.output)}
    if set(names) != graph_io:
        raise ValidationError(
            f"{spec.name}: the ONNX file's inputs/outputs are {sorted(graph_io)}, expected {sorted(names)}",
            hint=f"pass the official {spec.default_weights} file (stdr-deploy weights fetch {spec.default_weights})",
        )
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in (*copy.graph.input, *copy.graph.output):
        value.name = names[value.name]
    for node in copy.graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    return copy


def ort_session(model: onnx.ModelProto) -> Any:
    """An ONNX Runtime CPU session on `model` with `ORT_THREADS` threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = ORT_THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def runtime_check(model: onnx.ModelProto, spec: ModelSpec, opset: int) -> None:
    """Fail early when ONNX Runtime cannot even load the graph (e.g. ops of too old an opset)."""
    try:
        ort_session(model)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors on load
        raise ValidationError(
            f"ONNX Runtime cannot load the {spec.name} export at opset {opset}: {first_line(exc)}",
            hint=opset_hint(spec, opset),
        ) from exc


def full_check(path: Path, spec: ModelSpec, opset: int) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ValidationError(
            f"{spec.name} export at opset {opset} fails onnx.checker: {first_line(exc)}",
            hint=opset_hint(spec, opset),
        ) from exc


def graph_sha256(model: onnx.ModelProto) -> str:
    """Hash of the network's structure (nodes, IO, initializer names and shapes), not its weights."""
    digest = hashlib.sha256()
    graph = model.graph
    for part in (*graph.input, *graph.output, *graph.node):
        digest.update(part.SerializeToString(deterministic=True))
    for init in graph.initializer:
        digest.update(f"{init.name}:{init.data_type}:{list(init.dims)}".encode())
    return digest.hexdigest()


def io_dims(values: Any) -> dict[str, list[int | str]]:
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values
    }


def opset_hint(spec: ModelSpec, opset: int) -> str:
    if opset != spec.opset:
        return (
            f"{spec.name} exports correctly at opsets {spec.opset}..{MAX_OPSET}; "
            f"retry with the default --opset {spec.opset}"
        )
    return "this is a bug in the model or the exporter; please report it with the message above"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
