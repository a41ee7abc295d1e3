"""Build (or reuse) the TensorRT engines a plan asks for; check them ahead of time with TensorRT-RTX.

`build_engines`, for each model: derive its `BuildSpec`, look it up in the engine cache (a stale
or corrupt engine is rebuilt), otherwise build it, shrinking the spec on out-of-memory failures
in the documented order (`stdr_deploy.engines.spec`), check the engine against ONNX Runtime, and
only then move it into the cache together with a `build.json` report that lists every attempt.
A failed build leaves its report (and no engine) in the cache folder for inspection.

`check_engines` builds the same specs with TensorRT-RTX ahead of time for the plan's GPU (its
compute capability, or sm86 where TensorRT-RTX has no such target), on any host: the ONNX
parser, the strongly typed builder and the plan's exact min/opt/max profiles are checked. The
engines are not kept: TensorRT-RTX engines are not what full TensorRT serves.
"""

from __future__ import annotations

import datetime
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from stdr_deploy.engines.accuracy import OnnxRunner, Runner, check_engine_accuracy, engine_tolerance, validation_feeds
from stdr_deploy.engines.adapter import BuildOutcome, Builder
from stdr_deploy.engines.cache import (
    ENGINE_FILE,
    REPORT_FILE,
    REPORT_FORMAT,
    EngineCache,
    HostFingerprint,
    cache_key,
    host_fingerprint,
)
from stdr_deploy.engines.graph import inspect_onnx
from stdr_deploy.engines.spec import BuildSpec, apply_specs, build_spec, retry_specs, shell_line, trtexec_command
from stdr_deploy.errors import HostUnsupported, UserInputError, ValidationError
from stdr_deploy.hardware import HostFacts
from stdr_deploy.plan_schema import ModelPlan, Plan
from stdr_deploy.workspace import replace_dir_atomic, sha256_file, staging_dir, write_json_atomic

MakeRunner = Callable[[Path, BuildSpec, int], Runner]
Progress = Callable[[str], None]
MESSAGES_KEPT = 20  # per attempt, in the report


@dataclass(frozen=True)
class BuildResult:
    """One engine, built now or reused; `spec` is what it was built with (maybe shrunk)."""

    triton_name: str
    engine_path: Path
    report_path: Path
    key: str
    fingerprint: HostFingerprint
    requested: BuildSpec
    spec: BuildSpec
    cached: bool
    report: dict[str, Any]

    @property
    def shrunk(self) -> bool:
        return self.spec.profiles != self.requested.profiles


@dataclass(frozen=True)
class PlannedBuild:
    """What `build --dry-run` shows for one model: the spec, where it would go, and trtexec."""

    spec: BuildSpec
    key: str
    fingerprint: HostFingerprint
    engine_path: Path
    trtexec: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "fingerprint": self.fingerprint.slug,
            "engine_path": str(self.engine_path),
            "spec": self.spec.to_dict(),
            "trtexec": shell_line(self.trtexec),
        }


@dataclass(frozen=True)
class EngineCheck:
    """One engine built ahead of time by TensorRT-RTX (`check_engines`)."""

    spec: BuildSpec
    builder: str  # e.g. "TensorRT-RTX 1.7.1.116"
    target: str  # e.g. "sm86"
    ok: bool
    seconds: float
    engine_bytes: int
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.spec.triton_name,
            "precision": self.spec.precision,
            "onnx_path": self.spec.onnx_path,
            "profile": profile_text(self.spec),
            "builder": self.builder,
            "target": self.target,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "engine_bytes": self.engine_bytes,
            "error": self.error,
        }


def plan_builds(
    plan: Plan, onnx_paths: Mapping[str, Path], host: HostFacts, trt_version: str, cache: EngineCache | None = None
) -> list[PlannedBuild]:
    """The builds `build_engines` would run (no TensorRT needed): specs, cache paths, trtexec lines."""
    _require_tensorrt_plan(plan)
    cache = cache or EngineCache.default()
    planned = []
    for model in plan.models():
        fingerprint = host_fingerprint(host, trt_version, _gpu_index(model))
        spec = _spec_for(model, onnx_paths, cache, fingerprint)
        key = cache_key(spec, fingerprint)
        engine = cache.entry(fingerprint, key) / ENGINE_FILE
        planned.append(PlannedBuild(spec, key, fingerprint, engine, trtexec_command(spec, engine)))
    return planned


