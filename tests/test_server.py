"""The embedded tritonserver with our Python-based `onnxruntime` backend, end to end.

A tiny real ONNX model (`output = Relu(input * 2)`) served from hand-written, unmodified
`platform: "onnxruntime_onnx"` configs; real HTTP and gRPC clients; real processes checked in
/proc. Server starts cost seconds each, so there are four: one shared by most tests, one for a
model that cannot load, one killed while loading, and one through the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from stdr_deploy.cli.serve import is_loopback
from stdr_deploy.errors import MissingDependency, ServerError, UserInputError
from stdr_deploy.triton_client import TritonModelRunner
from stdr_deploy.server import (
    STUB,
    TritonServer,
    backend_directory,
    client_host,
    embedded_triton,
    free_ports,
    load_failures,
    port_in_use,
)

RELU_CONFIG = """
name: "relu"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 3 ] } ]
instance_group [ { kind: KIND_CPU count: 2 } ]
dynamic_batching { max_queue_delay_microseconds: 50000 }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
model_warmup [ {
  name: "zeros"
  batch_size: 2
  inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } }
} ]
"""

# Unbatched, any 2-D shape passes Triton's checks, so a wrong width reaches ONNX Runtime and our
# backend must answer that request with an error. The file name is not model.onnx.
NAMED_CONFIG = """
name: "relu_named"
platform: "onnxruntime_onnx"
max_batch_size: 0
default_model_filename: "doubled.onnx"
input [ { name: "input" data_type: TYPE_FP32 dims: [ -1, -1 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ -1, -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters { key: "execution_mode" value: { string_value: "0" } }
"""

# Our `sessions_per_shape`: one ORT session per input shape (at most 2 here, batches padded to
# powers of two), what GPU plans render because the CUDA EP re-plans on every shape change; and
# `warm_shapes`: those sessions made and run at load (GPU plans list their fixed shapes).
SHAPES_CONFIG = """
name: "relu_shapes"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters { key: "sessions_per_shape" value: { string_value: "2" } }
parameters { key: "warm_shapes" value: { string_value: "4x4 4x6" } }
"""

CLI = [sys.executable, "-c", "from stdr_deploy.cli import main; main()"]


def serving(test):
    """Starts (or needs) a real tritonserver: seconds, not milliseconds."""
    return pytest.mark.slow(pytest.mark.triton(test))


def relu_model(width: int | str = 3) -> onnx.ModelProto:
    """output = Relu(input * 2), input [batch, width] float32."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "two"], ["scaled"]), helper.make_node("Relu", ["scaled"], ["output"])],
        "relu_times_two",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by any onnxruntime >= 1.10
    onnx.checker.check_model(model, full_check=True)
    return model


def write_model(repo: Path, config: str, filename: str = "model.onnx", content: bytes | None = None) -> None:
    name = config.split('name: "', 1)[1].split('"', 1)[0]
    version = repo / name / "1"
    version.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config)
    (version / filename).write_bytes(content if content is not None else relu_model().SerializeToString())


def expected(x: np.ndarray) -> np.ndarray:
    return np.maximum(x * 2, 0).astype(np.float32)


def leftovers(repo: Path, shm_prefix: str | None = None) -> list[str]:
    """Live processes whose command line mentions `repo` (the server and its stubs), and shm files."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited while we looked
        if state != "Z" and str(repo) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    if shm_prefix:
        found += [str(path) for path in Path("/dev/shm").glob(f"{shm_prefix}*")]
    return found


def stubs(repo: Path) -> list[str]:
    return [line for line in leftovers(repo) if STUB in line]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write_model(root, RELU_CONFIG)
    write_model(root, NAMED_CONFIG, filename="doubled.onnx")
    write_model(root, SHAPES_CONFIG, content=relu_model("width").SerializeToString())
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory):
    """One running server for the module; other suites can do the same with their repository."""
    log = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    with TritonServer(repo, log_path=log, ready_timeout=120, http_inference=True) as running:
        yield running


def http_client(server: TritonServer):
    import tritonclient.http as httpclient

    return httpclient, httpclient.InferenceServerClient(server.http_url.split("://", 1)[1], concurrency=8)


def grpc_client(server: TritonServer):
    import tritonclient.grpc as grpcclient

    return grpcclient, grpcclient.InferenceServerClient(server.grpc_url.split("://", 1)[1])


def infer(module, client, model: str, x: np.ndarray) -> np.ndarray:
    tensor = module.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor]).as_numpy("output")


# -- the shared server ------------------------------------------------------------------------


@serving
def test_ready_server_lists_models_and_urls(server: TritonServer, repo: Path):
    assert {(m.name, m.state) for m in server.models()} == {
        ("relu", "READY"), ("relu_named", "READY"), ("relu_shapes", "READY")
    }
    assert server.http_url.startswith("http://127.0.0.1:") and server.grpc_url.startswith("grpc://127.0.0.1:")
    assert "tritonserver" in Path(f"/proc/{server.pid}/cmdline").read_text()
    # instance_group count 2 -> two stub processes for relu, in the server's process group
    relu_stubs = [line for line in stubs(repo) if "/relu/1/" in line]
    assert len(relu_stubs) == 2
    assert {os.getpgid(int(line.split(":")[0])) for line in relu_stubs} == {server.pid}


@serving
def test_the_embedded_server_is_the_triton_release_the_manifests_name(server: TritonServer):
    """TRITON_VERSION picks NGC's image for the Kubernetes manifests: the binary we check configs on must be it."""
    from stdr_deploy.server import TRITON_VERSION

    module, client = http_client(server)
    with client:
        assert client.get_server_metadata()["version"].startswith(f"{TRITON_VERSION}.")


@serving
def test_http_and_grpc_give_the_right_numbers(server: TritonServer):
    x = np.array([[1.0, -2.0, 3.5], [-0.5, 0.0, 4.0]], dtype=np.float32)
    for module, client in (http_client(server), grpc_client(server)):
        with client:
            out = infer(module, client, "relu", x)
        assert out.dtype == np.float32 and out.shape == (2, 3)
        np.testing.assert_array_equal(out, expected(x))


@serving
def test_concurrent_requests_are_answered_each_with_its_own_result(server: TritonServer):
    """The dynamic batcher hands several requests to one execute(); each gets its own rows."""
    module, client = http_client(server)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((n, 3)).astype(np.float32) for n in (1, 2, 3, 1, 2)]
    pending = []
    with client:
        for x in inputs:
            tensor = module.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            pending.append(client.async_infer("relu", [tensor]))
        outputs = [request.get_result().as_numpy("output") for request in pending]
    for x, out in zip(inputs, outputs):
        np.testing.assert_array_equal(out, expected(x))


@serving
def test_one_session_per_shape_answers_each_shape_right_and_drops_the_least_recent(server: TritonServer):
    """The warm shapes are sessions before the model is ready (largest first); batches of 3 run
    padded to 4 on them and come back as 3 rows; a third shape evicts the oldest session."""
    def made() -> list[str]:
        return [line for line in server.log_path.read_text().splitlines() if "relu_shapes: session" in line]

    at_load = made()
    assert len(at_load) == 2 and "(4, 6)" in at_load[0] and "(4, 4)" in at_load[1], at_load
    assert "relu_shapes: 2 input shapes warmed at load" in server.log_path.read_text()
    rng = np.random.default_rng(7)
    module, client = http_client(server)
    with client:
        for width in (4, 6, 4, 9, 6):
            x = rng.standard_normal((3, width)).astype(np.float32)
            out = infer(module, client, "relu_shapes", x)
            assert out.shape == (3, width)
            np.testing.assert_array_equal(out, expected(x))
    deadline, lines = time.monotonic() + 10, []
    while len(lines) < 4 and time.monotonic() < deadline:  # the stub's log lines arrive a moment later
        lines = made()
        time.sleep(0.1)
    # widths 4, 6 and 4 again use the warmed sessions; 9 drops 6's (least recently used) and 6
    # then drops 4's: two sessions made after load, never more than two kept
    assert len(lines) == 4, lines
    assert all("of at most 2" in line for line in lines)
    assert "(4, 9)" in lines[2] and "(4, 6)" in lines[3]


def test_the_wait_for_ready_allows_for_the_shapes_warmed_at_load(tmp_path: Path):
    """A GPU plan's instances make a session per fixed shape before they are ready: the longest
    `warm_shapes` list in the repository sets how long a server waits for its models."""
    from stdr_deploy.server import READY_TIMEOUT_S, WARM_S_PER_SHAPE, load_allowance

    write_model(tmp_path, RELU_CONFIG)
    assert load_allowance(tmp_path) == READY_TIMEOUT_S
    write_model(tmp_path, SHAPES_CONFIG, content=relu_model("width").SerializeToString())
    assert load_allowance(tmp_path) == READY_TIMEOUT_S + 2 * WARM_S_PER_SHAPE
    assert TritonServer(tmp_path).ready_timeout == load_allowance(tmp_path)
    assert TritonServer(tmp_path, ready_timeout=5).ready_timeout == 5


@serving
def test_bad_request_fails_alone_and_the_server_keeps_serving(server: TritonServer):
    from tritonclient.utils import InferenceServerException

    module, client = http_client(server)
    good = np.ones((1, 3), dtype=np.float32)
    with client:
        # wrong dims for the batched model: Triton rejects it against the config
        with pytest.raises(InferenceServerException, match="shape"):
            infer(module, client, "relu", np.ones((1, 4), dtype=np.float32))
        # accepted by the config, refused by ONNX Runtime: our backend answers with an error
        with pytest.raises(InferenceServerException, match="relu_named"):
            infer(module, client, "relu_named", np.ones((1, 4), dtype=np.float32))
        assert client.is_server_live()
        np.testing.assert_array_equal(infer(module, client, "relu", good), expected(good))
        np.testing.assert_array_equal(infer(module, client, "relu_named", good), expected(good))


@serving
def test_default_model_filename_is_used(server: TritonServer, repo: Path):
    assert not (repo / "relu_named" / "1" / "model.onnx").exists()
    module, client = grpc_client(server)
    x = np.array([[-1.0, 2.0, -3.0]], dtype=np.float32)
    with client:
        np.testing.assert_array_equal(infer(module, client, "relu_named", x), expected(x))
    assert any("/relu_named/1/doubled.onnx" in line for line in stubs(repo))


@serving
def test_a_busy_port_is_refused_with_a_clear_message(server: TritonServer, repo: Path):
    second = TritonServer(repo, http_port=server.ports.http)
    with pytest.raises(ServerError, match=f"port {server.ports.http} .*already in use") as failure:
        second.start()
    assert "--url" in failure.value.hint
    assert second.pid is None


# -- servers that fail ------------------------------------------------------------------------


@serving
def test_a_model_that_cannot_load_names_itself_and_the_reason(tmp_path: Path):
    repo = tmp_path / "repo"
    write_model(repo, RELU_CONFIG, content=b"this is not an ONNX model")
    server = TritonServer(repo, log_path=tmp_path / "server.log", ready_timeout=120)
    with pytest.raises(ServerError) as failure:
        with server:
            pass
    message = str(failure.value)
    assert "model 'relu' failed to load" in message
    assert "INVALID_PROTOBUF" in message
    assert str(tmp_path / "server.log") in failure.value.hint
    assert leftovers(repo, server.shm_prefix) == []


@serving
def test_killing_the_server_mid_load_is_reported_and_leaves_nothing(tmp_path: Path):
    repo = tmp_path / "repo"
    write_model(repo, RELU_CONFIG)
    server = TritonServer(repo, log_path=tmp_path / "server.log").start()
    try:
        deadline = time.monotonic() + 60
        while not stubs(repo) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stubs(repo), "no Python backend stub started"
        os.kill(server.pid, signal.SIGKILL)  # the stubs survive their server for a while
        with pytest.raises(ServerError, match="killed by SIGKILL before it was ready"):
            server.wait_ready(60)
    finally:
        server.stop()
    assert leftovers(repo, server.shm_prefix) == []


# -- the CLI ----------------------------------------------------------------------------------


@serving
def test_serve_cli_prints_json_when_ready_and_stops_cleanly_on_sigterm(tmp_path: Path):
    repo = tmp_path / "repo"
    write_model(repo, RELU_CONFIG)
    log = tmp_path / "ws" / "server.log"  # the default log: <workspace>/server.log, as `auto` writes it
    cli = subprocess.Popen(
        [*CLI, "serve", "--repo", str(repo), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "STDR_DEPLOY_WORKSPACE": str(tmp_path / "ws")},
    )
    try:
        text = ""
        while not text.rstrip().endswith("\n}"):
            line = cli.stdout.readline()
            assert line, f"serve exited early: {cli.wait()} {cli.stderr.read()}"
            text += line
        ready = json.loads(text)
        assert [(m["name"], m["state"]) for m in ready["models"]] == [("relu", "READY")]
        assert ready["log"] == str(log)
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(ready["grpc_url"].split("://", 1)[1])
        x = np.array([[3.0, -3.0, 0.25]], dtype=np.float32)
        with client:
            np.testing.assert_array_equal(infer(grpcclient, client, "relu", x), expected(x))
        # by default HTTP takes no inference (issue 23): our client says where to go instead
        with pytest.raises(ServerError, match="takes inference over gRPC only") as refused:
            TritonModelRunner(ready["http_url"], "relu").infer({"input": x})
        assert "grpc://" in refused.value.hint
        assert log.is_file()
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(60) == 0
        assert cli.stderr.read().rstrip().endswith("server stopped")
    finally:
        if cli.poll() is None:
            cli.kill()
    assert leftovers(repo) == []


@serving
def test_auto_keeps_serving_until_sigterm_then_says_it_stopped(tmp_path: Path):
    """`auto`'s last phase (the steps before it are tested in test_auto / test_artifacts)."""
    repo = tmp_path / "repo"
    write_model(repo, RELU_CONFIG)
    script = (
        "from pathlib import Path\nfrom stdr_deploy.cli.auto import _serve\nfrom stdr_deploy.server import TritonServer\n"
        "from stdr_deploy.supervise import Policy\nfrom types import SimpleNamespace\n"
        f"server = TritonServer(Path({str(repo)!r}), log_path=Path({str(tmp_path / 'server.log')!r}))\n"
        "server.start(); server.wait_ready()\n"
        f"_serve(SimpleNamespace(server=server, manifest={{}}), Path({str(repo)!r}), False, Policy(), True)\n"
    )
    auto = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        first = auto.stderr.readline()
        assert first.startswith("serving inference on grpc://127.0.0.1:") and "Ctrl-C stops it" in first, first
        auto.send_signal(signal.SIGTERM)
        code = auto.wait(60)
        said = auto.stderr.read().strip()
        assert code == 0, said
        assert said.splitlines()[-1] == "server stopped (SIGTERM)"
    finally:
        if auto.poll() is None:
            auto.kill()
    assert leftovers(repo) == []


def test_serve_cli_refuses_an_empty_repository(tmp_path: Path):
    result = subprocess.run(
        [*CLI, "serve", "--repo", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no models in" in result.stderr and "stdr-deploy render" in result.stderr


# -- pieces without a server ------------------------------------------------------------------


def test_backend_directory_is_assembled_once_with_our_backends(tmp_path: Path):
    first = backend_directory(tmp_path)
    assert backend_directory(tmp_path) == first
    assert os.access(first / "python" / STUB, os.X_OK)
    assert (first / "python" / "libtriton_python.so").is_file()
    source = Path(__file__).resolve().parents[1] / "stdr_deploy" / "backends"
    for name in ("onnxruntime", "tensorrt"):
        assert (first / name / "model.py").read_bytes() == (source / name / "model.py").read_bytes()
        for shared in ("stdr_batching.py", "stub_malloc.py"):
            assert (first / name / shared).read_bytes() == (source / shared).read_bytes()
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging folder left


def test_a_python_without_a_stub_is_a_missing_dependency():
    with pytest.raises(MissingDependency, match="no Python backend stub for Python 3.99"):
        embedded_triton((3, 99))


def test_free_ports_differ_and_are_free():
    ports = free_ports("127.0.0.1", 3)
    assert len(set(ports)) == 3
    assert not any(port_in_use("127.0.0.1", port) for port in ports)


def test_an_address_of_another_machine_is_refused_before_launch(tmp_path: Path):
    server = TritonServer(tmp_path, host="192.0.2.1")  # TEST-NET-1: never assigned to a host
    with pytest.raises(UserInputError, match="cannot listen on '192.0.2.1'"):
        server.start()
    assert server.pid is None


def test_only_loopback_hosts_go_without_a_warning():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("myhost")


def test_client_host_dials_loopback_for_wildcard_binds():
    assert client_host("0.0.0.0") == "127.0.0.1"
    assert client_host("::") == "[::1]"
    assert client_host("192.168.1.5") == "192.168.1.5"


def test_load_failures_are_read_from_a_real_triton_log():
    line = (
        "E1126 11:47:47.864519 13876 model_lifecycle.cc:638] failed to load 'relu' version 1: Internal: "
        "InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from "
        "/tmp/exp2/bad/relu/1/model.onnx failed:Protobuf parsing failed."
    )
    assert load_failures(f"I1126 loading: relu:1\n{line}\nerror: creating server") == {
        "relu": "Internal: InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from "
        "/tmp/exp2/bad/relu/1/model.onnx failed:Protobuf parsing failed."
    }


# -- the onnxruntime backend's decisions, imported outside the stub ---------------------------


@pytest.fixture
def ort_backend(tmp_path: Path, monkeypatch):
    """Our backend's model.py as a module; its pb_utils import is the real file Triton ships."""
    import importlib.util

    backends = backend_directory(tmp_path)
    monkeypatch.syspath_prepend(str(backends / "python"))
    monkeypatch.delitem(sys.modules, "stdr_batching", raising=False)
    monkeypatch.delitem(sys.modules, "stub_malloc", raising=False)
    spec = importlib.util.spec_from_file_location("stdr_ort_backend", backends / "onnxruntime" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stem", ["a5000-24g.vendor", "h200-141g"])  # detector pads 640 and 320
@pytest.mark.parametrize("recognizer", ["crnn-en", "ppocr"])
def test_gpu_fixed_shapes_cover_every_input_the_pipeline_makes(ort_backend, recognizer, stem):
    """A GPU instance keeps at most `shape_sessions` sessions, one per shape (planner.fixed_shapes);
    a shape outside them would evict one and re-plan at every change. So: random images and crops,
    through the pipeline's own input makers and the backend's batch padding, land on those shapes."""
    import random

    from stdr_deploy.hardware import load_host
    from stdr_deploy.ocr.detector_input import padded_size, resized_size
    from stdr_deploy.ocr.recognizers import get_family
    from stdr_deploy.planner import Target, fixed_shapes, make_plan

    host = load_host(Path(__file__).parent / "hosts" / f"{stem}.json")
    plan = make_plan(host, variant="onnxruntime", recognizer=recognizer)
    det, rec, pipe = plan.detector, plan.recognizer, plan.pipeline
    target = Target("onnxruntime", "gpu")
    det_shapes = fixed_shapes(target, det.family, next(iter(det.profile.values())).max, pipe.pad_to)
    rec_shapes = fixed_shapes(target, rec.family, next(iter(rec.profile.values())).max)
    assert (len(det_shapes), len(rec_shapes)) == (det.shape_sessions, rec.shape_sessions)
    rng = random.Random(7)
    for _ in range(300):
        h, w = rng.randint(32, 6000), rng.randint(32, 6000)
        th, tw = resized_size(h, w, pipe.canvas_size, pipe.mag_ratio)
        assert (1, 3, *padded_size(th, tw, pipe.pad_to, pipe.canvas_size)) in det_shapes
    family = get_family(recognizer, "abc" if recognizer == "ppocr" else None)
    for _ in range(300):
        crop = np.zeros((rng.randint(8, 200), rng.randint(4, 6000), 3), np.uint8)
        item = family.make_input(crop)
        rows = rng.randint(1, rec.max_batch_size)
        batch = ort_backend.padded_batch({"input": np.zeros((rows, 1))}, rows, rec.max_batch_size)["input"].shape[0]
        assert (batch, *item.shape) in rec_shapes


def test_gpu_instances_fall_back_to_cpu_only_when_the_cuda_provider_is_missing(ort_backend):
    config = {"parameters": {"cudnn_conv_algo_search": {"string_value": "1"}, "arena_extend_strategy": {"string_value": "1"}}}
    chosen, notes = ort_backend.providers(config, "GPU", 1, ["CPUExecutionProvider"])
    assert chosen == [("CPUExecutionProvider", {})]
    assert "no CUDAExecutionProvider" in notes[0] and "onnxruntime-gpu" in notes[0]
    chosen, notes = ort_backend.providers(config, "GPU", 1, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert chosen[0] == (
        "CUDAExecutionProvider",
        {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"},
    )
    assert notes == []
    assert ort_backend.providers(config, "CPU", 0, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == (
        [("CPUExecutionProvider", {})],
        [],
    )


def test_execution_accelerators_map_to_provider_options(ort_backend):
    config = {
        "optimization": {
            "execution_accelerators": {
                "gpu_execution_accelerator": [
                    {"name": "tensorrt", "parameters": {"precision_mode": "FP16", "max_workspace_size_bytes": "1073741824"}},
                    {"name": "cuda", "parameters": {"cudnn_conv_use_max_workspace": "0"}},
                ]
            }
        }
    }
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen, _ = ort_backend.providers(config, "GPU", 0, available)
    assert [name for name, _ in chosen] == available
    assert chosen[0][1] == {
        "device_id": "0",
        "trt_fp16_enable": "True",
        "trt_int8_enable": "False",
        "trt_max_workspace_size": "1073741824",
    }
    assert chosen[1][1] == {"device_id": "0", "cudnn_conv_use_max_workspace": "0"}
    bad = {"optimization": {"execution_accelerators": {"cpu_execution_accelerator": [{"name": "warp"}]}}}
    with pytest.raises(ValueError, match="unknown execution accelerator 'warp'"):
        ort_backend.providers(bad, "CPU", 0, available)


def test_batches_are_padded_with_zero_rows_to_a_power_of_two_within_the_max(ort_backend):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    padded = ort_backend.padded_batch({"input": x}, 3, 64)["input"]
    assert padded.shape == (4, 4)
    np.testing.assert_array_equal(padded[:3], x)
    assert not padded[3:].any()
    assert ort_backend.padded_batch({"input": x}, 3, 3)["input"] is x  # the max is the cap
    five = np.ones((5, 2), np.float32)
    assert ort_backend.padded_batch({"input": five}, 5, 6)["input"].shape == (6, 2)
    assert ort_backend.padded_batch({"input": five[:1]}, 1, 8)["input"].shape == (1, 2)


def test_session_options_follow_the_triton_onnxruntime_parameters(ort_backend):
    import onnxruntime as ort

    params = {"intra_op_thread_count": "1", "inter_op_thread_count": "2", "execution_mode": "1"}
    config = {
        "parameters": {key: {"string_value": value} for key, value in params.items()},
        "optimization": {"graph": {"level": 2}},
    }
    options = ort_backend.session_options(config)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 2)
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert ort_backend.session_options({}).graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    shrink = {"parameters": {"memory.enable_memory_arena_shrinkage": {"string_value": "cpu:0"}}}  # as rendered
    assert ort_backend.run_options(shrink).get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    args = {"model_repository": "/repo/craft", "model_version": "3"}
    assert ort_backend.model_file(args, {}, ort_backend.DEFAULT_MODEL_FILENAME) == "/repo/craft/3/model.onnx"
    config = {"default_model_filename": "craft.onnx"}
    assert ort_backend.model_file(args, config, ort_backend.DEFAULT_MODEL_FILENAME) == "/repo/craft/3/craft.onnx"


def test_the_server_maps_large_blocks_unless_the_caller_tunes_malloc():
    """tritonserver gets a fixed 4 MiB mmap threshold (an outlier upload is unmapped when freed, not
    kept in its heap) and its model stubs the values they restore; a caller's own malloc settings win."""
    from stdr_deploy.server import SERVER_MALLOC, server_environment

    triton = embedded_triton()
    env = server_environment(triton, {"PATH": "/usr/bin"})
    assert {k: env[k] for k in SERVER_MALLOC} == SERVER_MALLOC
    assert int(env["MALLOC_MMAP_THRESHOLD_"]) == 4 << 20
    for own in ({"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}):
        env = server_environment(triton, {"PATH": "/usr/bin", **own})
        assert not set(SERVER_MALLOC) & set(env) and all(env[k] == v for k, v in own.items())


def test_model_stubs_apply_their_malloc_settings_with_mallopt(tmp_path):
    """stub_malloc.model_malloc, in a fresh process as a stub is: glibc accepts both values
    (mallopt returns 1; a wrong parameter number or value gives 0), and nothing happens unset."""
    from stdr_deploy.server import SERVER_MALLOC

    folder = backend_directory(tmp_path) / "onnxruntime"  # stub_malloc is copied beside each backend
    script = f"import sys; sys.path.insert(0, {str(folder)!r}); import stub_malloc; print(stub_malloc.model_malloc())"
    for value, expected in ((SERVER_MALLOC["STDR_MODEL_MALLOC"], "True"), (None, "False"), ("garbage", "False")):
        env = {k: v for k, v in os.environ.items() if k != "STDR_MODEL_MALLOC"}
        env.update({"STDR_MODEL_MALLOC": value} if value else {})
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout.strip()) == (0, expected), done.stderr
