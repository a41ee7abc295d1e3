"""Model-level timing: each model on each runtime at the reference benchmark's shapes.

The detector runs at the four images of the reference perf_analyzer benchmark after the
pipeline's own canvas resize and pad-to-32 (so 3280x2625 becomes 2560x2048 at canvas 2560);
recognizers run at batch 1, 4 and 16 of their usual crop size. Every call takes numpy in and
gives numpy out, so GPU runtimes pay their host<->device copies as a served model does. Each
runtime is compared with torch eager on the same kind of device, measured in the same run.
Without torch (the core install) the torch runtimes are skipped with the reason; without
onnx the GFLOP columns are empty, said once.

Only torch, onnxruntime, onnx, numpy and opencv are used here (no click, rich or
tritonclient), so `benchmarks/gpu_bench.py` can run this on a bare GPU machine.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from stdr_deploy.bench.flops import count_flops
from stdr_deploy.bench.peak import Peak
from stdr_deploy.bench.stats import LatencyStats
from stdr_deploy.errors import EXPORT_EXTRA_HINT, MissingDependency, require_onnx
from stdr_deploy.ocr.detector_input import padded_size, resized_size

# (name, height, width) of the reference benchmark's four images (CxHxW 3x472x338, 3x3280x2625,
# 3x512x413, 3x1600x1200) = scenes_A img00..img03
SEED_IMAGES = (("img00", 472, 338), ("img01", 3280, 2625), ("img02", 512, 413), ("img03", 1600, 1200))
RECOGNIZER_BATCHES = (1, 4, 16)
# torch-cuda-nhwc-fp16: fp16, channels-last tensors and cuDNN's autotuner (the best torch eager
# does without a compiler); "-resident" keeps inputs and outputs on the GPU: the device's own time.
TORCH_CUDA = ("torch-cuda", "torch-cuda-fp16", "torch-cuda-nhwc-fp16", "torch-cuda-nhwc-fp16-resident")
RUNTIMES = ("torch", "ort-cpu", *TORCH_CUDA, "ort-cuda", "tensorrt")
GPU_RUNTIMES = frozenset({*TORCH_CUDA, "ort-cuda", "tensorrt"})
RANDOM_WEIGHTS = "random"  # weights value: untrained network (timing only; same FLOPs)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelCase:
    """One measurement point: a model, a runtime and one input shape."""

    model: str
    runtime: str
    shape: tuple[int, ...]
    label: str  # "img01 2560x2048", "batch 16"

    @property
    def items(self) -> int:
        """Images (detector) or crops (recognizer) per call."""
        return self.shape[0]

    @property
    def precision(self) -> str:
        """fp16 runtimes say so; float32 on a GPU is TF32 on the tensor cores by default (cuDNN
        convolutions in torch, ONNX Runtime's CUDA EP, TensorRT), so its ceiling is TF32's."""
        if "fp16" in self.runtime:
            return "fp16"
        return "tf32" if self.runtime in GPU_RUNTIMES else "fp32"


@dataclass(frozen=True)
class TimingPolicy:
    """Warm-up calls, then timed calls until `min_runs` are done and either `max_seconds` of
    timed calls have passed or `max_runs` were made (whichever first)."""

    warmup: int = 1
    min_runs: int = 3  # CRAFT at 2560x2048 takes ~30 s a call on two CPU cores
    max_runs: int = 200
    max_seconds: float = 10.0


QUICK_POLICY = TimingPolicy(warmup=1, min_runs=3, max_runs=20, max_seconds=1.0)


@dataclass(frozen=True)
class ModelResult:
    case: ModelCase
    latency: LatencyStats | None
    error: str | None = None
    gflops: float | None = None  # per call, from the ONNX graph
    speedup_vs_torch: float | None = None  # torch eager p50 / this p50, same device kind
    baseline: str | None = None  # which torch runtime the speedup is against
    achieved_gflops_per_s: float | None = None
    fraction_of_peak: float | None = None

    @property
    def throughput(self) -> float | None:
        """Items per second at the median latency."""
        return None if self.latency is None else self.case.items / (self.latency.p50_ms / 1000.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.case.model,
            "runtime": self.case.runtime,
            "label": self.case.label,
            "shape": list(self.case.shape),
            "items": self.case.items,
            "precision": self.case.precision,
            "latency": self.latency.to_dict() if self.latency else None,
            "throughput_items_per_s": self.throughput,
            "gflops_per_call": self.gflops,
            "achieved_gflops_per_s": self.achieved_gflops_per_s,
            "fraction_of_peak": self.fraction_of_peak,
            "speedup_vs_torch": self.speedup_vs_torch,
            "baseline": self.baseline,
            "error": self.error,
        }


@dataclass(frozen=True)
class ModelBench:
    results: tuple[ModelResult, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)  # runtime -> why it did not run
    weights: str = "default"
    threads: int | None = None
    flops_unavailable: str | None = None  # why the GFLOP columns are empty, when they all are

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "threads": self.threads,
            "skipped_runtimes": dict(self.skipped),
            "flops_unavailable": self.flops_unavailable,
            "results": [r.to_dict() for r in self.results],
        }


def detector_shapes(
    canvas_size: int = 2560, mag_ratio: float = 1.0, images: Sequence[tuple[str, int, int]] = SEED_IMAGES
) -> list[tuple[str, tuple[int, ...]]]:
    """(label, NCHW shape) of each image after the pipeline's resize to the canvas and pad to 32."""
    shapes = []
    for name, height, width in images:
        ph, pw = padded_size(*resized_size(height, width, canvas_size, mag_ratio))
        shapes.append((f"{name} {ph}x{pw}", (1, 3, ph, pw)))
    return shapes


def recognizer_shapes(model: str, batches: Sequence[int] = RECOGNIZER_BATCHES) -> list[tuple[str, tuple[int, ...]]]:
    """(label, NCHW shape) at each batch size and the family's usual crop size."""
    from stdr_deploy.models import get_spec

    spec = get_spec(model)
    return [(f"batch {b}", spec.input_shape(b)) for b in batches]


def plan_cases(
    models: Sequence[str],
    runtimes: Sequence[str],
    *,
    quick: bool = False,
    canvas_size: int = 2560,
    mag_ratio: float = 1.0,
    square_canvas: bool = False,
) -> list[ModelCase]:
    """Every (model, runtime, shape) to measure, grouped so each session loads once.

    `quick` keeps the two small images and batches 1 and 4; `square_canvas` adds the detector's
    worst case, a canvas x canvas input (what "CRAFT at its max canvas" costs).
    """
    from stdr_deploy.models import get_spec

    cases = []
    for model in models:
        if get_spec(model).role == "detector":
            shapes = detector_shapes(canvas_size, mag_ratio)
            if quick:
                shapes = [s for s in shapes if s[0].startswith(("img00", "img02"))]
            if square_canvas:
                side = padded_size(canvas_size, canvas_size)[0]
                shapes.append((f"canvas {side}x{side}", (1, 3, side, side)))
        else:
            shapes = recognizer_shapes(model, RECOGNIZER_BATCHES[:2] if quick else RECOGNIZER_BATCHES)
        cases += [ModelCase(model, runtime, shape, label) for runtime in runtimes for label, shape in shapes]
    return cases


def available_runtimes(engines: Mapping[str, Path] | None = None) -> dict[str, str | None]:
    """Runtime -> None when it can run here, else the reason it cannot."""
    import onnxruntime as ort

    try:
        import torch
    except ImportError:
        torch = None
    no_torch = f"torch is not installed ({EXPORT_EXTRA_HINT})"
    cuda = torch is not None and torch.cuda.is_available()
    providers = ort.get_available_providers()
    try:
        import tensorrt  # noqa: F401

        trt_reason = None if engines else "no engine given (--engine MODEL=PATH, built by `stdr-deploy build`)"
    except ImportError:
        trt_reason = "tensorrt is not importable"
    if torch is None and not trt_reason:
        trt_reason = no_torch  # the engine runner holds CUDA memory through torch
    return {
        "torch": None if torch is not None else no_torch,
        "ort-cpu": None,
        **{name: None if cuda else no_torch if torch is None else "torch sees no CUDA device" for name in TORCH_CUDA},
        "ort-cuda": None
        if "CUDAExecutionProvider" in providers
        else f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {', '.join(providers)})",
        "tensorrt": trt_reason if (trt_reason or cuda) else "TensorRT needs a CUDA device",
    }


