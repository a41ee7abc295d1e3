"""torch -> ONNX: export, check, simplify, prove parity, and cache the result by content.

ONNX-native families (`spec.onnx_native`, e.g. PP-OCR) skip load and export: their official
ONNX file is checked, its IO renamed to the spec's names, simplified, and the parity stage
compares each candidate with the original file in ONNX Runtime instead of torch.

One export is five stages, each timed and shown as a progress line:
1. **load** the torch model with its weights (fp32, eval);
2. **export** with the legacy TorchScript exporter (`dynamo=False`): the only exporter in torch
   2.13 that keeps opset 11/14 and a truly dynamic batch (see the PARSeq oracle's export facts);
3. **check** with `onnx.checker` (full check, i.e. with shape inference), and that ONNX
   Runtime can load the graph at all (a too-old opset fails here);
4. **simplify** with onnxsim and onnxslim (each if installed; a crash skips it);
5. **parity**: ONNX Runtime (CPU) against torch on the spec's validation shapes, which differ
   from the export shape. Candidates are tried smallest graph first; the first whose every
   output is within the spec's atol wins, the unsimplified export being the last resort. If
   none passes, the export fails with the numbers.

Results live in `cache_dir()/onnx/<key>/{model.onnx,report.json}`, where the key hashes
everything the bytes depend on: weights sha256, the model spec, opset, options, tool versions
and the source of the model and export code. A folder is built under a temporary name and
renamed into place only once complete, so a crash never leaves a half-written model where the
cache looks; the report stores the model's sha256, so a corrupted cached file is re-exported.
A per-key file lock makes concurrent exports of the same model wait for one another.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

from stdr_deploy import __version__
from stdr_deploy.compare import Comparison, compare_outputs
from stdr_deploy.errors import UserInputError, ValidationError, require_onnx
from stdr_deploy.plan_schema import ONNX_PRECISIONS, PRECISIONS
from stdr_deploy.workspace import atomic_path, cache_dir, replace_dir_atomic, sha256_file, write_json_atomic

if TYPE_CHECKING:
    import onnx
    import torch
    from rich.progress import Progress

    from stdr_deploy.models import ModelSpec

REPORT_FORMAT = 1
# The TorchScript exporter's range in torch 2.x. Measured (torch 2.13, ORT 1.32): craft, crnn-en
# and parseq export correctly from their spec opset up to 20; below it craft 9/10 export an
# Upsample that differs from torch by 0.09 (parity fails), crnn-en 7/8 use ConstantFill, which
# ONNX Runtime lacks, and parseq <= 13 lacks unflatten / scaled_dot_product_attention.
MIN_OPSET = 7
MAX_OPSET = 20
PARITY_THREADS = 2  # fixed, so parity figures do not depend on the host's core count
SIMPLIFIERS = ("onnxsim", "onnxslim")
# Source files whose content changes what an export produces (hashed into the cache key).
_RECIPE_FILES = ("export.py", "weights.py", "models/*.py")


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    report_path: Path
    report: dict[str, Any]
    cached: bool  # True when an earlier export was reused


def export_model(
    name: str,
    *,
    weights: str | Path | None = None,
    out: Path | None = None,
    opset: int | None = None,
    with_features: bool = False,
    precision: str = "fp32",
    force: bool = False,
    progress: bool = True,
) -> ExportResult:
    """Export `name` to ONNX (or reuse the cached export) and return where it is.

    `weights` is a file or a weights registry name (default: the spec's). `with_features` adds
    CRAFT's 32-channel feature map as a second output `output1` (unused by the pipeline).
    `precision` "fp16" then converts the fp32 export to mixed precision (`stdr_deploy.precision`),
    "int8" quantizes it (craft only, `stdr_deploy.quantize`); both are cached beside it.
    `out` also copies the model there, with its report beside it as `<out>.json`.
    """
    from stdr_deploy import weights as weights_registry
    from stdr_deploy.models import get_spec

    spec = get_spec(name)
    opset = resolve_opset(spec, opset)
    if with_features and not spec.optional_outputs:
        raise UserInputError(f"{name} has no optional feature output", hint="--with-features only applies to craft")
    check_precision(name, precision, with_features)
    weights_path = weights_registry.resolve_weights(
        weights if weights is not None else spec.default_weights, progress=progress
    )
    weights_sha256 = sha256_file(weights_path)
    key = cache_key(spec, weights_sha256, opset, with_features)
    entry = cache_dir() / "onnx" / key
    with _progress(progress, spec.name) as bar:
        job = _Job(spec, Path(weights_path), weights_sha256, opset, with_features, key, Stages(bar))
        result = cached_or_built(entry, lambda folder: _build(job, folder), force=force)
        if precision == "fp16":
            from stdr_deploy.precision import half_precision

            result = half_precision(result, stages=Stages(bar), force=force)
        elif precision == "int8":
            from stdr_deploy.quantize import quantize_detector

            result = quantize_detector(result, stages=Stages(bar), force=force)
    return _copy_to(result, Path(out)) if out is not None else result


def ensure_onnx(name: str, weights: str | Path | None = None, **options: Any) -> Path:
    """The ONNX file for `name`: cached if possible, exported otherwise (no progress output)."""
    options.setdefault("progress", False)
    return export_model(name, weights=weights, **options).onnx_path


def onnx_precision(plan_precision: str) -> str:
    """The ONNX file a plan's model is served from: each precision is its own graph (fp16 mixed
    precision, int8 QDQ), consumed unchanged by ONNX Runtime and by strongly typed TensorRT."""
    if plan_precision not in PRECISIONS:
        raise UserInputError(f"unknown precision {plan_precision!r}", hint=f"precisions: {', '.join(PRECISIONS)}")
    return plan_precision


def check_precision(name: str, precision: str, with_features: bool = False) -> None:
    """The precisions of `ONNX_PRECISIONS[name]`; fp16 and int8 only for the standard outputs."""
    available = ONNX_PRECISIONS.get(name, ("fp32",))
    if precision not in PRECISIONS:
        raise UserInputError(f"unknown precision {precision!r}", hint=f"precisions: {', '.join(PRECISIONS)}")
    if precision not in available or (precision != "fp32" and with_features):
        raise UserInputError(
            f"{precision} is not available for {name}{' with --with-features' if with_features else ''}",
            hint=f"{name} is made in {', '.join(available)}" + (" (without --with-features)" if with_features else ""),
        )


def resolve_opset(spec: ModelSpec, opset: int | None) -> int:
    """The spec's opset by default; refuse opsets the exporter cannot produce at all."""
    if opset is None:
        return spec.opset
    if spec.onnx_native and opset != spec.opset:
        raise UserInputError(
            f"{spec.name} is ONNX-native at opset {spec.opset}; it is not re-exported",
            hint=f"omit --opset (or pass {spec.opset})",
        )
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserInputError(
            f"opset {opset} is outside what the exporter supports ({MIN_OPSET}..{MAX_OPSET})",
            hint=f"{spec.name} exports correctly at opsets {spec.opset}..{MAX_OPSET} (default {spec.opset})",
        )
    return opset


