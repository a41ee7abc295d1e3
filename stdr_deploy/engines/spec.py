"""Build specs: what one TensorRT engine is built from, decided from the plan without touching a GPU.

Everything here is pure. `build_spec` turns a plan's model (shapes sized to the GPU memory by
the planner) and its ONNX facts into a `BuildSpec`; `retry_specs` lists the smaller specs to
try when the builder runs out of memory; `trtexec_command` writes the same build for trtexec;
`apply_specs` carries a shrunk build back into the plan, so Triton's configs match the engines.

Shrink order on an out-of-memory build (one model at a time, each step a new attempt):
- recognizer: halve the max batch (16 -> 8 -> 4 -> 2 -> 1), never below the profile's min batch;
  the opt batch follows when it would exceed the new max;
- detector: scale the max height and width by 3/4, rounded down to a multiple of 32, never below
  the opt shape (smaller engines would downscale typical images below the planned size).
When no smaller spec is left, the build fails with every attempt in its report.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from stdr_deploy.engines.graph import OnnxGraph
from stdr_deploy.errors import UserInputError
from stdr_deploy.memory import MIB
from stdr_deploy.plan_schema import ModelPlan, Plan, ShapeProfile

DEFAULT_OPTIMIZATION_LEVEL = 3  # TensorRT's own default: good engines at a moderate build time
DETECTOR_SIZE_MULTIPLE = 32  # CRAFT inputs are padded to multiples of 32


@dataclass(frozen=True)
class InputProfile:
    """One input's optimisation profile: full shapes including the batch dimension."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BuildSpec:
    """Everything one engine build depends on; the cache key hashes it (paths excepted)."""

    triton_name: str
    family: str
    role: str  # "detector" | "recognizer"
    onnx_path: str
    onnx_sha256: str
    precision: str  # the graph's: "fp32" | "fp16" | "int8" (strongly typed builds)
    profiles: tuple[InputProfile, ...]
    workspace_bytes: int  # builder memory-pool limit (WORKSPACE); 0 = TensorRT's default
    optimization_level: int
    timing_cache_path: str

    @property
    def max_batch_size(self) -> int:
        return self.profiles[0].max[0]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["profiles"] = [
            {"name": p.name, "min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in self.profiles
        ]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BuildSpec":
        return cls(
            **{
                **data,
                "profiles": tuple(
                    InputProfile(p["name"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"])) for p in data["profiles"]
                ),
            }
        )


def _check_input_types(model: ModelPlan, graph: OnnxGraph) -> None:
    """The graph must take what the pipeline and the rendered config send: an ONNX file made by an
    older stdr-deploy (CRAFT took float32 before it took uint8 pixels) would build, then fail at load."""
    from stdr_deploy.models import get_spec

    wanted = get_spec(model.family).input.dtype
    for name, dtype in zip(graph.inputs, graph.input_dtypes):
        if dtype != wanted:
            raise UserInputError(
                f"{model.triton_name}: {graph.path} takes {dtype} input {name!r}; this stdr-deploy feeds {model.family} {wanted}",
                hint=f"export it again with this version: stdr-deploy export {model.family} --precision {model.precision}",
            )


def build_spec(
    model: ModelPlan,
    graph: OnnxGraph,
    *,
    timing_cache: str | Path,
    optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL,
) -> BuildSpec:
    """The engine build for one planned model; raises UserInputError for a plan that cannot build."""
    if model.backend != "tensorrt":
        raise UserInputError(
            f"{model.triton_name} is planned for {model.backend}, not TensorRT",
            hint="plan with `--variant tensorrt_plan` to build engines",
        )
    if model.precision != graph.precision:
        raise UserInputError(
            f"{model.triton_name}: the plan asks for {model.precision} but {graph.path} is an {graph.precision} graph",
            hint=f"export it with `stdr-deploy export {model.family} --precision {model.precision}`",
        )
    if set(model.profile) != set(graph.inputs):
        raise UserInputError(
            f"{model.triton_name}: the plan profiles inputs {sorted(model.profile)} "
            f"but {graph.path} has inputs {list(graph.inputs)}",
            hint="re-run `stdr-deploy plan` for this model",
        )
    _check_input_types(model, graph)
    profiles = tuple(_checked_profile(model.triton_name, name, model.profile[name]) for name in graph.inputs)
    return BuildSpec(
        triton_name=model.triton_name,
        family=model.family,
        role=model.role,
        onnx_path=str(graph.path),
        onnx_sha256=graph.sha256,
        precision=model.precision,
        profiles=profiles,
        workspace_bytes=int(model.workspace_bytes),
        optimization_level=optimization_level,
        timing_cache_path=str(timing_cache),
    )


def _checked_profile(model: str, name: str, shape: ShapeProfile) -> InputProfile:
    lo, opt, hi = tuple(shape.min), tuple(shape.opt), tuple(shape.max)
    ordered = len(lo) == len(opt) == len(hi) and all(a <= b <= c for a, b, c in zip(lo, opt, hi))
    if not ordered or min(lo, default=0) < 1:
        raise UserInputError(
            f"{model}: profile of {name!r} must satisfy 1 <= min <= opt <= max per dimension, "
            f"got min {list(lo)}, opt {list(opt)}, max {list(hi)}"
        )
    return InputProfile(name, lo, opt, hi)


def retry_specs(spec: BuildSpec) -> tuple[BuildSpec, ...]:
    """The smaller specs to try, in order, after `spec` failed for lack of memory (module docstring)."""
    shrink = _halve_batch if spec.role == "recognizer" else _step_detector_down
    specs = []
    current = spec
    while (profiles := shrink(current.profiles)) is not None:
        current = dataclasses.replace(current, profiles=profiles)
        specs.append(current)
    return tuple(specs)


def _halve_batch(profiles: tuple[InputProfile, ...]) -> tuple[InputProfile, ...] | None:
    batch = profiles[0].max[0]
    floor = max(p.min[0] for p in profiles)
    smaller = max(floor, batch // 2)
    if smaller == batch:
        return None
    return tuple(
        dataclasses.replace(p, opt=(min(p.opt[0], smaller), *p.opt[1:]), max=(smaller, *p.max[1:])) for p in profiles
    )


def _step_detector_down(profiles: tuple[InputProfile, ...]) -> tuple[InputProfile, ...] | None:
    def smaller(p: InputProfile) -> InputProfile:
        step = DETECTOR_SIZE_MULTIPLE
        sides = tuple(max(opt, (side * 3 // 4) // step * step) for opt, side in zip(p.opt[2:], p.max[2:]))
        return dataclasses.replace(p, max=(*p.max[:2], *sides))

    shrunk = tuple(smaller(p) for p in profiles)
    return None if shrunk == profiles else shrunk


def trtexec_command(spec: BuildSpec, engine_path: str | Path) -> list[str]:
    """The trtexec command line (TensorRT 10.x and 11.x) that builds the same engine as the adapter."""

    def shapes(pick: str) -> str:
        return ",".join(f"{p.name}:{'x'.join(map(str, getattr(p, pick)))}" for p in spec.profiles)

    command = [
        "trtexec",
        f"--onnx={spec.onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={shapes('min')}",
        f"--optShapes={shapes('opt')}",
        f"--maxShapes={shapes('max')}",
    ]
    if spec.workspace_bytes:
        command.append(f"--memPoolSize=workspace:{_mib(spec.workspace_bytes)}")
    command += [
        f"--builderOptimizationLevel={spec.optimization_level}",
        f"--timingCacheFile={spec.timing_cache_path}",
        "--noTF32",
        "--stronglyTyped",
    ]
    command.append("--skipInference")
    return command


def shell_line(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def _mib(size: int) -> str:
    """trtexec reads pool sizes in MiB (decimals allowed, rounded down to whole bytes)."""
    return str(size // MIB) if size % MIB == 0 else f"{size / MIB:.6f}".rstrip("0")


def apply_specs(plan: Plan, specs: Mapping[str, BuildSpec]) -> Plan:
    """`plan` with each model's profile and max batch replaced by the spec it was built with.

    Triton's max batch and preferred batch sizes follow the engine; so does the pipeline: it
    sends at most the recognizer's max batch per request, and scales images so the padded
    detector input fits the detector's max shape.
    """
    models = {}
    for model in plan.models():
        spec = specs.get(model.triton_name)
        if spec is None:
            models[model.role] = model
            continue
        profile = {p.name: ShapeProfile(p.min, p.opt, p.max) for p in spec.profiles}
        max_batch = min(model.max_batch_size, spec.max_batch_size)
        batching = model.dynamic_batching
        if batching is not None:
            preferred = tuple(b for b in batching.preferred_batch_sizes if b <= max_batch) or (max_batch,)
            batching = dataclasses.replace(batching, preferred_batch_sizes=preferred)
        models[model.role] = dataclasses.replace(
            model, profile=profile, max_batch_size=max_batch, dynamic_batching=batching
        )
    detector, recognizer = models["detector"], models["recognizer"]
    pipeline = dataclasses.replace(
        plan.pipeline,
        recognizer_batch=min(plan.pipeline.recognizer_batch, recognizer.max_batch_size),
        canvas_size=min(plan.pipeline.canvas_size, _largest_canvas(detector)),
    )
    return dataclasses.replace(plan, detector=detector, recognizer=recognizer, pipeline=pipeline)


def _largest_canvas(detector: ModelPlan) -> int:
    """The longest image side whose padded input still fits every detector max dimension."""
    sides = [side for shape in detector.profile.values() for side in shape.max[2:]]
    return min(sides) // DETECTOR_SIZE_MULTIPLE * DETECTOR_SIZE_MULTIPLE
