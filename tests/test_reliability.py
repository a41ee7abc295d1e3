"""Reliability: malformed requests to the served pipeline, bad files for `stdr-deploy ocr`, a
server killed under load, a build killed mid-way.

One tritonserver, started once for the module, serves the CPU repository that `make_plan` plans
for the recorded 2-core Xeon host, rendered with the real exported CRAFT and CRNN models; its
pixel limit is the plan's own. About a hundred malformed requests go to it over gRPC, and HTTP
inference requests (issue 23's one that crashed Triton among them) are refused before their body
is read. Each must come back as its own error that says what was wrong, and afterwards the
server must be live and ready, with the same orchestrator process, and read a good image
exactly as the in-process pipeline does. Killing a render or an export mid-way is tested beside them
(tests/test_render.py, tests/test_export.py); killing a build is here, against the TensorRT
stand-in, as TensorRT cannot run on this machine.
"""

from __future__ import annotations

import http.client
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from test_engines import make_plan as engine_plan
from test_engines import ort_as_engine, recognizer_plan, standins  # noqa: F401 - standins is a fixture
from trt_double import GpuStandIn
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from stdr_deploy.engines import EngineCache, build_engines
from stdr_deploy.errors import ServerError
from stdr_deploy.hardware import load_host
from stdr_deploy.models import get_spec
from stdr_deploy.ocr.image_io import MIN_IMAGE_SIDE, read_image
from stdr_deploy.ocr.settings import PipelineSettings
from stdr_deploy.planner import make_plan
from stdr_deploy.render import render
from stdr_deploy.runners import make_pipeline
from stdr_deploy.server import HTTP_INFERENCE_HEADER, TritonServer, live_group_members
from stdr_deploy.triton_client import Endpoint, TritonPipelineClient, http_inference_refused

TESTS = Path(__file__).resolve().parent
CPU_HOST = TESTS / "hosts" / "cpu-xeon-2core.json"
H100 = TESTS / "hosts" / "h100-80g-hbm3.json"
CLI = [sys.executable, "-c", "from stdr_deploy.cli import main; main()"]
GOOD = "testdata/scenes_A/img00.png"  # 338x472, seven words
# Issue 23: ~100 bytes over HTTP that aborted tritonserver 2.51 (std::bad_alloc): a huge declared
# shape, one value. HTTP inference is refused by default (stdr_deploy.server.HTTP_INFERENCE_HEADER).
HUGE_SHAPE = [1, 100000, 100000, 3]
ISSUE_23_CURL = json.dumps({"inputs": [{"name": "input", "shape": HUGE_SHAPE, "datatype": "UINT8", "data": [1]}]})


def serving(test):
    """Needs the module's real tritonserver (or starts one): seconds, not milliseconds."""
    return pytest.mark.slow(pytest.mark.triton(test))


# -- the served deployment -------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan():
    return make_plan(load_host(CPU_HOST), recognizer="crnn-en")


@pytest.fixture(scope="module")
def repo(plan, craft_onnx, crnn_onnx, tmp_path_factory) -> Path:
    exported = {"craft": craft_onnx.onnx_path, "crnn-en": crnn_onnx.onnx_path}
    out = tmp_path_factory.mktemp("reliability") / "model_repository"
    render(plan, out, {m.triton_name: exported[m.family] for m in plan.models()})
    return out


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    with TritonServer(repo, log_path=tmp_path_factory.mktemp("logs") / "tritonserver.log") as running:
        yield running


@pytest.fixture(scope="module")
def clients(server):
    """protocol -> (tritonclient module, client)."""
    made = {
        "http": (httpclient, httpclient.InferenceServerClient(address(server.http_url), network_timeout=300)),
        "grpc": (grpcclient, grpcclient.InferenceServerClient(address(server.grpc_url))),
    }
    yield made
    for _, client in made.values():
        client.close()  # an open connection would make the server wait out its exit timeout


@pytest.fixture(scope="module")
def good_image(shared) -> np.ndarray:
    return read_image(shared / GOOD)


@pytest.fixture(scope="module")
def expected_words(plan, good_image, craft_onnx, crnn_onnx):
    """What the in-process pipeline reads in the good image, with the plan's settings."""
    settings = PipelineSettings.from_plan(plan.to_dict()["pipeline"])
    return make_pipeline("onnxruntime", plan.recognizer.family, settings=settings).read(good_image)


