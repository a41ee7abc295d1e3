"""The ONNX file of a model at a precision: the fp32 export, or its fp16 or int8 graph.

Above `stdr_deploy.export` (fp32), `stdr_deploy.precision` (fp16) and `stdr_deploy.quantize`
(int8), each cached by content; this module picks and chains them, with one progress display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stdr_deploy.errors import UserInputError
from stdr_deploy.export.cache import ExportResult, copy_to
from stdr_deploy.export.fp32 import cached_or_exported, fp32_export, resolve_opset
from stdr_deploy.plan_schema import ONNX_GRAPHS, ONNX_PRECISIONS, OPENVINO_INT8, PRECISIONS, onnx_graph
from stdr_deploy.progress import Stages, progress_display


def export_model(
    name: str,
    *,
    weights: str | Path | None = None,
    out: Path | None = None,
    opset: int | None = None,
    with_features: bool = False,
    precision: str = "fp32",
    force: bool = False,
    progress: bool = True,
) -> ExportResult:
    """Export `name` to ONNX (or reuse the cached export) and return where it is.

    `weights` is a file or a weights registry name (default: the spec's). `with_features` adds
    CRAFT's 32-channel feature map as a second output `output1` (unused by the pipeline).
    `precision` "fp16" then converts the fp32 export to mixed precision (`stdr_deploy.precision`),
    "int8" quantizes it (craft only, `stdr_deploy.quantize`), "int8-openvino" too in the QDQ
    flavour OpenVINO reads right; each is cached beside it.
    `out` also copies the model there, with its report beside it as `<out>.json`.
    """
    from stdr_deploy.models import get_spec

    spec = get_spec(name)
    opset = resolve_opset(spec, opset)
    if with_features and not spec.optional_outputs:
        raise UserInputError(f"{name} has no optional feature output", hint="--with-features only applies to craft")
    check_precision(name, precision, with_features)
    job = fp32_export(spec, weights, opset, with_features, progress)
    with progress_display(progress, spec.name) as bar:
        result = cached_or_exported(job, Stages(bar), force=force)
        if precision == "fp16":
            from stdr_deploy.precision import half_precision

            result = half_precision(result, stages=Stages(bar), force=force)
        elif precision in ("int8", OPENVINO_INT8):
            from stdr_deploy.quantize import quantize_detector

            flavour = "openvino" if precision == OPENVINO_INT8 else "onnxruntime"
            result = quantize_detector(result, flavour=flavour, stages=Stages(bar), force=force)
    return copy_to(result, Path(out)) if out is not None else result


def ensure_onnx(name: str, weights: str | Path | None = None, **options: Any) -> Path:
    """The ONNX file for `name`: cached if possible, exported otherwise (no progress output)."""
    options.setdefault("progress", False)
    return export_model(name, weights=weights, **options).onnx_path


def onnx_precision(plan_precision: str, backend: str = "onnxruntime") -> str:
    """The ONNX file a plan's model is served from: each precision is its own graph (fp16 mixed
    precision, int8 QDQ), consumed unchanged by ONNX Runtime and by strongly typed TensorRT;
    OpenVINO's int8 is the QDQ flavour it computes right."""
    if plan_precision not in PRECISIONS:
        raise UserInputError(f"unknown precision {plan_precision!r}", hint=f"precisions: {', '.join(PRECISIONS)}")
    return onnx_graph(plan_precision, backend)


def check_precision(name: str, precision: str, with_features: bool = False) -> None:
    """The precisions of `ONNX_PRECISIONS[name]`; fp16 and int8 only for the standard outputs."""
    available = ONNX_PRECISIONS.get(name, ("fp32",))
    if precision not in ONNX_GRAPHS:
        raise UserInputError(f"unknown precision {precision!r}", hint=f"precisions: {', '.join(ONNX_GRAPHS)}")
    if precision not in available or (precision != "fp32" and with_features):
        raise UserInputError(
            f"{precision} is not available for {name}{' with --with-features' if with_features else ''}",
            hint=f"{name} is made in {', '.join(available)}" + (" (without --with-features)" if with_features else ""),
        )
