"""Measured memory of one model instance: the data files in `memory_data/`, read as upper envelopes.

`benchmarks/measure_memory.py` writes `memory_data/<device>-onnxruntime.json`: for each family x
precision x CPU-arena setting, the peak memory of a fresh process holding one real ONNX Runtime
session of the real exported model, at several input shapes (host: VmHWM; cuda: the GPU memory
NVML charges to the process, and VmHWM too). Each file records the host, versions, date and
command. Peak memory grows linearly with the input's element count (activations), on top of a
fixed part (the interpreter, ONNX Runtime, the weights and their pre-packed copies).

The planner reads a line `peak = intercept + slope x elements` that lies on or above every
measured point: the slope is the steepest between neighbouring points (so extrapolating past
the largest shape never undershoots the measured growth) and the intercept the smallest that
keeps every point under the line. No number is fitted to a single run; adding a family,
precision or device is a data-file change. Models a CPU plan serves on OpenVINO are measured on
OpenVINO into `cpu-openvino.json` (`measure_memory.py --runtime openvino`; CRAFT's int8 there
is its int8-openvino graph), and their lookups name that runtime.

A served instance holds more than the bare session measured above: Triton's Python-backend stub,
our backend module and, on the GPU, the extra per-shape sessions. `benchmarks/served_memory.py`
reads the per-model high-water marks that `smoke` records in a deployment's `deploy.json` into
the same file (`served`); `served_excess` is the most any served instance held above the
envelopes at its max shape, which the planner adds to each instance's host RAM. What each extra
per-shape session of a GPU instance holds is measured apart (`sessions`,
`benchmarks/measure_sessions.py`): many nearby shapes, summed through `summed_line`.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
from dataclasses import dataclass
from typing import Callable

MIB = 1 << 20  # bytes in a MiB, for every size the package prints or plans in MiB
DATA_PACKAGE = "stdr_deploy.memory_data"
FORMAT_VERSION = 1
ARENA_OFF = "arena_off"  # the CPU arena and memory pattern off: what plans render on the CPU
ARENA_ON = "arena_on"


@dataclass(frozen=True)
class Envelope:
    """Peak bytes of one instance as a line in the input's element count, above every point."""

    intercept: float
    slope: float  # bytes per input element
    points: tuple[tuple[int, int], ...]  # (elements, peak bytes) measured
    source: str  # "<file>: <family> <precision> <arena>, measured <date> on <cpu or gpu>"

    def bytes_at(self, elements: int) -> int:
        return math.ceil(self.intercept + self.slope * elements)

    @property
    def largest_measured(self) -> int:
        return max(e for e, _ in self.points)


def upper_envelope(points: list[tuple[int, int]]) -> tuple[float, float]:
    """(intercept, slope) of the line on or above every (x, y): slope = steepest neighbour pair.

    The steepest slope between any two points is always that of two neighbours in x, so
    this is also the steepest of all pairs; with one point the slope is 0 (a fixed cost).
    """
    pts = sorted(points)
    slope = max([0.0] + [(y1 - y0) / (x1 - x0) for (x0, y0), (x1, y1) in zip(pts, pts[1:]) if x1 > x0])
    intercept = max(y - slope * x for x, y in pts)
    return intercept, slope


def summed_line(points: list[tuple[int, int]], xs: list[int]) -> int:
    """The least-squares line (slope at least 0) summed over `xs`, plus the most any one point
    stands above it. Its residuals sum to zero, so at the measured xs this is their measured total
    plus the largest outlier: an upper bound of that total, where a line raised above every point
    would add the outlier's excess once per x (many nearby, noisy points: one per session shape)."""
    n = len(points)
    mean_x, mean_y = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in points) / spread) if spread else 0.0
    intercept = mean_y - slope * mean_x
    outlier = max(0.0, max(y - intercept - slope * x for x, y in points))
    return math.ceil(sum(intercept + slope * x for x in xs) + outlier)


@functools.lru_cache(maxsize=None)
def load(device: str, runtime: str = "onnxruntime") -> dict:
    """The data file for a device ("cpu" | "cuda"), or {} when none was measured."""
    path = importlib.resources.files(DATA_PACKAGE) / f"{device}-{runtime}.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path.name}: format_version {data.get('format_version')!r} is not {FORMAT_VERSION}")
    return data