def build_engines(
    plan: Plan,
    onnx_paths: Mapping[str, Path],
    host: HostFacts,
    *,
    builder: Builder | None = None,
    cache: EngineCache | None = None,
    make_runner: MakeRunner | None = None,
    progress: Progress = lambda message: None,
) -> dict[str, BuildResult]:
    """Engines for the plan's detector and recognizer, keyed by Triton model name.

    `builder` defaults to full TensorRT (MissingDependency if absent); `make_runner(engine_path,
    spec, gpu)` runs an engine for the accuracy check (default: Polygraphy's TrtRunner, a GPU).
    """
    _require_tensorrt_plan(plan)
    builder = builder or Builder.tensorrt()
    cache = cache or EngineCache.default()
    make_runner = make_runner or _trt_runner
    results = {}
    for model in plan.models():
        fingerprint = host_fingerprint(host, builder.version, _gpu_index(model))
        spec = _spec_for(model, onnx_paths, cache, fingerprint)
        results[model.triton_name] = _build_one(
            spec, fingerprint, _gpu_index(model), builder, cache, make_runner, progress
        )
    return results


def check_engines(
    plan: Plan,
    onnx_paths: Mapping[str, Path],
    host: HostFacts,
    *,
    builder: Builder | None = None,
    progress: Progress = lambda message: None,
) -> list[EngineCheck]:
    """Build every engine of the plan with TensorRT-RTX ahead of time (see the module docstring).

    Returns one check per model; after trying them all, raises ValidationError naming the
    model, the node (for parser errors) and the profile of every failure.
    """
    _require_tensorrt_plan(plan)
    checks = []
    for model in plan.models():
        gpu = next((g for g in host.gpus if g.index == _gpu_index(model)), None)
        if gpu is None:
            raise HostUnsupported(
                f"{model.triton_name} is planned on GPU {_gpu_index(model)}, which the host file does not have",
                hint="pass the host file the plan was made for (--host)",
            )
        rtx = builder or Builder.rtx(tuple(gpu.compute_capability))
        spec = build_spec(model, inspect_onnx(_onnx_path(model, onnx_paths)), timing_cache="")
        target = f"sm{rtx.target[0]}{rtx.target[1]}" if rtx.target else "this GPU"
        progress(f"{spec.triton_name}: {rtx.name} build for {target}, profile {profile_text(spec)}")
        try:
            outcome = rtx.build(spec)
            error = None if outcome.engine is not None else "\n".join(outcome.messages[-5:]) or "no engine"
        except ValidationError as exc:
            outcome, error = BuildOutcome(None, (), 0.0), str(exc)
        size = len(outcome.engine) if outcome.engine is not None else 0
        checks.append(EngineCheck(spec, f"{rtx.name} {rtx.version}", target, error is None, outcome.seconds, size, error))
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ValidationError(
            "\n".join(
                f"{c.spec.triton_name} ({c.spec.precision}, profile {profile_text(c.spec)}) does not build with "
                f"{c.builder} for {c.target}:\n  " + (c.error or "").replace("\n", "\n  ")
                for c in failed
            ),
            hint="re-export the model (`stdr-deploy export MODEL --precision P --force`) or re-run `stdr-deploy plan`",
        )
    return checks


def apply_build_results(plan: Plan, results: Mapping[str, BuildResult]) -> Plan:
    """`plan` adjusted to the engines actually built (after a retry shrank a max batch or shape)."""
    return apply_specs(plan, {name: result.spec for name, result in results.items()})


