"""A perf_analyzer-like closed-loop load generator on `tritonclient`.

At concurrency N, N threads each keep exactly one request in flight (send, wait, send again),
cycling through the request set from different offsets, until the level's time is up or its
request budget is spent; requests already sent are waited for and counted. Around each level
Triton's statistics extension is read, and the difference says, per model, how much of a
request's time was spent queued versus computing, so the bottleneck is visible (for the BLS
`pipeline` model, its compute time includes the detector and recognizer calls it makes). Where
the server's metrics endpoint is known, the pipeline's own stage counters (`ocr.stages`) are
read the same way: where inside the pipeline model a request's time went.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from stdr_deploy.bench.gpu_sampler import GpuLevel, GpuSampler
from stdr_deploy.bench.stats import LatencyStats
from stdr_deploy.ocr.stages import READS_METRIC, SERVED_STAGES, STAGE_CPU_SECONDS_METRIC, STAGE_SECONDS_METRIC
from stdr_deploy.triton_client import Endpoint, SharedInputs, connect, infer, open_shared_inputs

Progress = Callable[[str], None]
MAX_ERROR_SAMPLES = 5


@dataclass(frozen=True)
class Request:
    """One kind of request: its feeds, the outputs to ask for, and a label for per-image rows."""

    label: str
    feeds: Mapping[str, np.ndarray]
    outputs: tuple[str, ...]


def image_requests(images: Mapping[str, np.ndarray]) -> list[Request]:
    """Requests to the served `pipeline` model: RGB uint8 HxWx3 images as [1, H, W, 3]."""
    return [Request(label, {"input": np.ascontiguousarray(rgb[None])}, ("output", "boxes")) for label, rgb in images.items()]


@dataclass(frozen=True)
class Sample:
    label: str
    started: float  # seconds since the level began
    seconds: float
    error: str | None


@dataclass(frozen=True)
class ModelTime:
    """One served model's share of a level, from Triton's statistics (ms per request)."""

    model: str
    requests: int
    executions: int  # batches run; requests / executions = average dynamic batch
    queue_ms: float
    compute_input_ms: float
    compute_infer_ms: float
    compute_output_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__}


@dataclass(frozen=True)
class LoadLevel:
    concurrency: int
    seconds: float
    requests: int
    errors: int
    throughput_per_s: float
    latency: LatencyStats | None
    per_label: Mapping[str, LatencyStats]
    server: tuple[ModelTime, ...]
    error_samples: tuple[str, ...] = ()
    gpus: tuple[GpuLevel, ...] = ()  # utilisation and memory per GPU during the level (none on CPU hosts)
    stages: Mapping[str, float] | None = None  # ms per request by pipeline stage (`stage_delta`); None: not read

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "seconds": self.seconds,
            "requests": self.requests,
            "errors": self.errors,
            "throughput_per_s": self.throughput_per_s,
            "latency": self.latency.to_dict() if self.latency else None,
            "per_label": {k: v.to_dict() for k, v in self.per_label.items()},
            "server": [m.to_dict() for m in self.server],
            "error_samples": list(self.error_samples),
            "gpus": [g.to_dict() for g in self.gpus],
            "stages": dict(self.stages) if self.stages is not None else None,
        }


@dataclass(frozen=True)
class LoadBench:
    url: str
    model: str
    duration_s: float
    max_requests: int | None
    levels: tuple[LoadLevel, ...]
    labels: tuple[str, ...] = field(default=())
    images: tuple[ImageStages, ...] = ()  # each image alone, by stage (`image_stages`)
    stages_note: str | None = None  # why the stage counters were not read, where they were not
    shared_memory: bool = False  # inputs went in system shared memory (`SharedInputs`), not in the requests
    transport_note: str | None = None  # why not, where shared memory was wanted

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "shared_memory": self.shared_memory,
            "transport_note": self.transport_note,
            "model": self.model,
            "duration_s": self.duration_s,
            "max_requests_per_level": self.max_requests,
            "labels": list(self.labels),
            "levels": [level.to_dict() for level in self.levels],
            "images": [image.to_dict() for image in self.images],
            "stages_note": self.stages_note,
        }


@dataclass(frozen=True)
class ImageStages:
    """One image sent `requests` times, one at a time: the client's latency, Triton's per-model
    statistics and the pipeline's stage times (ms per request, means)."""

    label: str
    latency: LatencyStats
    stages: Mapping[str, float]
    server: tuple[ModelTime, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "latency": self.latency.to_dict(), "stages": dict(self.stages),
                "server": [m.to_dict() for m in self.server]}


