"""Prove a deployed repository works: server health, configs, shapes, and reading known text.

Every check yields a `Check` row (model, check, expected, got) so a failure says exactly what
broke; `run_smoke` collects them all instead of stopping at the first.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from stdr_deploy.errors import SmokeFailed
from stdr_deploy.memory import MIB
from stdr_deploy.plan_schema import ModelPlan, Plan
from stdr_deploy.smoke_image import SMOKE_WORDS, smoke_image
from stdr_deploy.triton_client import (
    Endpoint, TritonPipelineClient, connect, http_inference_refused, infer, rendered_config,
)


@dataclass(frozen=True)
class Check:
    model: str  # "server", a model name, or "pipeline"
    check: str
    ok: bool
    expected: str = ""
    got: str = ""
    protocol: str = ""
    seconds: float = 0.0


@dataclass
class SmokeReport:
    checks: list[Check] = field(default_factory=list)
    memory: dict[str, Any] | None = None  # the max-shape drive: estimate beside the measured peak
    warnings: list[str] = field(default_factory=list)  # planner bugs: an estimate below the peak

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
            "memory": self.memory,
            "warnings": self.warnings,
        }

    def raise_for_failures(self) -> None:
        bad = self.failures()
        if bad:
            lines = [f"{c.model}: {c.check} [{c.protocol}] expected {c.expected!r}, got {c.got!r}" for c in bad]
            raise SmokeFailed(f"{len(bad)} smoke check(s) failed:\n  " + "\n  ".join(lines))


def _served_config(client: Any, endpoint: Endpoint, model: str):
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    if endpoint.protocol == "grpc":
        return client.get_model_config(model).config
    return json_format.ParseDict(client.get_model_config(model), model_config_pb2.ModelConfig(), ignore_unknown_fields=True)


def config_differences(rendered, served) -> list[str]:
    """Fields we set that the server reports differently (the server adds defaults; those are fine)."""
    diffs = []
    for name in ("name", "platform", "backend", "max_batch_size"):
        want, got = getattr(rendered, name), getattr(served, name)
        if want and want != got:
            diffs.append(f"{name}: {want!r} != {got!r}")
    for kind in ("input", "output"):
        want = [(t.name, t.data_type, list(t.dims)) for t in getattr(rendered, kind)]
        got = [(t.name, t.data_type, list(t.dims)) for t in getattr(served, kind)]
        if sorted(want) != sorted(got):
            diffs.append(f"{kind}: {want} != {got}")
    want_groups = [(g.count, g.kind) for g in rendered.instance_group]
    got_groups = [(g.count, g.kind) for g in served.instance_group]
    if want_groups and want_groups != got_groups:
        diffs.append(f"instance_group: {want_groups} != {got_groups}")
    return diffs


def profile_inputs(model: ModelPlan, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """One random input per profile point (min/opt/max), shaped as the plan promises to serve."""
    rng = np.random.default_rng(seed)
    return {point: random_feeds(model, point, rng) for point in ("min", "opt", "max")}


def random_feeds(model: ModelPlan, point: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs of `model` at one profile point, in the type it takes."""
    from stdr_deploy.models import get_spec

    spec = get_spec(model.family)
    return {name: spec.random_input(getattr(shape, point), rng) for name, shape in model.profile.items()}