def export_onnx(plan: Plan, weights: Mapping[str, str] | None = None) -> dict[str, Path]:
    """ONNX file per Triton model name in the plan's precision, from the export cache (exported when
    missing); int8 is the QDQ flavour TensorRT parses (`stdr_deploy.quantize.FLAVOURS`)."""
    from stdr_deploy.onnx_files import ensure_onnx, export_model, onnx_precision
    from stdr_deploy.quantize import quantize_detector

    weights = weights or {}
    paths = {}
    for m in plan.models():
        precision = onnx_precision(m.precision)
        if precision == "int8":
            fp32 = export_model(m.family, weights=weights.get(m.family), progress=False)
            paths[m.triton_name] = quantize_detector(fp32, flavour="tensorrt").onnx_path
        else:
            paths[m.triton_name] = ensure_onnx(m.family, weights.get(m.family), precision=precision)
    return paths


def profile_text(spec: BuildSpec) -> str:
    """`input 1x3x32x32 / 1x3x736x736 / 1x3x2560x2560`: min / opt / max per input."""
    return "; ".join(
        f"{p.name} {'x'.join(map(str, p.min))} / {'x'.join(map(str, p.opt))} / {'x'.join(map(str, p.max))}"
        for p in spec.profiles
    )


def _require_tensorrt_plan(plan: Plan) -> None:
    if plan.variant != "tensorrt_plan":
        raise UserInputError(
            f"the plan uses the {plan.variant} variant: there are no TensorRT engines to build",
            hint="plan with `--variant tensorrt_plan` on a GPU host to serve TensorRT engines",
        )


def _gpu_index(model: ModelPlan) -> int:
    """Engines are built for (and checked on) the first GPU the model is planned on."""
    return model.gpus[0] if model.gpus else 0


def _onnx_path(model: ModelPlan, onnx_paths: Mapping[str, Path]) -> Path:
    if model.triton_name not in onnx_paths:
        raise UserInputError(
            f"no ONNX model given for {model.triton_name!r}", hint="export it with `stdr-deploy export`"
        )
    return Path(onnx_paths[model.triton_name])


def _spec_for(
    model: ModelPlan, onnx_paths: Mapping[str, Path], cache: EngineCache, fingerprint: HostFingerprint
) -> BuildSpec:
    graph = inspect_onnx(_onnx_path(model, onnx_paths))
    return build_spec(model, graph, timing_cache=cache.timing_cache_path(fingerprint))


def _trt_runner(path: Path, spec: BuildSpec, gpu: int) -> Runner:
    from stdr_deploy.engines.runner import TrtRunner

    return TrtRunner(path, device=gpu)