def address(url: str) -> str:
    return url.split("://", 1)[1]


def orchestrator_processes(server: TritonServer) -> list[int]:
    """Pids of the server's Python-backend stubs running the pipeline model."""
    found = []
    for pid in live_group_members(server.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if f"{server.repo}/pipeline/" in cmdline:
            found.append(pid)
    return sorted(found)


def ask(module, client, array: np.ndarray, name: str = "input"):
    tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)
    return client.infer("pipeline", [tensor])


def assert_still_serving(server: TritonServer, clients, good_image, expected_words, stubs: list[int]) -> None:
    """Live and ready on both protocols, the same orchestrator process, no crash in the log, and
    a good read over gRPC."""
    for module, client in clients.values():
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("pipeline")
    module, client = clients["grpc"]
    result = ask(module, client, good_image[None])
    texts = [t.decode() for t in result.as_numpy("output")[0]]
    assert texts == [w.text for w in expected_words]
    np.testing.assert_allclose(
        result.as_numpy("boxes")[0][:, :8].reshape(-1, 4, 2), [w.polygon for w in expected_words], atol=1e-3
    )
    assert orchestrator_processes(server) == stubs
    log = server.log_path.read_text(errors="replace")
    assert "unhealthy" not in log and "Signal (" not in log


# -- malformed requests through tritonclient ---------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One malformed request: the tensor sent as "input" (or `name`) and what its error must say."""

    label: str
    array: np.ndarray
    error: str  # a regular expression
    name: str = "input"


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def file_bytes(image: np.ndarray) -> dict[str, bytes]:
    """Bytes that are not pixels: whole and truncated image files, text, noise."""
    png, jpeg = encoded(image, "PNG"), encoded(image, "JPEG")
    files = {"png": png, "jpeg": jpeg, "text": b"GET /v2/health/ready HTTP/1.1\r\n" * 40,
             "noise": np.random.default_rng(0).bytes(3000)}
    for fraction in (0.02, 0.5, 0.999):
        files[f"png-cut-{fraction}"] = png[: int(len(png) * fraction)]
        files[f"jpeg-cut-{fraction}"] = jpeg[: int(len(jpeg) * fraction)]
    return files


TOO_SMALL = "too small to hold text"
BAD_SHAPE = r"unexpected shape for input 'input' for model 'pipeline'"
BAD_BATCH = r"batch-size must be <= 1"
# A batch of 0 images slips past Triton's batch check; its byte-size check refuses it.
ZERO_BATCH = r"input byte size mismatch"


