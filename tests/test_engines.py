"""TensorRT engines: build specs from plans, the adapter's exact TensorRT calls, retries, the cache.

TensorRT cannot be installed here, so the adapter runs against `trt_double.TrtDouble`, a
recording stand-in of the `tensorrt` module API (the one stand-in the project accepts). Where
an engine would have to run on a GPU (the post-build accuracy check), ONNX Runtime runs the
engine's ONNX model instead: `ort_as_engine`. Everything else is real: ONNX files exported by
torch, the planner on the recorded host files, ONNX Runtime as the reference.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn
from trt_double import OOM_MESSAGE, TrtDouble, engine_facts

from stdr_deploy import planner
from stdr_deploy.engines import (
    EngineCache,
    apply_build_results,
    build_engine,
    build_engines,
    build_spec,
    cache_key,
    fp32_nodes,
    host_fingerprint,
    inspect_onnx,
    plan_builds,
    retry_specs,
    trtexec_command,
    validation_feeds,
)
from stdr_deploy.engines.accuracy import OnnxRunner, Tolerance, argmax_flips, check_engine_accuracy
from stdr_deploy.engines.graph import OnnxGraph
from stdr_deploy.engines.spec import MIB, InputProfile
from stdr_deploy.errors import HostUnsupported, MissingDependency, UserInputError, ValidationError
from stdr_deploy.hardware import load_host
from stdr_deploy.plan_schema import DynamicBatching, ModelPlan, PipelinePlan, Plan, ShapeProfile

HOSTS = Path(__file__).resolve().parent / "hosts"
H100 = HOSTS / "h100-80g-hbm3.json"
GPU_HOSTS = sorted(p for p in HOSTS.glob("*.json") if json.loads(p.read_text())["gpus"])
CLI = [sys.executable, "-c", "from stdr_deploy.cli import main; main()"]
PARSEQ_A = "oracles/parseq/parseq_tiny_random_A.pt"
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


# --- stand-in ONNX models with the real IO names, exported by torch like the real ones ------


class TinyDetector(nn.Module):
    """CRAFT's signature: [N, 3, H, W] -> score maps [N, H/2, W/2, 2]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).permute(0, 2, 3, 1)


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


TINY_RECOGNIZER_FP32_NODES = (
    "/norm/ReduceMean",
    "/norm/Sub",
    "/norm/Pow",
    "/norm/ReduceMean_1",
    "/norm/Add",
    "/norm/Sqrt",
    "/norm/Div",
    "/Softmax",
)


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


@pytest.fixture(scope="session")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("standins")
    return {
        "craft": export(
            TinyDetector(), torch.zeros(1, 3, 64, 64), folder / "detector.onnx", {0: "batch", 2: "height", 3: "width"},
            opset=11,
        ),
        "parseq": export(
            TinyRecognizer(), torch.zeros(2, 3, 32, 128), folder / "recognizer.onnx", {0: "batch"}, opset=14
        ),
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


def plain(calls):
    """Calls with API objects replaced by their type names, so sequences compare exactly."""

    def value(arg):
        if isinstance(arg, (str, int, float, bytes, bool, enum.Enum)) or arg is None:
            return arg
        if isinstance(arg, tuple):
            return tuple(value(a) for a in arg)
        return type(arg).__name__.lstrip("_")

    return [(name, tuple(value(a) for a in args)) for name, args in calls]


# --- which nodes stay FP32 -------------------------------------------------------------------


def test_fp32_nodes_are_the_layernorm_chain_and_softmax(standins):
    assert inspect_onnx(standins["parseq"]).fp32_nodes == TINY_RECOGNIZER_FP32_NODES
    assert inspect_onnx(standins["craft"]).fp32_nodes == ()


def test_unnamed_nodes_get_the_parsers_layer_names():
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "x"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        ],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, [4, 4])],
    )
    assert fp32_nodes(graph) == ("node_of_probs",)