def _build_one(
    spec: BuildSpec,
    fingerprint: HostFingerprint,
    gpu: int,
    builder: Builder,
    cache: EngineCache,
    make_runner: MakeRunner,
    progress: Progress,
) -> BuildResult:
    key = cache_key(spec, fingerprint)
    folder = cache.entry(fingerprint, key)
    cached, reason = cache.lookup(fingerprint, key)
    if cached is not None:
        if builder.loads(cached.engine_path.read_bytes()):
            progress(f"{spec.triton_name}: cached engine {cached.engine_path}")
            return _result(spec, fingerprint, key, folder, cached.report, cached=True)
        reason = f"engine does not load with {builder.name} {builder.version} (stale)"
    progress(f"{spec.triton_name}: building ({reason})")
    built, outcome, attempts = _build_with_retries(spec, builder, cache.timing_cache_path(fingerprint), progress)
    report = {
        "format_version": REPORT_FORMAT,
        "key": key,
        "fingerprint": asdict(fingerprint),
        "status": "failed",
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rebuilt_because": reason,
        "requested_spec": spec.to_dict(),
        "spec": built.to_dict(),
        "attempts": attempts,
        "trtexec": shell_line(trtexec_command(built, folder / ENGINE_FILE)),
    }
    staging = staging_dir(folder)
    try:
        if outcome.engine is None:
            _keep_report_only(staging, folder, report)
            _raise_build_failure(spec, attempts, folder)
        engine_path = staging / ENGINE_FILE
        engine_path.write_bytes(outcome.engine)
        progress(f"{spec.triton_name}: checking the engine against ONNX Runtime")
        try:
            report["accuracy"] = _check_accuracy(engine_path, built, gpu, make_runner)
        except ValidationError as exc:
            report["accuracy"] = {"passed": False, "error": str(exc)}
            engine_path.unlink()
            _keep_report_only(staging, folder, report)
            raise
        report.update(status="ok", engine_sha256=sha256_file(engine_path), engine_bytes=len(outcome.engine))
        write_json_atomic(staging / REPORT_FILE, report)
        replace_dir_atomic(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _result(spec, fingerprint, key, folder, report, cached=False)


def _build_with_retries(
    spec: BuildSpec, builder: Builder, timing_path: Path, progress: Progress
) -> tuple[BuildSpec, BuildOutcome, list[dict[str, Any]]]:
    """Build `spec`, then its smaller retry specs while the builder runs out of memory.

    Returns the last spec tried, its outcome and every attempt's record. The builder reads the
    timing cache and writes it back after each attempt (it is valid even when a build failed).
    """
    timing_path.parent.mkdir(parents=True, exist_ok=True)
    attempts = []
    for number, candidate in enumerate((spec, *retry_specs(spec)), start=1):
        progress(f"{spec.triton_name}: attempt {number}, max shape {_max_shapes(candidate)}")
        outcome = builder.build(candidate, timing_path)
        attempts.append(_attempt(number, candidate, outcome))
        if outcome.engine is not None or not outcome.out_of_memory:
            break
    return candidate, outcome, attempts


def _check_accuracy(engine_path: Path, spec: BuildSpec, gpu: int, make_runner: MakeRunner) -> dict[str, Any]:
    return check_engine_accuracy(
        make_runner(engine_path, spec, gpu),
        OnnxRunner(spec.onnx_path),
        validation_feeds(spec),
        engine_tolerance(spec),
        name=f"{spec.triton_name} engine ({spec.precision})",
    )


def _result(
    spec: BuildSpec, fingerprint: HostFingerprint, key: str, folder: Path, report: dict[str, Any], cached: bool
) -> BuildResult:
    return BuildResult(
        triton_name=spec.triton_name,
        engine_path=folder / ENGINE_FILE,
        report_path=folder / REPORT_FILE,
        key=key,
        fingerprint=fingerprint,
        requested=spec,
        spec=BuildSpec.from_dict(report["spec"]),
        cached=cached,
        report=report,
    )


def _attempt(number: int, spec: BuildSpec, outcome: BuildOutcome) -> dict[str, Any]:
    return {
        "attempt": number,
        "max_shapes": _max_shapes(spec),
        "workspace_bytes": spec.workspace_bytes,
        "ok": outcome.engine is not None,
        "out_of_memory": outcome.out_of_memory,
        "seconds": round(outcome.seconds, 3),
        "messages": list(outcome.messages[-MESSAGES_KEPT:]),
    }


def _max_shapes(spec: BuildSpec) -> dict[str, list[int]]:
    return {p.name: list(p.max) for p in spec.profiles}


def _keep_report_only(staging: Path, folder: Path, report: dict[str, Any]) -> None:
    """Leave only the report where the engine would be, so the failure can be read later."""
    write_json_atomic(staging / REPORT_FILE, report)
    replace_dir_atomic(staging, folder)


def _raise_build_failure(spec: BuildSpec, attempts: list[dict[str, Any]], folder: Path) -> None:
    last = attempts[-1]
    detail = "\n".join(last["messages"][-5:]) or "no message from TensorRT"
    where = f"every attempt is in {folder / REPORT_FILE}"
    if last["out_of_memory"]:
        raise HostUnsupported(
            f"{spec.triton_name}: out of GPU memory in all {len(attempts)} attempts, down to max shape "
            f"{last['max_shapes']}:\n{detail}",
            hint=f"free GPU memory (other processes?) or plan a smaller profile; {where}",
        )
    raise ValidationError(f"{spec.triton_name}: TensorRT could not build the engine:\n{detail}", hint=where)
