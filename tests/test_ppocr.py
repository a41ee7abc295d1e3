"""PP-OCRv4 families (ONNX-native): files from the wheel, export, and parity with RapidOCR 1.4.4.

RapidOCR itself (the `test` extra installs rapidocr_onnxruntime==1.4.4) is the reference: its
own pre-processing, ONNX Runtime sessions and post-processing run on the same images and crops
as ours. Nothing here downloads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

rapidocr = pytest.importorskip("rapidocr_onnxruntime", reason="the test extra installs rapidocr_onnxruntime")


@pytest.fixture(scope="session")
def ppocr_rec_onnx(session_cache: Path):
    from stdr_deploy.onnx_files import export_model

    return export_model("ppocr", progress=False)


@pytest.fixture(scope="session")
def ppocr_det_onnx(session_cache: Path):
    from stdr_deploy.onnx_files import export_model

    return export_model("ppocr-det", progress=False)


@pytest.fixture(scope="session")
def engine():
    return rapidocr.RapidOCR()


def _session(path):
    from stdr_deploy.ort_runner import OrtRunner

    return OrtRunner(path, intra_op_threads=2)


def _rgb(path: Path) -> np.ndarray:
    from stdr_deploy.ocr import read_image

    return read_image(path)


# --- weights and export ------------------------------------------------------------------------


def test_files_are_found_in_the_installed_distribution_without_importing_it():
    import subprocess
    import sys

    code = (
        "import sys; from stdr_deploy.weights import resolve_weights; "
        "p = resolve_weights('ppocrv4-rec', progress=False); "
        "assert 'rapidocr_onnxruntime' not in sys.modules and 'cv2' not in sys.modules, sorted(sys.modules); print(p)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx")


def test_offline_without_the_distribution_is_a_clear_weights_error(tmp_path, monkeypatch):
    import importlib.metadata

    from stdr_deploy import weights
    from stdr_deploy.errors import WeightsError

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setenv("STDR_DEPLOY_CACHE", str(tmp_path))
    monkeypatch.setenv(weights.BASE_URL_ENV, (tmp_path / "no-mirror").as_uri())
    with pytest.raises(WeightsError) as err:
        weights.resolve_weights("ppocrv4-det", progress=False)
    assert "rapidocr_onnxruntime-1.4.4-py3-none-any.whl" in str(err.value)
    assert "pip install --no-deps rapidocr_onnxruntime==1.4.4" in err.value.hint


def test_wheel_member_is_extracted_and_checked(tmp_path, monkeypatch):
    """A local mirror serving a wheel whose sha256 is not the pinned one is refused."""
    import importlib.metadata
    import zipfile

    from stdr_deploy import weights
    from stdr_deploy.errors import WeightsError

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    info = weights.get_info("ppocrv4-det")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / info.wheel.filename, "w") as zf:
        zf.writestr(info.member, b"not the model")
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setenv("STDR_DEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(weights.BASE_URL_ENV, mirror.as_uri())
    with pytest.raises(WeightsError, match="corrupt"):
        weights.resolve_weights("ppocrv4-det", progress=False)


def test_export_checks_simplifies_and_keeps_parity_with_the_official_file(ppocr_rec_onnx, ppocr_det_onnx):
    for result, name in ((ppocr_rec_onnx, "ppocr"), (ppocr_det_onnx, "ppocr-det")):
        report = result.report
        assert report["model"] == name
        assert report["exporter"].startswith("ONNX-native")
        assert list(report["onnx"]["inputs"]) == ["input"] and list(report["onnx"]["outputs"]) == ["output"]
        assert report["nodes"]["final"] < report["nodes"]["exported"]  # simplified
        assert report["parity"]["max_abs"] <= 1e-4
        assert all(s["passed"] for s in report["parity"]["shapes"])


def test_charset_is_rapidocrs_dictionary(ppocr_rec_onnx, engine):
    from stdr_deploy.models.ppocr import NUM_CLASSES, charset_from_onnx

    charset = charset_from_onnx(ppocr_rec_onnx.onnx_path)
    theirs = engine.text_rec.postprocess_op.character  # blank + dictionary + space
    assert len(theirs) == NUM_CLASSES
    assert ["blank", *charset, " "] == theirs


def test_db_constants_equal_the_spec():
    from stdr_deploy.models.ppocr import DET_SPEC, REC_SPEC
    from stdr_deploy.ocr import db_postprocess as db
    from stdr_deploy.ocr import ppocr

    pre = DET_SPEC.preprocess
    assert (pre["thresh"], pre["box_thresh"], pre["unclip_ratio"], pre["max_candidates"], pre["min_size"]) == (
        db.THRESH, db.BOX_THRESH, db.UNCLIP_RATIO, db.MAX_CANDIDATES, db.MIN_SIZE)
    assert (pre["max_side_len"], pre["limit_side_len"]) == (ppocr.DET_MAX_SIDE, ppocr.DET_LIMIT_SIDE)
    assert (REC_SPEC.preprocess["height"], REC_SPEC.preprocess["min_width"]) == (ppocr.REC_HEIGHT, ppocr.REC_MIN_WIDTH)


# --- recognizer parity -------------------------------------------------------------------------


def test_recognizer_matches_rapidocr_on_crops_a(shared, ppocr_rec_onnx, engine):
    """Same input tensor, same probabilities (max abs <= 1e-4), same text as RapidOCR's decode;
    at our width buckets the text is the same too."""
    from stdr_deploy.ocr import ppocr
    from stdr_deploy.ocr.recognizers import get_family
    from stdr_deploy.ocr.recognizers import model_charset

    rec = engine.text_rec
    runner = _session(ppocr_rec_onnx.onnx_path)
    family = get_family("ppocr", model_charset("ppocr", runner))
    folder = shared / "testdata/crops_A"
    labels = json.loads((folder / "labels.json").read_text())
    hits = 0
    for name in sorted(labels):
        crop = _rgb(folder / name)
        h, w = crop.shape[:2]
        ratio = max(320 / 48, w / h)
        theirs_x = rec.resize_norm_img(np.ascontiguousarray(crop[:, :, ::-1]), ratio)[None]
        ours_x = ppocr.rec_input(crop, width=theirs_x.shape[-1])[None]
        assert np.abs(ours_x - theirs_x).max() <= 1e-6, name
        theirs_p = rec.session(theirs_x)[0]
        ours_p = runner.infer({"input": ours_x})["output"]
        assert np.abs(ours_p - theirs_p).max() <= 1e-4, name
        their_text, their_score = rec.postprocess_op(theirs_p)[0]
        decoded = family.decode(ours_p[0])
        assert decoded.text == their_text, name
        assert decoded.score == pytest.approx(their_score, abs=1e-5)
        bucketed = family.decode(runner.infer({"input": family.make_input(crop)[None]})["output"][0])
        assert bucketed.text == their_text, name
        hits += decoded.text == labels[name]
    assert hits >= 18  # RapidOCR's own reading of these 20 crops


def test_gray_and_tiny_crops_make_valid_inputs():
    from stdr_deploy.ocr import ppocr

    assert ppocr.rec_input(np.full((30, 5), 200, np.uint8)).shape == (3, 48, 320)
    wide = ppocr.rec_input(np.zeros((10, 4000, 3), np.uint8))
    assert wide.shape == (3, 48, ppocr.REC_MAX_WIDTH)
    # each crop goes to the narrowest bucket that holds it, so a GPU instance sees few shapes
    assert [ppocr.rec_width(48, w) for w in (100, 320, 321, 640, 700, 1281, 9000)] == [
        320, 320, 640, 640, 1280, 2048, 2048]


# --- detector parity ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("image", ["img00.png", "img03.png"])
def test_detector_matches_rapidocr_on_scenes_a(shared, ppocr_det_onnx, engine, image):
    """Same input tensor, same probability map (max abs <= 1e-4), same boxes (within 2 px)."""
    from stdr_deploy.ocr import ppocr
    from stdr_deploy.ocr.db_postprocess import db_boxes

    det = engine.text_det
    rgb = _rgb(shared / "testdata/scenes_A" / image)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    bgr_small, _, _ = engine.preprocess(bgr)  # RapidOCR's max_side_len step
    det.preprocess_op = det.get_preprocess(max(bgr_small.shape[:2]))
    theirs_x = det.preprocess_op(bgr_small)
    ours = ppocr.det_input(rgb)
    assert ours.tensor.shape == theirs_x.shape
    assert np.abs(ours.tensor - theirs_x).max() <= 1e-5
    theirs_map = det.infer(theirs_x)[0]
    ours_map = _session(ppocr_det_onnx.onnx_path).infer({"input": ours.tensor})["output"]
    assert np.abs(ours_map - theirs_map).max() <= 1e-4
    their_boxes, _ = engine.auto_text_det(bgr_small)
    scale = np.array([rgb.shape[1] / bgr_small.shape[1], rgb.shape[0] / bgr_small.shape[0]])
    their_boxes = [np.asarray(b, dtype=np.float64) * scale for b in their_boxes]
    our_boxes = [b.polygon for b in db_boxes(ours_map[0, 0], ours)]
    assert len(our_boxes) == len(their_boxes) > 0
    tolerance = 2 * max(scale.max(), 1.0) + 1
    for theirs in their_boxes:
        assert min(np.abs(ours - theirs).max() for ours in our_boxes) <= tolerance


@pytest.mark.slow
def test_pipeline_reads_scenes_a_image_like_rapidocr(shared, ppocr_det_onnx, ppocr_rec_onnx, engine):
    from stdr_deploy.runners import make_pipeline

    pipeline = make_pipeline("onnxruntime", "ppocr", detector="ppocr-det")
    rgb = _rgb(shared / "testdata/scenes_A/img00.png")
    ours = [w.text for w in pipeline.read(rgb)]
    lines, _ = engine(np.ascontiguousarray(rgb[:, :, ::-1]))
    theirs = [word for _, text, _ in lines for word in text.split()]
    assert sorted(ours) == sorted(theirs)


# --- served on the onnxruntime variant (a real tritonserver) ------------------------------------


@pytest.mark.slow
@pytest.mark.triton
def test_served_ppocr_pipeline_equals_in_process(shared, ppocr_det_onnx, ppocr_rec_onnx, tmp_path):
    """PP-OCRv4 det + rec rendered from a plan and served; the words and boxes equal the
    in-process pipeline's, and the recognizer got the crops in batches (width buckets)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    from stdr_deploy.ocr import OcrPipeline, PipelineSettings
    from stdr_deploy.plan_schema import DynamicBatching, ModelPlan, PipelinePlan, Plan, ShapeProfile
    from stdr_deploy.render import render
    from stdr_deploy.ocr.recognizers import model_charset
    from stdr_deploy.server import TritonServer

    def model(name, family, role, batch, shapes, batching=None):
        return ModelPlan(
            triton_name=name, family=family, role=role, backend="onnxruntime", precision="fp32",
            max_batch_size=batch, profile={"input": ShapeProfile(*shapes)}, instance_count=1,
            instance_kind="KIND_CPU", gpus=(), intra_op_threads=1, inter_op_threads=1, workspace_bytes=0,
            dynamic_batching=batching, memory_estimate_bytes=1 << 28,
        )

    plan = Plan(
        variant="onnxruntime", device="cpu",
        detector=model("ppocr_det", "ppocr-det", "detector", 1,
                       ((1, 3, 32, 32), (1, 3, 736, 736), (1, 3, 2048, 2048))),
        recognizer=model("ppocr_rec", "ppocr", "recognizer", 4,
                         ((1, 3, 48, 320), (4, 3, 48, 640), (4, 3, 48, 2048)), DynamicBatching((4,), 0)),
        pipeline=PipelinePlan(
            instance_count=1, instance_kind="KIND_CPU", canvas_size=1280, mag_ratio=1.0,
            max_image_pixels=10_000_000, recognizer_batch=4, text_threshold=0.7, link_threshold=0.4, low_text=0.4,
        ),
        memory_budget_bytes=4 << 30, memory_estimate_bytes=1 << 30,
    )
    repo = tmp_path / "model_repository"
    render(plan, repo, {"ppocr_det": ppocr_det_onnx.onnx_path, "ppocr_rec": ppocr_rec_onnx.onnx_path})
    assert 'key: "detector_family" value: { string_value: "ppocr-det" }' in (repo / "pipeline/config.pbtxt").read_text()
    assert "dims: [ 3, 48, -1 ]" in (repo / "ppocr_rec/config.pbtxt").read_text()

    rec_runner = _session(ppocr_rec_onnx.onnx_path)
    reference = OcrPipeline(
        _session(ppocr_det_onnx.onnx_path), rec_runner, "ppocr",
        PipelineSettings.from_plan(plan.to_dict()["pipeline"]), detector_family="ppocr-det",
        charset=model_charset("ppocr", rec_runner),
    )
    image = _rgb(shared / "testdata/scenes_A/img00.png")
    expected = reference.read(image)
    with TritonServer(repo) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url.split("://", 1)[1])
        try:
            tensor = grpcclient.InferInput("input", [1, *image.shape], np_to_triton_dtype(image.dtype))
            tensor.set_data_from_numpy(image[None])
            result = client.infer("pipeline", [tensor])
            texts = [t.decode() for t in result.as_numpy("output")[0]]
            boxes = result.as_numpy("boxes")[0]
            stats = client.get_inference_statistics("ppocr_rec").model_stats[0]
        finally:
            client.close()
    assert texts == [w.text for w in expected] and "ENTRY" in texts
    np.testing.assert_allclose(boxes[:, :8].reshape(-1, 4, 2), [w.polygon for w in expected], atol=1e-3)
    assert stats.inference_stats.success.count < stats.inference_count  # batched, not one per crop


