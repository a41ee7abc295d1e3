"""`stdr-deploy auto`: probe -> plan -> export -> build -> render -> serve -> smoke, in one workspace.

Each step is a small function over the previous steps' results; `StepRunner` records them in
`<workspace>/status.json`, and the run ends with a `deploy.json` manifest (host, plan, artefact
hashes, versions, smoke results, timings). The server is returned running; the caller decides
whether to keep serving.
"""

from __future__ import annotations

import dataclasses

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stdr_deploy import __version__
from stdr_deploy.artifacts import ArtifactDir, ExportCache
from stdr_deploy.plan_schema import Plan
from stdr_deploy.steps import Step, StepResult, StepRunner
from stdr_deploy.workspace import sha256_file, write_json_atomic


@dataclass(frozen=True)
class AutoOptions:
    workspace: Path
    repo: Path
    recognizer: str | None = None  # None: the planner decides (planner.DEFAULT_RECOGNIZER)
    weights: dict[str, str] = field(default_factory=dict)  # family -> path or registry name
    profile: str | None = None
    variant: str | None = None
    detector_precision: str | None = None  # None: the planner decides from the host
    cpu_backend: str | None = None  # CPU plans: onnxruntime or openvino; None: the planner decides
    recognizer_precision: str | None = None
    canvas: int | None = None  # None: the planner decides
    host: str = "127.0.0.1"
    http_port: int | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    artifacts: Path | None = None  # a `stdr-deploy package` directory: ONNX files from there, no export


@dataclass
class AutoResult:
    plan: Plan | None = None
    server: Any = None  # stdr_deploy.server.TritonServer, running when the smoke passed
    smoke: Any = None  # stdr_deploy.smoke.SmokeReport
    manifest: dict[str, Any] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)


