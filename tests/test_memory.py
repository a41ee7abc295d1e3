"""The measured memory model: data files, the upper envelope, and a served deployment's real peak.

The served test plans for a 4 GB, 4-core CPU host (tests/hosts/cpu-4g-4core.vendor.json), serves
that plan with the real tritonserver on this machine, reads the four benchmark images at the
planned concurrency and drives every instance at its max shape (smoke's memory check): the
whole process tree's peak RSS must stay under 4 GB and under the plan's estimate.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stdr_deploy import cpu_speed, memory, planner
from stdr_deploy.hardware import load_host
from stdr_deploy.planner import make_plan
from stdr_deploy.profiles import resolve_profile

HOSTS = Path(__file__).resolve().parent / "hosts"
DATA = Path(memory.__file__).parent / "memory_data"
RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
GIB = 1 << 30


@given(st.lists(st.tuples(st.integers(1, 10**8), st.integers(1, 10**10)), min_size=1, max_size=8))
def test_envelope_lies_on_or_above_every_point(points):
    intercept, slope = memory.upper_envelope(points)
    assert slope >= 0
    assert all(intercept + slope * x >= y * (1 - 1e-9) for x, y in points)
    # past the largest point it grows at least as fast as the steepest measured step
    (x0, y0), (x1, y1) = sorted(points)[-2:] if len(points) > 1 else (points[0], points[0])
    if x1 > x0:
        assert slope >= (y1 - y0) / (x1 - x0) - 1e-9


@given(st.lists(st.tuples(st.integers(1, 10**8), st.integers(0, 10**9)), min_size=1, max_size=40))
def test_summed_sessions_cover_their_measured_total_by_at_most_one_outlier(points):
    """At the measured shapes: the measured total, plus what the worst session stood above the
    fitted line, once (not once per session, as a line raised above every point would)."""
    held = memory.summed_line(points, [x for x, _ in points])
    total = sum(y for _, y in points)
    assert held >= total - 1e-6 * total - 1
    assert held <= total + max(y for _, y in points) + 1


MEASURED = ("*-onnxruntime.json", "*-openvino.json")  # cuda-ep-settings.json is not a memory measurement


def test_data_files_say_where_each_measurement_comes_from():
    files = sorted(path for pattern in MEASURED for path in DATA.glob(pattern))
    assert {p.name for p in files} >= {"cpu-onnxruntime.json", "cuda-onnxruntime.json", "cpu-openvino.json"}
    for path in files:
        device, runtime = path.stem.split("-")
        data = json.loads(path.read_text())
        assert data["format_version"] == memory.FORMAT_VERSION and data["runtime"] == runtime
        for family, precisions in data["families"].items():
            for precision, arenas in precisions.items():
                if sessions := arenas.get("sessions"):  # benchmarks/measure_sessions.py, on a GPU
                    where = f"{path.name} {family} {precision} sessions"
                    assert sessions["command"].startswith("python benchmarks/measure_sessions.py"), where
                    assert sessions["host"]["gpu"] and len(sessions["points"]) >= 2, where
                    # the instance as it grew: one session, every session, the largest run again
                    assert sessions["first"]["device_bytes"] < sessions["last"]["device_bytes"] <= sessions["again"]["device_bytes"], where
                    for what in ("device", "host"):  # the measured sessions, summed again: at least their total
                        measured = [(p["elements"], p[f"{what}_bytes"]) for p in sessions["points"]]
                        held, _ = memory.sessions_bytes("cuda", family, precision, [e for e, _ in measured], what)
                        assert held >= sum(b for _, b in measured), where
                for arena, entry in arenas.items():
                    if arena == "sessions":
                        continue
                    where = f"{path.name} {family} {precision} {arena}"
                    assert entry["measured_at"] and entry["command"].startswith("python benchmarks/measure_memory.py"), where
                    assert entry["host"]["cpu"], where
                    assert ({"openvino"} if runtime == "openvino" else {"onnxruntime", "onnxruntime-gpu"}) & set(entry["versions"]), where
                    assert entry.get("runtime", "onnxruntime") == runtime, where
                    assert len(entry["points"]) >= 2, f"{where}: one point cannot give a slope"
                    env = memory.envelope(device, family, precision, arena, runtime=runtime)
                    assert all(env.bytes_at(e) >= b for e, b in env.points), where


def test_plans_hold_every_served_instance_that_was_measured():
    """Each served deployment on record (smoke's per-model high-water marks, merged by
    benchmarks/served_memory.py) held at most what the planner now budgets per instance."""
    from stdr_deploy.planner import MODELS, Target, instance_memory

    checked = 0
    for path in sorted(path for pattern in MEASURED for path in DATA.glob(pattern)):
        device, runtime = path.stem.split("-")
        for served in json.loads(path.read_text()).get("served", []):
            assert served["measured_at"] and served["host"] and served["deployment"], served
            assert Path(served["deployment"]).is_file(), f"{served['deployment']}: the record it came from"
            target = Target("onnxruntime", "cpu" if device == "cpu" else "gpu", openvino=runtime == "openvino",
                            speed=cpu_speed.AMX)  # the Xeon that served the OpenVINO records
            facts = MODELS[served["family"]]
            pad = planner._record_pad(target, facts, served)  # the detector pad it was deployed with
            used = instance_memory(target, facts, tuple(served["max_shape"]), served["precision"], 0, pad)
            assert used.host_bytes >= served["host_bytes_per_instance"], (path.name, served, used)
            assert used.device_bytes >= served.get("device_bytes_per_instance", 0), (path.name, served, used)
            assert "served stub" in used.source or "served instance" in used.source  # (with or without a bare envelope)
            checked += 1
    assert checked >= 6  # OpenVINO's two among them


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_model_never_served_is_planned_for_what_its_first_deployments_held(runtime, monkeypatch):
    """A family x precision with no served record gets the largest allowance a served one needed.
    Checked on the records themselves: with one pair's records hidden, as if it had never been
    served, its plan still holds every deployment of it on record (a bare envelope alone did not:
    crnn-en, CRAFT fp32 and parseq-tiny, benchmarks/results/cpu-xeon-2c-served-memory/)."""
    from stdr_deploy.planner import MODELS, Target, instance_memory

    load = memory.load
    everything = load("cpu", runtime)
    target = Target("onnxruntime", "cpu", openvino=runtime == "openvino", speed=cpu_speed.AMX)
    pairs = memory.served_pairs("cpu", runtime)
    assert len(pairs) >= 2
    for family, precision in pairs:
        hidden = {**everything, "served": [s for s in everything["served"] if (s["family"], s["precision"]) != (family, precision)]}
        monkeypatch.setattr(memory, "load", lambda device, rt="onnxruntime": hidden if (device, rt) == ("cpu", runtime) else load(device, rt))
        assert not memory.served_records("cpu", family, precision, runtime=runtime)
        for served in (s for s in everything["served"] if (s["family"], s["precision"]) == (family, precision)):
            used = instance_memory(target, MODELS[family], tuple(served["max_shape"]), precision, 0)
            assert "never served" in used.source, (family, precision, used.source)
            assert used.host_bytes >= served["host_bytes_per_instance"], (runtime, served, used)
        monkeypatch.undo()


H200 = RESULTS / "h200-fp16-served"
SERVED_ON_GPU = sorted(
    [H200 / "warmed-at-load" / name / "deploy-fp16.json" for name in ("ppocr", "crnn-en")]
    + list((H200 / "memory-fp32-and-parseq").glob("deploy-*.json"))
    + [H200 / "ppocr-fp16" / precision / "deploy.json" for precision in ("fp16", "fp32")]
    + [H200 / "detector-pad" / run / "deploy.json" for run in ("p320", "p640", "verify", "three-detectors")]
)


@pytest.mark.parametrize("deployment", SERVED_ON_GPU, ids=[f"{p.parent.name}/{p.stem}" for p in SERVED_ON_GPU])
def test_gpu_plans_hold_what_their_served_deployment_measured_within_a_quarter(deployment, monkeypatch):
    """Issue 17's target on the GPU: the H200 deployments served with every fixed shape warmed at
    load (benchmarks/results/h200-fp16-served/: craft fp16 with ppocr fp32 and fp16 and crnn-en
    fp16, craft fp32 with crnn-en fp32, parseq and parseq-tiny at both precisions; the parseq
    and ppocr fp16 instances are fed to no served record, only their tritonserver; craft fp16 with
    ppocr fp16 at detector pads 320 and 640). Planned again for the same host, choices and detector
    pad and detector instances (the planner's choices narrowed to the deployed ones), the estimate is at least what smoke measured at the max
    shapes with every instance busy (NVML for the GPU, the process tree for host RAM), and at
    most 1.25x that."""
    from stdr_deploy.hardware import HostFacts
    from stdr_deploy.plan_schema import Plan

    deployed = json.loads(deployment.read_text())
    was = Plan.from_dict(deployed["plan"])
    host = HostFacts.from_dict(deployed["host"])
    monkeypatch.setattr(planner, "GPU_DETECTOR_PADS", (was.pipeline.pad_to,))
    monkeypatch.setattr(planner, "GPU_FREE_DETECTOR_INSTANCES", was.detector.instance_count)
    # like for like: these smokes sent the pipelines their small image only, so the plan's
    # allowance for the largest accepted image (the 4 GB host test below measures it) is left out
    from stdr_deploy.smoke_image import smoke_image

    height, width = smoke_image().shape[:2]
    monkeypatch.setattr(planner, "MAX_IMAGE_PIXELS", width * height)
    plan = make_plan(host, variant="onnxruntime", recognizer=was.recognizer.family,
                     detector_precision=was.detector.precision, recognizer_precision=was.recognizer.precision)
    smoke = next(s for s in deployed["steps"] if s["name"] == "smoke")["outputs"]["memory"]
    # (less what smoke charged to processes not of this deployment: the p320 run shared its GPU
    # with a server of the run before, still exiting)
    ours = smoke["gpu_peak_bytes"] - smoke["gpu_by_process_bytes"].get("other processes", 0)
    assert 1 <= plan.memory_estimate_bytes / ours <= 1.25
    assert 1 <= plan.host_memory_estimate_bytes / smoke["host_peak_bytes"] <= 1.25
    for model in plan.models():  # and each model's instances (NVML per process)
        assert model.memory_estimate_bytes >= smoke["gpu_by_process_bytes"][model.triton_name]


def test_gpu_plans_hold_the_tritonserver_each_recognizer_was_served_with():
    """tritonserver's host RAM follows the recognizer's outputs (memory.served_server): each
    served record comes from a deployment on file, and a GPU plan with that recognizer budgets
    at least the most it held."""
    from stdr_deploy.planner import GPU_SERVER_BYTES

    servers = memory.load("cuda")["servers"]
    assert {s["recognizer"] for s in servers} >= {"ppocr", "crnn-en", "parseq"}
    host = host_of_deployment(SERVED_ON_GPU[0])
    for record in servers:
        assert Path(record["deployment"]).is_file() and record["host"], record
        plan = make_plan(host, variant="onnxruntime", recognizer=record["recognizer"])
        held, source = memory.served_server("cuda", record["recognizer"])
        assert held >= record["host_bytes"] > GPU_SERVER_BYTES and "tritonserver" in source
        assert any(source in r for r in plan.reasons), plan.reasons


def host_of_deployment(deployment: Path):
    from stdr_deploy.hardware import HostFacts

    return HostFacts.from_dict(json.loads(deployment.read_text())["host"])


def test_the_cpu_arena_costs_memory_where_both_were_measured():
    """Why CPU plans render enable_mem_arena/enable_mem_pattern off: the arena holds more."""
    families = memory.load("cpu")["families"]
    compared = 0
    for family, precisions in families.items():
        for precision, arenas in precisions.items():
            if memory.ARENA_ON in arenas and memory.ARENA_OFF in arenas:
                on = memory.envelope("cpu", family, precision, memory.ARENA_ON)
                off = memory.envelope("cpu", family, precision, memory.ARENA_OFF)
                assert on.bytes_at(on.largest_measured) > off.bytes_at(on.largest_measured)
                compared += 1
    assert compared >= 1


def test_cpu_plans_use_measured_models_and_render_the_arena_off():
    from stdr_deploy.render import _onnxruntime_settings

    plan = make_plan(load_host(HOSTS / "cpu-4g-4core.vendor.json"))
    assert not any("not measured on the" in r for r in plan.reasons), plan.reasons
    for model in plan.models():
        params = _onnxruntime_settings(model)["parameters"]
        assert (params["enable_mem_arena"], params["enable_mem_pattern"]) == (0, 0)


def test_tree_sampler_sees_a_grandchilds_memory():
    """Real processes: a parent whose child holds 200 MB; the tree's peak and high-water marks see it."""
    import subprocess
    import sys
    import time

    from stdr_deploy.smoke import TreeSampler, process_tree

    child = "import time; b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}, 'craft_0_0'])"]
    )
    try:
        with TreeSampler(parent.pid, ("craft",)) as tree:
            deadline = time.monotonic() + 60
            while tree.high_water_marks().get("craft", 0) < 200 << 20 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.3)  # a few samples while the child holds its memory
            marks = tree.high_water_marks()
            assert len(process_tree(parent.pid)) == 2
    finally:
        parent.wait(timeout=60)
    assert marks["craft"] >= 200 << 20 and tree.peak >= 200 << 20
    assert set(marks) == {"craft", Path(sys.executable).name}  # the child by model, the parent by program