def run_load(
    url: str,
    requests: Sequence[Request],
    *,
    model: str = "pipeline",
    concurrency: Sequence[int] = (1, 2, 4, 8, 16),
    duration_s: float = 10.0,
    max_requests: int | None = None,
    warmup: int = 1,
    timeout_s: float = 600.0,
    progress: Progress | None = None,
    metrics_url: str | None = None,
    image_repeats: int = 0,
    shared_memory: bool | None = None,
) -> LoadBench:
    """Drive `model` at each concurrency for `duration_s` (or `max_requests`) and summarise.

    `warmup` passes over the request set run first, unrecorded, so model loading and first-call
    allocations stay out of the numbers. With `metrics_url` (the server's Prometheus endpoint),
    each level also reports the pipeline's stage times, and `image_repeats` sends each request
    that many times alone first (`image_stages`). `shared_memory`: send the inputs in system
    shared memory (True), in the requests (False), or the first where the server is on this host
    and takes it (None).
    """
    if not requests:
        raise ValueError("no requests to send")
    endpoint = Endpoint.parse(url)
    client = connect(endpoint, timeout_s)
    # sized for the first request: a server that cannot map it is found before any timing
    probe = sum(np.asarray(array).nbytes for array in requests[0].feeds.values())
    shared, transport_note = open_shared_inputs(client, endpoint, shared_memory, probe)
    try:
        for _ in range(warmup):
            for request in requests:
                if progress:
                    progress(f"warm-up {request.label}")
                infer(client, endpoint, model, dict(request.feeds), list(request.outputs), shared)
        counters, note = _stage_reader(metrics_url, model)
        images = []
        for request in requests if image_repeats > 0 else ():
            if counters is None:  # still a step each, so a progress total counting them holds
                if progress:
                    progress(f"stages of {request.label}: skipped, no stage counters")
                continue
            if progress:
                progress(f"stages of {request.label}")
            images.append(image_stages(client, endpoint, model, request, image_repeats, counters, shared))
        levels = []
        for n in concurrency:
            if progress:
                progress(f"concurrency {n}")
            before, stages_before = settled_statistics(client, endpoint), counters() if counters else None
            started = time.perf_counter()
            with GpuSampler() as gpus:
                samples = drive(endpoint, model, requests, n, duration_s, max_requests, timeout_s, shared_memory=shared is not None)
            seconds = time.perf_counter() - started
            after = settled_statistics(client, endpoint)
            level = summarize_level(n, seconds, samples, statistics_delta(before, after))
            stages = stage_delta(stages_before, counters()) if counters else None
            levels.append(dataclasses.replace(level, gpus=tuple(gpus.levels()), stages=stages))
    finally:
        if shared is not None:
            shared.close()
    return LoadBench(endpoint.url, model, duration_s, max_requests, tuple(levels), tuple(r.label for r in requests),
                     tuple(images), note, shared is not None, transport_note)


def image_stages(client: Any, endpoint: Endpoint, model: str, request: Request, repeats: int,
                 counters: Callable[[], dict[str, float]], shared: SharedInputs | None = None) -> ImageStages:
    """`request` sent `repeats` times, one at a time, with the server's statistics and the
    pipeline's stage counters read around them."""
    before, stages_before = settled_statistics(client, endpoint), counters()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        infer(client, endpoint, model, dict(request.feeds), list(request.outputs), shared)
        seconds.append(time.perf_counter() - started)
    after = settled_statistics(client, endpoint)
    stages = stage_delta(stages_before, counters()) or {}
    return ImageStages(request.label, LatencyStats.from_seconds(seconds), stages, tuple(statistics_delta(before, after)))


_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def stage_counters(metrics_url: str, model: str = "pipeline", timeout_s: float = 10.0) -> dict[str, float]:
    """The pipeline model's cumulative seconds by stage (CPU seconds as `<stage>_cpu`) and its
    `reads`, from the server's Prometheus text (`pipeline_model.StageMetrics`); empty where the
    model counts none."""
    with urllib.request.urlopen(metrics_url, timeout=timeout_s) as response:
        text = response.read().decode("utf-8", errors="replace")
    suffixes = {STAGE_SECONDS_METRIC: "", STAGE_CPU_SECONDS_METRIC: "_cpu"}
    totals: dict[str, float] = {}
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if not sample or sample["name"] not in (*suffixes, READS_METRIC):
            continue
        labels = dict(_LABEL.findall(sample["labels"] or ""))
        if labels.get("model") != model:
            continue
        key = "reads" if sample["name"] == READS_METRIC else labels.get("stage", "") + suffixes[sample["name"]]
        totals[key] = totals.get(key, 0.0) + float(sample["value"])
    return totals


def stage_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float] | None:
    """ms per read by stage (and `<stage>_cpu`) between two `stage_counters` readings, with
    `reads`, how many; None when no read was counted between them."""
    reads = after.get("reads", 0.0) - before.get("reads", 0.0)
    if reads <= 0:
        return None
    keys = [key for stage in SERVED_STAGES for key in (stage, f"{stage}_cpu") if key in after]
    return {**{key: (after[key] - before.get(key, 0.0)) / reads * 1e3 for key in keys}, "reads": reads}


def _stage_reader(metrics_url: str | None, model: str) -> tuple[Callable[[], dict[str, float]] | None, str | None]:
    """A reader of the stage counters, or None and why not (no metrics URL, unreachable, none counted)."""
    if metrics_url is None:
        return None, "the server's metrics endpoint is not known (give --metrics-url with --url)"
    try:
        found = stage_counters(metrics_url, model)
    except OSError as exc:
        return None, f"{metrics_url} could not be read: {exc}"
    if "reads" not in found:
        return None, f"{metrics_url} has no {READS_METRIC} of model {model!r} (a pipeline rendered before they existed?)"
    return (lambda: stage_counters(metrics_url, model)), None