def envelope(device: str, family: str, precision: str, arena: str = ARENA_OFF, what: str = "host",
             runtime: str = "onnxruntime") -> Envelope | None:
    """The envelope of `what` ("host" or "device") peak bytes, or None when it was not measured."""
    data = load(device, runtime)
    entry = data.get("families", {}).get(family, {}).get(precision, {}).get(arena)
    if not entry:
        return None
    key = f"{what}_peak_bytes"
    points = tuple((p["elements"], p[key]) for p in entry["points"] if p.get(key))
    if not points:
        return None
    intercept, slope = upper_envelope(list(points))
    where = entry["host"].get("gpu") if device == "cuda" else entry["host"].get("cpu")
    source = (
        f"{device}-{runtime}.json: {family} {precision} {arena.replace('_', ' ')}, "
        f"{len(points)} shapes measured {entry['measured_at'][:10]} on {where}"
    )
    return Envelope(intercept, slope, points, source)


def sessions_bytes(device: str, family: str, precision: str, elements: list[int], what: str = "host") -> tuple[int, str] | None:
    """(bytes, source): what per-shape sessions beyond an instance's first hold together ("host" or
    "device" bytes), one session per input element count in `elements`, from the sessions that
    benchmarks/measure_sessions.py measured (`summed_line`), or None where none were."""
    entry = _sessions(device, family, precision)
    if not entry:
        return None
    points = [(p["elements"], p[f"{what}_bytes"]) for p in entry["points"] if p.get(f"{what}_bytes") is not None]
    if not points:
        return None
    source = (
        f"{device}-onnxruntime.json: {family} {precision} sessions, {len(points)} measured "
        f"{entry['measured_at'][:10]} on {entry['host'].get('gpu') or entry['host'].get('cpu')}"
    )
    return summed_line(points, elements), source


def _sessions(device: str, family: str, precision: str) -> dict | None:
    return load(device).get("families", {}).get(family, {}).get(precision, {}).get("sessions")


def regrowth_per_element(device: str, family: str, precision: str) -> tuple[float, str] | None:
    """(bytes per input element, source): how much more device memory an instance took when its
    largest shape ran again after every session had been made (`again` less `last` of
    benchmarks/measure_sessions.py), over that shape's element count. Activations scale with the
    input, and so does this (the arena cannot reuse space that later sessions took from the first
    run's). The bare envelope already holds one such regrowth: measure_memory.py runs each shape
    twice, after the smaller ones, and its figure at the largest shape stands above the first
    session's by as much. Only the growth beyond that is counted here (H200, fp32: craft grew
    3388 MiB, its bare figure stands 5997 above its first session, none counted; ppocr grew 1344,
    its bare figure is below its first session, all counted)."""
    entry = _sessions(device, family, precision)
    if not entry or not entry.get("again") or entry["again"].get("device_bytes") is None:
        return None
    first = entry["first"]
    grown = max(0, entry["again"]["device_bytes"] - entry["last"]["device_bytes"])
    grown = max(0, grown - max(0, _bare_above_first(device, family, precision)))
    return grown / first["elements"], f"+ {grown >> 20} MiB when the largest shape ran again, at {first['shape']}"


def served_excess(
    device: str, family: str, precision: str, expected: Callable[[dict], int], what: str = "host",
    like: Callable[[dict], bool] | None = None, runtime: str = "onnxruntime",
) -> tuple[int, str] | None:
    """(bytes, source): the most a served instance of this family x precision held above
    `expected(record)` (what the envelopes give for that deployment's max shape and sessions) in
    `what` ("host" RAM, or "device" memory where smoke attributed it), or None where none was served.
    `like` keeps the records of deployments like the plan's, where there are any."""
    served = [s for s in served_records(device, family, precision, runtime) if f"{what}_bytes_per_instance" in s]
    if like is not None:
        served = [s for s in served if like(s)] or served
    if not served:
        return None
    excess = max(0, max(s[f"{what}_bytes_per_instance"] - expected(s) for s in served))
    if what == "device":
        return excess, f"+ served {excess >> 20} MiB more on the GPU ({len(served)} deployment(s))"
    spread = repeat_spread(served) if device == "cpu" else 0
    return excess + spread, f"+ served stub {excess >> 20} MiB + {_spread_words(served, spread)}"