# --- served: the estimate against the real peak ---------------------------------------------


@pytest.mark.slow
@pytest.mark.triton
def test_4gb_host_plan_serves_the_benchmark_images_under_4gb(shared, craft_int8_onnx, crnn_onnx, tmp_path):
    from stdr_deploy.ocr.image_io import read_image
    from stdr_deploy.render import render
    from stdr_deploy.server import TritonServer
    from stdr_deploy.smoke import SmokeReport, TreeSampler, check_memory
    from stdr_deploy.triton_client import TritonPipelineClient

    host = load_host(HOSTS / "cpu-4g-4core.vendor.json")
    plan = make_plan(host, resolve_profile(host), recognizer="crnn-en")
    assert plan.detector.precision == "int8"  # the exported file below (AVX2: int8 measured faster)
    exported = {"craft": craft_int8_onnx.onnx_path, "crnn-en": crnn_onnx.onnx_path}
    repo = tmp_path / "model_repository"
    render(plan, repo, {m.triton_name: exported[m.family] for m in plan.models()})
    images = [read_image(shared / "testdata" / "scenes_A" / f"img0{i}.png") for i in range(4)]
    # and the largest image the plan accepts (img01 tiled to just under max_image_pixels), sent in
    # the request as a remote client sends it: the estimate allows for it in the server and the
    # pipeline, so the peak it is compared with must include it
    width = 2 * images[1].shape[1]
    largest = np.tile(images[1], (3, 2, 1))[: plan.pipeline.max_image_pixels // width]
    with TritonServer(repo, log_path=tmp_path / "tritonserver.log") as server:
        with TreeSampler(server.pid) as tree:
            with ThreadPoolExecutor(plan.pipeline.instance_count) as pool:
                words = list(pool.map(lambda image: TritonPipelineClient(server.grpc_url).read(image), images))
            assert TritonPipelineClient(server.grpc_url).read(largest)
        served_peak = max(tree.peak, sum(tree.high_water_marks().values()))
        report = SmokeReport()
        check_memory(report, server.grpc_url, plan, server.pid, progress=lambda message: None)
    print(json.dumps({"served_peak_bytes": served_peak, **report.memory}, indent=1))
    assert all(words), "every benchmark image has words"
    assert served_peak < 4 * GIB, f"peak RSS {served_peak / GIB:.2f} GiB serving the four images"
    assert report.ok, [c for c in report.checks if not c.ok]
    measured = report.memory["host_peak_bytes"]
    assert measured < 4 * GIB
    # the estimate is an upper bound of what the max shapes really take (issue 17's target)
    assert measured <= report.memory["host_estimate_bytes"] <= 1.25 * measured, report.warnings
    # per-model planner-bug warnings are reported, not fatal (craft served measured 3 % above its
    # own estimate once: served shapes fragment the heap more than the measured history)
    assert not [w for w in report.warnings if "host RAM" in w]


def test_repeated_served_runs_widen_the_estimate_by_their_spread():
    """A stub's peak varies run to run (ppocr on the 2-core EPYC: 606, 640, 651 MiB at one
    shape): where a shape was served more than once on one host, the plan holds the largest
    reading plus that spread, so a next run like them does not exceed it."""
    from stdr_deploy.planner import MODELS, Target, instance_memory

    repeated = 0
    for path in sorted(DATA.glob("cpu-onnxruntime.json")):  # (GPU runs differ in sessions made, see repeat_spread)
        device = path.stem.split("-")[0]
        groups: dict[tuple, list[dict]] = {}
        for served in json.loads(path.read_text()).get("served", []):
            groups.setdefault((served["family"], served["precision"], served["elements"], served["host"]), []).append(served)
        for (family, precision, _, _), runs in groups.items():
            if len(runs) < 2:
                continue
            readings = [r["host_bytes_per_instance"] for r in runs]
            target = Target("onnxruntime", "cpu" if device == "cpu" else "gpu")
            used = instance_memory(target, MODELS[family], tuple(runs[0]["max_shape"]), precision, 0)
            assert used.host_bytes >= max(readings) + (max(readings) - min(readings)), (family, readings, used)
            assert "spread of repeated runs" in used.source
            repeated += 1
    assert repeated >= 1
