"""The thin edge between a `BuildSpec` and TensorRT, through Polygraphy's loaders.

One code path, two TensorRTs:
- full TensorRT (`tensorrt`, 10.x or 11.x): builds the engines a GPU host serves (`build`);
- TensorRT for RTX (`tensorrt_rtx`): builds ahead of time for a named compute capability on
  any host, CPU-only ones included (`build --check`, the test suite). At run time it refuses
  compute capability 9.x, so it only checks; it never serves.
Polygraphy picks its TensorRT module once per process (`polygraphy.config.USE_TENSORRT_RTX`,
read when `polygraphy.backend.trt` is first imported), so one process drives one of the two.

Builds are strongly typed: every tensor's type comes from the ONNX graph (fp32, the fp16
mixed-precision export, int8 QDQ), no precision flag is set, none is needed on TensorRT 11.
Nothing here decides anything: the spec already says which shapes and pool limit to use.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

from stdr_deploy.engines.spec import BuildSpec
from stdr_deploy.errors import MissingDependency, StdrError, ValidationError

INSTALL_HINT = "pip install '.[tensorrt]' (TensorRT 10 or 11 wheels need an NVIDIA GPU, driver and CUDA)"
RTX_INSTALL_HINT = "pip install '.[tensorrt-rtx]' (TensorRT for RTX: ahead-of-time builds, no GPU needed)"
RTX_FALLBACK_TARGET = (8, 6)  # checked for when the host's GPU is not a TensorRT-RTX target (e.g. sm90)

# What TensorRT and CUDA say when a build runs out of device memory.
_OUT_OF_MEMORY = re.compile(
    r"out of memory|outofmemory|could not be allocated|insufficient memory|cudaErrorMemoryAllocation",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BuildOutcome:
    """One call of the builder: the serialized engine (None on failure) and what was said."""

    engine: bytes | None
    messages: tuple[str, ...]  # warnings and errors from TensorRT and Polygraphy
    seconds: float

    @property
    def out_of_memory(self) -> bool:
        return self.engine is None and any(_OUT_OF_MEMORY.search(m) for m in self.messages)


class Builder:
    """Builds `BuildSpec`s with one TensorRT through Polygraphy; `target` is set for TensorRT-RTX."""

    def __init__(self, trt: ModuleType, backend: ModuleType, target: tuple[int, int] | None = None):
        self.trt, self.backend, self.target = trt, backend, target
        self.version: str = trt.__version__
        self.name = "TensorRT-RTX" if target is not None else "TensorRT"

    @classmethod
    def tensorrt(cls) -> "Builder":
        """Full TensorRT, for the GPU of this host; MissingDependency when it is not installed."""
        trt, backend = _polygraphy_backend(rtx=False)
        return cls(trt, backend)

    @classmethod
    def rtx(cls, compute_capability: tuple[int, int]) -> "Builder":
        """TensorRT-RTX, ahead of time for `compute_capability` (or sm86 where it has no such target)."""
        trt, backend = _polygraphy_backend(rtx=True)
        target = tuple(compute_capability)
        if not hasattr(trt.ComputeCapability, f"SM{target[0]}{target[1]}"):
            target = RTX_FALLBACK_TARGET
        return cls(trt, backend, target)  # type: ignore[arg-type]

    def build(self, spec: BuildSpec, timing_cache: Path | None = None) -> BuildOutcome:
        """Parse the ONNX file (strongly typed), configure the profile and pool limit, build.

        An unparsable graph raises ValidationError naming the node; a failed build returns an
        outcome with `engine=None` and the builder's messages. `timing_cache` is read when it
        exists and written after the build (full TensorRT; TensorRT-RTX has no timing cache).
        """
        if self.target is not None:
            timing_cache = None
        from polygraphy.exception import PolygraphyException

        backend = self.backend
        profile = backend.Profile()
        for p in spec.profiles:
            profile.add(p.name, min=p.min, opt=p.opt, max=p.max)
        options: dict[str, Any] = {
            "profiles": [profile],
            "builder_optimization_level": spec.optimization_level,
            "load_timing_cache": str(timing_cache) if timing_cache and timing_cache.is_file() else None,
        }
        if spec.workspace_bytes and self.target is None:
            # Full TensorRT skips tactics that need more scratch than this. TensorRT-RTX sizes the
            # scratch its run-time kernels will need instead, and fails the build when that is
            # larger (CRAFT at 2560x2560 asks 2.23 GB against the 2 GiB planned), so its
            # ahead-of-time check builds without the limit.
            options["memory_pool_limits"] = {self.trt.MemoryPoolType.WORKSPACE: spec.workspace_bytes}
        if self.target is not None:
            from polygraphy.backend.tensorrt_rtx import CreateConfigRTX

            config = CreateConfigRTX(compute_capabilities=[self.target], **options)
        else:
            # FP32 layers run in true FP32: the accuracy tolerances (1e-3 for fp32 engines) assume it.
            config = backend.CreateConfig(tf32=False, **options)
        network = backend.NetworkFromOnnxPath(spec.onnx_path, strongly_typed=True)
        started = time.perf_counter()
        with _captured() as messages, warnings.catch_warnings():
            # TensorRT-RTX deprecates the timing-cache calls Polygraphy always makes (no-ops there).
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                network_parts = network()
            except PolygraphyException:
                raise ValidationError(
                    f"{self.name} {self.version} cannot parse {spec.triton_name} ({spec.onnx_path}):\n"
                    + "\n".join(self.parser_errors(spec.onnx_path) or messages[-5:]),
                    hint="re-export the model (`stdr-deploy export --force`) or check the TensorRT version",
                ) from None
            try:
                engine = backend.engine_bytes_from_network(
                    network_parts, config, save_timing_cache=str(timing_cache) if timing_cache else None
                )
            except PolygraphyException:
                engine = None
        return BuildOutcome(
            engine=bytes(memoryview(engine)) if engine is not None else None,
            messages=tuple(messages),
            seconds=time.perf_counter() - started,
        )

    def parser_errors(self, onnx_path: str) -> list[str]:
        """The ONNX parser's errors, one line each naming the node and its operator."""
        from polygraphy.backend.trt.util import get_trt_logger

        trt = self.trt
        builder = trt.Builder(get_trt_logger())
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, get_trt_logger())
        with _captured():
            parser.parse_from_file(str(onnx_path))
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            reason = " ".join(line for line in error.desc().splitlines() if "Cuda Runtime" not in line)
            errors.append(f"node {error.node_name()!r} ({error.node_operator()}): {reason}")
        return errors

    def loads(self, engine: bytes) -> bool:
        """True when this TensorRT can deserialize `engine` (False: stale or corrupt). Needs a GPU."""
        from polygraphy.exception import PolygraphyException

        with _captured():
            try:
                return self.backend.engine_from_bytes(engine) is not None
            except PolygraphyException:
                return False