# --- bench --peers -----------------------------------------------------------------------------


def test_bench_runs_rapidocr_as_a_peer(shared, tmp_path):
    from stdr_deploy.bench.report import markdown
    from stdr_deploy.bench.run import BenchOptions, run_bench

    options = BenchOptions(model_level=False, pipeline=False, peers=("rapidocr",), quick=True,
                           scenes=shared / "testdata/scenes_A")
    result = run_bench(options, argv=["--peers", "rapidocr", "--quick"])
    peer = result["peers"]["rapidocr"]
    assert not result.get("failures"), result.get("failures")
    assert peer["versions"] == {"rapidocr_onnxruntime": "1.4.4"}
    assert set(peer["latency"]) == {"img00", "img02"} and peer["latency"]["img00"]["p50_ms"] > 0
    assert "| img00 |" in markdown(result) and "rapidocr p50 ms" in markdown(result)


def test_unknown_peer_is_a_user_error():
    from stdr_deploy.bench.peers import parse_peers
    from stdr_deploy.errors import UserInputError

    assert parse_peers("rapidocr, easyocr,rapidocr") == ("rapidocr", "easyocr")
    with pytest.raises(UserInputError, match="paddle"):
        parse_peers("rapidocr,paddle")


def test_the_product_never_imports_the_peers():
    import subprocess
    import sys

    code = (
        "import sys, stdr_deploy.cli, stdr_deploy.runners, stdr_deploy.render, stdr_deploy.ocr.pipeline, "
        "stdr_deploy.models, stdr_deploy.bench.run; "
        "bad = [m for m in ('rapidocr_onnxruntime', 'easyocr') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_specs_agree_with_the_official_files(ppocr_rec_onnx, ppocr_det_onnx):
    """Float values (the planner's `params`), IO names after the rename, and the output width."""
    import onnx
    from onnx import numpy_helper

    from stdr_deploy.models import get_spec
    from stdr_deploy.weights import resolve_weights

    for name, result in (("ppocr", ppocr_rec_onnx), ("ppocr-det", ppocr_det_onnx)):
        spec = get_spec(name)
        original = onnx.load(str(resolve_weights(spec.default_weights, progress=False)))
        floats = sum(
            numpy_helper.to_array(a.t).size
            for node in original.graph.node if node.op_type == "Constant"
            for a in node.attribute if a.name == "value" and numpy_helper.to_array(a.t).dtype.kind == "f"
        )
        assert floats == spec.params
        assert {v.name for v in original.graph.input} | {v.name for v in original.graph.output} == set(
            spec.onnx_native.values())
    runner = _session(ppocr_rec_onnx.onnx_path)
    x = get_spec("ppocr").example_input(batch=2, width=640)
    assert runner.infer({"input": x})["output"].shape == (2, 640 // 8, 6625)


def test_tensorrt_plan_renders_ppocr_with_width_buckets_and_its_charset(tmp_path):
    """tensorrt_plan: planned and rendered only (no TensorRT here); the engine file is a stand-in
    name, the charset comes from the registry's ONNX file the engine would be built from."""
    from stdr_deploy.hardware import load_host
    from stdr_deploy.planner import make_plan
    from stdr_deploy.render import CHARSET_FILE, render

    plan = make_plan(load_host(Path(__file__).parent / "hosts/t4-16g.vendor.json"), recognizer="ppocr",
                     variant="tensorrt_plan")
    rec = plan.recognizer
    # fp16: the mixed-precision graph made from ppocr's ONNX file, which the TensorRT build reads
    # strongly typed
    assert (rec.triton_name, rec.backend, rec.precision) == ("ppocr_rec", "tensorrt", "fp16")
    profile = rec.profile["input"]
    assert profile.min[1:] == (3, 48, 320) and profile.max[1:] == (3, 48, 2048) and profile.max[0] == rec.max_batch_size
    assert rec.dynamic_batching is not None and rec.max_batch_size > 1
    artifacts = {}
    for model in plan.models():
        artifacts[model.triton_name] = tmp_path / f"{model.triton_name}.plan"
        artifacts[model.triton_name].write_bytes(b"stand-in engine")
    out = tmp_path / "repo"
    render(plan, out, artifacts)
    config = (out / "ppocr_rec/config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config and "dims: [ 3, 48, -1 ]" in config
    assert "dynamic_batching" in config
    pipeline = (out / "pipeline/config.pbtxt").read_text()
    assert f'key: "recognizer_charset_file" value: {{ string_value: "{CHARSET_FILE}" }}' in pipeline
    charset = (out / "pipeline/1" / CHARSET_FILE).read_text(encoding="utf-8")
    assert len(charset) == 6623


def test_detector_input_size_is_bounded():
    from stdr_deploy.ocr import ppocr

    assert ppocr.det_size(2048, 2560) == (1600, 1984)  # 2000 x 1600, then sides rounded to 32
    assert ppocr.det_size(720, 1280) == (736, 1312)  # scaled up to a 736 short side, as RapidOCR
    for h, w in ((100, 2000), (10, 60000), (60000, 10), (1, 1), (3000, 3000)):
        th, tw = ppocr.det_size(h, w)
        assert 32 <= th <= 2016 and 32 <= tw <= 2016 and th % 32 == 0 and tw % 32 == 0
