"""TensorRT engines: build specs from plans, real strongly typed builds, retries, the cache, `build --check`.

The builds are real: TensorRT-RTX (1.7, from the registry) parses and builds every graph here,
ahead of time for sm86 (the RTX A5000), on this CPU-only machine, through the same Polygraphy
code path full TensorRT takes. Only what needs a GPU at run time is stood in (tests/trt_double.py):
out-of-memory during a build, whether an engine still deserializes, and running an engine (the
accuracy check runs the engine's ONNX graph on ONNX Runtime instead: `ort_as_engine`).
Everything else is real: ONNX files exported by torch, the planner on the recorded host files,
ONNX Runtime as the reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from trt_double import OOM_MESSAGE, GpuStandIn, rtx_builder

from stdr_deploy import planner
from stdr_deploy.engines import (
    EngineCache,
    apply_build_results,
    build_engines,
    build_spec,
    cache_key,
    check_engines,
    host_fingerprint,
    inspect_onnx,
    plan_builds,
    retry_specs,
    trtexec_command,
    validation_feeds,
)
from stdr_deploy.engines.accuracy import OnnxRunner, Tolerance, check_engine_accuracy
from stdr_deploy.engines.graph import OnnxGraph
from stdr_deploy.engines.spec import MIB, InputProfile
from stdr_deploy.errors import HostUnsupported, MissingDependency, UserInputError, ValidationError
from stdr_deploy.hardware import load_host
from stdr_deploy.plan_schema import DynamicBatching, ModelPlan, PipelinePlan, Plan, ShapeProfile
from stdr_deploy.precision import mixed_precision

ROOT = Path(__file__).resolve().parents[1]
HOSTS = Path(__file__).resolve().parent / "hosts"
H100 = HOSTS / "h100-80g-hbm3.json"
A5000 = HOSTS / "a5000-24g.vendor.json"
GPU_HOSTS = sorted(p for p in HOSTS.glob("*.json") if json.loads(p.read_text())["gpus"])
CLI = [sys.executable, "-c", "from stdr_deploy.cli import main; main()"]
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


# --- stand-in ONNX models with the real IO names, exported by torch like the real ones ------


class TinyDetector(nn.Module):
    """CRAFT's signature: uint8 pixels [N, 3, H, W], normalised in the graph -> score maps [N, H/2, W/2, 2]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv((x.float() - 127.5) / 64.0).permute(0, 2, 3, 1)


class TinyRecognizer(nn.Module):
    """PARSeq's signature ([N, 3, 32, 128] -> [N, 26, 95]) with a LayerNorm and a Softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, kernel_size=(4, 8), stride=(4, 8))
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 95)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(self.embed(x).flatten(2).transpose(1, 2))
        attention = (tokens @ tokens.transpose(1, 2)).softmax(-1)
        return self.head((attention @ tokens)[:, :26])


def export(module: nn.Module, example: torch.Tensor, path: Path, dynamic: dict[int, str], opset: int) -> Path:
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p, std=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            example,
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": dynamic, "output": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path


def to_fp16(path: Path, out: Path) -> Path:
    """The product's fp16 mixed-precision recipe (stdr_deploy.precision) applied to a stand-in."""
    onnx.save(mixed_precision(onnx.load(str(path)))[0], str(out))
    return out