@pytest.mark.slow
def test_parseq_tiny_keeps_every_layernorm_and_softmax_in_fp32(parseq_tiny_onnx):
    names = inspect_onnx(parseq_tiny_onnx.onnx_path).fp32_nodes
    ops = [name.rsplit("/", 1)[-1].split("_")[0] for name in names]
    # 30 LayerNorms (12 encoder blocks x 2 + encoder.norm + 5 in the decoder), 7 nodes each, 14 Softmax.
    assert {op: ops.count(op) for op in set(ops)} == {
        "ReduceMean": 60, "Sub": 30, "Pow": 30, "Add": 30, "Sqrt": 30, "Div": 30, "Softmax": 14,
    }
    assert "/encoder/blocks.0/norm1/Pow" in names and "/decoder/norm/Sqrt" in names


# --- build specs -------------------------------------------------------------------------------


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
        "fp32_layers": [],
    }
    assert type(spec).from_dict(spec.to_dict()) == spec


def test_recognizer_pins_layers_only_in_fp16(standins):
    assert spec_of(recognizer_plan("fp16"), standins["parseq"]).fp32_layers == TINY_RECOGNIZER_FP32_NODES
    assert spec_of(recognizer_plan("fp32"), standins["parseq"]).fp32_layers == ()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"backend": "onnxruntime"}, "not TensorRT"),
        ({"precision": "int8"}, "precision"),
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
        graph = OnnxGraph(Path(f"/onnx/{model.family}.onnx"), "0" * 64, ("input",), ("/Softmax",))
        spec = build_spec(model, graph, timing_cache=EngineCache(Path("/c")).timing_cache_path(fingerprint))
        (profile,) = spec.profiles
        planned = model.profile["input"]
        assert (profile.min, profile.opt, profile.max) == (planned.min, planned.opt, planned.max)
        assert spec.workspace_bytes == model.workspace_bytes > 0
        assert spec.max_batch_size == model.max_batch_size
        assert spec.precision == model.precision
        assert spec.fp32_layers == (("/Softmax",) if model.precision == "fp16" else ())
        assert spec.timing_cache_path == f"/c/{fingerprint.slug}/timing.cache"
        line = trtexec_command(spec, "model.plan")
        assert f"--memPoolSize=workspace:{model.workspace_bytes // MIB}" in line
        assert f"--maxShapes=input:{'x'.join(map(str, profile.max))}" in line
        # Every retry is smaller than the last and stays buildable (min <= opt <= max).
        sizes = [s.profiles[0].max for s in (spec, *retry_specs(spec))]
        assert all(a > b for a, b in zip(sizes, sizes[1:]))
        for retry in retry_specs(spec):
            (p,) = retry.profiles
            assert all(lo <= o <= hi for lo, o, hi in zip(p.min, p.opt, p.max))
    assert plan.detector.precision == "fp32"


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


def test_trtexec_line_of_a_detector_fp32_build(standins):
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
        "--skipInference",
    ]


def test_trtexec_line_of_a_recognizer_fp16_build_pins_the_same_layers(standins):
    spec = spec_of(recognizer_plan(), standins["parseq"])
    line = trtexec_command(spec, "model.plan")
    pinned = ",".join(f"{name}:fp32" for name in TINY_RECOGNIZER_FP32_NODES)
    assert line[-6:] == [
        "--noTF32",
        "--fp16",
        "--precisionConstraints=obey",
        f"--layerPrecisions={pinned}",
        f"--layerOutputTypes={pinned}",
        "--skipInference",
    ]
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
        dataclasses.replace(base, trt_version="10.4.0"),
        dataclasses.replace(base, driver_major=535),
    ]
    specs = [
        dataclasses.replace(spec, onnx_sha256="f" * 64),
        dataclasses.replace(spec, precision="fp32"),
        dataclasses.replace(spec, workspace_bytes=512 * MIB),
        dataclasses.replace(spec, optimization_level=5),
        dataclasses.replace(spec, fp32_layers=spec.fp32_layers[:-1]),
        retry_specs(spec)[0],
    ]
    keys = {cache_key(spec, f) for f in fingerprints} | {cache_key(s, base) for s in specs}
    assert key not in keys and len(keys) == len(fingerprints) + len(specs)
    moved = dataclasses.replace(spec, onnx_path="/elsewhere/model.onnx", timing_cache_path="/t/timing.cache")
    assert cache_key(moved, base) == key
    assert key.startswith("parseq-")


