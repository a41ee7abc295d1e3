"""Benchmarks: FLOP counts, peaks, the report, the load generator and the soak.

Structure and sanity only: speed is measured by `stdr-deploy bench`, never asserted here.
"""

from __future__ import annotations

import json
import re
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from stdr_deploy.bench.flops import count_flops
from stdr_deploy.bench.load import Request, run_load
from stdr_deploy.bench.models import detector_shapes, plan_cases
from stdr_deploy.bench.peak import cpu_peak, gpu_peak
from stdr_deploy.bench.report import host_slug, markdown, targets, write_report
from stdr_deploy.bench.soak import require_loopback, run_soak, tree_rss_mib
from stdr_deploy.bench.stats import LatencyStats
from stdr_deploy.errors import UserInputError
from stdr_deploy.triton_client import Endpoint

# -- FLOPs ------------------------------------------------------------------------------------


def _init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def tiny_graph() -> onnx.ModelProto:
    """Conv, grouped Conv, MatMul, Gemm and a bidirectional LSTM with hand-countable sizes."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),  # 3 -> 8, 3x3, same size
        helper.make_node("Conv", ["c1", "w2"], ["c2"], group=2),  # 8 -> 4, 1x1, groups 2
        helper.make_node("MatMul", ["a", "b"], ["m"]),  # [2, 5, 7] x [7, 3]
        helper.make_node("Gemm", ["g", "h"], ["gm"], transA=1),  # A^T: [6, 4] -> [4, 6] x [6, 10]
        helper.make_node("LSTM", ["seq", "lw", "lr"], ["ly"], hidden_size=3, direction="bidirectional"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"]),
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 5, 7]),
            helper.make_tensor_value_info("g", TensorProto.FLOAT, [6, 4]),
            helper.make_tensor_value_info("seq", TensorProto.FLOAT, ["t", 2, 4]),
        ],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("c2", "m", "gm", "ly")],
        initializer=[
            _init("w1", (8, 3, 3, 3)),
            _init("w2", (4, 4, 1, 1)),
            _init("b", (7, 3)),
            _init("h", (6, 10)),
            _init("lw", (2, 12, 4)),
            _init("lr", (2, 12, 3)),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_flops_of_a_hand_built_graph_are_exact():
    shapes = {"x": (1, 3, 16, 16), "a": (2, 5, 7), "g": (6, 4), "seq": (5, 2, 4)}
    count = count_flops(tiny_graph(), shapes)
    assert count.by_op == {
        "Conv": 2 * 8 * 16 * 16 * (3 * 3 * 3) + 2 * 4 * 16 * 16 * (4 * 1 * 1),
        "MatMul": 2 * (2 * 5 * 3) * 7,
        "Gemm": 2 * 4 * 10 * 6,
        "LSTM": 8 * 3 * (4 + 3) * 5 * 2 * 2,  # 8 x hidden x (input + hidden) x T x directions x batch
    }
    assert count.total == sum(count.by_op.values())
    assert count.unresolved == ()
    doubled = count_flops(tiny_graph(), {**shapes, "x": (2, 3, 16, 16)})
    assert doubled.by_op["Conv"] == 2 * count.by_op["Conv"]


def test_flops_fall_back_to_a_run_where_shape_inference_stops():
    # The Reshape target comes through a Div, which ONNX shape inference does not propagate.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Div", ["s", "one"], ["s2"]),
        helper.make_node("Reshape", ["x", "s2"], ["y"]),
        helper.make_node("MatMul", ["y", "w"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "div",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ones(2, np.int64), "one"), _init("w", (6, 4))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert count_flops(model, {"x": (5, 6)}).by_op == {"MatMul": 2 * 5 * 4 * 6}


def test_flops_reject_inputs_the_graph_does_not_have():
    with pytest.raises(ValueError, match="missing"):
        count_flops(tiny_graph(), {"x": (1, 3, 8, 8)})


@pytest.mark.slow
def test_craft_flops_match_a_count_over_the_torch_modules(craft_onnx):
    import torch

    from stdr_deploy.models import build_model

    height, width = 64, 96
    per_conv: list[int] = []

    def hook(module, inputs, output):
        # [Cout, Cin/groups, kh, kw]: each output value costs Cin/groups * kh * kw MACs
        per_conv.append(2 * output.numel() * module.weight[0].numel())

    net = build_model("craft")
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(hook)
    with torch.inference_mode():
        net(torch.zeros(1, 3, height, width))
    assert per_conv[0] == 2 * (3 * 3 * 3) * 64 * height * width  # conv1_1: 3 -> 64, 3x3, full size
    count = count_flops(craft_onnx.onnx_path, {"input": (1, 3, height, width)})
    assert count.by_op == {"Conv": sum(per_conv)}
    # every layer's output scales with the input area (sizes stay multiples of 16)
    assert count_flops(craft_onnx.onnx_path, {"input": (1, 3, 2 * height, 2 * width)}).total == 4 * count.total


# -- peaks, stats, shapes, slugs --------------------------------------------------------------

CPUINFO = "\n\n".join(
    f"processor\t: {i}\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\nphysical id\t: {i // 4}\n"
    f"core id\t: {(i // 2) % 2}\ncpu MHz\t\t: 800.000\nflags\t\t: fpu sse avx2 fma avx512f"
    for i in range(8)
)  # 2 sockets x 2 cores x 2 hyperthreads


def test_cpu_peak_counts_physical_cores_and_the_fma_width():
    peak = cpu_peak(CPUINFO)
    assert peak.fp32_gflops == pytest.approx(4 * 2.0 * 64)  # nominal clock from the model name
    assert "model name" in peak.source
    assert cpu_peak(CPUINFO, max_freq_khz=3_200_000).fp32_gflops == pytest.approx(4 * 3.2 * 64)
    avx2 = cpu_peak(CPUINFO.replace(" avx512f", ""), max_freq_khz=3_000_000)
    assert avx2.fp32_gflops == pytest.approx(4 * 3.0 * 32)


def test_gpu_peak_of_an_h100():
    peak = gpu_peak("NVIDIA H100 80GB HBM3", 132, (9, 0), 1980)
    assert peak.fp32_gflops == pytest.approx(66_908.16)  # 132 SMs x 128 lanes x 2 x 1.98 GHz
    assert peak.for_precision("fp16") == pytest.approx(989_400)
    assert peak.for_precision("fp32") == peak.fp32_gflops


def test_latency_percentiles_are_ordered_and_exact():
    stats = LatencyStats.from_seconds([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats.count == 100
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms
    with pytest.raises(ValueError):
        LatencyStats.from_seconds([])


def test_detector_shapes_are_the_reference_images_after_the_canvas_resize():
    assert [shape for _, shape in detector_shapes(2560)] == [
        (1, 3, 480, 352),
        (1, 3, 2560, 2048),
        (1, 3, 512, 416),
        (1, 3, 1600, 1216),
    ]
    cases = plan_cases(["craft", "crnn-en"], ["torch", "ort-cpu"], quick=True)
    assert {(c.model, c.label.split()[0]) for c in cases} == {
        ("craft", "img00"), ("craft", "img02"), ("crnn-en", "batch"),
    }
    assert sorted({c.items for c in cases if c.model == "crnn-en"}) == [1, 4]


def test_host_slugs():
    assert host_slug("Intel(R) Xeon(R) Processor", 2) == "cpu-xeon-2c"
    assert host_slug("AMD EPYC 7B13", 16) == "cpu-epyc-16c"
    assert host_slug("x", 16, [{"name": "NVIDIA H100 80GB HBM3"}]) == "h100-80g"
    laptop = [{"name": "NVIDIA RTX A5000 Laptop GPU", "memory_total": 16 * 2**30}]
    assert host_slug("x", 8, laptop) == "a5000-16g"


def test_accuracy_scores_the_recorded_easyocr_baseline(shared: Path):
    from stdr_deploy.bench import accuracy

    gt, paths = accuracy.load_scenes(shared / "testdata/scenes_A")
    assert [p.name for p in paths] == [f"img{i:02d}.png" for i in range(8)]
    recorded = json.loads((shared / "oracles/easyocr/easyocr_A.json").read_text())
    words = {im["file"]: [(w["text"], w["polygon"]) for w in im["words"]] for im in recorded["images"]}
    pred = accuracy.predictions(paths, lambda path: words[path.name])
    result = accuracy.score(gt, pred)
    assert (result["hits"], result["total_gt"]) == (75, 87)  # EasyOCR's 86.21% on set A
    misses = {e["gt"] for image in result["images"] for e in image["errors"]}
    assert {"G3-97", "48%", "Did"} <= misses


# -- report -----------------------------------------------------------------------------------


def _result(ours_ms: dict[str, float], easy_ms: dict[str, float], ours_acc: float, easy_acc: float) -> dict:
    def stats(ms: float) -> dict:
        return LatencyStats.from_seconds([ms / 1000]).to_dict()

    return {
        "host": {"slug": "cpu-test-2c", "gpus": []},
        "pipeline": {
            "url": "grpc://127.0.0.1:1",
            "model": "pipeline",
            "duration_s": 1.0,
            "labels": list(ours_ms),
            "levels": [
                {
                    "concurrency": 1,
                    "seconds": 1.0,
                    "requests": 2,
                    "errors": 0,
                    "throughput_per_s": 2.0,
                    "latency": stats(sum(ours_ms.values()) / len(ours_ms)),
                    "per_label": {k: stats(v) for k, v in ours_ms.items()},
                    "server": [
                        {"model": "pipeline", "requests": 2, "executions": 2, "queue_ms": 0.1,
                         "compute_input_ms": 0.1, "compute_infer_ms": 50.0, "compute_output_ms": 0.1}
                    ],
                    "error_samples": [],
                }
            ],
        },
        "easyocr": {"versions": {"easyocr": "1.7.2"}, "warmup": 1, "runs": 3, "latency": {k: stats(v) for k, v in easy_ms.items()}},
        "accuracy": {
            "ours": {"word_accuracy": ours_acc, "ci_word_accuracy": ours_acc, "det_recall": 1.0, "det_precision": 1.0,
                     "matched_cer": 0.0, "hits": 1, "total_gt": 1, "total_pred": 1},
            "easyocr": {"word_accuracy": easy_acc, "ci_word_accuracy": easy_acc, "det_recall": 1.0, "det_precision": 1.0,
                        "matched_cer": 0.0, "hits": 1, "total_gt": 1, "total_pred": 1},
        },
    }


def test_cpu_target_needs_every_image_3x_faster_and_higher_accuracy():
    result = _result({"img00": 100.0, "img01": 1000.0}, {"img00": 1500.0, "img01": 2500.0}, 0.9, 0.86)
    (check,) = targets(result)
    assert check["measured"]["speedup_per_image"] == {"img00": 15.0, "img01": 2.5}
    assert check["measured"]["speedup_total"] == pytest.approx(4000 / 1100)
    assert not check["met"]  # img01 is only 2.5x faster
    fast = _result({"img00": 100.0, "img01": 500.0}, {"img00": 1500.0, "img01": 2500.0}, 0.9, 0.86)
    assert targets(fast)[0]["met"]
    less_accurate = _result({"img00": 100.0, "img01": 500.0}, {"img00": 1500.0, "img01": 2500.0}, 0.8, 0.86)
    assert targets(less_accurate)[0]["met"] is False
    del fast["accuracy"]
    assert targets(fast)[0]["met"] is None  # fast enough, but accuracy was not measured


def test_report_writes_json_markdown_and_plots(tmp_path: Path):
    result = _result({"img00": 100.0}, {"img00": 1500.0}, 0.9, 0.86)
    written = write_report(result, tmp_path)
    assert json.loads((tmp_path / "bench.json").read_text()) == result
    text = (tmp_path / "bench.md").read_text()
    assert "## Pipeline through Triton" in text and "## Side by side with EasyOCR" in text
    assert "| img00 | 100 | 1500 | 15.00x |" in text
    for name in ("latency_vs_concurrency.png", "server_breakdown.png", "pipeline_vs_easyocr.png"):
        assert written[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "runtime_comparison.png" not in written  # no model-level data, no plot
    assert markdown({"host": {"slug": "empty"}}).startswith("# Benchmark: empty")
    # the deployment line names a model's runtime where it is not the variant's (OpenVINO on CPUs)
    deployment = {"variant": "onnxruntime", "device": "cpu", "recognizer": "ppocr",
                  "instances": {"craft": 1, "ppocr_rec": 1}, "backends": {"craft": "openvino", "ppocr_rec": "onnxruntime"},
                  "float_precisions": {"craft": "bf16"}, "url": "grpc://127.0.0.1:8001", "started_here": True}
    assert "onnxruntime on cpu; ppocr; craft x1 on openvino (bf16), ppocr_rec x1; grpc://" in markdown(
        {"host": {"slug": "h"}, "deployment": deployment})


@pytest.mark.slow
def test_bench_quick_model_level_writes_the_report(tmp_path: Path, crnn_onnx):
    from stdr_deploy.cli import cli

    out = tmp_path / "results"
    args = ["bench", "--quick", "--models", "crnn-en", "--runtimes", "torch,ort-cpu", "--no-pipeline", "--out", str(out), "--json"]
    run = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert run.exit_code == 0, run.output
    result = json.loads((out / "bench.json").read_text())
    assert {"host", "peaks", "versions", "models", "targets", "wall_s"} <= set(result)
    rows = result["models"]["results"]
    assert {(r["runtime"], r["label"]) for r in rows} == {(rt, f"batch {b}") for rt in ("torch", "ort-cpu") for b in (1, 4)}
    for row in rows:
        assert row["error"] is None
        lat = row["latency"]
        assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["max_ms"]
        assert row["gflops_per_call"] > 0 and 0 < row["fraction_of_peak"]
        assert (row["speedup_vs_torch"] is None) == (row["runtime"] == "torch")
    assert [r["gflops_per_call"] for r in rows if r["runtime"] == "ort-cpu"][1] == pytest.approx(
        4 * [r["gflops_per_call"] for r in rows if r["runtime"] == "ort-cpu"][0]
    )
    assert "| crnn-en | batch 4 4x1x64x256 | ort-cpu |" in (out / "bench.md").read_text()
    assert (out / "runtime_comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_rejects_bad_options():
    from stdr_deploy.cli import cli

    for args in (["--concurrency", "1,x"], ["--runtimes", "cuda-magic"], ["--soak", "5", "--concurrency", "1,2"],
                 ["--url", "grpc://127.0.0.1:8001:"], ["--url", "grpc://127.0.0.1"], ["--url", "http://host:99999"],
                 ["--metrics-url", "http://127.0.0.1:8002/metrics"],
                 ["--url", "grpc://127.0.0.1:8001", "--metrics-url", "127.0.0.1:8002"]):
        with pytest.raises(UserInputError):
            CliRunner().invoke(cli, ["bench", *args], catch_exceptions=False)


def test_server_addresses_need_a_host_and_a_port():
    assert Endpoint.parse("grpc://127.0.0.1:8001") == Endpoint("127.0.0.1:8001", "grpc")
    assert Endpoint.parse("localhost:8000/") == Endpoint("localhost:8000", "http")
    assert Endpoint.parse("grpc://[::1]:8001").address == "[::1]:8001"
    assert Endpoint.parse("grpc://[::1]:8001").local and Endpoint.parse("http://LocalHost:8000").local
    assert not Endpoint.parse("grpc://10.0.0.5:8001").local
    for url in ("grpc://127.0.0.1:8001:", "grpc://:8001", "http://localhost", "http://host:port", "grpc://h:0"):
        with pytest.raises(UserInputError, match="is not a server address"):
            Endpoint.parse(url)


def test_bench_against_a_dead_server_keeps_its_report_and_exits_7(tmp_path: Path, shared):
    """Every served phase fails (nothing listens): the report names why, and the exit code says so."""
    out = tmp_path / "results"
    args = ["bench", "--url", "grpc://127.0.0.1:9", "--no-model-level", "--concurrency", "1", "--duration", "1",
            "--scenes", str(shared / "testdata/scenes_A"), "--out", str(out)]
    run = subprocess.run([sys.executable, "-c", "from stdr_deploy.cli import main; main()", *args],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 7, run.stderr
    result = json.loads((out / "bench.json").read_text())
    assert "partial" not in result  # the finished report replaced the partial ones
    assert set(result["failures"]) >= {"pipeline"} and "no answer from the server" in result["failures"]["pipeline"]
    assert "## Failed phases" in (out / "bench.md").read_text()
    assert "benchmark phase(s) failed: pipeline" in run.stderr
    # progress in a log (stderr is a pipe here): timestamped lines, the failed phase marked so, not "done"
    assert re.search(r"^\d\d:\d\d:\d\d pipeline through Triton: started", run.stderr, re.M), run.stderr
    assert re.search(r"pipeline through Triton: failed in [\d.]+ s \(see Failed phases in the report\)", run.stderr)


def test_a_stopped_run_keeps_a_partial_report_of_the_phases_it_finished(tmp_path: Path, shared):
    """Each phase starts with a checkpoint of the result so far, which the CLI writes as a partial report."""
    from stdr_deploy.bench.report import write_partial
    from stdr_deploy.bench.run import BenchOptions, run_bench

    seen = []
    options = BenchOptions(url="grpc://127.0.0.1:9", model_level=False, concurrency=(1,), duration_s=1.0,
                           scenes=shared / "testdata" / "scenes_A")
    result = run_bench(options, checkpoint=lambda partial: seen.append(json.loads(json.dumps(partial))))
    assert len(seen) >= 3 and "failures" not in seen[0]
    later = next(s for s in seen if "pipeline" in s.get("failures", {}))  # the checkpoint of a later phase
    assert "no answer from the server" in later["failures"]["pipeline"]
    assert set(result["failures"]) >= set(later["failures"])
    write_partial(later, tmp_path)
    assert json.loads((tmp_path / "bench.json").read_text())["partial"] is True
    text = (tmp_path / "bench.md").read_text()
    assert "**Partial:**" in text and "- pipeline: no answer from the server" in text


def test_a_failed_phase_closes_only_its_own_progress_stage():
    from stdr_deploy.bench.run import Reporter, _guarded
    from stdr_deploy.errors import ServerUnreachable

    class Recorded(Reporter):
        def __init__(self):
            self.events = []

        def phase(self, name, total):
            self.events.append(("phase", name))

        def done(self):
            self.events.append(("done",))

        def failed(self):
            self.events.append(("failed",))

    reporter, result = Recorded(), {}

    def opens_then_fails():
        reporter.phase("b", 1)
        raise ServerUnreachable("nobody home")

    def fails_before_opening():
        raise ValueError("broken")

    assert _guarded(reporter, result, "a", lambda: reporter.phase("a", 1) or "ok") == "ok"
    _guarded(reporter, result, "b", opens_then_fails)
    _guarded(reporter, result, "c", fails_before_opening)
    # "a" is closed as done before "b" runs; "c" failed without a stage of its own: the done before it
    # closed "b"'s already-failed stage, so nothing of "a" is marked failed
    assert reporter.events == [("done",), ("phase", "a"), ("done",), ("phase", "b"), ("failed",), ("done",), ("failed",)]
    assert result["failures"] == {"b": "nobody home", "c": "ValueError: broken"}
    assert result["exit_code"] == 7  # the first failure's


# -- load generator and soak against a real server ----------------------------------------------


@pytest.fixture(scope="module")
def relu_server(tmp_path_factory):
    from stdr_deploy.server import TritonServer

    repo = tmp_path_factory.mktemp("bench-repo")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])],
        "relu",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (repo / "relu" / "1").mkdir(parents=True)
    onnx.save(model, repo / "relu" / "1" / "model.onnx")
    (repo / "relu" / "config.pbtxt").write_text(
        'name: "relu"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "output" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )
    with TritonServer(repo, http_inference=True) as server:  # the load generator speaks both protocols
        yield server


REQUESTS = [Request("a", {"input": np.ones((1, 4), np.float32)}, ("output",)), Request("b", {"input": -np.ones((1, 4), np.float32)}, ("output",))]


@pytest.mark.triton
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_load_generator_against_a_real_server(relu_server, protocol):
    url = relu_server.grpc_url if protocol == "grpc" else relu_server.http_url
    bench = run_load(url, REQUESTS, model="relu", concurrency=(1, 2), duration_s=1.0)
    assert bench.shared_memory  # on this host: inputs in system shared memory
    assert [level.concurrency for level in bench.levels] == [1, 2]
    for level in bench.levels:
        assert level.errors == 0 and level.requests > 0
        lat = level.latency
        assert lat.min_ms <= lat.p50_ms <= lat.p95_ms <= lat.p99_ms <= lat.max_ms
        assert set(level.per_label) == {"a", "b"}
        (served,) = level.server
        assert served.model == "relu"
        assert served.requests == level.requests  # the warm-up was read off before the level
        assert served.compute_infer_ms > 0 and served.queue_ms >= 0


@pytest.mark.triton
def test_load_generator_says_why_a_server_has_no_stage_times(relu_server):
    steps = []
    bench = run_load(relu_server.grpc_url, REQUESTS, model="relu", concurrency=(1,), duration_s=0.2,
                     metrics_url=relu_server.metrics_url, image_repeats=2, progress=steps.append)
    assert "has no stdr_pipeline_reads of model 'relu'" in bench.stages_note
    assert bench.images == () and bench.levels[0].stages is None
    # as many steps as bench's progress total counts (warm-up, stages, levels), the skipped said so
    assert steps == ["warm-up a", "warm-up b", "stages of a: skipped, no stage counters",
                     "stages of b: skipped, no stage counters", "concurrency 1"]
    assert "--metrics-url" in run_load(relu_server.grpc_url, REQUESTS, model="relu", concurrency=(1,), duration_s=0.2).stages_note


@pytest.mark.triton
def test_load_generator_counts_a_bad_request_as_an_error(relu_server):
    bad = [Request("bad", {"input": np.ones((1, 5), np.float32)}, ("output",))]
    bench = run_load(relu_server.grpc_url, bad, model="relu", concurrency=(1,), duration_s=0.5, max_requests=3, warmup=0,
                     shared_memory=False)
    (level,) = bench.levels
    assert level.requests == 3 and level.errors == 3 and level.latency is None
    assert level.error_samples and "ServerError" in level.error_samples[0]


@pytest.mark.triton
def test_soak_reports_windows_and_server_memory(relu_server):
    soak = run_soak(relu_server.grpc_url, REQUESTS, model="relu", seconds=2.0, concurrency=2, server_pid=relu_server.pid, windows=4)
    assert soak.errors == 0 and soak.requests > 0
    assert sum(w.requests for w in soak.windows) == soak.requests
    assert all(w.rss_mib and w.rss_mib > 10 for w in soak.windows)  # tritonserver + the backend stub
    assert soak.latency_drift is not None and math.isfinite(soak.rss_growth_mib)
    assert tree_rss_mib(relu_server.pid) > soak.windows[0].rss_mib * 0.5


def test_soak_windows_take_the_memory_reading_nearest_their_end():
    from stdr_deploy.bench.load import Sample
    from stdr_deploy.bench.soak import split_windows

    samples = [Sample("a", 0.5, 1.0, None), Sample("a", 1.5, 2.0, None), Sample("a", 2.2, 1.0, "ServerError: x")]
    rss = [(0.0, 100.0), (1.02, 150.0), (2.03, 160.0), (3.01, 161.0)]  # sampler wakes just after each bound
    windows = split_windows(samples, rss, 1.0)
    assert [w.rss_mib for w in windows] == [150.0, 160.0, 161.0]
    assert [(w.requests, w.errors) for w in windows] == [(1, 0), (1, 0), (1, 1)]
    assert windows[2].latency is None


def test_soak_only_targets_loopback():
    require_loopback(Endpoint.parse("grpc://127.0.0.1:8001"))
    require_loopback(Endpoint.parse("http://localhost:8000"))
    with pytest.raises(UserInputError, match="this machine"):
        require_loopback(Endpoint.parse("grpc://10.1.2.3:8001"))