@pytest.fixture(scope="session")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The detector in fp32, the recognizer in fp16 (the plans' precisions below)."""
    folder = tmp_path_factory.mktemp("standins")
    recognizer = export(
        TinyRecognizer(), torch.zeros(2, 3, 32, 128), folder / "recognizer32.onnx", {0: "batch"}, opset=14
    )
    return {
        "craft": export(
            TinyDetector(), torch.zeros(1, 3, 64, 64, dtype=torch.uint8), folder / "detector.onnx", {0: "batch", 2: "height", 3: "width"},
            opset=11,
        ),
        "parseq": to_fp16(recognizer, folder / "recognizer.onnx"),
    }


@pytest.fixture(scope="session")
def host():
    return load_host(H100)


@pytest.fixture
def cache(tmp_path: Path) -> EngineCache:
    return EngineCache(tmp_path / "engines")


def detector_plan(precision: str = "fp32", max_side: int = 1216) -> ModelPlan:
    return ModelPlan(
        triton_name="craft",
        family="craft",
        role="detector",
        backend="tensorrt",
        precision=precision,
        max_batch_size=1,
        profile={"input": ShapeProfile((1, 3, 32, 32), (1, 3, 736, 736), (1, 3, max_side, max_side))},
        instance_count=2,
        instance_kind="KIND_GPU",
        gpus=(0,),
        intra_op_threads=0,
        inter_op_threads=0,
        workspace_bytes=2048 * MIB,
        dynamic_batching=None,
        memory_estimate_bytes=3 << 30,
    )


def recognizer_plan(precision: str = "fp16", batch: int = 16) -> ModelPlan:
    return ModelPlan(
        triton_name="parseq",
        family="parseq-tiny",
        role="recognizer",
        backend="tensorrt",
        precision=precision,
        max_batch_size=batch,
        profile={"input": ShapeProfile((1, 3, 32, 128), (4, 3, 32, 128), (batch, 3, 32, 128))},
        instance_count=2,
        instance_kind="KIND_GPU",
        gpus=(0,),
        intra_op_threads=0,
        inter_op_threads=0,
        workspace_bytes=1024 * MIB,
        dynamic_batching=DynamicBatching((4, batch), 100),
        memory_estimate_bytes=1 << 30,
    )


def make_plan(detector: ModelPlan | None = None, recognizer: ModelPlan | None = None, variant="tensorrt_plan") -> Plan:
    return Plan(
        variant=variant,
        device="gpu",
        detector=detector or detector_plan(),
        recognizer=recognizer or recognizer_plan(),
        pipeline=PipelinePlan(2, "KIND_CPU", 1216, 1.0, 40_000_000, 16, 0.7, 0.4, 0.4),
        memory_budget_bytes=70 << 30,
        memory_estimate_bytes=4 << 30,
    )


def spec_of(model: ModelPlan, onnx_path: Path, cache: EngineCache | None = None):
    timing = cache.root / "timing.cache" if cache else Path("/cache/timing.cache")
    return build_spec(model, inspect_onnx(onnx_path), timing_cache=timing)


def ort_as_engine(path: Path, spec, gpu: int) -> OnnxRunner:
    """Stands in for TrtRunner (which needs a GPU): the engine's own ONNX model on ORT."""
    return OnnxRunner(spec.onnx_path)


def qdq_detector(standins, folder: Path, quantize_bias: bool) -> Path:
    """The stand-in detector quantized like the int8 CRAFT (ONNX Runtime static QDQ, symmetric int8
    activations and weights), its biases int32 (ONNX Runtime's default) or float (our recipe)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.feeds = iter([{"input": rng.integers(0, 256, (1, 3, 64, 64), dtype=np.uint8)} for _ in range(2)])

        def get_next(self):
            return next(self.feeds, None)

    out = folder / f"detector-int8-{'int32' if quantize_bias else 'float'}-bias.onnx"
    quantize_static(
        str(standins["craft"]), str(out), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        extra_options={"QuantizeBias": quantize_bias, "ActivationSymmetric": True},
    )
    return out


# --- graphs: the precision is the graph's -----------------------------------------------------


def test_the_graph_says_its_precision(standins, tmp_path):
    assert inspect_onnx(standins["craft"]).precision == "fp32"
    assert inspect_onnx(standins["parseq"]).precision == "fp16"
    assert inspect_onnx(qdq_detector(standins, tmp_path, quantize_bias=False)).precision == "int8"


def test_no_weak_typing_api_is_left_in_the_product():
    """TensorRT 11 removed the precision flags: builds are strongly typed, precision is the graph's."""
    weak = re.compile(
        r"BuilderFlag\.(FP16|INT8|BF16|FP8|OBEY_PRECISION_CONSTRAINTS|PREFER_PRECISION_CONSTRAINTS)|"
        r"precision_constraints|set_output_type|layer\.precision|--fp16|--int8|--precisionConstraints|"
        r"--layerPrecisions|--layerOutputTypes|fp16=True|int8=True"
    )
    sources = sorted((ROOT / "stdr_deploy").rglob("*.py"))
    assert len(sources) > 20
    assert [str(p.relative_to(ROOT)) for p in sources if weak.search(p.read_text())] == []


# --- build specs -------------------------------------------------------------------------------


class FloatInputDetector(TinyDetector):
    """CRAFT's signature as an stdr-deploy before uint8 pixels exported it: normalised float32 in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).permute(0, 2, 3, 1)


def test_a_detector_graph_that_takes_float_is_refused_before_any_build(tmp_path):
    old = export(FloatInputDetector(), torch.zeros(1, 3, 64, 64), tmp_path / "old.onnx",
                 {0: "batch", 2: "height", 3: "width"}, opset=11)
    assert inspect_onnx(old).input_dtypes == ("float32",)
    with pytest.raises(UserInputError, match="takes float32 input 'input'; this stdr-deploy feeds craft uint8") as refused:
        spec_of(detector_plan(), old)
    assert "stdr-deploy export craft --precision fp32" in refused.value.hint


def test_detector_fp32_spec(standins, cache):
    spec = spec_of(detector_plan(), standins["craft"], cache)
    graph = inspect_onnx(standins["craft"])
    assert spec.to_dict() == {
        "triton_name": "craft",
        "family": "craft",
        "role": "detector",
        "onnx_path": str(standins["craft"]),
        "onnx_sha256": graph.sha256,
        "precision": "fp32",
        "profiles": [{"name": "input", "min": [1, 3, 32, 32], "opt": [1, 3, 736, 736], "max": [1, 3, 1216, 1216]}],
        "workspace_bytes": 2048 * MIB,
        "optimization_level": 3,
        "timing_cache_path": str(cache.root / "timing.cache"),
    }
    assert type(spec).from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "change, message",
    [
        ({"backend": "onnxruntime"}, "not TensorRT"),
        ({"precision": "fp32"}, "asks for fp32 but .* is an fp16 graph"),
        ({"profile": {"images": ShapeProfile((1, 3, 32, 128), (4, 3, 32, 128), (16, 3, 32, 128))}}, "inputs"),
        ({"profile": {"input": ShapeProfile((8, 3, 32, 128), (4, 3, 32, 128), (16, 3, 32, 128))}}, "min <= opt <= max"),
    ],
)
def test_build_spec_refuses_plans_that_cannot_build(standins, change, message):
    with pytest.raises(UserInputError, match=message):
        spec_of(dataclasses.replace(recognizer_plan(), **change), standins["parseq"])


def _with_tensorrt(host, version="10.3.0"):
    """The recorded hosts had no TensorRT; declare it so the planner may pick tensorrt_plan."""
    return dataclasses.replace(host, runtimes=dataclasses.replace(host.runtimes, tensorrt_version=version))


@pytest.mark.parametrize("recognizer", ["crnn-en", "parseq"])
@pytest.mark.parametrize("host_file", GPU_HOSTS, ids=[p.stem for p in GPU_HOSTS])
def test_every_gpu_host_file_plans_buildable_specs(host_file, recognizer):
    host = _with_tensorrt(load_host(host_file))
    plan = planner.make_plan(host, recognizer=recognizer, variant="tensorrt_plan")
    fingerprint = host_fingerprint(host, "10.3.0")
    for model in plan.models():
        graph = OnnxGraph(Path(f"/onnx/{model.family}.onnx"), "0" * 64, ("input",), model.precision)
        spec = build_spec(model, graph, timing_cache=EngineCache(Path("/c")).timing_cache_path(fingerprint))
        (profile,) = spec.profiles
        planned = model.profile["input"]
        assert (profile.min, profile.opt, profile.max) == (planned.min, planned.opt, planned.max)
        assert spec.workspace_bytes == model.workspace_bytes > 0
        assert spec.max_batch_size == model.max_batch_size
        assert spec.precision == model.precision
        assert spec.timing_cache_path == f"/c/{fingerprint.slug}/timing.cache"
        line = trtexec_command(spec, "model.plan")
        assert f"--memPoolSize=workspace:{model.workspace_bytes // MIB}" in line and "--stronglyTyped" in line
        assert f"--maxShapes=input:{'x'.join(map(str, profile.max))}" in line
        # Every retry is smaller than the last and stays buildable (min <= opt <= max).
        sizes = [s.profiles[0].max for s in (spec, *retry_specs(spec))]
        assert all(a > b for a, b in zip(sizes, sizes[1:]))
        for retry in retry_specs(spec):
            (p,) = retry.profiles
            assert all(lo <= o <= hi for lo, o, hi in zip(p.min, p.opt, p.max))


def test_detector_max_shape_follows_gpu_memory():
    def detector_max(name):
        host = _with_tensorrt(load_host(HOSTS / name))
        return planner.make_plan(host, recognizer="parseq", variant="tensorrt_plan").detector.profile["input"].max

    assert detector_max("laptop-8g.vendor.json")[2] <= detector_max("h100-80g-hbm3.json")[2]


# --- retries and trtexec -------------------------------------------------------------------------


def test_recognizer_retries_halve_the_max_batch(standins):
    spec = spec_of(recognizer_plan(batch=16), standins["parseq"])
    shapes = [(s.profiles[0].opt[0], s.profiles[0].max[0]) for s in retry_specs(spec)]
    assert shapes == [(4, 8), (4, 4), (2, 2), (1, 1)]


def test_detector_retries_step_down_to_the_opt_shape(standins):
    spec = spec_of(detector_plan(max_side=2560), standins["craft"])
    sides = [s.profiles[0].max[2] for s in retry_specs(spec)]
    assert sides == [1920, 1440, 1056, 768, 736]
    assert all(s.profiles[0].max[2] == s.profiles[0].max[3] for s in retry_specs(spec))
    assert retry_specs(spec_of(detector_plan(max_side=736), standins["craft"])) == ()


def test_trtexec_lines_are_strongly_typed(standins):
    spec = spec_of(detector_plan(), standins["craft"])
    assert trtexec_command(spec, "/e/model.plan") == [
        "trtexec",
        f"--onnx={standins['craft']}",
        "--saveEngine=/e/model.plan",
        "--minShapes=input:1x3x32x32",
        "--optShapes=input:1x3x736x736",
        "--maxShapes=input:1x3x1216x1216",
        "--memPoolSize=workspace:2048",
        "--builderOptimizationLevel=3",
        "--timingCacheFile=/cache/timing.cache",
        "--noTF32",
        "--stronglyTyped",
        "--skipInference",
    ]
    fp16 = trtexec_command(spec_of(recognizer_plan(), standins["parseq"]), "model.plan")
    assert fp16[-3:] == ["--noTF32", "--stronglyTyped", "--skipInference"]  # the graph carries fp16
    odd = dataclasses.replace(spec, workspace_bytes=1536 * 1024)  # 1.5 MiB: trtexec takes decimal MiB
    assert "--memPoolSize=workspace:1.5" in trtexec_command(odd, "model.plan")


# --- fingerprint and cache key -------------------------------------------------------------------


def test_host_fingerprint_of_a_recorded_host(host):
    fingerprint = host_fingerprint(host, "10.3.0")
    assert fingerprint.slug == "nvidia-h100-80gb-hbm3-sm90-trt10.3.0-drv580"
    with pytest.raises(HostUnsupported, match="GPU"):
        host_fingerprint(load_host(HOSTS / "cpu-xeon-2core.json"), "10.3.0")


def test_cache_key_changes_with_each_fingerprint_component_and_build_input(host, standins):
    spec = spec_of(recognizer_plan(), standins["parseq"])
    base = host_fingerprint(host, "10.3.0")
    key = cache_key(spec, base)
    fingerprints = [
        dataclasses.replace(base, gpu_name="NVIDIA RTX A5000"),
        dataclasses.replace(base, compute_capability="8.6"),
        dataclasses.replace(base, trt_version="11.4.0"),
        dataclasses.replace(base, driver_major=535),
    ]
    specs = [
        dataclasses.replace(spec, onnx_sha256="f" * 64),
        dataclasses.replace(spec, precision="fp32"),
        dataclasses.replace(spec, workspace_bytes=512 * MIB),
        dataclasses.replace(spec, optimization_level=5),
        retry_specs(spec)[0],
    ]
    keys = {cache_key(spec, f) for f in fingerprints} | {cache_key(s, base) for s in specs}
    assert key not in keys and len(keys) == len(fingerprints) + len(specs)
    moved = dataclasses.replace(spec, onnx_path="/elsewhere/model.onnx", timing_cache_path="/t/timing.cache")
    assert cache_key(moved, base) == key
    assert key.startswith("parseq-")


# --- the builder: real TensorRT-RTX builds, strongly typed ---------------------------------------


def test_tensorrt_rtx_builds_the_fp32_detector_and_the_fp16_recognizer(standins, tmp_path):
    builder = rtx_builder()
    assert builder.name == "TensorRT-RTX" and builder.target == (8, 6)
    timing = tmp_path / "timing.cache"
    for model, path in ((detector_plan(), standins["craft"]), (recognizer_plan(), standins["parseq"])):
        outcome = builder.build(spec_of(model, path), timing)
        assert outcome.engine is not None and len(outcome.engine) > 1000, outcome.messages
        assert not outcome.out_of_memory


def test_a_profile_the_graph_cannot_take_fails_the_build(standins):
    spec = spec_of(recognizer_plan(), standins["parseq"])
    wide = InputProfile("input", (1, 3, 32, 256), (4, 3, 32, 256), (16, 3, 32, 256))  # the graph is 32x128
    outcome = rtx_builder().build(dataclasses.replace(spec, profiles=(wide,)))
    assert outcome.engine is None and outcome.messages


def test_int32_biases_behind_dequantize_are_refused_by_the_parser_and_float_biases_build(standins, tmp_path):
    """What the int8 CRAFT hit: ONNX Runtime's default QDQ quantizes biases to int32, which TensorRT's
    parser rejects; `QuantizeBias: False` (stdr_deploy.quantize) leaves them float."""
    plan = detector_plan("int8")
    refused = spec_of(plan, qdq_detector(standins, tmp_path, quantize_bias=True))
    with pytest.raises(ValidationError, match=r"cannot parse craft .*\n.*node '[^']*DequantizeLinear' \(DequantizeLinear\)"):
        rtx_builder().build(refused)
    built = rtx_builder().build(spec_of(plan, qdq_detector(standins, tmp_path, quantize_bias=False)))
    assert built.engine is not None, built.messages


def test_unreadable_onnx_is_refused_before_any_build(tmp_path, standins):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(standins["parseq"].read_bytes()[:1000])
    with pytest.raises(UserInputError, match="cannot read ONNX model"):
        spec_of(recognizer_plan(), broken)


# --- build_engines: cache, retries, accuracy ---------------------------------------------------


def build(plan, standins, host, cache, builder, **options):
    return build_engines(plan, standins, host, builder=builder, cache=cache, make_runner=ort_as_engine, **options)


def test_build_checks_accuracy_and_keeps_engines_with_their_reports(standins, host, cache):
    results = build(make_plan(), standins, host, cache, GpuStandIn())
    fingerprint = host_fingerprint(host, "10.3.0")
    assert set(results) == {"craft", "parseq"}
    for result in results.values():
        assert result.engine_path == cache.entry(fingerprint, result.key) / "model.plan"
        report = json.loads(result.report_path.read_text())
        assert report["status"] == "ok" and report["accuracy"]["passed"]
        assert report["engine_sha256"] == hashlib.sha256(result.engine_path.read_bytes()).hexdigest()
        assert [a["ok"] for a in report["attempts"]] == [True]
        assert report["trtexec"].startswith("trtexec --onnx=") and "--stronglyTyped" in report["trtexec"]
        assert not result.cached and not result.shrunk
    assert results["parseq"].report["accuracy"]["atol"] == 5e-2 and results["parseq"].report["accuracy"]["argmax"]
    assert results["craft"].report["accuracy"]["atol"] == 1e-3


def test_a_second_build_reuses_the_cached_engines(standins, host, cache):
    first = build(make_plan(), standins, host, cache, GpuStandIn())
    builder = GpuStandIn()
    again = build(make_plan(), standins, host, cache, builder)
    assert all(r.cached for r in again.values()) and builder.builds == []
    assert {n: r.engine_path for n, r in again.items()} == {n: r.engine_path for n, r in first.items()}


def test_a_corrupt_engine_is_detected_and_rebuilt(standins, host, cache):
    first = build(make_plan(), standins, host, cache, GpuStandIn())
    engine = first["parseq"].engine_path
    engine.write_bytes(engine.read_bytes()[:-4] + b"XXXX")
    builder = GpuStandIn()
    again = build(make_plan(), standins, host, cache, builder)
    assert not again["parseq"].cached and again["craft"].cached
    assert [name for name, _ in builder.builds] == ["recognizer.onnx"]
    assert "corrupt" in again["parseq"].report["rebuilt_because"]


def test_a_stale_engine_that_no_longer_loads_is_rebuilt(standins, host, cache):
    first = build(make_plan(), standins, host, cache, GpuStandIn())
    # Same fingerprint and an intact file, but this TensorRT refuses it (e.g. a patched library).
    again = build(make_plan(), standins, host, cache, GpuStandIn(stale=True))
    assert not again["craft"].cached and "stale" in again["craft"].report["rebuilt_because"]
    assert again["craft"].engine_path == first["craft"].engine_path


def test_each_build_gets_its_fingerprints_timing_cache(standins, host, cache):
    """Full TensorRT reads and writes it (TensorRT-RTX has none: its builds here ignore it)."""
    for version in ("10.3.0", "11.4.0"):
        builder = GpuStandIn(version)
        build(make_plan(), standins, host, cache, builder)
        expected = cache.timing_cache_path(host_fingerprint(host, version))
        assert builder.timing_caches == [expected, expected] and expected.parent.is_dir()


def test_out_of_memory_halves_the_recognizer_batch_and_the_plan_follows(standins, host, cache):
    builder = GpuStandIn(fail_builds={"recognizer.onnx": 2})
    plan = make_plan()
    results = build(plan, standins, host, cache, builder)
    parseq = results["parseq"]
    attempts = parseq.report["attempts"]
    assert [(a["max_shapes"]["input"][0], a["ok"], a["out_of_memory"]) for a in attempts] == [
        (16, False, True), (8, False, True), (4, True, False),
    ]
    assert OOM_MESSAGE in attempts[0]["messages"][0]
    assert parseq.shrunk and parseq.spec.max_batch_size == 4
    assert builder.builds[-1] == ("recognizer.onnx", {"input": [4, 3, 32, 128]})  # the engine that was kept
    adjusted = apply_build_results(plan, results)
    assert adjusted.recognizer.max_batch_size == 4
    assert adjusted.recognizer.profile["input"].max == (4, 3, 32, 128)
    assert adjusted.recognizer.dynamic_batching.preferred_batch_sizes == (4,)
    assert adjusted.pipeline.recognizer_batch == 4
    assert adjusted.detector == plan.detector
    # The shrunk engine is what the requested spec's cache entry now holds.
    again = build(plan, standins, host, cache, GpuStandIn())
    assert again["parseq"].cached and again["parseq"].spec.max_batch_size == 4


def test_out_of_memory_steps_the_detector_down_and_caps_the_canvas(standins, host, cache):
    plan = make_plan(detector=detector_plan(max_side=1216))
    results = build(plan, standins, host, cache, GpuStandIn(fail_builds={"detector.onnx": 1}))
    assert results["craft"].spec.profiles[0].max == (1, 3, 896, 896)
    adjusted = apply_build_results(plan, results)
    assert adjusted.pipeline.canvas_size == 896
    assert adjusted.detector.profile["input"].max == (1, 3, 896, 896)


def test_out_of_memory_at_every_size_fails_with_every_attempt_reported(standins, host, cache):
    with pytest.raises(HostUnsupported, match="out of GPU memory in all 5 attempts"):
        build(make_plan(), standins, host, cache, GpuStandIn(fail_builds={"recognizer.onnx": 99}))
    fingerprint = host_fingerprint(host, "10.3.0")
    key = cache_key(spec_of(recognizer_plan(), standins["parseq"], cache), fingerprint)
    folder = cache.entry(fingerprint, key)
    report = json.loads((folder / "build.json").read_text())
    assert report["status"] == "failed" and len(report["attempts"]) == 5
    assert not (folder / "model.plan").exists()
    assert cache.lookup(fingerprint, key)[1] == "the last build failed (its report is kept)"


def test_a_failure_other_than_memory_is_not_retried(standins, host, cache):
    """A real build failure (a profile wider than the graph) is reported, not retried smaller."""
    wide = dataclasses.replace(
        recognizer_plan(), profile={"input": ShapeProfile((1, 3, 32, 256), (4, 3, 32, 256), (16, 3, 32, 256))}
    )
    builder = GpuStandIn()
    with pytest.raises(ValidationError, match="could not build"):
        build(make_plan(recognizer=wide), standins, host, cache, builder)
    assert [name for name, _ in builder.builds] == ["detector.onnx", "recognizer.onnx"]


def test_an_inaccurate_engine_fails_the_build_and_is_not_kept(tmp_path, standins, host, cache):
    skewed = tmp_path / "skewed.onnx"
    model = onnx.load(str(standins["parseq"]))
    for init in model.graph.initializer:
        if init.name == "head.bias":
            values = onnx.numpy_helper.to_array(init) + np.float16(0.1)  # the engine is off by 0.1 everywhere
            init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    onnx.save(model, str(skewed))

    def skewed_engine(path, spec, gpu):
        return OnnxRunner(skewed) if spec.triton_name == "parseq" else OnnxRunner(spec.onnx_path)

    with pytest.raises(ValidationError, match="not accurate enough"):
        build_engines(make_plan(), standins, host, builder=GpuStandIn(), cache=cache, make_runner=skewed_engine)
    fingerprint = host_fingerprint(host, "10.3.0")
    folder = cache.entry(fingerprint, cache_key(spec_of(recognizer_plan(), standins["parseq"], cache), fingerprint))
    assert not (folder / "model.plan").exists()
    assert json.loads((folder / "build.json").read_text())["accuracy"]["passed"] is False


def test_a_plan_without_tensorrt_has_nothing_to_build(standins, host, cache):
    onnx_plan = make_plan(variant="onnxruntime")
    with pytest.raises(UserInputError, match="no TensorRT engines"):
        build(onnx_plan, standins, host, cache, GpuStandIn())
    with pytest.raises(UserInputError, match="no TensorRT engines"):
        plan_builds(onnx_plan, standins, host, "10.3.0", cache)
    with pytest.raises(UserInputError, match="no TensorRT engines"):
        check_engines(onnx_plan, standins, host)


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here: the missing-library path cannot happen")
def test_without_tensorrt_a_real_build_says_how_to_install_it(standins, host, cache):
    with pytest.raises(MissingDependency) as info:
        build_engines(make_plan(), standins, host, cache=cache)
    assert "pip install '.[tensorrt]'" in info.value.hint


def test_dry_run_plans_builds_without_tensorrt(standins, host, cache):
    planned = plan_builds(make_plan(), standins, host, "10.3.0", cache)
    assert [p.spec.triton_name for p in planned] == ["craft", "parseq"]
    for p in planned:
        assert p.engine_path == cache.entry(p.fingerprint, p.key) / "model.plan"
        assert p.trtexec == trtexec_command(p.spec, p.engine_path)
        assert p.to_dict()["trtexec"].startswith("trtexec ")


# --- check_engines: every engine of a plan, built ahead of time by TensorRT-RTX ----------------


def test_check_builds_each_engine_for_the_plans_gpu_with_its_profiles(standins, host):
    """The H100 (sm90) is no TensorRT-RTX target: the check builds for sm86 and says so."""
    checks = check_engines(make_plan(), standins, host)
    assert [(c.spec.triton_name, c.spec.precision, c.target, c.ok) for c in checks] == [
        ("craft", "fp32", "sm86", True), ("parseq", "fp16", "sm86", True),
    ]
    assert checks[1].to_dict()["profile"] == "input 1x3x32x128 / 4x3x32x128 / 16x3x32x128"
    assert all(c.engine_bytes > 0 and c.builder.startswith("TensorRT-RTX 1.") for c in checks)


def test_a_failed_check_names_the_model_the_node_and_the_profile(standins, host, tmp_path):
    onnx_paths = {**standins, "craft": qdq_detector(standins, tmp_path, quantize_bias=True)}
    with pytest.raises(ValidationError) as info:
        check_engines(make_plan(detector=detector_plan("int8")), onnx_paths, host)
    message = str(info.value)
    assert message.startswith("craft (int8, profile input 1x3x32x32 / 1x3x736x736 / 1x3x1216x1216) does not build")
    assert re.search(r"node '[^']*bias[^']*DequantizeLinear' \(DequantizeLinear\)", message)
    assert "parseq" not in message  # the recognizer was checked too, and built


@pytest.mark.slow
def test_the_a5000_plans_engines_build_with_tensorrt_rtx(craft_onnx, craft_fp16_onnx, crnn_fp16_onnx, parseq_tiny_fp16_onnx):
    """The issue's targets: the A5000 host's tensorrt_plan engines (craft fp32 and fp16, crnn_en fp16,
    parseq fp16), each built for sm86 with the plan's exact min/opt/max profile."""
    host = load_host(A5000)
    built = []
    for recognizer, onnx_path in (("crnn-en", crnn_fp16_onnx), ("parseq-tiny", parseq_tiny_fp16_onnx)):
        plan = planner.make_plan(host, recognizer=recognizer, variant="tensorrt_plan")
        assert plan.recognizer.precision == "fp16"
        for detector_precision, detector_path in (("fp32", craft_onnx), ("fp16", craft_fp16_onnx)):
            if recognizer == "parseq-tiny" and detector_precision == "fp32":
                continue  # craft fp32 was checked with the crnn plan (same detector profile)
            detector = dataclasses.replace(plan.detector, precision=detector_precision)
            checks = check_engines(
                dataclasses.replace(plan, detector=detector),
                {"craft": detector_path.onnx_path, plan.recognizer.triton_name: onnx_path.onnx_path},
                host,
            )
            for check, model in zip(checks, (detector, plan.recognizer)):
                planned = model.profile["input"]
                assert check.ok and check.target == "sm86"
                assert check.spec.profiles == (InputProfile("input", planned.min, planned.opt, planned.max),)
                built.append((check.spec.triton_name, check.spec.precision))
    assert set(built) == {("craft", "fp32"), ("craft", "fp16"), ("crnn_en", "fp16"), ("parseq", "fp16")}


@pytest.mark.slow
def test_the_a5000_default_recognizer_builds_in_fp16_with_tensorrt_rtx(ppocr_fp16_onnx):
    """The A5000's default tensorrt_plan serves ppocr in fp16: its mixed-precision graph (a Softmax
    output routed through an Identity, precision.outputs_past_kept_ops) builds strongly typed for
    sm86 with the plan's profile."""
    from stdr_deploy.engines import Builder

    plan = planner.make_plan(load_host(A5000), variant="tensorrt_plan")
    rec = plan.recognizer
    assert (rec.family, rec.precision) == ("ppocr", "fp16")
    spec = build_spec(rec, inspect_onnx(ppocr_fp16_onnx.onnx_path), timing_cache="")
    assert spec.profiles == (InputProfile("input", rec.profile["input"].min, rec.profile["input"].opt, rec.profile["input"].max),)
    outcome = Builder.rtx((8, 6)).build(spec)
    assert outcome.engine is not None and len(outcome.engine) > 1_000_000, outcome.messages[-5:]


@pytest.mark.slow
def test_the_int8_craft_parses_and_builds_with_tensorrt_rtx(craft_onnx, craft_int8_onnx, crnn_fp16_onnx):
    """The tensorrt flavour of the int8 CRAFT builds; the onnxruntime flavour (CPU plans) is what the
    parser refuses, which is why there are two (stdr_deploy.quantize)."""
    from stdr_deploy.engines import export_onnx
    import inspect

    from onnxruntime.quantization import quantize_static

    from stdr_deploy.quantize import calibration_ranges_path, quantize_detector

    # the onnxruntime flavour left its calibration ranges; this flavour reads them (same bytes as
    # calibrating again, checked by hand on ONNX Runtime 1.32: only the QDQ placement differs)
    if "calibration_cache_path" in inspect.signature(quantize_static).parameters:  # ONNX Runtime >= 1.32
        assert calibration_ranges_path(craft_onnx.report["onnx"]["sha256"]).is_file()
    tensorrt_flavour = quantize_detector(craft_onnx, flavour="tensorrt")
    assert tensorrt_flavour.report["flavour"] == {
        "runtime": "tensorrt", "activation_type": "QInt8", "QuantizeBias": False, "ActivationSymmetric": True,
    }
    plan = planner.make_plan(load_host(A5000), variant="tensorrt_plan")
    int8_plan = dataclasses.replace(plan, detector=dataclasses.replace(plan.detector, precision="int8"))
    assert export_onnx(int8_plan)["craft"] == tensorrt_flavour.onnx_path  # what `build` takes for int8
    spec = build_spec(int8_plan.detector, inspect_onnx(tensorrt_flavour.onnx_path), timing_cache="")
    outcome = rtx_builder().build(spec)
    assert outcome.engine is not None, outcome.messages
    cpu_flavour = build_spec(int8_plan.detector, inspect_onnx(craft_int8_onnx.onnx_path), timing_cache="")
    with pytest.raises(ValidationError, match=r"node '[^']*DequantizeLinear' \(DequantizeLinear\)"):
        rtx_builder().build(cpu_flavour)


# --- the accuracy check ----------------------------------------------------------------------


class Recorded:
    """Outputs recorded elsewhere (the PARSeq oracle's torch logits), replayed by `infer`."""

    def __init__(self, outputs: dict[str, np.ndarray]):
        self.outputs = outputs

    def infer(self, feeds):
        return self.outputs


@pytest.mark.slow
def test_onnx_model_matches_the_torch_oracle_within_the_engine_tolerances(shared, parseq_tiny_onnx):
    feeds = [{"input": np.load(shared / "oracles/parseq/inputs_A.npy")}]
    torch_logits = Recorded({"output": np.load(shared / "oracles/parseq/logits_A_nar.npy")})
    onnx_model = OnnxRunner(parseq_tiny_onnx.onnx_path)
    for tolerance in (Tolerance(5e-2, argmax=True), Tolerance(1e-3, argmax=True)):
        report = check_engine_accuracy(onnx_model, torch_logits, feeds, tolerance)
        assert report["passed"] and report["runs"][0]["argmax"]["output"]["decisive_flips"] == 0
    eos_biased = Recorded({"output": np.load(shared / "oracles/parseq/logits_A_eosbias_nar.npy")})
    with pytest.raises(ValidationError, match="output: FAIL"):
        check_engine_accuracy(onnx_model, eos_biased, feeds, Tolerance(5e-2, argmax=True))


def test_validation_feeds_are_seeded_and_in_the_models_range(standins):
    spec = spec_of(recognizer_plan(), standins["parseq"])
    feeds = validation_feeds(spec)
    assert [f["input"].shape for f in feeds] == [(4, 3, 32, 128), (1, 3, 32, 128)]
    assert all(f["input"].dtype == np.float32 and -1 <= f["input"].min() and f["input"].max() <= 1 for f in feeds)
    assert np.array_equal(validation_feeds(spec)[0]["input"], feeds[0]["input"])


def test_the_engine_runner_needs_a_cuda_gpu(tmp_path):
    from stdr_deploy.engines.runner import TrtRunner

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the runner would run")
    with pytest.raises(MissingDependency, match="CUDA GPU"):
        TrtRunner(tmp_path / "model.plan")


# --- the CLI ---------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(make_plan().to_dict()))
    return path


def test_cli_dry_run_prints_the_trtexec_lines_on_stdout_without_tensorrt(tmp_path, plan_file, standins):
    onnx_args = ["--onnx", f"craft={standins['craft']}", "--onnx", f"parseq={standins['parseq']}"]
    done = _cli("build", "--plan", str(plan_file), "--host", str(H100), *onnx_args, "--dry-run", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    builds = json.loads(done.stdout)["builds"]
    assert [(b["spec"]["triton_name"], b["spec"]["precision"]) for b in builds] == [("craft", "fp32"), ("parseq", "fp16")]
    assert builds[1]["trtexec"].startswith(f"trtexec --onnx={standins['parseq']} ")
    assert "--stronglyTyped" in builds[1]["trtexec"] and "--fp16" not in builds[1]["trtexec"]
    human = _cli("build", "--plan", str(plan_file), "--host", str(H100), *onnx_args, "--dry-run", cwd=tmp_path)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("mkdir -p ") and " && trtexec --onnx=" in line for line in lines)
    assert [b["trtexec"] for b in builds] == [line.split(" && ", 1)[1] for line in lines]
    assert "trtexec --onnx" not in human.stderr and "parseq" in human.stderr  # the table


def test_cli_check_builds_every_engine_ahead_of_time(tmp_path, plan_file, standins):
    onnx_args = ["--onnx", f"craft={standins['craft']}", "--onnx", f"parseq={standins['parseq']}"]
    done = _cli("build", "--plan", str(plan_file), "--host", str(H100), *onnx_args, "--check", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    checks = json.loads(done.stdout)["engines"]
    assert [(c["model"], c["precision"], c["target"], c["ok"]) for c in checks] == [
        ("craft", "fp32", "sm86", True), ("parseq", "fp16", "sm86", True),
    ]


def test_cli_check_of_a_graph_the_parser_refuses_exits_5_naming_model_node_and_profile(tmp_path, standins):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(make_plan(detector=detector_plan("int8")).to_dict()))
    refused = qdq_detector(standins, tmp_path, quantize_bias=True)
    done = _cli("build", "--plan", str(plan), "--host", str(H100), "--onnx", f"craft={refused}",
                "--onnx", f"parseq={standins['parseq']}", "--check", cwd=tmp_path)
    assert done.returncode == 5, done.stderr
    assert "craft (int8, profile input 1x3x32x32 / 1x3x736x736 / 1x3x1216x1216)" in done.stderr
    assert "DequantizeLinear" in done.stderr and "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_cli_build_without_tensorrt_exits_3_with_the_install_hint(tmp_path, plan_file, standins):
    done = _cli("build", "--plan", str(plan_file), "--host", str(H100), "--onnx", f"craft={standins['craft']}",
                "--onnx", f"parseq={standins['parseq']}", cwd=tmp_path)
    assert done.returncode == 3
    assert "TensorRT is not installed" in done.stderr and "pip install '.[tensorrt]'" in done.stderr


def test_cli_build_of_an_onnxruntime_plan_exits_2(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(make_plan(variant="onnxruntime").to_dict()))
    done = _cli("build", "--plan", str(path), "--dry-run", cwd=tmp_path)
    assert done.returncode == 2
    assert "no TensorRT engines to build" in done.stderr and "Traceback" not in done.stderr


# --- the `tensorrt` Python-based backend: its pure parts -------------------------------------


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """backends/tensorrt/model.py as the server gets it (beside its shared module), imported
    outside Triton; its pb_utils import is the real file Triton ships."""
    from stdr_deploy.server import backend_directory

    backends = backend_directory(tmp_path)
    monkeypatch.syspath_prepend(str(backends / "python"))
    monkeypatch.delitem(sys.modules, "stdr_batching", raising=False)
    monkeypatch.delitem(sys.modules, "stub_malloc", raising=False)
    spec = importlib.util.spec_from_file_location("tensorrt_backend_model", backends / "tensorrt" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_backend_finds_the_engine_where_triton_would(backend):
    args = {"model_repository": "/repo/craft", "model_version": "1"}
    assert backend.model_file(args, {}, backend.DEFAULT_MODEL_FILENAME) == "/repo/craft/1/model.plan"
    config = {"default_model_filename": "craft.engine"}
    assert backend.model_file(args, config, backend.DEFAULT_MODEL_FILENAME) == "/repo/craft/1/craft.engine"


def test_backend_reads_io_types_from_the_rendered_config(backend):
    config = {
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": ["3", "-1", "-1"]}],
        "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": ["-1", "-1", "2"]}],
    }
    assert backend.io_types(config) == ({"input": "float32"}, {"output": "float32"})
    with pytest.raises(ValueError, match="TYPE_STRING"):
        backend.io_types({"input": [{"name": "text", "data_type": "TYPE_STRING"}]})
    with pytest.raises(ValueError, match="reshape"):
        backend.io_types({"input": [{"name": "x", "data_type": "TYPE_FP32", "reshape": {"shape": ["1"]}}]})
    assert backend.missing_in_engine(["output"], ["output", "output1"]) == []
    assert backend.missing_in_engine(["output1"], ["output"]) == ["output1"]