def tool_versions() -> dict[str, str | None]:
    """Versions that can change the exported bytes (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "stdr_deploy": __version__}
    for dist in ("torch", "onnx", "onnxruntime", *SIMPLIFIERS):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    if versions["onnxruntime"] is None:  # the GPU build installs the same module
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions["onnxruntime"] = importlib.metadata.version("onnxruntime-gpu")
    return versions


def cache_key(spec: ModelSpec, weights_sha256: str, opset: int, with_features: bool) -> str:
    """`<model>-opset<N>[-features]-<hash>`: readable prefix, content hash for the rest."""
    content = {
        "format": REPORT_FORMAT,
        "spec": spec.to_dict(),
        "weights_sha256": weights_sha256,
        "opset": opset,
        "with_features": with_features,
        "versions": tool_versions(),
        "recipe_sha256": _recipe_sha256(),
    }
    # No `default=str`: a value without a stable JSON form (e.g. a function) must fail loudly,
    # not slip its memory address into the key.
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=_mapping_as_dict).encode()).hexdigest()
    return f"{spec.name}-opset{opset}{'-features' if with_features else ''}-{digest[:16]}"


def cached_export(entry: Path) -> ExportResult | None:
    """The export stored in `entry` if it is complete and its model matches the report's hash."""
    model, report_path = entry / "model.onnx", entry / "report.json"
    if not (model.is_file() and report_path.is_file()):
        return None
    try:
        report = json.loads(report_path.read_text())
        expected = report["onnx"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if sha256_file(model) != expected:
        return None
    return ExportResult(model, report_path, report, cached=True)


def graph_sha256(model: onnx.ModelProto) -> str:
    """Hash of the network's structure (nodes, IO, initializer names and shapes), not its weights."""
    digest = hashlib.sha256()
    graph = model.graph
    for part in (*graph.input, *graph.output, *graph.node):
        digest.update(part.SerializeToString(deterministic=True))
    for init in graph.initializer:
        digest.update(f"{init.name}:{init.data_type}:{list(init.dims)}".encode())
    return digest.hexdigest()


# --- one export -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    spec: ModelSpec
    weights_path: Path
    weights_sha256: str
    opset: int
    with_features: bool
    key: str
    stages: Stages

    @property
    def output_names(self) -> list[str]:
        extra = self.spec.optional_outputs if self.with_features else ()
        return [t.name for t in (*self.spec.outputs, *extra)]

    @property
    def model_options(self) -> dict[str, Any]:
        return {"with_features": True} if self.with_features else {}


@dataclass(frozen=True)
class _Candidate:
    """One graph that may become the final model: the raw export or a simplifier's output."""

    name: str
    model: onnx.ModelProto
    seconds: float

    @property
    def nodes(self) -> int:
        return len(self.model.graph.node)


def cached_or_built(
    entry: Path, build: Callable[[Path], dict[str, Any]], *, force: bool = False
) -> ExportResult:
    """The complete model in cache folder `entry`, or `build(staging)`'s, swapped in whole.

    `build` writes `model.onnx` and `report.json` (with `onnx.sha256`) into the folder it is
    given and returns the report. The key's lock is held throughout, so concurrent callers
    of one key wait and then reuse the first one's result.
    """
    with _locked(entry):
        result = None if force else cached_export(entry)
        if result is not None:
            return result
        for stale in entry.parent.glob(f".{entry.name}.*.staging"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".staging", dir=entry.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the cache may be read by a server's user
        try:
            report = build(staging)
            replace_dir_atomic(staging, entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(entry / "model.onnx", entry / "report.json", report, cached=False)


def _build(job: _Job, folder: Path) -> dict[str, Any]:
    onnx = require_onnx(f"exporting {job.spec.name}", "export")

    from stdr_deploy.models import load_model

    started = time.perf_counter()
    spec, stages = job.spec, job.stages
    if spec.onnx_native:
        return _build_native(job, folder, started)
    with stages.stage("load"):
        model = load_model(spec.name, weights=job.weights_path, **job.model_options)
    raw_path = folder / "exported.onnx"
    with stages.stage("export"):
        _torch_export(job, model, raw_path)
    with stages.stage("check"):
        _full_check(raw_path, job)
        raw = onnx.load(str(raw_path))
        _runtime_check(raw, job)
    candidates = _simplify(raw, stages)
    inputs = parity_inputs(spec)
    with stages.stage("parity", total=2 * len(inputs)) as task:
        expected = []
        for x in inputs:
            expected.append(_torch_outputs(model, x, job.output_names))
            task.advance()
        final, comparisons, tried = _first_passing(candidates, inputs, expected, spec.atol, job, task)
    del model
    final_path = folder / "model.onnx"
    onnx.save(final.model, str(final_path))
    raw_path.unlink()
    if final.name != "none":
        _full_check(final_path, job)
    report = _report(job, raw, final, candidates, tried, inputs, comparisons, final_path)
    report["seconds"] = {**stages.seconds, "total": round(time.perf_counter() - started, 3)}
    write_json_atomic(folder / "report.json", report)
    return json.loads((folder / "report.json").read_text())  # the same form a cache hit returns


def _build_native(job: _Job, folder: Path, started: float) -> dict[str, Any]:
    """Official ONNX file -> checked, IO renamed, simplified, parity against the original."""
    import onnx

    spec, stages = job.spec, job.stages
    raw_path = folder / "exported.onnx"
    with stages.stage("check"):
        onnx.checker.check_model(str(job.weights_path), full_check=True)
        original = onnx.load(str(job.weights_path))
        raw = _renamed(original, {theirs: ours for ours, theirs in spec.onnx_native.items()}, job)
        onnx.save(raw, str(raw_path))
        _full_check(raw_path, job)
        _runtime_check(raw, job)
    candidates = _simplify(raw, stages)
    inputs = parity_inputs(spec)
    with stages.stage("parity", total=2 * len(inputs)) as task:
        reference = _ort_session(original)
        upstream_in = spec.onnx_native[spec.input.name]
        expected = []
        for x in inputs:
            outs = reference.run([spec.onnx_native[t.name] for t in spec.outputs], {upstream_in: x})
            expected.append({t.name: o for t, o in zip(spec.outputs, outs)})
            task.advance()
        del reference
        final, comparisons, tried = _first_passing(candidates, inputs, expected, spec.atol, job, task)
    final_path = folder / "model.onnx"
    onnx.save(final.model, str(final_path))
    raw_path.unlink()
    report = _report(job, raw, final, candidates, tried, inputs, comparisons, final_path)
    report["exporter"] = f"ONNX-native: {job.weights_path.name} checked, IO renamed {spec.onnx_native}"
    report["seconds"] = {**stages.seconds, "total": round(time.perf_counter() - started, 3)}
    write_json_atomic(folder / "report.json", report)
    return json.loads((folder / "report.json").read_text())


def _renamed(model: onnx.ModelProto, names: dict[str, str], job: _Job) -> onnx.ModelProto:
    """A copy whose graph inputs/outputs (and every node edge using them) carry our names."""
    import onnx

    graph_io = {v.name for v in (*model.graph.input, *model.graph.output)}
    if set(names) != graph_io:
        raise ValidationError(
            f"{job.spec.name}: the ONNX file's inputs/outputs are {sorted(graph_io)}, expected {sorted(names)}",
            hint=f"pass the official {job.spec.default_weights} file (stdr-deploy weights fetch {job.spec.default_weights})",
        )
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in (*copy.graph.input, *copy.graph.output):
        value.name = names[value.name]
    for node in copy.graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    return copy


def _torch_export(job: _Job, model: torch.nn.Module, path: Path) -> None:
    """Trace with a batch-2 example so no batch-1 shortcut gets baked into the graph."""
    import torch

    spec = job.spec
    example = torch.from_numpy(spec.example_input(batch=2, seed=0))
    try:
        quiet = _native_stderr_discarded() if job.opset != spec.opset else contextlib.nullcontext()
        with warnings.catch_warnings(), torch.no_grad(), quiet:
            # The legacy exporter is deprecated in torch 2.9+ and traces Python-side shape
            # arithmetic: these warnings are expected and say nothing about this export. Its
            # UserWarnings (e.g. "LSTM traced at batch 2") concern what the parity stage checks.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[t.name for t in spec.inputs],
                output_names=job.output_names,
                dynamic_axes=spec.dynamic_axes(with_optional=job.with_features),
                opset_version=job.opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except torch.onnx.errors.OnnxExporterError as exc:
        if job.opset == spec.opset:
            raise
        raise UserInputError(
            f"{spec.name} cannot be expressed in ONNX opset {job.opset}: {_first_line(exc)}", hint=_opset_hint(job)
        ) from exc


@contextlib.contextmanager
def _native_stderr_discarded() -> Iterator[None]:
    """Silence C++ writes to stderr (and everything else on fd 2, progress included).

    Used only at a non-default opset, where an export may fail for want of an operator: torch
    then dumps the whole TorchScript graph there (thousands of lines) although the exception
    already says what failed. At the tested opset a failure is a bug and the dump helps.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _runtime_check(model: onnx.ModelProto, job: _Job) -> None:
    """Fail early when ONNX Runtime cannot even load the graph (e.g. ops of too old an opset)."""
    try:
        _ort_session(model)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors on load
        raise ValidationError(
            f"ONNX Runtime cannot load the {job.spec.name} export at opset {job.opset}: {_first_line(exc)}",
            hint=_opset_hint(job),
        ) from exc


def _full_check(path: Path, job: _Job) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ValidationError(
            f"{job.spec.name} export at opset {job.opset} fails onnx.checker: {_first_line(exc)}",
            hint=_opset_hint(job),
        ) from exc


def _simplify(raw: onnx.ModelProto, stages: Stages) -> list[_Candidate]:
    """Raw export plus each installed simplifier's output, smallest graph first (raw last)."""
    candidates = []
    with stages.stage("simplify", total=len(SIMPLIFIERS)) as task:
        for name in SIMPLIFIERS:
            start = time.perf_counter()
            model = _run_simplifier(name, raw)
            if model is not None:
                candidates.append(_Candidate(name, model, round(time.perf_counter() - start, 3)))
            task.advance()
    candidates.sort(key=lambda c: (c.nodes, c.model.ByteSize()))
    return [*candidates, _Candidate("none", raw, 0.0)]


def _run_simplifier(name: str, raw: onnx.ModelProto) -> onnx.ModelProto | None:
    """A simplifier that is missing or crashes is skipped: the parity check decides anyway."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(raw)
    try:
        if name == "onnxsim":
            import onnxsim

            model, ok = onnxsim.simplify(copy, check_n=0)
            return model if ok else None
        import onnxslim

        return onnxslim.slim(copy)
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - third-party optimisers fail in many ways
        warnings.warn(f"{name} failed, skipping it: {_first_line(exc)}", stacklevel=2)
        return None


def parity_inputs(spec: ModelSpec) -> list[np.ndarray]:
    """Seeded inputs at the spec's validation shapes (each unlike the export example)."""
    return [
        spec.example_input(batch=shape[0], height=shape[2], width=shape[3], seed=1 + i)
        for i, shape in enumerate(spec.validation_shapes)
    ]


def _torch_outputs(model: torch.nn.Module, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(x))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    result = {name: t.numpy().copy() for name, t in zip(names, outs)}
    del out, outs
    gc.collect()
    return result


def _first_passing(
    candidates: list[_Candidate],
    inputs: list[np.ndarray],
    expected: list[dict[str, np.ndarray]],
    atol: float,
    job: _Job,
    task: _StageTask,
) -> tuple[_Candidate, list[Comparison], dict[str, str]]:
    """The first candidate within `atol` on every input; ValidationError with numbers if none."""
    tried: dict[str, str] = {}
    failures = []
    for number, candidate in enumerate(candidates):
        if number:
            task.extend(len(inputs))
        try:
            session = _ort_session(candidate.model)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors on load
            tried[candidate.name] = "failed"
            failures.append(f"{candidate.name}: ONNX Runtime cannot load it: {_first_line(exc)}")
            continue
        comparisons = _ort_parity(session, inputs, expected, atol, task)
        del session
        failed = [(x.shape, c) for x, c in zip(inputs, comparisons) if not c]
        if not failed:
            tried[candidate.name] = "passed"
            return candidate, comparisons, tried
        tried[candidate.name] = "failed"
        shape, comparison = failed[0]
        failures.append(f"{candidate.name} at input {list(shape)}:\n  " + comparison.describe().replace("\n", "\n  "))
    raise ValidationError(
        f"{job.spec.name} ONNX export at opset {job.opset} does not match torch (atol {atol:g}):\n"
        + "\n".join(failures),
        hint=_opset_hint(job),
    )


def _ort_session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = PARITY_THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _ort_parity(
    session: Any,
    inputs: list[np.ndarray],
    expected: list[dict[str, np.ndarray]],
    atol: float,
    task: _StageTask,
) -> list[Comparison]:
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    comparisons = []
    for x, exp in zip(inputs, expected):
        got = dict(zip(names, session.run(None, {input_name: x})))
        comparisons.append(compare_outputs(exp, got, atol=atol))
        del got
        gc.collect()
        task.advance()
    return comparisons


def _report(
    job: _Job,
    raw: onnx.ModelProto,
    final: _Candidate,
    candidates: list[_Candidate],
    tried: dict[str, str],
    inputs: list[np.ndarray],
    comparisons: list[Comparison],
    final_path: Path,
) -> dict[str, Any]:
    spec = job.spec
    return {
        "format": REPORT_FORMAT,
        "model": spec.name,
        "triton_name": spec.triton_name,
        "cache_key": job.key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "exporter": "torch.onnx.export(dynamo=False)",
        "opset": job.opset,
        "with_features": job.with_features,
        "versions": tool_versions(),
        "weights": {"path": str(job.weights_path), "sha256": job.weights_sha256},
        "onnx": {
            "sha256": sha256_file(final_path),
            "graph_sha256": graph_sha256(final.model),
            "bytes": final_path.stat().st_size,
            "inputs": _io_dims(final.model.graph.input),
            "outputs": _io_dims(final.model.graph.output),
        },
        "nodes": {"exported": len(raw.graph.node), "final": final.nodes},
        "simplifier": {
            "chosen": final.name,
            "candidates": {
                c.name: {"nodes": c.nodes, "seconds": c.seconds, "parity": tried.get(c.name, "not run")}
                for c in candidates
            },
        },
        "parity": {
            "runtime": f"onnxruntime CPUExecutionProvider, {PARITY_THREADS} threads",
            "atol": spec.atol,
            "max_abs": max(c.max_abs for c in comparisons),
            "shapes": [
                {"input_shape": list(x.shape), "passed": bool(c), "outputs": c.to_dict()["outputs"]}
                for x, c in zip(inputs, comparisons)
            ],
        },
    }


def _io_dims(values: Any) -> dict[str, list[int | str]]:
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values
    }


def _copy_to(result: ExportResult, out: Path) -> ExportResult:
    """Copy the cached model to `out` with its report as `<out>.json`, both atomically."""
    with atomic_path(out) as tmp:
        shutil.copyfile(result.onnx_path, tmp)
    report_path = out.with_name(out.name + ".json")
    with atomic_path(report_path) as tmp:
        shutil.copyfile(result.report_path, tmp)
    return ExportResult(out, report_path, result.report, result.cached)


# --- helpers --------------------------------------------------------------------------------


def _mapping_as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} has no stable JSON form for a cache key")


def _recipe_sha256() -> str:
    """Hash of the code that turns weights into an ONNX file, so a code change re-exports."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for pattern in _RECIPE_FILES:
        for path in sorted(root.glob(pattern)):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _opset_hint(job: _Job) -> str:
    spec = job.spec
    if job.opset != spec.opset:
        return (
            f"{spec.name} exports correctly at opsets {spec.opset}..{MAX_OPSET}; "
            f"retry with the default --opset {spec.opset}"
        )
    return "this is a bug in the model or the exporter; please report it with the message above"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _locked(entry: Path) -> Iterator[None]:
    """Serialise exports of one cache key across processes (released by the OS on death)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.parent / f".{entry.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _progress(enabled: bool, name: str) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    from stdr_deploy.progress import PlainProgress, interactive

    if not interactive():  # a log: timestamped lines, as a live display would draw nothing
        with PlainProgress(f"export {name}") as plain:
            yield plain
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        yield bar


class Stages:
    """Times each stage and, with a progress display, shows one line per stage."""

    def __init__(self, bar: Progress | None) -> None:
        self.bar = bar
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, total: int = 1) -> Iterator[_StageTask]:
        task = _StageTask(self.bar, name, total)
        start = time.perf_counter()
        yield task
        self.seconds[name] = round(time.perf_counter() - start, 3)
        task.finish()


class _StageTask:
    """One progress line; counts steps (e.g. parity runs) when a display is shown."""

    def __init__(self, bar: Progress | None, name: str, total: int) -> None:
        self.bar = bar
        self.total = total
        self.task = bar.add_task(name, total=total) if bar is not None else None

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def extend(self, steps: int) -> None:
        """More work than planned (a parity retry with the next candidate)."""
        self.total += steps
        if self.bar is not None:
            self.bar.update(self.task, total=self.total)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=self.total)
