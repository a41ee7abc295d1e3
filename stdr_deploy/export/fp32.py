"""One fp32 export, in stages, each timed and shown as a progress line:

1. **load** the torch model with its weights (fp32, eval);
2. **export** with the legacy TorchScript exporter (`graph.torch_export`);
3. **check** with `onnx.checker` and ONNX Runtime;
4. **simplify** with onnxsim and onnxslim (`simplify`);
5. **parity**: ONNX Runtime against torch on the spec's validation shapes (`parity`).

ONNX-native families (`spec.onnx_native`, e.g. PP-OCR) skip load and export: their official
ONNX file is checked, its IO renamed to the spec's names, simplified, and the parity stage
compares each candidate with the original file in ONNX Runtime instead of torch.

The result is cached (`cache`) under a key that hashes everything the bytes depend on: weights
sha256, the model spec, opset, options, tool versions and the source of the model and export code.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from stdr_deploy import __version__
from stdr_deploy.compare import Comparison
from stdr_deploy.errors import UserInputError, require_onnx
from stdr_deploy.export.cache import ExportResult, cached_or_built
from stdr_deploy.export.graph import (
    MAX_OPSET,
    MIN_OPSET,
    ORT_THREADS,
    full_check,
    graph_sha256,
    io_dims,
    ort_session,
    renamed,
    runtime_check,
    torch_export,
)
from stdr_deploy.export.parity import first_passing, parity_inputs, torch_outputs
from stdr_deploy.export.simplify import SIMPLIFIERS, UNSIMPLIFIED, Candidate, simplify
from stdr_deploy.workspace import cache_dir, sha256_file, write_json_atomic

if TYPE_CHECKING:
    import onnx

    from stdr_deploy.models import ModelSpec
    from stdr_deploy.progress import Stages

REPORT_FORMAT = 1
# Source files whose content changes what an export produces (hashed into the cache key).
_RECIPE_FILES = ("export/*.py", "weights.py", "models/*.py")


@dataclass(frozen=True)
class Fp32Export:
    """What one fp32 export is made from, and its cache key."""

    spec: ModelSpec
    weights_path: Path
    weights_sha256: str
    opset: int
    with_features: bool
    key: str

    @property
    def output_names(self) -> list[str]:
        extra = self.spec.optional_outputs if self.with_features else ()
        return [t.name for t in (*self.spec.outputs, *extra)]

    @property
    def model_options(self) -> dict[str, Any]:
        return {"with_features": True} if self.with_features else {}


def fp32_export(spec: ModelSpec, weights: str | Path | None, opset: int, with_features: bool, progress: bool) -> Fp32Export:
    """The export of `spec` from `weights` (a file or registry name; default: the spec's), weights resolved."""
    from stdr_deploy import weights as weights_registry

    weights_path = weights_registry.resolve_weights(
        weights if weights is not None else spec.default_weights, progress=progress
    )
    weights_sha256 = sha256_file(weights_path)
    key = cache_key(spec, weights_sha256, opset, with_features)
    return Fp32Export(spec, Path(weights_path), weights_sha256, opset, with_features, key)


def cached_or_exported(job: Fp32Export, stages: Stages, *, force: bool = False) -> ExportResult:
    """The cached fp32 export of `job`, or a new one (built whole under the key's lock)."""
    entry = cache_dir() / "onnx" / job.key
    return cached_or_built(entry, lambda folder: _build(job, folder, stages), force=force)


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


def _build(job: Fp32Export, folder: Path, stages: Stages) -> dict[str, Any]:
    onnx = require_onnx(f"exporting {job.spec.name}", "export")

    from stdr_deploy.models import load_model

    started = time.perf_counter()
    spec = job.spec
    if spec.onnx_native:
        return _build_native(job, folder, stages, started)
    with stages.stage("load"):
        model = load_model(spec.name, weights=job.weights_path, **job.model_options)
    raw_path = folder / "exported.onnx"
    with stages.stage("export"):
        torch_export(spec, model, raw_path, job.opset, job.output_names, job.with_features)
    with stages.stage("check"):
        full_check(raw_path, spec, job.opset)
        raw = onnx.load(str(raw_path))
        runtime_check(raw, spec, job.opset)
    candidates = simplify(raw, stages)
    inputs = parity_inputs(spec)
    with stages.stage("parity", total=2 * len(inputs)) as task:
        expected = []
        for x in inputs:
            expected.append(torch_outputs(model, x, job.output_names))
            task.advance()
        final, comparisons, tried = first_passing(candidates, inputs, expected, spec, job.opset, task)
    del model
    final_path = folder / "model.onnx"
    onnx.save(final.model, str(final_path))
    raw_path.unlink()
    if final.name != UNSIMPLIFIED:
        full_check(final_path, spec, job.opset)
    report = _report(job, raw, final, candidates, tried, inputs, comparisons, final_path)
    report["seconds"] = {**stages.seconds, "total": round(time.perf_counter() - started, 3)}
    write_json_atomic(folder / "report.json", report)
    return json.loads((folder / "report.json").read_text())  # the same form a cache hit returns


def _build_native(job: Fp32Export, folder: Path, stages: Stages, started: float) -> dict[str, Any]:
    """Official ONNX file -> checked, IO renamed, simplified, parity against the original."""
    import onnx

    spec = job.spec
    raw_path = folder / "exported.onnx"
    with stages.stage("check"):
        onnx.checker.check_model(str(job.weights_path), full_check=True)
        original = onnx.load(str(job.weights_path))
        raw = renamed(original, {theirs: ours for ours, theirs in spec.onnx_native.items()}, spec)
        onnx.save(raw, str(raw_path))
        full_check(raw_path, spec, job.opset)
        runtime_check(raw, spec, job.opset)
    candidates = simplify(raw, stages)
    inputs = parity_inputs(spec)
    with stages.stage("parity", total=2 * len(inputs)) as task:
        reference = ort_session(original)
        upstream_in = spec.onnx_native[spec.input.name]
        expected = []
        for x in inputs:
            outs = reference.run([spec.onnx_native[t.name] for t in spec.outputs], {upstream_in: x})
            expected.append({t.name: o for t, o in zip(spec.outputs, outs)})
            task.advance()
        del reference
        final, comparisons, tried = first_passing(candidates, inputs, expected, spec, job.opset, task)
    final_path = folder / "model.onnx"
    onnx.save(final.model, str(final_path))
    raw_path.unlink()
    report = _report(job, raw, final, candidates, tried, inputs, comparisons, final_path)
    report["exporter"] = f"ONNX-native: {job.weights_path.name} checked, IO renamed {spec.onnx_native}"
    report["seconds"] = {**stages.seconds, "total": round(time.perf_counter() - started, 3)}
    write_json_atomic(folder / "report.json", report)
    return json.loads((folder / "report.json").read_text())


def _report(
    job: Fp32Export,
    raw: onnx.ModelProto,
    final: Candidate,
    candidates: list[Candidate],
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
            "inputs": io_dims(final.model.graph.input),
            "outputs": io_dims(final.model.graph.output),
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
            "runtime": f"onnxruntime CPUExecutionProvider, {ORT_THREADS} threads",
            "atol": spec.atol,
            "max_abs": max(c.max_abs for c in comparisons),
            "shapes": [
                {"input_shape": list(x.shape), "passed": bool(c), "outputs": c.to_dict()["outputs"]}
                for x, c in zip(inputs, comparisons)
            ],
        },
    }


def _mapping_as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} has no stable JSON form for a cache key")


def _recipe_sha256() -> str:
    """Hash of the code that turns weights into an ONNX file, so a code change re-exports."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for pattern in _RECIPE_FILES:
        for path in sorted(root.glob(pattern)):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def fp32_onnx(name: str) -> Path:
    """The fp32 export of `name` from its default weights: cached, else exported quietly."""
    from stdr_deploy.models import get_spec
    from stdr_deploy.progress import Stages

    spec = get_spec(name)
    return cached_or_exported(fp32_export(spec, None, spec.opset, False, False), Stages(None)).onnx_path