# --- the adapter: exact TensorRT calls ---------------------------------------------------------


def _expected_calls(spec, pinned: list[str], fp16: bool) -> list:
    (profile,) = spec.profiles
    layer_calls = []
    for name in pinned:
        layer_calls += [
            ("ILayer.precision", (name, TrtDouble.float32)),
            ("ILayer.set_output_type", (name, 0, TrtDouble.float32)),
        ]
    flags = TrtDouble.BuilderFlag
    return [
        ("Builder", ("CapturingLogger",)),
        ("Builder.create_network", (0,)),
        ("OnnxParser", ("Network", "CapturingLogger")),
        ("OnnxParser.parse_from_file", (spec.onnx_path,)),
        ("Builder.create_builder_config", ()),
        ("IBuilderConfig.set_memory_pool_limit", (TrtDouble.MemoryPoolType.WORKSPACE, spec.workspace_bytes)),
        ("IBuilderConfig.builder_optimization_level", (3,)),
        ("IBuilderConfig.clear_flag", (flags.TF32,)),
        *([("IBuilderConfig.set_flag", (flags.FP16,))] if fp16 else []),
        *layer_calls,
        *([("IBuilderConfig.set_flag", (flags.OBEY_PRECISION_CONSTRAINTS,))] if pinned else []),
        ("Builder.create_optimization_profile", ()),
        ("IOptimizationProfile.set_shape", ("input", profile.min, profile.opt, profile.max)),
        ("IBuilderConfig.add_optimization_profile", ("Profile",)),
        ("IBuilderConfig.create_timing_cache", (b"",)),
        ("IBuilderConfig.set_timing_cache", ("TimingCache", False)),
        ("Builder.build_serialized_network", ("Network", "Config")),
        ("IBuilderConfig.get_timing_cache", ()),
    ]


def test_adapter_calls_for_a_detector_fp32_build(standins):
    trt = TrtDouble()
    spec = spec_of(detector_plan(), standins["craft"])
    outcome = build_engine(spec, trt)
    assert plain(trt.calls) == _expected_calls(spec, [], fp16=False)
    assert engine_facts(outcome.engine)["flags"] == []  # TF32 cleared, nothing set
    assert outcome.pinned_layers == () and outcome.timing_cache == b"entry1;"