def expected_output_shape(model: ModelPlan, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape each family must produce for an input shape (from the model specs)."""
    from stdr_deploy.models import get_spec

    return get_spec(model.family).output_shape(input_shape)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, Exception | None]:
    t0 = time.perf_counter()
    try:
        return fn(), time.perf_counter() - t0, None
    except Exception as exc:  # every failure becomes a failed check row
        return None, time.perf_counter() - t0, exc


def run_smoke(
    urls: list[str],
    repo: Path,
    plan: Plan,
    *,
    reference: Callable[[np.ndarray], list] | None = None,
    expect_text: bool = True,
    progress: Callable[[str], None] = lambda message: None,
    server_pid: int | None = None,
) -> SmokeReport:
    """All checks against every URL (e.g. the HTTP and the gRPC endpoint of one server).

    The per-model min/opt/max inferences run against the first URL that takes inference only (an
    HTTP URL of a server that serves inference over gRPC only is checked for health, configs and
    that refusal). With `server_pid` (the tritonserver process), the checks end with
    `check_memory` on that URL.

    `reference` is the in-process pipeline's `read`: served words and boxes must equal its own on
    the smoke image. `expect_text=False` skips the exact-text check (random-weight recognizers).
    """
    report = SmokeReport()
    image = smoke_image()
    expected_ref = reference(image) if reference else None
    inference_url = None
    for url in urls:
        endpoint = Endpoint.parse(url)
        add = lambda model, check, ok, expected="", got="", seconds=0.0: report.checks.append(  # noqa: E731
            Check(model, check, bool(ok), str(expected), str(got), endpoint.protocol, round(seconds, 4))
        )
        progress(f"{endpoint.url}: health")
        client, _, exc = _timed(lambda: connect(endpoint))
        live, _, exc = _timed(lambda: client.is_server_live()) if client else (None, 0, exc)
        add("server", "live", live is True, True, live if exc is None else exc)
        ready, _, exc = _timed(lambda: client.is_server_ready())
        add("server", "ready", ready is True, True, ready if exc is None else exc)
        if not (live and ready):
            continue
        names = [m.triton_name for m in plan.models()] + ["pipeline"]
        for name in names:
            ok, _, exc = _timed(lambda: client.is_model_ready(name))
            add(name, "ready", ok is True, True, ok if exc is None else exc)
            served, _, exc = _timed(lambda: _served_config(client, endpoint, name))
            diffs = config_differences(rendered_config(repo, name), served) if served is not None else [str(exc)]
            add(name, "config equals rendered config.pbtxt", not diffs, "no differences", "; ".join(diffs))
        if endpoint.protocol == "http":
            refused, _, exc = _timed(lambda: http_inference_refused(endpoint))
            if refused:
                add("server", "refuses inference over HTTP (gRPC only)", True, True, True)
                continue
        # The profile shapes cost the most (the detector's max canvas): check them on one protocol.
        for model in plan.models() if inference_url is None else ():
            for point, feeds in profile_inputs(model).items():
                progress(f"{endpoint.url}: {model.triton_name} at {point} shape")
                shape = next(iter(feeds.values())).shape
                want = expected_output_shape(model, shape)
                out, seconds, exc = _timed(lambda: infer(client, endpoint, model.triton_name, feeds, ["output"]))
                got = out["output"].shape if out else exc
                ok = out is not None and tuple(out["output"].shape) == want and np.isfinite(out["output"]).all()
                add(model.triton_name, f"infer at {point} shape {list(shape)}", ok, want, got, seconds)
        inference_url = inference_url or url
        progress(f"{endpoint.url}: pipeline reads the smoke image")
        words, seconds, exc = _timed(lambda: TritonPipelineClient(endpoint.url).read(image))
        texts = [w.text for w in words] if words is not None else exc
        if expect_text:
            add("pipeline", "reads the smoke image", texts == list(SMOKE_WORDS), list(SMOKE_WORDS), texts, seconds)
        if expected_ref is not None and words is not None:
            add("pipeline", "served words equal in-process words",
                texts == [w.text for w in expected_ref], [w.text for w in expected_ref], texts)
            gap = _max_polygon_gap(words, expected_ref)
            add("pipeline", "served boxes equal in-process boxes (<= 1 px)", gap <= 1.0, "<= 1.0 px", f"{gap:.3f} px")
    if inference_url is None and any(c.check == "refuses inference over HTTP (gRPC only)" for c in report.checks):
        report.checks.append(Check("pipeline", "some URL takes inference", False, "a grpc:// URL",
                                   "every URL given refuses inference", "http"))
    if server_pid is not None and inference_url is not None:
        check_memory(report, inference_url, plan, server_pid, progress)
    return report


def _max_polygon_gap(served: list, reference: list) -> float:
    if len(served) != len(reference):
        return float("inf")
    if not served:
        return 0.0
    return max(
        float(np.abs(np.asarray(a.polygon, float) - np.asarray(b.polygon, float)).max())
        for a, b in zip(served, reference)
    )


# --- memory under load: every instance busy at its max shape at once -------------------------

SAMPLE_S = 0.05


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc/<pid>/task/<tid>/children), those still alive."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:  # the task ended meanwhile
                pass
    return found


def process_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes (empty when the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) * 1024 for k, _, v in (line.partition(":") for line in lines) if k in ("VmRSS", "VmHWM")}


def process_label(pid: int, models: tuple[str, ...]) -> str:
    """The model a Python-backend stub serves (its arguments hold the model path and the instance
    name, `<model>_<n>_<n>`), else the program's name (tritonserver)."""
    try:
        args = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return "?"
    for name in models:
        if any(a == name or a.startswith(name + "_") or f"/{name}/" in a for a in args[1:]):
            return name
    return Path(args[0]).name if args else "?"


class TreeSampler:
    """Samples the summed VmRSS of a process tree in a thread; at the end reads each VmHWM."""

    def __init__(self, pid: int, models: tuple[str, ...] = ()):
        self.pid, self.models, self.peak, self._stop = pid, models, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(process_status(p).get("VmRSS", 0) for p in process_tree(self.pid)))
            time.sleep(SAMPLE_S)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def high_water_marks(self) -> dict[str, int]:
        """Summed VmHWM per label (model name, tritonserver, ...): each process's own peak."""
        marks: dict[str, int] = {}
        for pid in process_tree(self.pid):
            label = process_label(pid, self.models)
            marks[label] = marks.get(label, 0) + process_status(pid).get("VmHWM", 0)
        return marks


