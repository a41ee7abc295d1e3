"""The thin edge between a `BuildSpec` and the `tensorrt` Python API (TensorRT 10).

`tensorrt` is imported lazily (it only exists on GPU machines) and every function here takes
the module as an argument, so the exact calls can be checked against a recording stand-in
where the library cannot be installed. Nothing here decides anything: the spec already says
which shapes, precision, pool limit and FP32 layers to use.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from stdr_deploy.engines.spec import BuildSpec
from stdr_deploy.errors import MissingDependency, ValidationError

INSTALL_HINT = "pip install '.[tensorrt]' (TensorRT 10 wheels need an NVIDIA GPU, driver and CUDA 12)"

# What TensorRT and CUDA say when a build runs out of device memory.
_OUT_OF_MEMORY = re.compile(
    r"out of memory|outofmemory|could not be allocated|insufficient memory|cudaErrorMemoryAllocation",
    re.IGNORECASE,
)
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


def import_tensorrt() -> ModuleType:
    """The `tensorrt` module, or MissingDependency with the install hint."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependency(f"TensorRT is not installed ({exc})", hint=INSTALL_HINT) from exc
    return tensorrt


@dataclass(frozen=True)
class BuildOutcome:
    """One call of the builder: the serialized engine (None on failure) and what was said."""

    engine: bytes | None
    timing_cache: bytes | None
    messages: tuple[str, ...]  # warnings and errors from the TensorRT logger
    pinned_layers: tuple[str, ...]  # network layers actually set to FP32
    seconds: float

    @property
    def out_of_memory(self) -> bool:
        return self.engine is None and any(_OUT_OF_MEMORY.search(m) for m in self.messages)


def make_logger(trt: ModuleType) -> Any:
    """A TensorRT logger that keeps warnings and errors, so a failed build can be explained."""
    severity = trt.ILogger.Severity
    kept = {severity.INTERNAL_ERROR, severity.ERROR, severity.WARNING}

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, level: Any, msg: str) -> None:
            if level in kept:
                self.messages.append(f"{level.name}: {msg}")

    return CapturingLogger()


def build_engine(spec: BuildSpec, trt: ModuleType, timing_cache: bytes = b"") -> BuildOutcome:
    """Parse the ONNX file, configure the builder as `spec` says, and build a serialized engine.

    An unparsable model or a profile that does not name the network's inputs raises
    ValidationError; a failed build returns an outcome with `engine=None`.
    """
    started = time.perf_counter()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(spec.onnx_path):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ValidationError(
            f"TensorRT cannot parse {spec.onnx_path}:\n" + "\n".join(errors or logger.messages),
            hint="re-export the model (`stdr-deploy export --force`) or check the TensorRT version",
        )
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    if inputs != {p.name for p in spec.profiles}:
        raise ValidationError(
            f"{spec.triton_name}: the network inputs {sorted(inputs)} differ from the profiled "
            f"inputs {[p.name for p in spec.profiles]}"
        )

    config = builder.create_builder_config()
    if spec.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    config.builder_optimization_level = spec.optimization_level
    # FP32 layers run in true FP32: the accuracy tolerances (1e-3 for FP32 engines) assume it.
    config.clear_flag(trt.BuilderFlag.TF32)
    if spec.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    pinned: tuple[str, ...] = ()
    if spec.fp32_layers:
        pinned = pin_fp32_layers(network, spec.fp32_layers, trt)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    for p in spec.profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    # An unreadable cache file (e.g. truncated) only costs time: start from an empty cache.
    cache = config.create_timing_cache(timing_cache) or config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)

    serialized = builder.build_serialized_network(network, config)
    return BuildOutcome(
        engine=bytes(serialized) if serialized is not None else None,
        timing_cache=bytes(config.get_timing_cache().serialize()),
        messages=tuple(logger.messages),
        pinned_layers=pinned,
        seconds=time.perf_counter() - started,
    )


def pin_fp32_layers(network: Any, names: tuple[str, ...], trt: ModuleType) -> tuple[str, ...]:
    """Set precision and float output types to FP32 on the layers made from the named ONNX nodes.

    A layer belongs to a node when its name is the node's layer name (what the parser assigns)
    or its metadata says `[ONNX Layer: <node>]` (TensorRT 10 also records that). Layers with
    no floating-point output (shape arithmetic) are left alone.
    """
    wanted = set(names)
    floats = (trt.float32, trt.float16)
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        nodes = {layer.name, *_ONNX_LAYER.findall(getattr(layer, "metadata", "") or "")}
        if not nodes & wanted:
            continue
        outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not outputs:
            continue
        layer.precision = trt.float32
        for j in outputs:
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return tuple(pinned)


def engine_loads(engine: bytes, trt: ModuleType) -> bool:
    """True when this TensorRT can deserialize `engine` (False: stale or corrupt)."""
    runtime = trt.Runtime(make_logger(trt))
    return runtime.deserialize_cuda_engine(engine) is not None