def test_backends_join_requests_of_one_shape_up_to_the_max_batch():
    from stdr_deploy.backends.stdr_batching import batch_groups, split_rows

    crop = (3, 32, 128)
    shapes = [
        {"input": (4, *crop)},
        {"input": (8, *crop)},
        None,  # a request that already failed stays alone
        {"input": (6, *crop)},  # would make 18 > 16 rows: starts a new run
        {"input": (1, 1, 64, 256)},  # another shape: its own run
        {"input": (2, *crop)},
    ]
    assert batch_groups(shapes, 16) == [[0, 1], [2], [3, 5], [4]]
    assert batch_groups(shapes, 0) == [[0], [1], [2], [3], [4], [5]]
    assert split_rows([4, 8]) == [(0, 4), (4, 12)]


def test_backends_answer_each_request_and_blame_only_the_one_that_fails():
    from stdr_deploy.backends.stdr_batching import run_requests

    runs = []

    def run(feed):
        x = feed["input"]
        runs.append(x.shape[0])
        if np.isnan(x).any():
            raise ValueError("NaN in the input")
        return {"output": x * 2}

    good, bad, other = np.ones((2, 3)), np.full((1, 3), np.nan), np.ones((1, 4))
    missing = ValueError("missing input 'input'")
    outcomes = run_requests([{"input": good}, {"input": bad}, missing, {"input": other}, {"input": good}], 8, run, np.concatenate, "rec",
                            {})
    assert runs == [5, 2, 1, 2, 1]  # the joint run of 0, 1, 4 fails; each is retried alone
    np.testing.assert_array_equal(outcomes[0]["output"], good * 2)
    assert isinstance(outcomes[1], RuntimeError) and str(outcomes[1]) == "rec: NaN in the input"
    assert outcomes[2] is missing
    np.testing.assert_array_equal(outcomes[3]["output"], other * 2)
    np.testing.assert_array_equal(outcomes[4]["output"], good * 2)
    joined = run_requests([{"input": good}, {"input": other[:, :3]}], 8, run, np.concatenate, "rec", {})
    assert runs[-1] == 3 and joined[1]["output"].shape == (1, 3)  # one run, split back by rows