def max_shape_feeds(model: ModelPlan, seed: int = 1) -> dict[str, np.ndarray]:
    return random_feeds(model, "max", np.random.default_rng(seed))


def largest_image(plan: Plan) -> np.ndarray:
    """The largest request the pipeline accepts, square so the detector gets its max input too:
    the smoke image scaled to the canvas, tiled to `max_image_pixels`. The plan holds memory for
    one such image in flight per pipeline instance, in the server and in the pipeline."""
    from PIL import Image

    side = math.isqrt(plan.pipeline.max_image_pixels)
    canvas = min(plan.pipeline.canvas_size, side)
    tile = np.asarray(Image.fromarray(smoke_image()).resize((canvas, canvas)))
    repeats = -(-side // canvas)
    return np.tile(tile, (repeats, repeats, 1))[:side, :side]


def drive_max_shapes(url: str, plan: Plan, progress: Callable[[str], None]) -> list[tuple[str, Exception | None]]:
    """Every model instance busy at once: as many concurrent max-shape requests per model as it
    has instances, and the largest accepted image per pipeline instance. Returns (model, error)."""
    endpoint = Endpoint.parse(url)
    jobs: list[tuple[str, Callable[[], Any]]] = []
    for model in plan.models():
        feeds = max_shape_feeds(model)
        for _ in range(model.instance_count):
            jobs.append((model.triton_name, lambda m=model.triton_name, f=feeds: infer(connect(endpoint), endpoint, m, f, ["output"])))
    image = largest_image(plan)
    for _ in range(plan.pipeline.instance_count):
        jobs.append(("pipeline", lambda: TritonPipelineClient(endpoint.url).read(image)))
    progress(f"{url}: {len(jobs)} concurrent max-shape requests ({', '.join(sorted({n for n, _ in jobs}))})")

    def run(job: tuple[str, Callable[[], Any]]) -> tuple[str, Exception | None]:
        _, _, exc = _timed(job[1])
        return job[0], exc

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(run, jobs))


def gpu_memory(indices: tuple[int, ...]) -> tuple[int, dict[int, int]]:
    """Memory used on the plan's GPUs (NVML), summed: the whole GPUs, as other tenants count too;
    and what NVML charges to each process there (pid -> bytes; processes it cannot account, as in
    some containers, are left out). One NVML session for both: smoke samples it every SAMPLE_S."""
    import pynvml

    pynvml.nvmlInit()
    try:
        total, by_process = 0, {}
        for index in indices:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            total += pynvml.nvmlDeviceGetMemoryInfo(handle).used
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.usedGpuMemory:
                    by_process[proc.pid] = by_process.get(proc.pid, 0) + proc.usedGpuMemory
        return total, by_process
    finally:
        pynvml.nvmlShutdown()