def time_calls(call: Callable[[], Any], policy: TimingPolicy) -> list[float]:
    """Seconds per timed call, after the warm-up calls."""
    for _ in range(policy.warmup):
        call()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < policy.min_runs or (
        len(samples) < policy.max_runs and time.perf_counter() - started < policy.max_seconds
    ):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


def run_model_bench(
    cases: Sequence[ModelCase],
    *,
    policy: TimingPolicy = TimingPolicy(),
    weights: Mapping[str, str | Path] | None = None,
    engines: Mapping[str, Path] | None = None,
    threads: int | None = None,
    peaks: Mapping[str, Peak] | None = None,
    progress: Progress | None = None,
) -> ModelBench:
    """Measure every case; a case that fails is recorded with its error, never raised.

    `weights` maps a model to a weights file/registry name, or to "random" for an untrained
    network (timing only). `threads` sets torch's and ONNX Runtime's intra-op threads (None:
    their defaults). `peaks` maps "cpu"/"gpu" to a `Peak` for the fraction-of-peak column.
    """
    weights = dict(weights or {})
    reasons = available_runtimes(engines)
    skipped = {r: reasons[r] for r in dict.fromkeys(c.runtime for c in cases) if reasons.get(r)}
    runnable = [c for c in cases if c.runtime not in skipped]
    onnx_paths = _OnnxFiles(weights)
    measured: list[ModelResult] = []
    with onnx_paths:
        try:
            flops, flops_unavailable = _flops_per_shape(runnable, onnx_paths), None
        except MissingDependency as exc:
            flops, flops_unavailable = {}, f"{exc} ({exc.hint})"
        for (model, runtime), group in _grouped(runnable):
            try:
                call = make_call(runtime, model, weights.get(model), onnx_paths, engines or {}, threads)
            except Exception as exc:  # noqa: BLE001 - recorded per case, the run goes on
                measured += [ModelResult(c, None, error=_describe(exc)) for c in group]
                continue
            for case in group:
                if progress:
                    progress(f"{case.model} {case.runtime} {case.label}")
                x = _example(case)
                try:
                    samples = time_calls(lambda: call(x), policy)
                    measured.append(ModelResult(case, LatencyStats.from_seconds(samples)))
                except Exception as exc:  # noqa: BLE001
                    measured.append(ModelResult(case, None, error=_describe(exc)))
            del call
    results = summarize(measured, flops, peaks or {})
    label = ", ".join(f"{m}={w}" for m, w in sorted(weights.items())) or "default"
    return ModelBench(tuple(results), skipped, label, threads, flops_unavailable)