def malformed_requests(image: np.ndarray, max_pixels: int) -> list[Bad]:
    cases = []
    for label, data in file_bytes(image).items():
        raw = np.frombuffer(data, np.uint8)
        pixels = raw[: len(raw) // 3 * 3].reshape(1, 1, -1, 3)
        cases += [
            Bad(f"{label}-as-vector", raw, BAD_BATCH),
            Bad(f"{label}-as-row", raw[None], BAD_SHAPE),
            Bad(f"{label}-as-gray-column", raw.reshape(1, -1, 1, 1), BAD_SHAPE),
            Bad(f"{label}-as-pixel-row", pixels, TOO_SMALL),
            Bad(f"{label}-as-pixel-column", pixels.reshape(1, -1, 1, 3), TOO_SMALL),
        ]
    side = MIN_IMAGE_SIDE - 1
    cases += [
        Bad("empty", np.zeros((1, 0, 0, 3), np.uint8), "image has no pixels"),
        Bad("no-rows", np.zeros((1, 0, 64, 3), np.uint8), "image has no pixels"),
        Bad("no-columns", np.zeros((1, 64, 0, 3), np.uint8), "image has no pixels"),
        Bad("zero-images", np.zeros((0, 64, 64, 3), np.uint8), ZERO_BATCH),
        Bad("1x1", np.full((1, 1, 1, 3), 255, np.uint8), TOO_SMALL),
        Bad("2x2", np.zeros((1, 2, 2, 3), np.uint8), TOO_SMALL),
        Bad("thin-strip", np.zeros((1, side, 640, 3), np.uint8), TOO_SMALL),
        Bad("tall-strip", np.zeros((1, 640, side, 3), np.uint8), TOO_SMALL),
        Bad("gray", np.zeros((1, 64, 64), np.uint8), BAD_SHAPE),
        Bad("gray-channel", np.zeros((1, 64, 64, 1), np.uint8), BAD_SHAPE),
        Bad("gray-alpha", np.zeros((1, 64, 64, 2), np.uint8), BAD_SHAPE),
        Bad("rgba", np.zeros((1, 64, 64, 4), np.uint8), BAD_SHAPE),
        Bad("channels-first", np.zeros((1, 3, 64, 64), np.uint8), BAD_SHAPE),
        Bad("five-dims", np.zeros((1, 1, 64, 64, 3), np.uint8), BAD_SHAPE),
        Bad("no-batch-dim", np.zeros((64, 64, 3), np.uint8), BAD_BATCH),
        Bad("two-images", np.zeros((2, 64, 64, 3), np.uint8), BAD_BATCH),
        Bad("scalar", np.array(7, np.uint8), "has no shape but model requires batch dimension"),
        Bad("strings", np.full((1, 8, 8, 3), b"x", dtype=np.object_), "data-type is 'BYTES'.*expects 'UINT8'"),
        Bad("misnamed", np.zeros((1, 64, 64, 3), np.uint8), "unexpected inference input 'image'", name="image"),
    ]
    for dtype in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                  np.uint16, np.uint32, np.uint64, np.bool_):
        triton_type = np_to_triton_dtype(np.dtype(dtype))
        cases.append(Bad(f"dtype-{triton_type}", np.zeros((1, 64, 64, 3), dtype),
                         f"data-type is '{triton_type}', but model 'pipeline' expects 'UINT8'"))
    over = math.isqrt(max_pixels) + 1  # just above the plan's limit: 150 MB, not 20000x20000's 1.2 GB
    cases.append(Bad("above-pixel-limit", np.zeros((1, over, over, 3), np.uint8), f"exceeds the limit of {max_pixels}"))
    return cases


@serving
def test_each_malformed_request_gets_its_own_clear_error(plan, server, clients, good_image, expected_words):
    stubs = orchestrator_processes(server)
    assert len(stubs) == plan.pipeline.instance_count
    module, client = clients["grpc"]
    cases = malformed_requests(good_image, plan.pipeline.max_image_pixels)
    assert len(cases) >= 80
    wrong = []
    for case in cases:
        try:
            ask(module, client, case.array, case.name)
            wrong.append(f"{case.label}: answered instead of refused")
        except InferenceServerException as exc:
            if not re.search(case.error, exc.message() or ""):
                wrong.append(f"{case.label}: {exc.message()!r} does not match {case.error!r}")
            if exc.status() != INVALID_ARGUMENT:  # every one is the caller's mistake (issue 23)
                wrong.append(f"{case.label}: {exc.status()} {exc.message()!r}")
    assert wrong == []
    assert_still_serving(server, clients, good_image, expected_words, stubs)


INVALID_ARGUMENT = "StatusCode.INVALID_ARGUMENT"  # tritonclient.grpc's status of a refused request


def sub_model_requests(plan) -> list[tuple[str, str, np.ndarray, str]]:
    """(label, model, input, what the error must say): beyond each model's max profile, and empty."""
    cases = []
    for model in plan.models():
        ((name, profile),) = model.profile.items()
        dtype = np.dtype(get_spec(model.family).input.dtype)  # craft takes uint8 pixels
        top = profile.max
        twice = (*top[:-2], top[-2] * 2, top[-1] * 2) if model.role == "detector" else (*top[:-1], top[-1] * 2)
        wider = (*top[:-1], top[-1] + 1)
        empty = (*top[:-1], 0)
        cases += [
            (f"{model.triton_name}-twice-max", model.triton_name, np.zeros(twice, dtype), "beyond this deployment's largest"),
            (f"{model.triton_name}-one-wider", model.triton_name, np.zeros(wider, dtype), "beyond this deployment's largest"),
            (f"{model.triton_name}-zero-width", model.triton_name, np.zeros(empty, dtype), "has no elements"),
        ]
    return cases