def _polygraphy_backend(rtx: bool) -> tuple[ModuleType, ModuleType]:
    """(the TensorRT module, `polygraphy.backend.trt`) for full TensorRT or TensorRT-RTX."""
    import importlib
    import sys

    name = "tensorrt_rtx" if rtx else "tensorrt"
    try:
        from polygraphy import config
        from polygraphy.logger import G_LOGGER

        trt = importlib.import_module(name)
    except ImportError as exc:
        what = "TensorRT-RTX" if rtx else "TensorRT"
        raise MissingDependency(f"{what} is not installed ({exc})", hint=RTX_INSTALL_HINT if rtx else INSTALL_HINT) from exc
    if "polygraphy.backend.trt" in sys.modules and config.USE_TENSORRT_RTX != rtx:
        raise StdrError(
            f"Polygraphy already drives {'TensorRT-RTX' if config.USE_TENSORRT_RTX else 'TensorRT'} in this "
            f"process; {name} needs a process of its own"
        )
    config.USE_TENSORRT_RTX = rtx
    # Polygraphy prints to stdout by default; through `logging`, stdout stays for --json output.
    G_LOGGER.use_python_logging_system = True
    G_LOGGER.colors = False  # else it prints a hint to install `colored`, on stdout
    backend = importlib.import_module("polygraphy.backend.trt")
    return trt, backend


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _captured() -> Iterator[list[str]]:
    """Collect Polygraphy's (and so TensorRT's) warnings and errors instead of printing them."""
    log = logging.getLogger("Polygraphy")
    handler, propagate = _Collect(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