def summarize(
    results: Sequence[ModelResult],
    flops: Mapping[tuple[str, tuple[int, ...]], float | None],
    peaks: Mapping[str, Peak],
) -> list[ModelResult]:
    """Add FLOP/s, fraction of peak and the speedup over torch eager to each measured case."""
    p50 = {(r.case.model, r.case.runtime, r.case.shape): r.latency.p50_ms for r in results if r.latency}
    out = []
    for r in results:
        if r.latency is None:
            out.append(r)
            continue
        key = (r.case.model, r.case.shape)
        gflops = flops.get(key)
        baseline = _baseline(r.case.runtime, {rt for (m, rt, s) in p50 if (m, s) == key})
        base_ms = p50.get((r.case.model, baseline, r.case.shape)) if baseline else None
        achieved = gflops / (r.latency.p50_ms / 1000.0) if gflops else None
        peak = peaks.get("gpu" if r.case.runtime in GPU_RUNTIMES else "cpu")
        out.append(
            ModelResult(
                r.case,
                r.latency,
                None,
                gflops,
                base_ms / r.latency.p50_ms if base_ms else None,
                baseline,
                achieved,
                achieved / peak.for_precision(r.case.precision) if achieved and peak else None,
            )
        )
    return out


def make_call(
    runtime: str,
    model: str,
    weights: str | Path | None,
    onnx_files: "_OnnxFiles",
    engines: Mapping[str, Path],
    threads: int | None,
) -> Callable[[np.ndarray], Any]:
    """A function numpy input -> numpy outputs running `model` on `runtime` (loaded once)."""
    if runtime == "torch" or runtime in TORCH_CUDA:
        return _torch_call(model, weights, runtime, threads)
    if runtime in ("ort-cpu", "ort-cuda"):
        providers = ["CPUExecutionProvider"] if runtime == "ort-cpu" else ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return _ort_call(onnx_files.path(model), providers, threads)
    if runtime == "tensorrt":
        from stdr_deploy.engines.runner import TrtRunner

        if model not in engines:
            raise ValueError(f"no TensorRT engine given for {model}")
        runner = TrtRunner(engines[model])
        return lambda x: runner.infer({"input": x})
    raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")


