"""Content-addressed cache folders of ONNX models, each built whole under a lock.

An entry is `<cache>/onnx/<key>/{model.onnx,report.json}`, where the key hashes everything the
bytes depend on. A folder is built under a temporary name and renamed into place only once
complete, so a crash never leaves a half-written model where the cache looks; the report
stores the model's sha256, so a corrupted cached file is rebuilt. A per-key file lock makes
concurrent builds of the same model wait for one another. fp32 exports, fp16 conversions and
int8 quantizations all live here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from stdr_deploy.workspace import atomic_path, replace_dir_atomic, sha256_file


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    report_path: Path
    report: dict[str, Any]
    cached: bool  # True when an earlier export was reused


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


def copy_to(result: ExportResult, out: Path) -> ExportResult:
    """Copy the cached model to `out` with its report as `<out>.json`, both atomically."""
    with atomic_path(out) as tmp:
        shutil.copyfile(result.onnx_path, tmp)
    report_path = out.with_name(out.name + ".json")
    with atomic_path(report_path) as tmp:
        shutil.copyfile(result.report_path, tmp)
    return ExportResult(out, report_path, result.report, result.cached)


@contextlib.contextmanager
def _locked(entry: Path) -> Iterator[None]:
    """Serialise builds of one cache key across processes (released by the OS on death)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.parent / f".{entry.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
