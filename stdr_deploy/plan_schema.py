"""The deployment plan: what `planner.make_plan` decides and every later step consumes.

Frozen dataclasses that round-trip through JSON (`to_dict` / `from_dict`), so a plan can be
written by `stdr-deploy plan --json`, edited or pinned by a user, and read back by `render`,
`build` and `auto`. No logic lives here beyond (de)serialisation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1
VARIANTS = ("onnxruntime", "tensorrt_plan")
# ModelPlan.precision values; each is its own ONNX graph (`onnx_files.onnx_precision`).
PRECISIONS = ("fp32", "fp16", "int8")
# The ONNX graphs each model family is made in: fp16 mixed precision (stdr_deploy.precision)
# for GPU instances (ONNX Runtime CUDA, TensorRT); int8 static QDQ CRAFT (stdr_deploy.quantize).
ONNX_PRECISIONS = {
    "craft": ("fp32", "fp16", "int8"),
    "crnn-en": ("fp32", "fp16"),
    "parseq": ("fp32", "fp16"),
    "parseq-tiny": ("fp32", "fp16"),
}


@dataclass(frozen=True)
class ShapeProfile:
    """TensorRT-style min/opt/max for one input; full shapes including the batch dimension."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class DynamicBatching:
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int


@dataclass(frozen=True)
class ModelPlan:
    """One Triton model (detector or recognizer) as it will be built and served."""

    triton_name: str  # "craft" | "crnn_en" | "parseq"
    family: str  # models registry name: "craft" | "crnn-en" | "parseq" | "parseq-tiny"
    role: str  # "detector" | "recognizer"
    backend: str  # "onnxruntime" | "tensorrt"
    precision: str  # one of PRECISIONS: "fp16" on GPU instances, "int8" the ONNX Runtime CPU detector only
    max_batch_size: int  # Triton max_batch_size
    profile: dict[str, ShapeProfile]  # input name -> min/opt/max
    instance_count: int
    instance_kind: str  # "KIND_CPU" | "KIND_GPU"
    gpus: tuple[int, ...]
    intra_op_threads: int  # ONNX Runtime; 0 = runtime default
    inter_op_threads: int
    workspace_bytes: int  # TensorRT builder memory-pool limit; 0 for ONNX Runtime
    dynamic_batching: DynamicBatching | None
    memory_estimate_bytes: int  # per instance x instance_count, bytes
    memory_arena: bool = True  # ONNX Runtime CPU arena and memory pattern (off on CPU plans: the
    # arena grows in powers of two, so it held up to 1.8x the memory; the memory data is measured off)
    shape_sessions: int = 0  # ONNX Runtime on the GPU: one session per input shape, at most this
    # many per instance (batch padded to a power of two); 0 = one session for every shape


@dataclass(frozen=True)
class PipelinePlan:
    """The Python (BLS) orchestrator model and the processing settings it applies."""

    instance_count: int
    instance_kind: str
    canvas_size: int  # detector input: long side is scaled to at most this many pixels
    mag_ratio: float
    max_image_pixels: int  # requests with more pixels are refused
    recognizer_batch: int  # crops per BLS request to the recognizer (= its max batch)
    text_threshold: float
    link_threshold: float
    low_text: float
    pad_to: int = 32  # detector input sides padded up to multiples of this (PipelineSettings.pad_to)


@dataclass(frozen=True)
class Plan:
    variant: str  # one of VARIANTS
    device: str  # "cpu" | "gpu"
    detector: ModelPlan
    recognizer: ModelPlan
    pipeline: PipelinePlan
    memory_budget_bytes: int
    memory_estimate_bytes: int
    host: dict[str, Any] = field(default_factory=dict)  # summary of the host file it came from
    profile_name: str | None = None
    reasons: tuple[str, ...] = ()
    host_memory_budget_bytes: int = 0  # host RAM: on a CPU plan the same as memory_budget_bytes
    host_memory_estimate_bytes: int = 0  # the whole deployment's host RAM at the max shapes
    format_version: int = FORMAT_VERSION

    def models(self) -> tuple[ModelPlan, ModelPlan]:
        return (self.detector, self.recognizer)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"plan format_version {data.get('format_version')!r} is not {FORMAT_VERSION}; "
                "re-run `stdr-deploy plan`"
            )
        return cls(
            variant=data["variant"],
            device=data["device"],
            detector=_model_plan(data["detector"]),
            recognizer=_model_plan(data["recognizer"]),
            pipeline=PipelinePlan(**data["pipeline"]),
            memory_budget_bytes=int(data["memory_budget_bytes"]),
            memory_estimate_bytes=int(data["memory_estimate_bytes"]),
            host=dict(data.get("host", {})),
            profile_name=data.get("profile_name"),
            reasons=tuple(data.get("reasons", ())),
            host_memory_budget_bytes=int(data.get("host_memory_budget_bytes", 0)),
            host_memory_estimate_bytes=int(data.get("host_memory_estimate_bytes", 0)),
        )


def _model_plan(data: dict[str, Any]) -> ModelPlan:
    db = data.get("dynamic_batching")
    return ModelPlan(
        **{
            **data,
            "profile": {
                name: ShapeProfile(tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
                for name, p in data["profile"].items()
            },
            "gpus": tuple(data["gpus"]),
            "dynamic_batching": DynamicBatching(tuple(db["preferred_batch_sizes"]), db["max_queue_delay_us"])
            if db
            else None,
        }
    )


def _plain(value: Any) -> Any:
    """Tuples become lists so the dict equals what json.loads gives back."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
