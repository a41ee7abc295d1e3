"""The engine cache: where built engines live and when one may be reused.

A TensorRT engine only runs on the GPU model (compute capability) and TensorRT version it was
built with, and only means something for the ONNX graph and build settings it came from. So:

    <root>/<fingerprint>/timing.cache          shared by every build on that host kind
    <root>/<fingerprint>/<key>/model.plan      the engine
    <root>/<fingerprint>/<key>/build.json      the build report (spec, attempts, accuracy, sha256)

`<fingerprint>` names GPU, compute capability, TensorRT version and driver major version;
`<key>` hashes the fingerprint, the ONNX file's sha256 and the requested build spec. The report
stores the engine's sha256, so a truncated or altered engine is noticed and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stdr_deploy.engines.spec import BuildSpec
from stdr_deploy.errors import HostUnsupported
from stdr_deploy.hardware import HostFacts
from stdr_deploy.workspace import cache_dir, sha256_file

REPORT_FORMAT = 1
ENGINE_FILE = "model.plan"
REPORT_FILE = "build.json"
TIMING_CACHE_FILE = "timing.cache"


@dataclass(frozen=True)
class HostFingerprint:
    """What an engine's validity depends on besides its inputs."""

    gpu_name: str
    compute_capability: str  # "8.6"
    trt_version: str
    driver_major: int | None

    @property
    def slug(self) -> str:
        """A readable folder name, e.g. `nvidia-rtx-a5000-sm86-trt10.3.0-drv535`."""
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-")
        trt = re.sub(r"[^A-Za-z0-9.]+", "-", self.trt_version)
        driver = self.driver_major if self.driver_major is not None else "unknown"
        return f"{gpu}-sm{self.compute_capability.replace('.', '')}-trt{trt}-drv{driver}"


def host_fingerprint(host: HostFacts, trt_version: str, gpu_index: int = 0) -> HostFingerprint:
    """The fingerprint of GPU `gpu_index` of `host` with TensorRT `trt_version`."""
    gpu = next((g for g in host.gpus if g.index == gpu_index), None)
    if gpu is None:
        raise HostUnsupported(
            f"TensorRT engines need an NVIDIA GPU; the host has no GPU {gpu_index}",
            hint="use the onnxruntime variant on this host (`stdr-deploy plan --variant onnxruntime`)",
        )
    driver = host.driver_version.split(".")[0] if host.driver_version else ""
    return HostFingerprint(
        gpu_name=gpu.name,
        compute_capability=".".join(map(str, gpu.compute_capability)),
        trt_version=trt_version,
        driver_major=int(driver) if driver.isdigit() else None,
    )


def cache_key(spec: BuildSpec, fingerprint: HostFingerprint) -> str:
    """`<model>-<16 hex>`: changes with the host fingerprint, the ONNX bytes and any build setting.

    The ONNX and timing-cache paths are left out: the ONNX sha256 stands for the file, and the
    timing cache only changes build time, not the engine's meaning.
    """
    settings = {k: v for k, v in spec.to_dict().items() if k not in ("onnx_path", "timing_cache_path")}
    text = json.dumps({"fingerprint": asdict(fingerprint), "spec": settings}, sort_keys=True)
    return f"{spec.triton_name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class CachedEngine:
    engine_path: Path
    report: dict[str, Any]


@dataclass(frozen=True)
class EngineCache:
    """Paths and validity checks of the cache under `root` (default `cache_dir()/engines`)."""

    root: Path

    @classmethod
    def default(cls) -> "EngineCache":
        return cls(cache_dir() / "engines")

    def host_dir(self, fingerprint: HostFingerprint) -> Path:
        return self.root / fingerprint.slug

    def timing_cache_path(self, fingerprint: HostFingerprint) -> Path:
        return self.host_dir(fingerprint) / TIMING_CACHE_FILE

    def entry(self, fingerprint: HostFingerprint, key: str) -> Path:
        return self.host_dir(fingerprint) / key

    def lookup(self, fingerprint: HostFingerprint, key: str) -> tuple[CachedEngine | None, str]:
        """The cached engine if it is complete and intact, else None and why it is not usable."""
        folder = self.entry(fingerprint, key)
        engine = folder / ENGINE_FILE
        if not engine.is_file():
            failed = (folder / REPORT_FILE).is_file()
            return None, "the last build failed (its report is kept)" if failed else "not built yet"
        try:
            report = json.loads((folder / REPORT_FILE).read_text())
        except (OSError, ValueError) as exc:
            return None, f"unreadable build report ({exc})"
        if report.get("format_version") != REPORT_FORMAT or report.get("key") != key:
            return None, "build report of another format or key"
        if report.get("fingerprint") != asdict(fingerprint):
            return None, "built for another host fingerprint"
        if sha256_file(engine) != report.get("engine_sha256"):
            return None, "engine file is corrupt (sha256 differs from its build report)"
        return CachedEngine(engine, report), "cached"
