"""What only a GPU can answer, stood in around the real TensorRT-RTX builder, for tests only.

The builds are real: `GpuStandIn.build` parses and builds with TensorRT-RTX, ahead of time for
sm86, through the same `Builder` the product uses. Three things need a GPU at run time and
cannot happen here, so they are stood in, and only they:
- running out of GPU memory while building (`fail_builds`: the first N builds, or N per ONNX file
  name, fail with TensorRT's out-of-memory message, as a full build on a small GPU does);
- deserializing an engine to see whether it still loads (`loads`: every engine loads, unless the
  stand-in is made with `stale=True`, as a patched TensorRT refusing its engines would);
- running an engine (the accuracy check): tests pass `make_runner` that runs the engine's ONNX
  graph on ONNX Runtime instead (`tests/test_engines.py: ort_as_engine`).
"""

from __future__ import annotations

from pathlib import Path

from stdr_deploy.engines import Builder, BuildOutcome, BuildSpec

OOM_MESSAGE = (
    "[virtualMemoryBuffer.cpp::resizePhysical::140] Error Code 2: OutOfMemory "
    "(Requested size was 8589934592 bytes.)"
)
_REAL: dict[str, Builder] = {}
# A real build per distinct graph and profile per session: the same spec builds the same engine,
# and the tests build the same few specs many times (cache, retries, staleness).
_OUTCOMES: dict[tuple, BuildOutcome] = {}


def rtx_builder() -> Builder:
    """The real TensorRT-RTX builder for sm86 (one per test session)."""
    if "sm86" not in _REAL:
        _REAL["sm86"] = Builder.rtx((8, 6))
    return _REAL["sm86"]


class GpuStandIn:
    """A `Builder` whose builds are TensorRT-RTX's and whose GPU-only answers are stood in."""

    def __init__(self, version: str = "10.3.0", *, fail_builds: int | dict[str, int] = 0, stale: bool = False):
        real = rtx_builder()
        self.real = real
        self.name = "TensorRT (stand-in around TensorRT-RTX)"
        self.version = version  # the fingerprint's TensorRT version
        self.target = real.target
        self.fail_builds = fail_builds
        self.stale = stale
        self.builds: list[tuple[str, dict[str, list[int]]]] = []  # (ONNX file name, max shapes) per build
        self.timing_caches: list[Path | None] = []  # the timing cache file each build was given

    def build(self, spec: BuildSpec, timing_cache: Path | None = None) -> BuildOutcome:
        source = Path(spec.onnx_path).name
        self.builds.append((source, {p.name: list(p.max) for p in spec.profiles}))
        self.timing_caches.append(timing_cache)
        done = sum(1 for name, _ in self.builds if name == source)
        if isinstance(self.fail_builds, dict):
            failing = done <= self.fail_builds.get(source, 0)
        else:
            failing = len(self.builds) <= self.fail_builds
        if failing:
            return BuildOutcome(None, (OOM_MESSAGE,), 0.0)
        key = (spec.onnx_sha256, spec.profiles)
        if key not in _OUTCOMES:
            _OUTCOMES[key] = self.real.build(spec, timing_cache)
        return _OUTCOMES[key]

    def loads(self, engine: bytes) -> bool:
        return bool(engine) and not self.stale