def run_auto(
    options: AutoOptions,
    on_start: Callable[[Step], None] | None = None,
    on_end: Callable[[Step, StepResult], None] | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> AutoResult:
    """Run every step; on a failure the server (if started) is stopped and the error re-raised."""
    from stdr_deploy import hardware, planner, profiles

    ws = Path(options.workspace)
    ws.mkdir(parents=True, exist_ok=True)
    runner = StepRunner(ws, on_start, on_end)
    result = AutoResult(steps=runner.results)
    state: dict[str, Any] = {}
    source = ArtifactDir(options.artifacts) if options.artifacts else ExportCache(options.weights)

    def probe() -> dict[str, Any]:
        state["host"] = hardware.probe_host()
        write_json_atomic(ws / "host.json", state["host"].to_dict())
        return {"host_file": str(ws / "host.json"), "gpus": [g.name for g in state["host"].gpus]}

    def plan() -> dict[str, Any]:
        profile = profiles.resolve_profile(state["host"], options.profile)
        result.plan = planner.make_plan(
            state["host"],
            profile,
            recognizer=options.recognizer,
            variant=options.variant,
            detector_precision=options.detector_precision,
            recognizer_precision=options.recognizer_precision,
            canvas=options.canvas,
            cpu_backend=options.cpu_backend,
        )
        write_json_atomic(ws / "plan.json", result.plan.to_dict())
        return {"variant": result.plan.variant, "device": result.plan.device, "profile": result.plan.profile_name}

    def export() -> dict[str, Any]:
        from stdr_deploy.onnx_files import onnx_precision

        state["onnx"] = {}
        outputs = {}
        for model in result.plan.models():
            path = source.onnx_file(model.family, onnx_precision(model.precision, model.backend))
            state["onnx"][model.triton_name] = path
            outputs[model.triton_name] = {"onnx": str(path), "sha256": sha256_file(path)}
        return outputs

    def build() -> dict[str, Any]:
        from stdr_deploy.engines import apply_build_results, build_engines

        built = build_engines(result.plan, state["onnx"], state["host"])
        # A build that ran out of memory retries smaller: render from what was really built.
        adjusted = apply_build_results(result.plan, built)
        if adjusted != result.plan:
            result.plan = adjusted
            write_json_atomic(ws / "plan.json", adjusted.to_dict())
        state["artifacts"] = {name: b.engine_path for name, b in built.items()}
        return {name: {"engine": str(b.engine_path), "sha256": sha256_file(b.engine_path)} for name, b in built.items()}

    def render() -> dict[str, Any]:
        from stdr_deploy.render import render as render_repo

        artifacts = state.get("artifacts") or state["onnx"]
        rendered = render_repo(result.plan, options.repo, artifacts)
        return {"repository": str(options.repo), "files": len(rendered.files)}

    def serve() -> dict[str, Any]:
        from stdr_deploy.server import TritonServer

        server = TritonServer(
            options.repo,
            host=options.host,
            http_port=options.http_port,
            grpc_port=options.grpc_port,
            metrics_port=options.metrics_port,
            log_path=ws / "server.log",
        )
        result.server = server
        server.start()
        server.wait_ready()
        return {"http": server.http_url, "grpc": server.grpc_url, "metrics": server.metrics_url, "pid": server.pid}

    def smoke() -> dict[str, Any]:
        from stdr_deploy.onnx_files import onnx_precision
        from stdr_deploy.runners import make_pipeline
        from stdr_deploy.smoke import run_smoke

        recognizer = result.plan.recognizer
        reference = make_pipeline(
            runtime="onnxruntime",
            recognizer=recognizer.family,
            weights=options.weights,
            settings=_settings(result.plan),
            detector_precision=onnx_precision(result.plan.detector.precision, result.plan.detector.backend),
            onnx=source,
        )
        report = run_smoke(
            [result.server.http_url, result.server.grpc_url],
            options.repo,
            result.plan,
            reference=reference.read if result.plan.variant == "onnxruntime" else None,
            expect_text=source.trained(recognizer.family),
            progress=progress,
            server_pid=result.server.pid,
        )
        result.smoke = report
        write_json_atomic(ws / "smoke.json", report.to_dict())
        report.raise_for_failures()
        return {"checks": len(report.checks), "ok": report.ok, "memory": report.memory, "warnings": report.warnings}

    steps = [
        Step("probe", probe, "probe the host (NVML, CPU, runtimes)"),
        Step("plan", plan, "plan variant, shapes, instances and memory"),
        Step("export", export, f"ONNX models from {options.artifacts}" if options.artifacts else "export ONNX models (cached)"),
        Step(
            "build",
            build,
            "build TensorRT engines",
            skip_when=lambda: None if result.plan.variant == "tensorrt_plan" else "the plan uses ONNX Runtime",
        ),
        Step("render", render, "render the Triton model repository"),
        Step("serve", serve, "start tritonserver and wait for all models"),
        Step("smoke", smoke, "smoke inference over HTTP and gRPC"),
    ]
    try:
        for step in steps:
            runner.run(step)
    except BaseException:
        if result.server is not None:
            result.server.stop()
            result.server = None
        raise
    finally:
        result.manifest = manifest(options, result, state)
        write_json_atomic(ws / "deploy.json", result.manifest)
    return result


def _settings(plan: Plan):
    from stdr_deploy.ocr import PipelineSettings

    return PipelineSettings.from_plan(dataclasses.asdict(plan.pipeline))


def manifest(options: AutoOptions, result: AutoResult, state: dict[str, Any]) -> dict[str, Any]:
    """What was deployed, from what, with which tools, and how each step went."""
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "format_version": 1,
        "stdr_deploy": __version__,
        "python": platform.python_version(),
        "versions": {d: version(d) for d in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "nvidia-pytriton", "tritonclient")},
        "workspace": str(options.workspace),
        "repository": str(options.repo),
        "artifacts": str(options.artifacts) if options.artifacts else None,
        "host": state["host"].to_dict() if "host" in state else None,
        "plan": result.plan.to_dict() if result.plan else None,
        "steps": [
            {"name": r.name, "status": r.status, "seconds": round(r.seconds, 3), "outputs": r.outputs, "error": r.error}
            for r in result.steps
        ],
        "smoke": result.smoke.to_dict() if result.smoke else None,
        "urls": (
            {"http": result.server.http_url, "grpc": result.server.grpc_url, "metrics": result.server.metrics_url}
            if result.server
            else None
        ),
    }