def check_memory(report: SmokeReport, url: str, plan: Plan, server_pid: int, progress: Callable[[str], None]) -> None:
    """Drive every instance at its max shape at once and compare the peak with the plan.

    CPU: the server's process tree, as the larger of the sampled summed VmRSS and the sum of
    each process's VmHWM. GPU: NVML memory used on the plan's GPUs, sampled (not testable on a
    machine without a GPU). A peak above the budget fails the smoke; an estimate below the
    peak is a planner bug, reported as a warning.
    """
    gpu = plan.device == "gpu"
    gpu_peak = [0]
    gpu_by_process: dict[int, int] = {}  # each process's most, over the samples
    stop = threading.Event()

    def sample_gpu() -> None:
        while not stop.is_set():
            total, by_process = gpu_memory(plan.detector.gpus)
            gpu_peak[0] = max(gpu_peak[0], total)
            for pid, used in by_process.items():
                gpu_by_process[pid] = max(gpu_by_process.get(pid, 0), used)
            time.sleep(SAMPLE_S)

    sampler_thread = threading.Thread(target=sample_gpu, daemon=True) if gpu else None
    t0 = time.perf_counter()
    labels = (*(m.triton_name for m in plan.models()), "pipeline")
    with TreeSampler(server_pid, labels) as tree:
        if sampler_thread:
            sampler_thread.start()
        results = drive_max_shapes(url, plan, progress)
        stop.set()
        if sampler_thread:
            sampler_thread.join()
    seconds = time.perf_counter() - t0
    marks = tree.high_water_marks()
    host_peak = max(tree.peak, sum(marks.values()))
    gpu_marks: dict[str, int] = {}  # per label, as host_high_water_marks_bytes: where the GPU memory is
    served = set(process_tree(server_pid))
    for pid, used in gpu_by_process.items():
        label = process_label(pid, labels) if pid in served else "other processes"
        gpu_marks[label] = gpu_marks.get(label, 0) + used
    for name, exc in results:
        report.checks.append(Check(name, "infer at max shape, every instance busy", exc is None, "an answer",
                                   "ok" if exc is None else str(exc), Endpoint.parse(url).protocol, round(seconds, 4)))
    host_estimate = plan.host_memory_estimate_bytes or plan.memory_estimate_bytes
    host_budget = plan.host_memory_budget_bytes or plan.memory_budget_bytes
    rows = [("host RAM (server process tree)", host_peak, host_estimate, host_budget)]
    if gpu:
        rows.append(("GPU memory (NVML)", gpu_peak[0], plan.memory_estimate_bytes, plan.memory_budget_bytes))
    per_model = ", ".join(f"{k} {v // MIB} MiB" for k, v in sorted(marks.items(), key=lambda kv: -kv[1]))
    for what, peak, estimate, budget in rows:
        report.checks.append(Check(
            "deployment", f"{what} peak within the budget", peak <= budget, f"<= {budget // MIB} MiB",
            f"{peak // MIB} MiB (estimate {estimate // MIB} MiB; per process: {per_model})", "", round(seconds, 4)))
        if estimate < peak:
            report.warnings.append(
                f"planner bug: {what} estimate {estimate // MIB} MiB is below the measured peak {peak // MIB} MiB "
                f"at the max shapes (per process: {per_model})"
            )
    per_model_estimates = {}
    if not gpu or gpu_marks:  # each model's instances are its stub processes: compare them one by one
        for model in plan.models():
            measured = (gpu_marks if gpu else marks).get(model.triton_name, 0)
            per_model_estimates[model.triton_name] = {"estimate_bytes": model.memory_estimate_bytes, "peak_bytes": measured}
            if model.memory_estimate_bytes < measured:
                report.warnings.append(
                    f"planner bug: {model.triton_name} ({model.family} {model.precision}, {model.instance_count} "
                    f"instance(s)) estimate {model.memory_estimate_bytes // MIB} MiB is below its measured peak "
                    f"{measured // MIB} MiB at max shape {list(next(iter(model.profile.values())).max)}"
                )
    report.memory = {
        "models": per_model_estimates,
        "host_peak_bytes": host_peak,
        "host_sampled_peak_bytes": tree.peak,
        "host_high_water_marks_bytes": marks,
        "gpu_by_process_bytes": gpu_marks if gpu else None,
        "host_estimate_bytes": host_estimate,
        "host_budget_bytes": host_budget,
        "gpu_peak_bytes": gpu_peak[0] if gpu else None,
        "gpu_estimate_bytes": plan.memory_estimate_bytes if gpu else None,
        "gpu_budget_bytes": plan.memory_budget_bytes if gpu else None,
        "estimate_over_peak": round(host_estimate / host_peak, 3) if host_peak else None,
        "seconds": round(seconds, 3),
    }
