"""CPU models served by our `openvino` backend on a real tritonserver with real OpenVINO.

The repository is rendered from the planner's own plan for the recorded 2-core Xeon with OpenVINO
installed: the int8 CRAFT (its int8-openvino graph) and the ppocr recognizer (fp32), both on
OpenVINO. The reference is the in-process pipeline running the same ONNX files on ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from stdr_deploy.hardware import load_host
from stdr_deploy.ocr import read_image
from stdr_deploy.planner import make_plan
from stdr_deploy.render import render
from stdr_deploy.server import TritonServer
from stdr_deploy.triton_client import TritonPipelineClient

HOSTS = Path(__file__).resolve().parent / "hosts"
pytestmark = [pytest.mark.slow, pytest.mark.triton]


@pytest.fixture(scope="module")
def plan():
    host = load_host(HOSTS / "cpu-xeon-2core.json")
    host = dataclasses.replace(host, runtimes=dataclasses.replace(host.runtimes, openvino_version="2026.4.1"))
    plan = make_plan(host, recognizer="ppocr")
    assert [(m.backend, m.precision) for m in plan.models()] == [("openvino", "int8"), ("openvino", "fp32")]
    return plan


@pytest.fixture(scope="module")
def artifacts(craft_int8_openvino_onnx) -> dict[str, Path]:
    from stdr_deploy.onnx_files import ensure_onnx

    return {"craft": craft_int8_openvino_onnx.onnx_path, "ppocr_rec": ensure_onnx("ppocr")}


@pytest.fixture(scope="module")
def served(plan, artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("openvino") / "model_repository"
    render(plan, out, artifacts)
    log = out.parent / "tritonserver.log"
    with TritonServer(out, log_path=log) as running:
        yield running, log


def test_the_served_openvino_detector_reads_what_the_same_graph_reads_in_process(served, plan, shared):
    from stdr_deploy.artifacts import ExportCache
    from stdr_deploy.ocr import PipelineSettings
    from stdr_deploy.runners import make_pipeline

    server, log = served
    reference = make_pipeline(
        recognizer="ppocr", detector_precision="int8-openvino", onnx=ExportCache(),
        settings=PipelineSettings.from_plan(dataclasses.asdict(plan.pipeline)),
    )
    client = TritonPipelineClient(server.grpc_url)
    for name in ("img00.png", "img02.png"):
        image = read_image(shared / "testdata" / "scenes_A" / name)
        got = [w.text for w in client.read(image)]
        assert got == [w.text for w in reference.read(image)] and len(got) >= 5, name
    said = log.read_text()
    assert said.count(" on OpenVINO ") >= 2 and "craft:" in said and "ppocr_rec:" in said  # where each runs


def test_the_openvino_backend_refuses_inputs_beyond_the_plan_with_invalid_argument(served, plan):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    server, _ = served
    client = grpcclient.InferenceServerClient(server.grpc_url.split("://", 1)[1])
    side = plan.detector.profile["input"].max[-1]
    for shape in ((1, 3, side + 32, 64), (1, 3, 0, 64)):  # past the max profile; empty
        tensor = grpcclient.InferInput("input", list(shape), "UINT8")
        tensor.set_data_from_numpy(np.zeros(shape, np.uint8))
        with pytest.raises(InferenceServerException) as refused:
            client.infer("craft", [tensor])
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", refused.value.message()
    tensor = grpcclient.InferInput("input", [1, 3, 64, 96], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 3, 64, 96), np.uint8))
    assert client.infer("craft", [tensor]).as_numpy("output").shape == (1, 32, 48, 2)  # still serving


def test_a_config_the_model_does_not_match_fails_the_load_naming_both(plan, artifacts, tmp_path):
    from stdr_deploy.errors import ServerError

    out = tmp_path / "model_repository"
    render(plan, out, artifacts)
    config = out / "craft" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "output"', 'name: "score_maps"', 1))
    with pytest.raises(ServerError) as failed, TritonServer(out, log_path=tmp_path / "tritonserver.log"):
        pass
    assert "craft" in str(failed.value) and "score_maps" in (tmp_path / "tritonserver.log").read_text()


def test_the_backend_passes_every_rendered_parameter_and_nothing_else_to_openvino(plan, tmp_path, monkeypatch):
    """The rendered parameters are OpenVINO properties the backend compiles with; the plan's input
    limit is ours (stdr_batching) and stays out of OpenVINO's way."""
    import importlib.util
    import sys

    from stdr_deploy.render import OPENVINO_PROPERTIES, model_context
    from stdr_deploy.server import backend_directory

    backends = backend_directory(tmp_path)
    monkeypatch.syspath_prepend(str(backends / "python"))  # the pb_utils file Triton ships
    for name in ("stdr_batching", "stub_malloc"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    spec = importlib.util.spec_from_file_location("stdr_openvino_backend", backends / "openvino" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = {key: str(value) for key, value in model_context(plan.detector, "model.onnx")["openvino"].items()}
    limits = {f"max_input_dims:{name}": "3,1600,1600" for name in plan.detector.profile}
    properties = module.compile_properties({**rendered, **limits})
    assert properties == rendered
    assert set(properties) == {"INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", *OPENVINO_PROPERTIES}
    assert properties["INFERENCE_PRECISION_HINT"] == plan.detector.float_precision
    assert properties["INFERENCE_NUM_THREADS"] == str(plan.detector.intra_op_threads)
