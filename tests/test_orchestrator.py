"""The BLS orchestrator (`pipeline/1/model.py`) on a real tritonserver, against the in-process pipeline.

One server, started once for the module, serves a CPU repository rendered with the real exported
CRAFT and CRNN (english_g2) ONNX models, plus one extra copy of the orchestrator whose detector
is a model the server does not have, to see a failing BLS call. The reference is `OcrPipeline`
run in this process on the same ONNX files with ONNX Runtime, the runtime the server uses.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from stdr_deploy.bench.load import stage_counters, stage_delta
from stdr_deploy.ocr.image_io import read_image
from stdr_deploy.ocr.pipeline import OcrPipeline
from stdr_deploy.ocr.settings import PipelineSettings
from stdr_deploy.ocr.stages import SERVED_STAGES
from stdr_deploy.plan_schema import DynamicBatching, ModelPlan, PipelinePlan, Plan, ShapeProfile
from stdr_deploy.render import render

pytestmark = [pytest.mark.slow, pytest.mark.triton]

RECOGNIZER_BATCH = 4  # small, so img00's crops need more than one batch
MAX_PIXELS = 2_000_000


def _model(name, family, role, max_batch, shape, batching=None) -> ModelPlan:
    return ModelPlan(
        triton_name=name, family=family, role=role, backend="onnxruntime", precision="fp32",
        max_batch_size=max_batch,
        profile={"input": ShapeProfile((1, *shape), (1, *shape), (max_batch, *shape))},
        instance_count=1, instance_kind="KIND_CPU", gpus=(), intra_op_threads=1, inter_op_threads=1,
        workspace_bytes=0, dynamic_batching=batching, memory_estimate_bytes=1 << 28,
    )


PLAN = Plan(
    variant="onnxruntime",
    device="cpu",
    detector=_model("craft", "craft", "detector", 1, (3, 736, 736)),
    recognizer=_model("crnn_en", "crnn-en", "recognizer", RECOGNIZER_BATCH, (1, 64, 256),
                      DynamicBatching((RECOGNIZER_BATCH,), 100)),
    pipeline=PipelinePlan(
        instance_count=1, instance_kind="KIND_CPU", canvas_size=1280, mag_ratio=1.0, max_image_pixels=MAX_PIXELS,
        recognizer_batch=RECOGNIZER_BATCH, text_threshold=0.7, link_threshold=0.4, low_text=0.4,
    ),
    memory_budget_bytes=4 << 30,
    memory_estimate_bytes=1 << 30,
)


class OrtRunner:
    """In-process ONNX Runtime on CPU with the session settings the rendered config gives the server.

    Records the batch size of every call, to compare with what the server's recognizer saw.
    """

    def __init__(self, path: Path, model: ModelPlan):
        options = ort.SessionOptions()
        options.intra_op_num_threads = model.intra_op_threads
        options.inter_op_num_threads = model.inter_op_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.calls: list[int] = []

    def infer(self, feeds):
        self.calls.append(len(feeds["input"]))
        return {"output": self.session.run(["output"], feeds)[0]}


@pytest.fixture(scope="module")
def onnx_files() -> dict[str, Path]:
    from stdr_deploy.onnx_files import ensure_onnx

    return {"craft": ensure_onnx("craft"), "crnn_en": ensure_onnx("crnn-en")}


@pytest.fixture(scope="module")
def server(onnx_files, tmp_path_factory):
    from stdr_deploy.server import TritonServer

    repo = tmp_path_factory.mktemp("served") / "model_repository"
    render(PLAN, repo, onnx_files)
    broken = repo / "pipeline_without_detector"
    shutil.copytree(repo / "pipeline", broken)
    config = (broken / "config.pbtxt").read_text()
    config = config.replace('name: "pipeline"', 'name: "pipeline_without_detector"')
    config = re.sub(r'(key: "detector_model" value: \{ string_value: )"craft"', r'\1"no_such_model"', config)
    (broken / "config.pbtxt").write_text(config)

    with TritonServer(repo) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    client = grpcclient.InferenceServerClient(server.grpc_url.split("://", 1)[1])
    yield client
    client.close()  # an open connection would make the server wait out its exit timeout


@pytest.fixture(scope="module")
def reference(onnx_files):
    detector = OrtRunner(onnx_files["craft"], PLAN.detector)
    recognizer = OrtRunner(onnx_files["crnn_en"], PLAN.recognizer)
    settings = PipelineSettings.from_plan(PLAN.to_dict()["pipeline"])
    return OcrPipeline(detector, recognizer, PLAN.recognizer.family, settings)


def ask(client, image: np.ndarray, model: str = "pipeline"):
    tensor = grpcclient.InferInput("input", list(image.shape), np_to_triton_dtype(image.dtype))
    tensor.set_data_from_numpy(image)
    outputs = [grpcclient.InferRequestedOutput("output"), grpcclient.InferRequestedOutput("boxes")]
    result = client.infer(model, [tensor], outputs=outputs)
    return [t.decode() for t in result.as_numpy("output")[0]], result.as_numpy("boxes")[0]


def pipeline_statistics(client) -> tuple[int, int]:
    """(requests, ns of compute input + infer + output) of `pipeline` so far."""
    stats = client.get_inference_statistics("pipeline").model_stats[0].inference_stats
    return stats.success.count, sum(getattr(stats, part).ns for part in ("compute_input", "compute_infer", "compute_output"))


def recognizer_counts(client) -> tuple[int, int]:
    """(requests, crops) the recognizer model has served so far."""
    stats = client.get_inference_statistics("crnn_en").model_stats[0]
    return stats.inference_stats.success.count, stats.inference_count


def test_served_words_equal_the_in_process_pipeline(client, reference, shared):
    image = read_image(shared / "testdata" / "scenes_A" / "img00.png")
    reference.recognizer.calls.clear()
    expected = reference.read(image)
    requests_before, crops_before = recognizer_counts(client)

    texts, boxes = ask(client, image[None])

    assert texts == [w.text for w in expected]
    assert len(texts) >= 5  # img00 holds 7 words; the pipeline reads most of them
    assert boxes.shape == (len(expected), 9)
    np.testing.assert_allclose(boxes[:, :8].reshape(-1, 4, 2), [w.polygon for w in expected], atol=1e-3)
    np.testing.assert_allclose(boxes[:, 8], [w.score for w in expected], atol=1e-4)
    # All crops of the image went to the recognizer in batches, exactly as in-process.
    requests_after, crops_after = recognizer_counts(client)
    assert requests_after - requests_before == len(reference.recognizer.calls)
    assert crops_after - crops_before == sum(reference.recognizer.calls)
    assert max(reference.recognizer.calls) <= RECOGNIZER_BATCH
    assert len(reference.recognizer.calls) < sum(reference.recognizer.calls)  # not one request per crop


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((1, 0, 0, 3), np.uint8), "no pixels"),
        (np.zeros((1, 1500, 1500, 3), np.uint8), f"exceeds the limit of {MAX_PIXELS}"),
        # Refused by Triton's own checks of the config, before the orchestrator runs.
        (np.zeros((1, 32, 32, 2), np.uint8), "unexpected shape for input 'input'"),
        (np.zeros((2, 32, 32, 3), np.uint8), "batch-size must be <= 1"),
        (np.zeros((1, 32, 32, 3), np.float32), "expects 'UINT8'"),
    ],
    ids=["empty", "too-many-pixels", "two-channels", "two-images", "float-pixels"],
)
def test_a_bad_image_fails_only_its_request(client, shared, image, message):
    with pytest.raises(InferenceServerException, match=message):
        ask(client, image)
    texts, _ = ask(client, read_image(shared / "testdata" / "scenes_A" / "img00.png")[None])
    assert "ENTRY" in texts


def test_a_failing_model_call_is_a_clear_request_error(client, shared):
    image = read_image(shared / "testdata" / "scenes_A" / "img00.png")[None]
    with pytest.raises(InferenceServerException, match="model 'no_such_model' failed") as err:
        ask(client, image, model="pipeline_without_detector")
    assert "no_such_model" in str(err.value)
    texts, _ = ask(client, image)  # the server and the real pipeline carry on
    assert "ENTRY" in texts


def test_served_stage_times_count_each_answered_read_and_fit_inside_its_compute_time(server, client, shared):
    """The pipeline's stage counters on the metrics endpoint, read as `bench` reads them."""
    image = read_image(shared / "testdata" / "scenes_A" / "img00.png")[None]
    counters_before, (ok_before, ns_before) = stage_counters(server.metrics_url), pipeline_statistics(client)

    for _ in range(2):
        assert "ENTRY" in ask(client, image)[0]
    with pytest.raises(InferenceServerException, match="no pixels"):
        ask(client, np.zeros((1, 0, 0, 3), np.uint8))  # refused: no read to count

    stages = stage_delta(counters_before, stage_counters(server.metrics_url))
    ok, ns = pipeline_statistics(client)
    assert ok - ok_before == 3  # Triton counts the Python backend's error response as a success
    assert stages["reads"] == 2
    assert set(stages) == {*SERVED_STAGES, *(f"{stage}_cpu" for stage in SERVED_STAGES), "reads"}
    assert stages["detector"] > 0 and stages["recognizer"] > 0 and stages["post"] > 0
    # A thread's CPU time never exceeds the wall time it ran (small slack: the two clocks' resolutions).
    assert all(0 <= stages[f"{stage}_cpu"] <= stages[stage] + 0.1 for stage in SERVED_STAGES)
    # The model calls wait for the other models, so the pipeline thread spends little CPU in them.
    assert stages["detector_cpu"] < 0.5 * stages["detector"]
    # The stages are timed inside the model's execute(), which Triton's compute time encloses.
    assert 2 * sum(stages[stage] for stage in SERVED_STAGES) <= (ns - ns_before) / 1e6