def test_adapter_calls_for_a_recognizer_fp16_build(standins):
    trt = TrtDouble()
    spec = spec_of(recognizer_plan(), standins["parseq"])
    outcome = build_engine(spec, trt, timing_cache=b"earlier;")
    expected = _expected_calls(spec, list(TINY_RECOGNIZER_FP32_NODES), fp16=True)
    timing = ("IBuilderConfig.create_timing_cache", (b"",))
    expected[expected.index(timing)] = ("IBuilderConfig.create_timing_cache", (b"earlier;",))
    assert plain(trt.calls) == expected
    facts = engine_facts(outcome.engine)
    assert facts["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert facts["profiles"] == [{"input": [[1, 3, 32, 128], [4, 3, 32, 128], [16, 3, 32, 128]]}]
    assert facts["workspace"] == 1024 * MIB
    assert outcome.pinned_layers == TINY_RECOGNIZER_FP32_NODES


@pytest.mark.slow
def test_adapter_calls_for_the_real_craft_and_parseq_exports(craft_onnx, parseq_tiny_onnx):
    trt = TrtDouble()
    craft = spec_of(detector_plan(), craft_onnx.onnx_path)
    build_engine(craft, trt)
    assert plain(trt.calls) == _expected_calls(craft, [], fp16=False)

    trt = TrtDouble()
    parseq = spec_of(recognizer_plan(), parseq_tiny_onnx.onnx_path)
    outcome = build_engine(parseq, trt)
    assert len(parseq.fp32_layers) == 224
    assert plain(trt.calls) == _expected_calls(parseq, list(parseq.fp32_layers), fp16=True)
    assert set(outcome.pinned_layers) == set(parseq.fp32_layers)


def test_adapter_reports_parser_errors(tmp_path, standins):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(standins["parseq"].read_bytes()[:1000])
    spec = dataclasses.replace(spec_of(recognizer_plan(), standins["parseq"]), onnx_path=str(broken))
    with pytest.raises(ValidationError, match="cannot parse"):
        build_engine(spec, TrtDouble())


def test_adapter_refuses_a_profile_for_other_inputs(standins):
    spec = spec_of(recognizer_plan(), standins["parseq"])
    spec = dataclasses.replace(spec, profiles=(InputProfile("images", *(spec.profiles[0].min,) * 3),))
    with pytest.raises(ValidationError, match="profiled"):
        build_engine(spec, TrtDouble())


# --- build_engines: cache, retries, accuracy ---------------------------------------------------


def build(plan, standins, host, cache, trt, **options):
    return build_engines(plan, standins, host, trt=trt, cache=cache, make_runner=ort_as_engine, **options)


def test_build_checks_accuracy_and_keeps_engines_with_their_reports(standins, host, cache):
    trt = TrtDouble()
    results = build(make_plan(), standins, host, cache, trt)
    fingerprint = host_fingerprint(host, "10.3.0")
    assert set(results) == {"craft", "parseq"}
    for result in results.values():
        assert result.engine_path == cache.entry(fingerprint, result.key) / "model.plan"
        report = json.loads(result.report_path.read_text())
        assert report["status"] == "ok" and report["accuracy"]["passed"]
        assert report["engine_sha256"] == hashlib.sha256(result.engine_path.read_bytes()).hexdigest()
        assert [a["ok"] for a in report["attempts"]] == [True]
        assert report["trtexec"].startswith("trtexec --onnx=")
        assert not result.cached and not result.shrunk
    assert results["parseq"].report["accuracy"]["atol"] == 5e-2 and results["parseq"].report["accuracy"]["argmax"]
    assert results["craft"].report["accuracy"]["atol"] == 1e-3
    shapes = [run["input_shapes"]["input"] for run in results["parseq"].report["accuracy"]["runs"]]
    assert shapes == [[4, 3, 32, 128], [1, 3, 32, 128]]  # the opt and min shapes
    assert engine_facts(results["parseq"].engine_path)["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]


def test_a_second_build_reuses_the_cached_engines(standins, host, cache):
    first = build(make_plan(), standins, host, cache, TrtDouble())
    trt = TrtDouble()
    again = build(make_plan(), standins, host, cache, trt)
    assert all(r.cached for r in again.values())
    assert "Builder.build_serialized_network" not in trt.names()
    assert trt.names().count("Runtime.deserialize_cuda_engine") == 2  # each engine still loads
    assert {n: r.engine_path for n, r in again.items()} == {n: r.engine_path for n, r in first.items()}


def test_a_corrupt_engine_is_detected_and_rebuilt(standins, host, cache):
    first = build(make_plan(), standins, host, cache, TrtDouble())
    engine = first["parseq"].engine_path
    engine.write_bytes(engine.read_bytes()[:-4] + b"XXXX")
    trt = TrtDouble()
    again = build(make_plan(), standins, host, cache, trt)
    assert not again["parseq"].cached and again["craft"].cached
    assert trt.names().count("Builder.build_serialized_network") == 1
    assert "corrupt" in again["parseq"].report["rebuilt_because"]
    assert engine_facts(engine)["version"] == "10.3.0"


def test_a_stale_engine_that_no_longer_loads_is_rebuilt(standins, host, cache):
    first = build(make_plan(), standins, host, cache, TrtDouble())
    result = first["craft"]
    # Same fingerprint and an intact file, but this TensorRT refuses it (e.g. a patched library).
    stale = result.engine_path.read_bytes().replace(b'"version": "10.3.0"', b'"version": "10.2.9"')
    result.engine_path.write_bytes(stale)
    report = json.loads(result.report_path.read_text())
    report["engine_sha256"] = hashlib.sha256(stale).hexdigest()
    result.report_path.write_text(json.dumps(report))
    again = build(make_plan(), standins, host, cache, TrtDouble())
    assert not again["craft"].cached
    assert "stale" in again["craft"].report["rebuilt_because"]


def test_the_timing_cache_is_kept_per_fingerprint_and_fed_to_later_builds(standins, host, cache):
    build(make_plan(), standins, host, cache, TrtDouble("10.3.0"))
    build(make_plan(), standins, host, cache, TrtDouble("10.4.0"))
    old = cache.timing_cache_path(host_fingerprint(host, "10.3.0"))
    new = cache.timing_cache_path(host_fingerprint(host, "10.4.0"))
    assert old.read_bytes() == b"entry1;entry2;" and new.read_bytes() == b"entry1;entry2;"
    assert old.parent != new.parent
    # A rebuild on the first fingerprint starts from that fingerprint's cache.
    trt = TrtDouble("10.3.0")
    build(make_plan(recognizer=recognizer_plan(batch=8)), standins, host, cache, trt)
    assert trt.args_of("IBuilderConfig.create_timing_cache") == [(b"entry1;entry2;",)]
    assert old.read_bytes() == b"entry1;entry2;entry1;"


def test_out_of_memory_halves_the_recognizer_batch_and_the_plan_follows(standins, host, cache):
    trt = TrtDouble(fail_builds={"recognizer.onnx": 2})
    plan = make_plan()
    results = build(plan, standins, host, cache, trt)
    parseq = results["parseq"]
    attempts = parseq.report["attempts"]
    assert [(a["max_shapes"]["input"][0], a["ok"], a["out_of_memory"]) for a in attempts] == [
        (16, False, True), (8, False, True), (4, True, False),
    ]
    assert OOM_MESSAGE in attempts[0]["messages"][0]
    assert parseq.shrunk and parseq.spec.max_batch_size == 4
    built = engine_facts(parseq.engine_path)["profiles"]
    assert built == [{"input": [[1, 3, 32, 128], [4, 3, 32, 128], [4, 3, 32, 128]]}]
    adjusted = apply_build_results(plan, results)
    assert adjusted.recognizer.max_batch_size == 4
    assert adjusted.recognizer.profile["input"].max == (4, 3, 32, 128)
    assert adjusted.recognizer.dynamic_batching.preferred_batch_sizes == (4,)
    assert adjusted.pipeline.recognizer_batch == 4
    assert adjusted.detector == plan.detector
    # The shrunk engine is what the requested spec's cache entry now holds.
    again = build(plan, standins, host, cache, TrtDouble())
    assert again["parseq"].cached and again["parseq"].spec.max_batch_size == 4


def test_out_of_memory_steps_the_detector_down_and_caps_the_canvas(standins, host, cache):
    trt = TrtDouble(fail_builds={"detector.onnx": 1})
    plan = make_plan(detector=detector_plan(max_side=1216))
    results = build(plan, standins, host, cache, trt)
    assert results["craft"].spec.profiles[0].max == (1, 3, 896, 896)
    adjusted = apply_build_results(plan, results)
    assert adjusted.pipeline.canvas_size == 896
    assert adjusted.detector.profile["input"].max == (1, 3, 896, 896)


def test_out_of_memory_at_every_size_fails_with_every_attempt_reported(standins, host, cache):
    trt = TrtDouble(fail_builds={"recognizer.onnx": 99})
    with pytest.raises(HostUnsupported, match="out of GPU memory in all 5 attempts"):
        build(make_plan(), standins, host, cache, trt)
    fingerprint = host_fingerprint(host, "10.3.0")
    key = cache_key(spec_of(recognizer_plan(), standins["parseq"], cache), fingerprint)
    folder = cache.entry(fingerprint, key)
    report = json.loads((folder / "build.json").read_text())
    assert report["status"] == "failed" and len(report["attempts"]) == 5
    assert not (folder / "model.plan").exists()
    assert cache.lookup(fingerprint, key)[1] == "the last build failed (its report is kept)"


def test_a_failure_other_than_memory_is_not_retried(standins, host, cache):
    trt = TrtDouble(fail_builds=1, failure="other")
    with pytest.raises(ValidationError, match="could not build"):
        build(make_plan(), standins, host, cache, trt)
    assert trt.names().count("Builder.build_serialized_network") == 1


def test_an_inaccurate_engine_fails_the_build_and_is_not_kept(tmp_path, standins, host, cache):
    skewed = tmp_path / "skewed.onnx"
    model = onnx.load(str(standins["parseq"]))
    for init in model.graph.initializer:
        if init.name == "head.bias":
            values = onnx.numpy_helper.to_array(init) + 0.1  # the engine is off by 0.1 everywhere
            init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    onnx.save(model, str(skewed))

    def skewed_engine(path, spec, gpu):
        return OnnxRunner(skewed) if spec.triton_name == "parseq" else OnnxRunner(spec.onnx_path)

    with pytest.raises(ValidationError, match="not accurate enough"):
        build_engines(make_plan(), standins, host, trt=TrtDouble(), cache=cache, make_runner=skewed_engine)
    fingerprint = host_fingerprint(host, "10.3.0")
    folder = cache.entry(fingerprint, cache_key(spec_of(recognizer_plan(), standins["parseq"], cache), fingerprint))
    assert not (folder / "model.plan").exists()
    assert json.loads((folder / "build.json").read_text())["accuracy"]["passed"] is False


def test_a_plan_without_tensorrt_has_nothing_to_build(standins, host, cache):
    onnx_plan = make_plan(variant="onnxruntime")
    with pytest.raises(UserInputError, match="no TensorRT engines"):
        build(onnx_plan, standins, host, cache, TrtDouble())
    with pytest.raises(UserInputError, match="no TensorRT engines"):
        plan_builds(onnx_plan, standins, host, "10.3.0", cache)


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


def test_argmax_flips_count_only_decisive_positions():
    expected = np.array([[[0.9, 0.1, 0.0], [0.50, 0.49, 0.0]]])
    got = np.array([[[0.1, 0.9, 0.0], [0.49, 0.50, 0.0]]])
    assert argmax_flips(expected, got, margin=0.1) == {"positions": 2, "decisive_flips": 1, "close_call_flips": 1}


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
        TrtRunner(tmp_path / "model.plan", trt=TrtDouble())


# --- the CLI ---------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(make_plan().to_dict()))
    return path


def test_cli_dry_run_prints_specs_and_trtexec_lines_without_tensorrt(tmp_path, plan_file, standins):
    done = _cli("build", "--plan", str(plan_file), "--host", str(H100), "--onnx", f"craft={standins['craft']}",
                "--onnx", f"parseq={standins['parseq']}", "--dry-run", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    builds = json.loads(done.stdout)["builds"]
    assert [b["spec"]["triton_name"] for b in builds] == ["craft", "parseq"]
    assert builds[1]["spec"]["fp32_layers"] == list(TINY_RECOGNIZER_FP32_NODES)
    assert builds[1]["trtexec"].startswith(f"trtexec --onnx={standins['parseq']} ")
    assert "--fp16 --precisionConstraints=obey" in builds[1]["trtexec"]
    human = _cli("build", "--plan", str(plan_file), "--host", str(H100), "--onnx", f"craft={standins['craft']}",
                 "--onnx", f"parseq={standins['parseq']}", "--dry-run", cwd=tmp_path)
    assert human.returncode == 0 and human.stdout == ""
    assert "trtexec --onnx=" in human.stderr and "--layerPrecisions=" in human.stderr


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
def backend(monkeypatch: pytest.MonkeyPatch):
    """backends/tensorrt/model.py, imported outside Triton.

    Only the import needs `triton_python_backend_utils` (the stub provides it in the server);
    an empty module stands in, since none of the functions tested here call into it.
    """
    import types

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    path = Path(__file__).resolve().parents[1] / "stdr_deploy" / "backends" / "tensorrt" / "model.py"
    spec = importlib.util.spec_from_file_location("tensorrt_backend_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_backend_finds_the_engine_where_triton_would(backend):
    args = {"model_repository": "/repo/craft", "model_version": "1"}
    assert backend.model_file(args, {}) == "/repo/craft/1/model.plan"
    assert backend.model_file(args, {"default_model_filename": "craft.engine"}) == "/repo/craft/1/craft.engine"


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


def test_backend_joins_requests_of_one_shape_up_to_the_engines_max_batch(backend):
    crop = (3, 32, 128)
    shapes = [
        {"input": (4, *crop)},
        {"input": (8, *crop)},
        None,  # a request that already failed stays alone
        {"input": (6, *crop)},  # would make 18 > 16 rows: starts a new run
        {"input": (1, 1, 64, 256)},  # another shape: its own run
        {"input": (2, *crop)},
    ]
    assert backend.batch_groups(shapes, 16) == [[0, 1], [2], [3, 5], [4]]
    assert backend.batch_groups(shapes, 0) == [[0], [1], [2], [3], [4], [5]]
    assert backend.split_rows([4, 8]) == [(0, 4), (4, 12)]


def test_backend_maps_every_engine_and_config_type_to_torch(backend):
    for name in (*backend.TRITON_DTYPES.values(), *backend.TENSORRT_DTYPES.values()):
        assert isinstance(getattr(torch, name), torch.dtype)
    assert set(backend.TENSORRT_DTYPES) >= {member.name for member in TrtDouble.DataType}


# --- with the real library (a GPU workstation after `pip install '.[tensorrt]'`) ---------------


@pytest.mark.slow
@pytest.mark.skipif(
    not (HAS_TENSORRT and torch.cuda.is_available()),
    reason="needs TensorRT and a CUDA GPU: pip install '.[tensorrt]' on a GPU workstation",
)
def test_real_tensorrt_builds_checks_and_runs_the_engines(tmp_path, shared, craft_onnx, parseq_tiny_onnx):
    from stdr_deploy.engines.runner import TrtRunner
    from stdr_deploy.hardware import probe_host

    host = probe_host()
    plan = planner.make_plan(host, recognizer="parseq-tiny", variant="tensorrt_plan")
    onnx_paths = {"craft": craft_onnx.onnx_path, "parseq": parseq_tiny_onnx.onnx_path}
    cache = EngineCache(tmp_path / "engines")
    results = build_engines(plan, onnx_paths, host, cache=cache)
    assert all(r.report["accuracy"]["passed"] for r in results.values())
    with TrtRunner(results["parseq"].engine_path) as runner:
        logits = runner.infer({"input": np.load(shared / "oracles/parseq/inputs_A.npy")})["output"]
    expected = np.load(shared / "oracles/parseq/logits_A_nar.npy")
    assert np.abs(logits - expected).max() < 5e-2
    assert argmax_flips(expected, logits, margin=1e-1)["decisive_flips"] == 0
    assert all(r.cached for r in build_engines(plan, onnx_paths, host, cache=cache).values())
