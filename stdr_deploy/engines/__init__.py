"""TensorRT engines for the `tensorrt_plan` variant: plan -> build spec -> engine, cached per host.

Modules, from pure to I/O:
- `spec`: `BuildSpec`, `build_spec`, `retry_specs` (shrink order), `trtexec_command`, `apply_specs`;
- `graph`: ONNX facts (sha256, inputs, the precision the graph is in);
- `cache`: host fingerprint, cache key, cache layout and validity;
- `adapter`: `Builder`, full TensorRT or TensorRT-RTX driven through Polygraphy, strongly typed;
- `accuracy`: the post-build check against ONNX Runtime;
- `runner`: `TrtRunner`, an engine behind `infer(feeds) -> outputs` (Polygraphy's, on a GPU);
- `build`: `build_engines` (cache, retries, accuracy) and `check_engines` (TensorRT-RTX, ahead of time).

What ran where: the builds are checked ahead of time on the CPU by TensorRT-RTX (the test suite,
`stdr-deploy build --check`); engine execution needs full TensorRT on a GPU and is not run here.
"""

from stdr_deploy.engines.accuracy import check_engine_accuracy, engine_tolerance, validation_feeds
from stdr_deploy.engines.adapter import Builder, BuildOutcome
from stdr_deploy.engines.build import (
    BuildResult,
    EngineCheck,
    PlannedBuild,
    apply_build_results,
    build_engines,
    check_engines,
    export_onnx,
    plan_builds,
)
from stdr_deploy.engines.cache import EngineCache, HostFingerprint, cache_key, host_fingerprint
from stdr_deploy.engines.graph import OnnxGraph, inspect_onnx
from stdr_deploy.engines.spec import BuildSpec, InputProfile, apply_specs, build_spec, retry_specs, trtexec_command

__all__ = [
    "BuildOutcome",
    "BuildResult",
    "BuildSpec",
    "Builder",
    "EngineCache",
    "EngineCheck",
    "HostFingerprint",
    "InputProfile",
    "OnnxGraph",
    "PlannedBuild",
    "apply_build_results",
    "apply_specs",
    "build_engines",
    "build_spec",
    "cache_key",
    "check_engine_accuracy",
    "check_engines",
    "engine_tolerance",
    "export_onnx",
    "host_fingerprint",
    "inspect_onnx",
    "plan_builds",
    "retry_specs",
    "trtexec_command",
    "validation_feeds",
]