def _torch_call(model: str, weights: str | Path | None, runtime: str, threads: int | None):
    import torch

    from stdr_deploy.models import build_model, load_model

    if threads:
        torch.set_num_threads(threads)
    device = "cpu" if runtime == "torch" else "cuda"
    dtype = torch.float16 if "fp16" in runtime else torch.float32
    nhwc, resident = "nhwc" in runtime, runtime.endswith("resident")
    layout = torch.channels_last if nhwc else torch.contiguous_format
    net = build_model(model) if weights == RANDOM_WEIGHTS else load_model(model, weights)
    net = net.to(device=device, dtype=dtype, memory_format=layout)
    flags = {"enabled": True, "benchmark": nhwc, "deterministic": False, "allow_tf32": True}

    def to_device(x: np.ndarray) -> Any:
        # copy first, cast on the device: a host-side cast of a 2560x2560 canvas costs more than the copy
        t = torch.from_numpy(x).to(device)
        t = t.to(dtype) if t.is_floating_point() else t  # uint8 pixels: the network normalises them
        return t.contiguous(memory_format=layout) if t.dim() == 4 else t

    def forward(t: Any) -> tuple[Any, ...]:
        with torch.inference_mode(), torch.backends.cudnn.flags(**flags):
            out = net(t)
        return out if isinstance(out, (tuple, list)) else (out,)

    if resident:
        held: list[Any] = [None, None]  # the last host array and its device copy

        def call_resident(x: np.ndarray) -> Any:
            if held[0] is not x:
                held[:] = [x, to_device(x)]
            outs = forward(held[1])
            torch.cuda.synchronize()
            return outs

        return call_resident

    def call(x: np.ndarray) -> Any:
        return [o.float().cpu().numpy() for o in forward(to_device(x))]  # .cpu() synchronises the device

    return call


def _ort_call(path: Path, providers: list[str], threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=providers)
    if providers[0] not in session.get_providers():
        raise RuntimeError(f"onnxruntime did not enable {providers[0]} (got {session.get_providers()})")
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


class _OnnxFiles:
    """ONNX file per model: the export cache's, or one exported from random weights on demand."""

    def __init__(self, weights: Mapping[str, str | Path]):
        self.weights = weights
        self._paths: dict[str, Path] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "_OnnxFiles":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stack.close()

    def path(self, model: str) -> Path:
        if model not in self._paths:
            from stdr_deploy.onnx_files import ensure_onnx

            weights = self.weights.get(model)
            if weights == RANDOM_WEIGHTS:
                weights = self._random_weights_file(model)
            self._paths[model] = ensure_onnx(model, weights)
        return self._paths[model]

    def _random_weights_file(self, model: str) -> Path:
        import torch

        from stdr_deploy.models import build_model

        folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="stdr-bench-")))
        path = folder / f"{model}-random.pth"
        torch.manual_seed(0)
        torch.save(build_model(model).state_dict(), path)
        return path