def test_bench_load_splits_each_image_and_level_by_stage(server, shared):
    from stdr_deploy.bench.load import image_requests, run_load
    from stdr_deploy.bench.report import markdown

    img00 = read_image(shared / "testdata" / "scenes_A" / "img00.png")
    images = {"img00": img00, "top": np.ascontiguousarray(img00[: img00.shape[0] // 2])}
    bench = run_load(server.grpc_url, image_requests(images), concurrency=(1,), duration_s=0.5, max_requests=2,
                     metrics_url=server.metrics_url, image_repeats=2)

    assert bench.stages_note is None
    assert bench.shared_memory and bench.transport_note is None  # a server on this host maps our shared memory
    assert [image.label for image in bench.images] == ["img00", "top"]
    for image in bench.images:
        assert image.latency.count == 2 and image.stages["reads"] == 2
        (pipeline,) = [m for m in image.server if m.model == "pipeline"]
        assert pipeline.requests == 2
        # Each image alone: its stages fit inside the pipeline's compute, which fits inside the client's wait.
        assert sum(image.stages[s] for s in SERVED_STAGES) <= pipeline.compute_infer_ms + pipeline.compute_input_ms \
            + pipeline.compute_output_ms <= image.latency.mean_ms
    (level,) = bench.levels
    assert level.stages["reads"] == level.requests >= 1
    text = markdown({"pipeline": bench.to_dict()})
    assert "Inside the `pipeline` model, each image sent alone" in text
    assert "| top | 2 |" in text and "Inside the `pipeline` model at each level" in text


def test_inputs_in_shared_memory_read_the_same_words_and_leave_nothing_behind(server, client, shared):
    from stdr_deploy.triton_client import Endpoint, SharedInputs, infer

    endpoint = Endpoint.parse(server.grpc_url)
    img00 = read_image(shared / "testdata" / "scenes_A" / "img00.png")
    top = np.ascontiguousarray(img00[: img00.shape[0] // 2])
    outputs = ["output", "boxes"]
    inputs = SharedInputs(client, endpoint)
    try:
        small = infer(client, endpoint, "pipeline", {"input": top[None]}, outputs, inputs)
        size = inputs.size
        whole = infer(client, endpoint, "pipeline", {"input": img00[None]}, outputs, inputs)  # outgrows the region
        assert inputs.size == img00.nbytes > size
        assert [r["name"] for r in client.get_system_shared_memory_status(as_json=True).get("regions", {}).values()] \
            == [inputs.name]
    finally:
        inputs.close()
    for got, image in ((small, top), (whole, img00)):
        expected = infer(client, endpoint, "pipeline", {"input": image[None]}, outputs)  # in the request body
        assert got["output"].tolist() == expected["output"].tolist()
        np.testing.assert_array_equal(got["boxes"], expected["boxes"])
    assert b"ENTRY" in whole["output"].reshape(-1).tolist()
    assert not client.get_system_shared_memory_status(as_json=True).get("regions")
    assert not list(Path("/dev/shm").glob(f"{inputs.prefix}*"))


def test_the_pipeline_client_hands_images_over_in_shared_memory_and_unregisters_each(server, client, shared):
    from stdr_deploy.triton_client import TritonPipelineClient

    image = read_image(shared / "testdata" / "scenes_A" / "img00.png")
    in_request = TritonPipelineClient(server.grpc_url).read(image)
    local = TritonPipelineClient(server.grpc_url, shared_memory=None)  # `ocr --url`'s: a local server
    assert local.shared_memory
    assert local.read(image) == in_request and "ENTRY" in [w.text for w in in_request]
    assert not client.get_system_shared_memory_status(as_json=True).get("regions")  # nothing left mapped
    assert not list(Path("/dev/shm").glob(f"stdr_client_{os.getpid()}_*"))  # this process's regions
