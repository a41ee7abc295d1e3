"""A recording stand-in for the `tensorrt` module (TensorRT 10 Python API), for tests only.

TensorRT cannot be installed where these tests run (no GPU; the wheels fetch from NVIDIA's
index), so this is the one place the project accepts a stand-in. It implements just the API
surface `stdr_deploy.engines` uses, with the documented signatures, and records every call as
`(name, args)` in `calls`, so tests can assert the exact sequence and arguments.

Faithful where it matters:
- `OnnxParser.parse_from_file` reads the real ONNX file: one layer per non-Constant node, named
  as the real parser names them (node name, or `node_of_<first output>`), with TensorRT 10's
  `[ONNX Layer: <node>]` metadata and output types from ONNX shape inference;
- `build_serialized_network` returns None after logging an error, as TensorRT does, for the
  first `fail_builds` calls, or per ONNX file name when `fail_builds` is a dict
  (`failure="oom"` logs TensorRT's out-of-memory error, `"other"` an internal error);
- the serialized "engine" is JSON that records what it was built from, and a `Runtime` of
  another version refuses it, as a real runtime refuses an engine of another TensorRT.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import onnx

from stdr_deploy.engines.graph import layer_name

MAGIC = b"TRT-DOUBLE-ENGINE\n"
OOM_MESSAGE = (
    "[virtualMemoryBuffer.cpp::resizePhysical::140] Error Code 2: OutOfMemory "
    "(Requested size was 8589934592 bytes.)"
)
OTHER_FAILURE = "[network.cpp::validate::3066] Error Code 4: Internal Error (profile max shape is invalid)"


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


class BuilderFlag(enum.Enum):
    FP16 = 0
    INT8 = 1
    OBEY_PRECISION_CONSTRAINTS = 11
    TF32 = 7


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class _Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = _Severity

    def __init__(self) -> None:
        pass


_ONNX_TYPES = {
    onnx.TensorProto.FLOAT: DataType.FLOAT,
    onnx.TensorProto.FLOAT16: DataType.HALF,
    onnx.TensorProto.INT64: DataType.INT64,
    onnx.TensorProto.INT32: DataType.INT32,
    onnx.TensorProto.BOOL: DataType.BOOL,
    onnx.TensorProto.UINT8: DataType.UINT8,
    onnx.TensorProto.INT8: DataType.INT8,
}


class TrtDouble:
    """Looks like `import tensorrt as trt` to the code under test."""

    ILogger = ILogger
    DataType = DataType
    BuilderFlag = BuilderFlag
    MemoryPoolType = MemoryPoolType
    TensorIOMode = TensorIOMode
    float32 = DataType.FLOAT
    float16 = DataType.HALF
    int32 = DataType.INT32
    int64 = DataType.INT64

    def __init__(self, version: str = "10.3.0", *, fail_builds: int | dict[str, int] = 0, failure: str = "oom"):
        self.__version__ = version
        self.fail_builds = fail_builds
        self.failure = failure
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.builds = 0
        self.builds_of: dict[str, int] = {}  # per ONNX file name
        double = self

        class Builder(_Builder):
            def __init__(self, logger: Any) -> None:
                super().__init__(double, logger)

        class OnnxParser(_OnnxParser):
            def __init__(self, network: "_Network", logger: Any) -> None:
                super().__init__(double, network, logger)

        class Runtime(_Runtime):
            def __init__(self, logger: Any) -> None:
                super().__init__(double, logger)

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime

    def record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def args_of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for call, args in self.calls if call == name]


class _Tensor:
    def __init__(self, name: str, dtype: DataType) -> None:
        self.name = name
        self.dtype = dtype


class _Layer:
    def __init__(self, double: TrtDouble, name: str, op_type: str, outputs: list[_Tensor]) -> None:
        self._double = double
        self.name = name
        self.type = op_type
        self.metadata = f"[ONNX Layer: {name}]"
        self._outputs = outputs
        self._precision = DataType.FLOAT

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int) -> _Tensor:
        return self._outputs[index]

    @property
    def precision(self) -> DataType:
        return self._precision

    @precision.setter
    def precision(self, dtype: DataType) -> None:
        self._double.record("ILayer.precision", self.name, dtype)
        self._precision = dtype

    def set_output_type(self, index: int, dtype: DataType) -> None:
        self._double.record("ILayer.set_output_type", self.name, index, dtype)


class _Network:
    def __init__(self, double: TrtDouble) -> None:
        self._double = double
        self.inputs: list[_Tensor] = []
        self.layers: list[_Layer] = []
        self.source = ""  # the ONNX file parsed into it

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> _Tensor:
        return self.inputs[index]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, index: int) -> _Layer:
        return self.layers[index]


class _ParserError:
    def __init__(self, desc: str) -> None:
        self._desc = desc

    def __str__(self) -> str:
        return f"In node -1 (parseGraph): INVALID_GRAPH: {self._desc}"


class _OnnxParser:
    def __init__(self, double: TrtDouble, network: _Network, logger: Any) -> None:
        double.record("OnnxParser", network, logger)
        self._double = double
        self._network = network
        self._errors: list[_ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> _ParserError:
        return self._errors[index]

    def parse_from_file(self, path: str) -> bool:
        self._double.record("OnnxParser.parse_from_file", path)
        self._network.source = path
        try:
            model = onnx.shape_inference.infer_shapes(onnx.load(path))
        except Exception as exc:  # noqa: BLE001 - the real parser reports any failure as an error
            self._errors.append(_ParserError(f"Failed to parse the ONNX model: {exc}"))
            return False
        graph = model.graph
        types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
        initializers = {init.name for init in graph.initializer}
        self._network.inputs = [
            _Tensor(v.name, _ONNX_TYPES[v.type.tensor_type.elem_type])
            for v in graph.input
            if v.name not in initializers
        ]
        for node in graph.node:
            if node.op_type == "Constant":
                continue
            outputs = [_Tensor(out, _ONNX_TYPES.get(types.get(out), DataType.FLOAT)) for out in node.output]
            self._network.layers.append(_Layer(self._double, layer_name(node), node.op_type, outputs))
        return True


class _Profile:
    def __init__(self, double: TrtDouble) -> None:
        self._double = double
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
        self._double.record("IOptimizationProfile.set_shape", name, tuple(min), tuple(opt), tuple(max))
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data


class _Config:
    def __init__(self, double: TrtDouble) -> None:
        self._double = double
        self.flags: set[BuilderFlag] = {BuilderFlag.TF32}  # TensorRT's default flags
        self.pool_limits: dict[MemoryPoolType, int] = {}
        self.profiles: list[_Profile] = []
        self._level = 3
        self._timing = _TimingCache(b"")

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self._double.record("IBuilderConfig.set_memory_pool_limit", pool, size)
        self.pool_limits[pool] = size

    @property
    def builder_optimization_level(self) -> int:
        return self._level

    @builder_optimization_level.setter
    def builder_optimization_level(self, level: int) -> None:
        self._double.record("IBuilderConfig.builder_optimization_level", level)
        self._level = level

    def set_flag(self, flag: BuilderFlag) -> None:
        self._double.record("IBuilderConfig.set_flag", flag)
        self.flags.add(flag)

    def clear_flag(self, flag: BuilderFlag) -> None:
        self._double.record("IBuilderConfig.clear_flag", flag)
        self.flags.discard(flag)

    def add_optimization_profile(self, profile: _Profile) -> int:
        self._double.record("IBuilderConfig.add_optimization_profile", profile)
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized: bytes) -> _TimingCache:
        self._double.record("IBuilderConfig.create_timing_cache", bytes(serialized))
        return _TimingCache(bytes(serialized))

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> bool:
        self._double.record("IBuilderConfig.set_timing_cache", cache, ignore_mismatch)
        self._timing = cache
        return True

    def get_timing_cache(self) -> _TimingCache:
        self._double.record("IBuilderConfig.get_timing_cache")
        return self._timing


class _Builder:
    def __init__(self, double: TrtDouble, logger: Any) -> None:
        double.record("Builder", logger)
        self._double = double
        self._logger = logger

    def create_network(self, flags: int = 0) -> _Network:
        self._double.record("Builder.create_network", flags)
        return _Network(self._double)

    def create_builder_config(self) -> _Config:
        self._double.record("Builder.create_builder_config")
        return _Config(self._double)

    def create_optimization_profile(self) -> _Profile:
        self._double.record("Builder.create_optimization_profile")
        return _Profile(self._double)

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes | None:
        self._double.record("Builder.build_serialized_network", network, config)
        double = self._double
        double.builds += 1
        source = Path(network.source).name
        double.builds_of[source] = double.builds_of.get(source, 0) + 1
        if isinstance(double.fail_builds, dict):
            failing = double.builds_of[source] <= double.fail_builds.get(source, 0)
        else:
            failing = double.builds <= double.fail_builds
        if failing:
            message = OOM_MESSAGE if double.failure == "oom" else OTHER_FAILURE
            self._logger.log(ILogger.Severity.ERROR, message)
            return None
        # Each build adds one entry to the timing cache, so growth across builds is visible.
        config._timing = _TimingCache(config._timing.data + f"entry{double.builds};".encode())
        engine = {
            "version": double.__version__,
            "flags": sorted(flag.name for flag in config.flags),
            "workspace": config.pool_limits.get(MemoryPoolType.WORKSPACE),
            "level": config.builder_optimization_level,
            "profiles": [{k: [list(s) for s in v] for k, v in p.shapes.items()} for p in config.profiles],
            "inputs": [t.name for t in network.inputs],
        }
        return MAGIC + json.dumps(engine, sort_keys=True).encode()


class _Runtime:
    def __init__(self, double: TrtDouble, logger: Any) -> None:
        double.record("Runtime", logger)
        self._double = double
        self._logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> dict[str, Any] | None:
        self._double.record("Runtime.deserialize_cuda_engine", len(data))
        if not data.startswith(MAGIC):
            self._logger.log(ILogger.Severity.ERROR, "Error Code 1: Serialization (Magic tag does not match)")
            return None
        engine = json.loads(data[len(MAGIC):])
        if engine["version"] != self._double.__version__:
            self._logger.log(
                ILogger.Severity.ERROR,
                f"Error Code 6: API Usage Error (The engine plan file is not compatible with this version of "
                f"TensorRT, expecting library version {self._double.__version__} got {engine['version']})",
            )
            return None
        return engine


def engine_facts(engine: bytes | str | Path) -> dict[str, Any]:
    """What a double-built engine (bytes or file) says it was built with."""
    data = engine if isinstance(engine, bytes) else Path(engine).read_bytes()
    assert data.startswith(MAGIC), "not an engine built by the double"
    return json.loads(data[len(MAGIC):])