def test_backends_refuse_empty_inputs_and_inputs_beyond_the_limits_before_running():
    """Issue 23: the plan's max profile (rendered as `max_input_dims:<input>`) caps every input."""
    from stdr_deploy.backends.stdr_batching import InvalidInput, input_limits, run_requests

    runs = []

    def run(feed):
        runs.append(feed["input"].shape)
        return {"output": feed["input"]}

    limits = input_limits({"max_input_dims:input": "3,64,96", "intra_op_thread_count": "1"})
    assert limits == {"input": (3, 64, 96)}
    fits, wide, empty, high = np.ones((2, 3, 64, 96)), np.ones((1, 3, 64, 97)), np.ones((1, 3, 64, 0)), np.ones((1, 3, 65, 8))
    outcomes = run_requests([{"input": fits}, {"input": wide}, {"input": empty}, {"input": high}], 4, run,
                            np.concatenate, "crnn_en", limits)
    assert runs == [(2, 3, 64, 96)]  # only the request within the limits ran
    assert all(isinstance(outcome, InvalidInput) for outcome in outcomes[1:])
    assert "beyond this deployment's largest [3, 64, 96]" in str(outcomes[1]) and "[1, 3, 64, 97]" in str(outcomes[1])
    assert str(outcomes[2]) == "crnn_en: input 'input' has no elements (shape [1, 3, 64, 0])"
    unbatched = run_requests([{"input": np.ones((3, 64, 96))}], 0, run, np.concatenate, "m", limits)
    assert unbatched[0]["output"].shape == (3, 64, 96)


def test_backend_maps_every_engine_and_config_type_to_torch(backend):
    for name in (*backend.TRITON_DTYPES.values(), *backend.TENSORRT_DTYPES.values()):
        assert isinstance(getattr(torch, name), torch.dtype)
    import tensorrt_rtx

    graph_types = {"FLOAT", "HALF", "INT8", "UINT8", "INT32", "INT64", "BOOL"}  # what our graphs carry
    assert graph_types <= set(backend.TENSORRT_DTYPES) and graph_types <= set(tensorrt_rtx.DataType.__members__)