def served_peak(device: str, family: str, precision: str) -> tuple[int, str] | None:
    """(bytes, source): the most one served instance of this family x precision held, for families
    served but never measured bare on `device` (their host RAM then has no envelope to add to)."""
    served = served_records(device, family, precision)
    if not served:
        return None
    peak = max(s["host_bytes_per_instance"] for s in served)
    spread = repeat_spread(served) if device == "cpu" else 0
    return peak + spread, f"served instance {peak >> 20} MiB + {_spread_words(served, spread)}"


def served_server(device: str, recognizer: str) -> tuple[int, str] | None:
    """(bytes, source): the most host RAM tritonserver itself held in a served deployment with
    this recognizer family (`servers`, benchmarks/served_memory.py), or None where none was served.
    Its figure follows the recognizer's outputs, which pass through it (smoke drives each model
    at its max batch): 2.5-2.6 GB on the H200 with crnn-en or parseq, 4.9-5.1 GB with ppocr,
    whose largest output is 64 x 256 x 6625 floats."""
    servers = [s for s in load(device).get("servers", []) if s["recognizer"] == recognizer]
    if not servers:
        return None
    most = max(s["host_bytes"] for s in servers)
    return most, f"tritonserver {most >> 20} MiB served with {recognizer} ({len(servers)} deployment(s))"


def first_session_excess(device: str, family: str, precision: str) -> int:
    """Device bytes the first session of a served instance held above the bare envelope at the
    same shape (benchmarks/measure_sessions.py's `first` against measure_memory.py's figure), 0
    where the bare figure is the larger or nothing was measured. For most families the bare
    figure is the larger (craft, crnn-en); ppocr's served session is not (3076 against 2747 MiB
    in fp16 on the H200)."""
    return max(0, -_bare_above_first(device, family, precision))


def _bare_above_first(device: str, family: str, precision: str) -> int:
    """Device bytes the bare envelope stands above the served first session at that session's
    shape (negative where the session is the larger), 0 where either was not measured: the one
    comparison behind `regrowth_per_element` and `first_session_excess`."""
    entry = _sessions(device, family, precision)
    bare = envelope(device, family, precision, what="device")
    if not entry or not bare or entry["first"].get("device_bytes") is None:
        return 0
    return bare.bytes_at(entry["first"]["elements"]) - entry["first"]["device_bytes"]


def served_records(device: str, family: str, precision: str, runtime: str = "onnxruntime") -> list[dict]:
    """The served deployments on record for this family x precision (benchmarks/served_memory.py)."""
    return [s for s in load(device, runtime).get("served", []) if s["family"] == family and s["precision"] == precision]


def served_pairs(device: str, runtime: str = "onnxruntime") -> list[tuple[str, str]]:
    """Each family x precision that has a served record on this device and runtime, once."""
    return list(dict.fromkeys((s["family"], s["precision"]) for s in load(device, runtime).get("served", [])))


def _spread_words(served: list[dict], spread: int) -> str:
    latest = max(s["measured_at"] for s in served)[:10]
    return f"{spread >> 20} MiB spread of repeated runs ({len(served)} deployment(s), latest {latest})"


def repeat_spread(served: list[dict]) -> int:
    """How far served deployments of the same shape on the same host measured apart (the most
    over such groups): a stub's peak varies run to run (606-651 MiB for ppocr on one box), so
    the largest reading alone would be exceeded by the next run. CPU only: GPU runs differ in
    how many per-shape sessions had been made (benchmarks/results/h200-fp16-served/), not by noise."""
    groups: dict[tuple, list[int]] = {}
    for s in served:
        groups.setdefault((s["elements"], s["host"]), []).append(s["host_bytes_per_instance"])
    return max((max(g) - min(g) for g in groups.values()), default=0)


def elements(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
