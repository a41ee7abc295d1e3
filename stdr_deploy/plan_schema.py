"""The deployment plan: what `planner.make_plan` decides and every later step consumes.

Frozen dataclasses that round-trip through JSON (`to_dict` / `from_dict`), so a plan can be
written by `stdr-deploy plan --json`, edited or pinned by a user, and read back by `render`,
`build` and `auto`. No logic lives here beyond (de)serialisation and the range checks that make
a hand-edited plan fail when it is read, naming the field, rather than reach a rendered config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1
VARIANTS = ("onnxruntime", "tensorrt_plan")
BACKENDS = ("onnxruntime", "tensorrt", "openvino")  # ModelPlan.backend values
# ModelPlan.precision values; each is its own ONNX graph (`onnx_files.onnx_precision`).
PRECISIONS = ("fp32", "fp16", "int8")
# The ONNX graphs: one per precision, and CRAFT's int8 once more for OpenVINO, whose int8
# concatenations are wrong (`stdr_deploy.quantize.FLAVOURS`).
OPENVINO_INT8 = "int8-openvino"
ONNX_GRAPHS = (*PRECISIONS, OPENVINO_INT8)


def onnx_graph(precision: str, backend: str) -> str:
    """The ONNX graph a model of this precision is served from on `backend`."""
    return OPENVINO_INT8 if (precision, backend) == ("int8", "openvino") else precision
# The ONNX graphs each model family is made in: fp16 mixed precision (stdr_deploy.precision)
# for GPU instances (ONNX Runtime CUDA, TensorRT); int8 static QDQ CRAFT (stdr_deploy.quantize).
ONNX_PRECISIONS = {
    "craft": ("fp32", "fp16", "int8", OPENVINO_INT8),
    "crnn-en": ("fp32", "fp16"),
    "parseq": ("fp32", "fp16"),
    "parseq-tiny": ("fp32", "fp16"),
    "ppocr": ("fp32", "fp16"),
}


# ModelPlan.float_precision values: what OpenVINO computes a graph's float layers in
# (its INFERENCE_PRECISION_HINT); "bf16" only on CPUs with bf16 units, for models measured to keep
# their words in it.
FLOAT_PRECISIONS = ("f32", "bf16")

INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU")
ROLES = ("detector", "recognizer")
MAX_CANVAS = 4096  # detector canvas: larger inputs exceed what the memory data covers by too much
MIN_CANVAS_SIDE = 32  # the detector downsamples 5 times
# Sanity bounds for a plan read from a file: far above what any planned deployment uses, low
# enough that nothing sized from them can exhaust a host.
MAX_DIM = 1 << 16  # any profile dimension
MAX_INSTANCES = 256
MAX_BATCH = 4096
MAX_IMAGE_PIXELS_BOUND = 1 << 30  # 3 GiB as RGB uint8


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
    backend: str  # one of BACKENDS
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
    fixed_shapes: tuple[tuple[int, ...], ...] = ()  # those shapes (batch axis first): our backend
    # makes and runs a session for each at load, so the memory they hold is there from the start
    # (smoke measures it) and no request pays a session's first run (~1 s)
    float_precision: str = "f32"  # OpenVINO: the graph's float layers (FLOAT_PRECISIONS)


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
        _check_plan(data)
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


def _in_range(field_name: str, value: Any, low: float, high: float | None = None, kind: type = int) -> None:
    """ValueError naming `field_name` unless `value` is a `kind` within [low, high]."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (kind is int and value != int(value)):
        raise ValueError(f"plan field {field_name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"plan field {field_name} is {value}, outside {bound}")


def _one_of(field_name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"plan field {field_name} is {value!r}, not one of {', '.join(allowed)}")


def _check_plan(data: dict[str, Any]) -> None:
    """Refuse values no deployment can have (negative, zero where one is needed, absurdly large)."""
    _one_of("variant", data["variant"], VARIANTS)
    _one_of("device", data["device"], ("cpu", "gpu"))
    for name in ("memory_budget_bytes", "memory_estimate_bytes", "host_memory_budget_bytes",
                 "host_memory_estimate_bytes"):
        _in_range(name, data.get(name, 0), 0)
    pipeline = data["pipeline"]
    _in_range("pipeline.instance_count", pipeline["instance_count"], 1, MAX_INSTANCES)
    _one_of("pipeline.instance_kind", pipeline["instance_kind"], INSTANCE_KINDS)
    _in_range("pipeline.canvas_size", pipeline["canvas_size"], MIN_CANVAS_SIDE, MAX_CANVAS)
    _in_range("pipeline.mag_ratio", pipeline["mag_ratio"], 0.01, 16.0, float)
    _in_range("pipeline.max_image_pixels", pipeline["max_image_pixels"], MIN_CANVAS_SIDE**2, MAX_IMAGE_PIXELS_BOUND)
    _in_range("pipeline.recognizer_batch", pipeline["recognizer_batch"], 1, MAX_BATCH)
    for name in ("text_threshold", "link_threshold", "low_text"):
        _in_range(f"pipeline.{name}", pipeline[name], 0.0, 1.0, float)
    pad_to = pipeline.get("pad_to", 32)
    _in_range("pipeline.pad_to", pad_to, MIN_CANVAS_SIDE, MAX_CANVAS + MIN_CANVAS_SIDE)
    if pad_to % MIN_CANVAS_SIDE:
        raise ValueError(f"plan field pipeline.pad_to is {pad_to}, not a multiple of {MIN_CANVAS_SIDE}")
    for role in ROLES:
        model = data[role]
        _one_of(f"{role}.role", model["role"], ROLES)
        _one_of(f"{role}.precision", model["precision"], PRECISIONS)
        _one_of(f"{role}.backend", model["backend"], BACKENDS)
        _one_of(f"{role}.float_precision", model.get("float_precision", "f32"), FLOAT_PRECISIONS)
        _one_of(f"{role}.instance_kind", model["instance_kind"], INSTANCE_KINDS)
        _in_range(f"{role}.max_batch_size", model["max_batch_size"], 0, MAX_BATCH)
        _in_range(f"{role}.instance_count", model["instance_count"], 1, MAX_INSTANCES)
        for name in ("intra_op_threads", "inter_op_threads", "workspace_bytes", "memory_estimate_bytes",
                     "shape_sessions"):
            _in_range(f"{role}.{name}", model.get(name, 0), 0)
        for index, gpu in enumerate(model["gpus"]):
            _in_range(f"{role}.gpus[{index}]", gpu, 0)
        for tensor, points in model["profile"].items():
            shapes = [points[point] for point in ("min", "opt", "max")]
            for point, shape in zip(("min", "opt", "max"), shapes):
                if not isinstance(shape, list) or not shape:
                    raise ValueError(f"plan field {role}.profile.{tensor}.{point} must be a list of sizes, got {shape!r}")
                for axis, size in enumerate(shape):
                    _in_range(f"{role}.profile.{tensor}.{point}[{axis}]", size, 1, MAX_DIM)
            if len({len(shape) for shape in shapes}) != 1 or any(
                not a <= b <= c for a, b, c in zip(*shapes)
            ):
                raise ValueError(f"plan field {role}.profile.{tensor} must have min <= opt <= max, got {shapes}")
        fixed = model.get("fixed_shapes") or []
        if fixed and len(fixed) != model.get("shape_sessions"):
            raise ValueError(f"plan field {role}.fixed_shapes lists {len(fixed)} shapes, shape_sessions is "
                             f"{model.get('shape_sessions')}")
        largest = next(iter(model["profile"].values()), {}).get("max", [])
        for index, shape in enumerate(fixed):  # each is run at load: none may pass the profile
            if not isinstance(shape, list) or len(shape) != len(largest) or any(
                    not isinstance(n, int) or not 1 <= n <= m for n, m in zip(shape, largest)):
                raise ValueError(f"plan field {role}.fixed_shapes[{index}] is {shape!r}, not a shape within "
                                 f"the profile's max {largest}")


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
            "fixed_shapes": tuple(tuple(shape) for shape in data.get("fixed_shapes", ())),
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