@serving
def test_each_model_refuses_inputs_beyond_its_max_profile_or_empty(plan, server, clients, good_image, expected_words):
    """Issue 23: a direct `craft` call of 4000x4000 grew its stub by 6 GB; zero-width calls
    answered with raw ONNX Runtime text. Now both are INVALID_ARGUMENT before the model runs."""
    stubs = orchestrator_processes(server)
    module, client = clients["grpc"]
    cases = sub_model_requests(plan)
    assert ("craft-twice-max", "craft") == cases[0][:2] and cases[0][2].shape == (1, 3, 2816, 2816)  # canvas 1408
    wrong = []
    for label, model, array, error in cases:
        tensor = module.InferInput("input", list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        try:
            client.infer(model, [tensor])
            wrong.append(f"{label}: answered instead of refused")
        except InferenceServerException as exc:
            if exc.status() != INVALID_ARGUMENT or error not in exc.message():
                wrong.append(f"{label}: {exc.status()} {exc.message()!r}")
    assert wrong == []
    assert_still_serving(server, clients, good_image, expected_words, stubs)


# -- malformed protocol messages, below tritonclient -------------------------------------------


def json_request(shape, data) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": "UINT8", "data": data}]}).encode()


def binary_request(shape, declared_bytes: int, sent_bytes: int, header_length_extra: int = 0):
    header = json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": "UINT8",
                                     "parameters": {"binary_data_size": declared_bytes}}]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header) + header_length_extra)}
    return header + bytes(sent_bytes), headers


# label -> (body, headers): HTTP inference requests, each refused before its body is read.
RAW_HTTP = {
    "issue-23-huge-shape-one-value": (ISSUE_23_CURL.encode(), {}),
    "png-file-as-body": (b"\x89PNG\r\n\x1a\n" + bytes(64), {}),
    "no-inputs": (b"{}", {}),
    "too-few-values": (json_request([1, 8, 8, 3], [1, 2, 3]), {}),
    "negative-dimension": (json_request([1, -2, 2, 3], [1] * 12), {}),
    "binary-huge-shape": binary_request(HUGE_SHAPE, 1, 1),
    "binary-cut-short": binary_request([1, 8, 8, 3], 192, 100),
    "header-longer-than-body": binary_request([1, 8, 8, 3], 192, 192, header_length_extra=500),
}


def grpc_request(shape, raw: bytes | None = None, contents: list[int] | None = None):
    request = service_pb2.ModelInferRequest(model_name="pipeline")
    tensor = request.inputs.add(name="input", datatype="UINT8", shape=shape)
    if contents is not None:
        tensor.contents.uint_contents.extend(contents)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def raw_grpc_requests() -> dict[str, tuple[service_pb2.ModelInferRequest, str]]:
    twice = grpc_request([1, 8, 8, 3], bytes(192))
    twice.inputs.add(name="input", datatype="UINT8", shape=[1, 8, 8, 3])
    twice.raw_input_contents.append(bytes(192))
    return {
        "no-data": (grpc_request([1, 8, 8, 3]), "unable to find data for input tensor 'input'"),
        "data-given-twice": (grpc_request([1, 8, 8, 3], bytes(192), [0] * 192), "contents field must not be specified"),
        "input-given-twice": (twice, "input 'input' already exists in request"),
        "unknown-dimension": (grpc_request([1, -1, 8, 3], bytes(192)), "All input dimensions should be specified"),
        # issue 23's request over gRPC: the size is checked against the shape before any allocation
        "huge-shape-one-value": (grpc_request(HUGE_SHAPE, contents=[1]), "input byte size mismatch"),
        "huge-shape-one-byte": (grpc_request(HUGE_SHAPE, b"\x01"), "input byte size mismatch"),
    }


