"""A perf_analyzer-like closed-loop load generator on `tritonclient`.

At concurrency N, N threads each keep exactly one request in flight (send, wait, send again),
cycling through the request set from different offsets, until the level's time is up or its
request budget is spent; requests already sent are waited for and counted. Around each level
Triton's statistics extension is read, and the difference says, per model, how much of a
request's time was spent queued versus computing, so the bottleneck is visible (for the BLS
`pipeline` model, its compute time includes the detector and recognizer calls it makes).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from stdr_deploy.bench.gpu_sampler import GpuLevel, GpuSampler
from stdr_deploy.bench.stats import LatencyStats
from stdr_deploy.triton_client import Endpoint, connect, infer

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
        }


@dataclass(frozen=True)
class LoadBench:
    url: str
    model: str
    duration_s: float
    max_requests: int | None
    levels: tuple[LoadLevel, ...]
    labels: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "duration_s": self.duration_s,
            "max_requests_per_level": self.max_requests,
            "labels": list(self.labels),
            "levels": [level.to_dict() for level in self.levels],
        }


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
) -> LoadBench:
    """Drive `model` at each concurrency for `duration_s` (or `max_requests`) and summarise.

    `warmup` passes over the request set run first, unrecorded, so model loading and first-call
    allocations stay out of the numbers.
    """
    if not requests:
        raise ValueError("no requests to send")
    endpoint = Endpoint.parse(url)
    client = connect(endpoint, timeout_s)
    for _ in range(warmup):
        for request in requests:
            if progress:
                progress(f"warm-up {request.label}")
            infer(client, endpoint, model, dict(request.feeds), list(request.outputs))
    levels = []
    for n in concurrency:
        if progress:
            progress(f"concurrency {n}")
        before = settled_statistics(client, endpoint)
        started = time.perf_counter()
        with GpuSampler() as gpus:
            samples = drive(endpoint, model, requests, n, duration_s, max_requests, timeout_s)
        seconds = time.perf_counter() - started
        after = settled_statistics(client, endpoint)
        level = summarize_level(n, seconds, samples, statistics_delta(before, after))
        levels.append(dataclasses.replace(level, gpus=tuple(gpus.levels())))
    return LoadBench(endpoint.url, model, duration_s, max_requests, tuple(levels), tuple(r.label for r in requests))


def drive(
    endpoint: Endpoint,
    model: str,
    requests: Sequence[Request],
    concurrency: int,
    duration_s: float,
    max_requests: int | None,
    timeout_s: float,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Closed loop: `concurrency` workers, one request in flight each, until time or budget ends."""
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
        i = offset
        while time.perf_counter() < deadline and take():
            request = requests[i % len(requests)]
            i += 1
            t0 = time.perf_counter()
            error = None
            try:
                infer(client, endpoint, model, dict(request.feeds), list(request.outputs))
            except Exception as exc:  # noqa: BLE001 - every failure is a counted error, never a crash
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            sample = Sample(request.label, t0 - started, time.perf_counter() - t0, error)
            with lock:
                samples.append(sample)
            if on_sample:
                on_sample(sample)
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
