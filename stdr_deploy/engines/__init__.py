"""TensorRT engines for the `tensorrt_plan` variant: plan -> build spec -> engine, cached per host.

Modules, from pure to I/O:
- `spec`: `BuildSpec`, `build_spec`, `retry_specs` (shrink order), `trtexec_command`, `apply_specs`;
- `graph`: ONNX facts (sha256, inputs, the nodes pinned to FP32 under FP16);
- `cache`: host fingerprint, cache key, cache layout and validity;
- `adapter`: the calls into the `tensorrt` module (imported lazily, injectable);
- `accuracy`: the post-build check against ONNX Runtime;
- `runner`: `TrtRunner`, an engine behind `infer(feeds) -> outputs`;
- `build`: `build_engines`, tying them together.

TensorRT path: built to the API, not run on a GPU in this project's CI.
"""

from stdr_deploy.engines.accuracy import check_engine_accuracy, engine_tolerance, validation_feeds
from stdr_deploy.engines.adapter import build_engine, import_tensorrt
from stdr_deploy.engines.build import (
    BuildResult,
    PlannedBuild,
    apply_build_results,
    build_engines,
    build_engines_for_plan,
    export_onnx,
    plan_builds,
)
from stdr_deploy.engines.cache import EngineCache, HostFingerprint, cache_key, host_fingerprint
from stdr_deploy.engines.graph import OnnxGraph, fp32_nodes, inspect_onnx
from stdr_deploy.engines.spec import (
    BuildSpec,
    InputProfile,
    apply_specs,
    build_spec,
    retry_specs,
    trtexec_command,
)

__all__ = [
    "BuildResult",
    "BuildSpec",
    "EngineCache",
    "HostFingerprint",
    "InputProfile",
    "OnnxGraph",
    "PlannedBuild",
    "apply_build_results",
    "apply_specs",
    "build_engine",
    "build_engines",
    "build_engines_for_plan",
    "build_spec",
    "cache_key",
    "check_engine_accuracy",
    "engine_tolerance",
    "export_onnx",
    "fp32_nodes",
    "host_fingerprint",
    "import_tensorrt",
    "inspect_onnx",
    "plan_builds",
    "retry_specs",
    "trtexec_command",
    "validation_feeds",
]