@serving
def test_malformed_protocol_messages_are_refused_one_by_one(server, clients, good_image, expected_words):
    """HTTP inference, issue 23's crashing request first, gets 403 before its body is read; raw
    gRPC messages get INVALID_ARGUMENT; the server stays ready throughout."""
    stubs = orchestrator_processes(server)
    assert http_inference_refused(Endpoint.parse(server.http_url))
    wrong = []
    host, port = address(server.http_url).rsplit(":", 1)
    for label, (body, headers) in RAW_HTTP.items():
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request("POST", "/v2/models/pipeline/infer", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read().decode(errors="replace")
        connection.close()
        if response.status != 403 or HTTP_INFERENCE_HEADER not in json.loads(answer).get("error", ""):
            wrong.append(f"http {label}: {response.status} {answer[:200]}")
    with grpc.insecure_channel(address(server.grpc_url)) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for label, (request, error) in raw_grpc_requests().items():
            try:
                stub.ModelInfer(request, timeout=60)
                wrong.append(f"grpc {label}: answered instead of refused")
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT or not re.search(error, exc.details()):
                    wrong.append(f"grpc {label}: {exc.code()} {exc.details()[:200]}")
    assert wrong == []
    assert_still_serving(server, clients, good_image, expected_words, stubs)


@serving
def test_data_that_does_not_match_its_shape_is_refused(server, clients):
    requests = [grpc_request([1, 8, 8, 3], bytes(100)), grpc_request([1, 8, 8, 3], bytes(1000)),
                grpc_request([1, 8, 8, 3], contents=[1, 2, 3])]
    with grpc.insecure_channel(address(server.grpc_url)) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for request in requests:
            with pytest.raises(grpc.RpcError, match="byte size mismatch"):
                stub.ModelInfer(request, timeout=60)


# -- a server killed under load ----------------------------------------------------------------


def ready_json(cli: subprocess.Popen) -> dict:
    """The JSON object `stdr-deploy serve --json` prints once the server is ready."""
    text = ""
    while not text.rstrip().endswith("\n}"):
        line = cli.stdout.readline()
        assert line, f"serve exited early: {cli.wait()} {cli.stderr.read()}"
        text += line
    return json.loads(text)


@serving
def test_a_server_killed_under_load_fails_each_client_clearly_and_serve_exits_7(repo, tmp_path, good_image):
    """With no recovery allowed (--max-restarts 0), a dead server ends `serve` at once, with why;
    tests/test_supervise.py has the restart."""
    cli = subprocess.Popen([*CLI, "serve", "--repo", str(repo), "--log", str(tmp_path / "serve.log"), "--json",
                            "--max-restarts", "0", "--http-inference"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = ready_json(cli)
        urls = [ready["http_url"], ready["grpc_url"]]
        answered = {url: threading.Event() for url in urls}
        failures: dict[str, Exception] = {}

        def keep_reading(url: str) -> None:
            client = TritonPipelineClient(url)
            try:
                while True:
                    client.read(good_image)
                    answered[url].set()
            except Exception as exc:  # noqa: BLE001 - whatever the client raises is what is checked
                failures[url] = exc

        readers = [threading.Thread(target=keep_reading, args=(url,), daemon=True) for url in urls]
        for reader in readers:
            reader.start()
        assert all(event.wait(120) for event in answered.values()), failures
        os.kill(ready["pid"], signal.SIGKILL)
        for reader in readers:
            reader.join(60)
        stderr = cli.communicate(timeout=60)[1]
    finally:
        if cli.poll() is None:
            cli.kill()
    for url in urls:
        assert isinstance(failures[url], ServerError), repr(failures[url])
        assert f"no answer from the server at {url}" in str(failures[url])
    assert cli.returncode == 7
    assert f"tritonserver (pid {ready['pid']}) was killed by SIGKILL while serving; giving up" in stderr
    assert "Traceback" not in stderr
    assert live_group_members(ready["pid"]) == []  # serve took the orphaned backend stubs down too



@serving
def test_a_killed_serve_takes_its_server_down(repo, tmp_path):
    """`serve` itself SIGKILLed (no atexit, no finally): Linux tells the server, which stops and
    removes its shared memory, so nothing keeps the ports or /dev/shm."""
    cli = subprocess.Popen([*CLI, "serve", "--repo", str(repo), "--log", str(tmp_path / "serve.log"), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        server_pid = ready_json(cli)["pid"]
        assert live_group_members(server_pid)
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=30)
    finally:
        cli.kill()
    deadline = time.monotonic() + 60
    while live_group_members(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_group_members(server_pid) == []
    assert list(Path("/dev/shm").glob(f"stdr_{cli.pid}_*")) == []

# -- bad files for `stdr-deploy ocr` -----------------------------------------------------------


@pytest.mark.slow
def test_ocr_names_each_bad_file_reads_the_others_and_exits_2(shared, tmp_path, good_image):
    png, jpeg = encoded(good_image, "PNG"), encoded(good_image, "JPEG")
    bad = {
        "missing.png": None,
        "empty.png": b"",
        "notes.png": b"these are notes, not pixels\n",
        "cut.png": png[: len(png) // 2],
        "cut.jpg": jpeg[: len(jpeg) // 2],
        "dot.png": encoded(np.zeros((1, 1, 3), np.uint8), "PNG"),
    }
    for name, data in bad.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    gray = tmp_path / "gray.png"  # a good file in another layout: read, not refused
    Image.fromarray(good_image).convert("L").save(gray)
    files = [shared / GOOD, *(tmp_path / name for name in bad), gray]
    done = subprocess.run([*CLI, "ocr", "--json", *map(str, files)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "1000"})  # one line per message on stderr
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert [next(name for name in bad if name in line) for line in errors[: len(bad)]] == list(bad)
    assert "too small to hold text" in errors[list(bad).index("dot.png")]
    assert f"{len(bad)} of {len(files)} images could not be read" in done.stderr
    predictions = json.loads(done.stdout)
    assert [image["file"] for image in predictions["images"]] == ["img00.png", "gray.png"]
    assert all(len(image["words"]) >= 5 for image in predictions["images"])


# -- a build killed mid-way --------------------------------------------------------------------

KILLED_BUILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from trt_double import GpuStandIn
from stdr_deploy.engines import EngineCache, build_engines
from stdr_deploy.hardware import load_host
from stdr_deploy.plan_schema import Plan

args = json.loads(sys.argv[1])

def stall(engine_path, spec, gpu):
    # The engine is written into its staging folder and is about to be checked: wait for the signal.
    Path(args["staged"]).write_text(str(engine_path))
    time.sleep(600)

build_engines(Plan.from_dict(args["plan"]), {k: Path(v) for k, v in args["onnx"].items()}, load_host(args["host"]),
              builder=GpuStandIn(), cache=EngineCache(Path(args["cache"])), make_runner=stall)
"""


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_build_killed_mid_way_leaves_the_cached_engines_intact(tmp_path, standins):
    """Real TensorRT-RTX builds (only the GPU-time answers stood in, see tests/trt_double.py) in a
    real subprocess, killed by SIGKILL once its engine is staged."""
    cache, host = EngineCache(tmp_path / "engines"), load_host(H100)
    first = build_engines(engine_plan(), standins, host, builder=GpuStandIn(), cache=cache, make_runner=ort_as_engine)
    kept = {name: files_under(result.engine_path.parent) for name, result in first.items()}
    larger = engine_plan(recognizer=recognizer_plan(batch=32))  # a new recognizer engine, the same detector
    staged = tmp_path / "staged"
    args = {"plan": larger.to_dict(), "onnx": {k: str(v) for k, v in standins.items()}, "host": str(H100),
            "cache": str(cache.root), "staged": str(staged)}
    build = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, json.dumps(args), str(TESTS)],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not staged.is_file():
            assert build.poll() is None, build.stderr.read()
            assert time.monotonic() < deadline, "the build never staged its engine"
            time.sleep(0.05)
        build.send_signal(signal.SIGKILL)
        build.wait(timeout=30)
    finally:
        build.kill()
    assert build.returncode == -signal.SIGKILL
    orphan = Path(staged.read_text()).parent
    assert orphan.is_dir() and ".staging-" in orphan.name  # it died with a half-made entry

    assert {name: files_under(result.engine_path.parent) for name, result in first.items()} == kept
    fingerprint = first["parseq"].fingerprint
    new_key = orphan.name.split(".")[1]
    assert cache.lookup(fingerprint, new_key) == (None, "not built yet")
    for result in first.values():
        assert cache.lookup(fingerprint, result.key)[1] == "cached"

    again = build_engines(larger, standins, host, builder=GpuStandIn(), cache=cache, make_runner=ort_as_engine)
    assert again["craft"].cached and not again["parseq"].cached
    assert again["parseq"].key == new_key and again["parseq"].report["rebuilt_because"] == "not built yet"
    assert not orphan.exists()  # the next build of that engine removed the killed build's leftovers