def _flops_per_shape(cases: Sequence[ModelCase], onnx_files: _OnnxFiles) -> dict[tuple[str, tuple[int, ...]], float | None]:
    """GFLOPs per call for each distinct (model, shape); None where the graph can't be counted.
    MissingDependency without the onnx package: no count at all, said once for the whole table."""
    require_onnx("counting FLOPs", "bench")
    out: dict[tuple[str, tuple[int, ...]], float | None] = {}
    for case in cases:
        key = (case.model, case.shape)
        if key in out:
            continue
        try:
            out[key] = count_flops(onnx_files.path(case.model), {"input": case.shape}).gflops
        except Exception:  # noqa: BLE001 - a missing count leaves the column empty, not the run
            out[key] = None
    return out


def _grouped(cases: Sequence[ModelCase]) -> Iterator[tuple[tuple[str, str], list[ModelCase]]]:
    groups: dict[tuple[str, str], list[ModelCase]] = {}
    for case in cases:
        groups.setdefault((case.model, case.runtime), []).append(case)
    yield from groups.items()


def _baseline(runtime: str, measured: set[str]) -> str | None:
    """Torch eager on the same kind of device, else on the CPU; None for torch itself."""
    if runtime in ("torch", "torch-cuda"):
        return None
    preferred = "torch-cuda" if runtime in GPU_RUNTIMES else "torch"
    return next((r for r in (preferred, "torch") if r in measured), None)


def _example(case: ModelCase) -> np.ndarray:
    """Seeded input in the model's value range (as its preprocessing produces)."""
    from stdr_deploy.models import get_spec

    _, _, height, width = case.shape
    return get_spec(case.model).example_input(case.shape[0], height, width)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@dataclass(frozen=True)
class ChainResult:
    """Detector at one shape then the recognizer on a full batch, timed as one call."""

    runtime: str
    detector: str
    detector_shape: tuple[int, ...]
    recognizer: str
    recognizer_shape: tuple[int, ...]
    latency: LatencyStats | None
    error: str | None = None
    recognizer_runtime: str | None = None  # None: same as the detector's

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "recognizer_runtime": self.recognizer_runtime or self.runtime,
            "detector": self.detector,
            "detector_shape": list(self.detector_shape),
            "recognizer": self.recognizer,
            "recognizer_shape": list(self.recognizer_shape),
            "latency": self.latency.to_dict() if self.latency else None,
            "error": self.error,
        }


def run_chain_bench(
    runtime: str,
    detector_shape: tuple[int, ...],
    recognizer: str,
    *,
    detector: str = "craft",
    batch: int = 16,
    recognizer_runtime: str | None = None,
    policy: TimingPolicy = TimingPolicy(),
    weights: Mapping[str, str | Path] | None = None,
    threads: int | None = None,
) -> ChainResult:
    """The GPU budget question: CRAFT at its largest canvas plus one batch of `batch` crops.

    Both models run back to back in each timed call, host arrays in and out, as the pipeline
    model runs them (minus its pre- and post-processing). `recognizer_runtime` lets the
    recognizer run in another precision than the detector, as a GPU plan may have it.
    """
    from stdr_deploy.models import get_spec

    weights = dict(weights or {})
    rec_runtime = recognizer_runtime or runtime
    rec_shape = get_spec(recognizer).input_shape(batch)
    facts = (runtime, detector, detector_shape, recognizer, rec_shape)
    try:
        with _OnnxFiles(weights) as onnx_files:
            det = make_call(runtime, detector, weights.get(detector), onnx_files, {}, threads)
            rec = make_call(rec_runtime, recognizer, weights.get(recognizer), onnx_files, {}, threads)
            x_det = _example(ModelCase(detector, runtime, detector_shape, ""))
            x_rec = _example(ModelCase(recognizer, rec_runtime, rec_shape, ""))
            samples = time_calls(lambda: (det(x_det), rec(x_rec)), policy)
        return ChainResult(*facts, LatencyStats.from_seconds(samples), recognizer_runtime=rec_runtime)
    except Exception as exc:  # noqa: BLE001 - recorded, the report says what failed
        return ChainResult(*facts, None, _describe(exc), recognizer_runtime=rec_runtime)
