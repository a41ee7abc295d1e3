"""Where the ONNX file of a (family, precision) comes from: the export cache, or an artefact directory.

A workstation with the `export` extra (torch) runs `stdr-deploy package DIR`: every export the
shipped plans may need, copied into DIR with its export report and a `manifest.json` (sha256 of
each file, tool versions, how it was made). An edge box with the core install alone then runs
`stdr-deploy auto --artifacts DIR`: every ONNX file is read from DIR and its sha256 verified
before use, so no torch is needed there.

Both sources answer `onnx_file(family, precision) -> Path`; `auto`, `render` and the in-process
reference pipeline take whichever they are given.
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

from stdr_deploy import __version__
from stdr_deploy.errors import UserInputError, ValidationError, require_torch
from stdr_deploy.plan_schema import ONNX_GRAPHS, OPENVINO_INT8
from stdr_deploy.workspace import atomic_path, sha256_file, write_json_atomic

MANIFEST = "manifest.json"
# `package` tries every ONNX graph (plan_schema.ONNX_GRAPHS) and keeps those the export
# accepts for a family at run time (`onnx_files.check_precision`), so a precision the export
# learns is packaged without a change here.
# 2: CRAFT takes uint8 pixels (normalised in its graph); a format-1 CRAFT takes float32 and would
# be fed the wrong type, so format-1 directories are refused and `package` replaces their models.
FORMAT_VERSION = 2


class OnnxSource(Protocol):
    def onnx_file(self, family: str, precision: str) -> Path: ...


@dataclass(frozen=True)
class ExportCache:
    """Export on demand (cached by content): needs torch, i.e. the `export` extra."""

    weights: Mapping[str, str | Path] = field(default_factory=dict)  # family -> file or registry name

    def onnx_file(self, family: str, precision: str) -> Path:
        require_torch()
        from stdr_deploy.onnx_files import ensure_onnx

        return ensure_onnx(family, self.weights.get(family), precision=precision)

    def trained(self, family: str) -> bool:
        """Whether `family` runs its registry's own weights (then the smoke expects exact text)."""
        return _registry_weights(family, self.weights.get(family))


@dataclass(frozen=True)
class Entry:
    """One packaged model: paths relative to the directory, the sha256 of the ONNX file."""

    family: str
    precision: str
    onnx: str
    sha256: str
    bytes: int
    report: str
    weights_sha256: str | None

    @property
    def key(self) -> str:
        return f"{self.family}/{self.precision}"


class ArtifactDir:
    """A directory written by `package`; files are verified against the manifest before use."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = _read_manifest(self.root)
        self.entries = {(e["family"], e["precision"]): Entry(**e) for e in self.manifest["models"]}
        self._verified: set[str] = set()

    def onnx_file(self, family: str, precision: str) -> Path:
        entry = self.entries.get((family, precision))
        if entry is None:
            have = ", ".join(sorted(e.key for e in self.entries.values())) or "nothing"
            raise UserInputError(
                f"{self.root} has no ONNX model for {family} {precision} (it holds {have})",
                hint=f"on a machine with the export extra: stdr-deploy package {self.root} "
                f"--family {family} --precision {precision} (adds it), then copy the directory here"
                + (" (or deploy with --cpu-backend onnxruntime)" if precision == OPENVINO_INT8 else ""),
            )
        path = self.root / entry.onnx
        if entry.key not in self._verified:
            verify(path, entry.sha256)
            self._verified.add(entry.key)
        return path

    def trained(self, family: str) -> bool:
        """Whether every packaged model of `family` was made from the registry's own weights."""
        from stdr_deploy.models import get_spec
        from stdr_deploy.weights import WEIGHTS

        info = WEIGHTS.get(get_spec(family).default_weights)
        made = [e.weights_sha256 for e in self.entries.values() if e.family == family]
        return bool(made) and info is not None and all(s and s.startswith(info.sha256) for s in made)


def verify(path: Path, expected: str) -> None:
    """sha256 of `path` must equal the manifest's; otherwise a ValidationError naming the file."""
    if not path.is_file():
        raise ValidationError(
            f"artefact {path} is listed in {MANIFEST} but missing",
            hint="copy the whole directory written by `stdr-deploy package` again",
        )
    got = sha256_file(path)
    if got != expected:
        raise ValidationError(
            f"artefact {path} does not match {MANIFEST}: sha256 {got}, expected {expected}",
            hint="the file was changed or damaged: copy the directory written by `stdr-deploy package` again",
        )