def drive(
    endpoint: Endpoint,
    model: str,
    requests: Sequence[Request],
    concurrency: int,
    duration_s: float,
    max_requests: int | None,
    timeout_s: float,
    on_sample: Callable[[Sample], None] | None = None,
    shared_memory: bool = False,
) -> list[Sample]:
    """Closed loop: `concurrency` workers, one request in flight each, until time or budget ends;
    with `shared_memory`, each worker copies its request's inputs into its own region first (part
    of the request's time, as for any client that holds the image in its own memory)."""
    lock = threading.Lock()
    samples: list[Sample] = []
    budget = [max_requests if max_requests is not None else -1]
    started = time.perf_counter()
    deadline = started + duration_s

    def take() -> bool:
        with lock:
            if budget[0] == 0:
                return False
            budget[0] -= 1
            return True

    def worker(offset: int) -> None:
        client = connect(endpoint, timeout_s)
        shared = SharedInputs(client, endpoint) if shared_memory else None
        i = offset
        while time.perf_counter() < deadline and take():
            request = requests[i % len(requests)]
            i += 1
            t0 = time.perf_counter()
            error = None
            try:
                infer(client, endpoint, model, dict(request.feeds), list(request.outputs), shared)
            except Exception as exc:  # noqa: BLE001 - every failure is a counted error, never a crash
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            sample = Sample(request.label, t0 - started, time.perf_counter() - t0, error)
            with lock:
                samples.append(sample)
            if on_sample:
                on_sample(sample)
        if shared is not None:
            shared.close()
        _close(client)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(samples, key=lambda s: s.started)


def summarize_level(concurrency: int, seconds: float, samples: Sequence[Sample], server: Sequence[ModelTime]) -> LoadLevel:
    ok = [s for s in samples if s.error is None]
    errors = [s for s in samples if s.error is not None]
    per_label: dict[str, list[float]] = {}
    for s in ok:
        per_label.setdefault(s.label, []).append(s.seconds)
    return LoadLevel(
        concurrency=concurrency,
        seconds=seconds,
        requests=len(samples),
        errors=len(errors),
        throughput_per_s=len(ok) / seconds if seconds > 0 else 0.0,
        latency=LatencyStats.from_seconds([s.seconds for s in ok]) if ok else None,
        per_label={label: LatencyStats.from_seconds(v) for label, v in per_label.items()},
        server=tuple(server),
        error_samples=tuple(dict.fromkeys(s.error for s in errors if s.error))[:MAX_ERROR_SAMPLES],
    )


def settled_statistics(client: Any, endpoint: Endpoint, wait_s: float = 1.0) -> dict[str, dict[str, int]]:
    """`server_statistics` once two reads 20 ms apart agree (at most `wait_s`): Triton counts a
    request a moment after its response is sent, so a read right after the last response can
    miss it (the level then counted one warm-up request as its own)."""
    last, give_up = server_statistics(client, endpoint), time.monotonic() + wait_s
    while time.monotonic() < give_up:
        time.sleep(0.02)
        now = server_statistics(client, endpoint)
        if now == last:
            break
        last = now
    return last


def server_statistics(client: Any, endpoint: Endpoint) -> dict[str, dict[str, int]]:
    """Cumulative counters per model from Triton's statistics extension (all versions summed)."""
    raw = client.get_inference_statistics(as_json=True) if endpoint.protocol == "grpc" else client.get_inference_statistics()
    out: dict[str, dict[str, int]] = {}
    for stats in raw.get("model_stats", []):
        inference = stats.get("inference_stats", {})
        counters = {
            "requests": int(inference.get("success", {}).get("count", 0)),
            "executions": int(stats.get("execution_count", 0)),
        }
        for part in ("queue", "compute_input", "compute_infer", "compute_output"):
            counters[f"{part}_ns"] = int(inference.get(part, {}).get("ns", 0))
        totals = out.setdefault(stats["name"], dict.fromkeys(counters, 0))
        for key, value in counters.items():
            totals[key] += value
    return out


def statistics_delta(before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]) -> list[ModelTime]:
    """Per-request averages over the requests each model served between the two readings."""
    times = []
    for name, end in sorted(after.items()):
        start = before.get(name, {})
        delta = {key: value - start.get(key, 0) for key, value in end.items()}
        n = delta["requests"]
        if n <= 0:
            continue
        times.append(
            ModelTime(
                model=name,
                requests=n,
                executions=delta["executions"],
                queue_ms=delta["queue_ns"] / n / 1e6,
                compute_input_ms=delta["compute_input_ns"] / n / 1e6,
                compute_infer_ms=delta["compute_infer_ns"] / n / 1e6,
                compute_output_ms=delta["compute_output_ns"] / n / 1e6,
            )
        )
    return times


def _close(client: Any) -> None:
    close = getattr(client, "close", None)
    if close:
        close()