def _read_manifest(root: Path, *, older: bool = False) -> dict[str, Any] | None:
    """The manifest of `root`, checked; with `older`, None for one of an older format (`package`
    replaces such a directory's models rather than mixing them), else that is an error too."""
    path = root / MANIFEST
    if not path.is_file():
        raise UserInputError(
            f"{root} is not an artefact directory (no {MANIFEST})",
            hint="write one with `stdr-deploy package DIR` on a machine with the export extra",
        )
    try:
        manifest = json.loads(path.read_text())
        version = manifest["format_version"]
        if version == FORMAT_VERSION:  # another format's entries may have other fields
            for entry in manifest["models"]:
                Entry(**entry)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserInputError(f"{path} is not a valid artefact manifest: {exc}",
                             hint="write the directory again with `stdr-deploy package`") from None
    if older and isinstance(version, int) and version < FORMAT_VERSION:
        return None
    if version != FORMAT_VERSION:
        raise UserInputError(
            f"{path} has format_version {version}; this stdr-deploy reads {FORMAT_VERSION}",
            hint="package again with the stdr-deploy version installed here",
        )
    return manifest


def _registry_weights(family: str, weights: str | Path | None) -> bool:
    from stdr_deploy.models import get_spec
    from stdr_deploy.weights import WEIGHTS

    if weights is None:
        return True
    info = WEIGHTS.get(get_spec(family).default_weights)
    path = Path(weights)
    return info is not None and path.is_file() and sha256_file(path).startswith(info.sha256)


# --- writing one (needs torch) ------------------------------------------------------------------


def default_families() -> list[str]:
    """What `auto` deploys unless told otherwise: CRAFT and the default recognizer (ppocr)."""
    from stdr_deploy.planner import DEFAULT_RECOGNIZER

    return ["craft", *dict.fromkeys(DEFAULT_RECOGNIZER.values())]


def supported_precisions(family: str, precisions: Iterable[str] = ONNX_GRAPHS) -> list[str]:
    """The precisions the export accepts for `family` now (asked, not assumed)."""
    from stdr_deploy.onnx_files import check_precision

    found = []
    for precision in precisions:
        try:
            check_precision(family, precision)
        except UserInputError:
            continue
        found.append(precision)
    return found


def package(
    out: str | Path,
    families: Iterable[str] | None = None,
    precisions: Iterable[str] | None = None,
    weights: Mapping[str, str | Path] | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Export (or take from the cache) each (family, precision) into `out` and write its manifest.

    Without `families`/`precisions`: `default_families()`, at every precision the export
    supports for each. An explicit precision a family cannot have is an error. Entries of
    an earlier manifest in `out` for other (family, precision) pairs are kept.
    """
    require_torch()
    from stdr_deploy.export.fp32 import tool_versions
    from stdr_deploy.onnx_files import export_model
    from stdr_deploy.models import get_spec
    from stdr_deploy.weights import resolve_weights

    out = Path(out)
    weights = dict(weights or {})
    families = list(families or default_families())
    for family in families:
        get_spec(family)  # unknown names fail before any export
    wanted = []
    for family in families:
        chosen = supported_precisions(family, precisions or ONNX_GRAPHS)
        if precisions:
            refused = sorted(set(precisions) - set(chosen))
            if refused:
                raise UserInputError(f"{family} cannot be exported at {', '.join(refused)}",
                                     hint=f"{family} exports at {', '.join(supported_precisions(family)) or 'no precision'}")
        wanted += [(family, p) for p in chosen]
    earlier = _read_manifest(out, older=True) if (out / MANIFEST).is_file() else None
    kept = earlier["models"] if earlier else []
    entries = {(e["family"], e["precision"]): e for e in kept}
    weights_sha256 = {
        family: sha256_file(resolve_weights(weights.get(family) or get_spec(family).default_weights))
        for family in families
    }
    for family, precision in wanted:
        progress(f"{family} {precision}")
        result = export_model(family, weights=weights.get(family), precision=precision, progress=True)
        folder = out / family / precision
        folder.mkdir(parents=True, exist_ok=True)
        onnx_path, report_path = folder / "model.onnx", folder / "report.json"
        with atomic_path(onnx_path) as tmp:
            shutil.copyfile(result.onnx_path, tmp)
        write_json_atomic(report_path, result.report)
        entries[(family, precision)] = {
            "family": family,
            "precision": precision,
            "onnx": onnx_path.relative_to(out).as_posix(),
            "sha256": sha256_file(onnx_path),
            "bytes": onnx_path.stat().st_size,
            "report": report_path.relative_to(out).as_posix(),
            "weights_sha256": weights_sha256[family],
        }
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "by": f"stdr-deploy {__version__}",
            "host": platform.node(),
            "platform": platform.platform(),
        },
        "versions": tool_versions(),
        "models": [entries[key] for key in sorted(entries)],
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest

