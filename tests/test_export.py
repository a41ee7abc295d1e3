"""torch -> ONNX export: signatures, oracle parity, report, cache behaviour and CLI errors.

Each model is exported once per session (fixtures in conftest.py). Tests that re-export or
corrupt an export work on a private copy of the cache, so other test files keep theirs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from stdr_deploy.compare import compare_outputs
from stdr_deploy.errors import UserInputError, ValidationError
from stdr_deploy.export.cache import cached_export
from stdr_deploy.export.fp32 import cache_key
from stdr_deploy.onnx_files import ensure_onnx, export_model
from stdr_deploy.models import get_spec
from stdr_deploy.workspace import sha256_file

PARSEQ_A = "oracles/parseq/parseq_tiny_random_A.pt"
CLI = [sys.executable, "-c", "from stdr_deploy.cli import main; main()"]


def _dims(values) -> dict[str, list[int | str]]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def _run(onnx_path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": x})))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env)


def _private_cache(result, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache holding only a copy of `result`'s entry; returns the copied entry folder."""
    entry = tmp_path / "cache" / "onnx" / result.onnx_path.parent.name
    shutil.copytree(result.onnx_path.parent, entry)
    monkeypatch.setenv("STDR_DEPLOY_CACHE", str(tmp_path / "cache"))
    return entry


# --- what the exported graphs look like ------------------------------------------------------


@pytest.mark.parametrize(
    "fixture, inputs, outputs",
    [
        (
            "craft_onnx",
            {"input": ["batch", 3, "height", "width"]},
            {"output": ["batch", "half_height", "half_width", 2]},
        ),
        ("crnn_onnx", {"input": ["batch", 1, 64, "width"]}, {"output": ["batch", "steps", 97]}),
        ("parseq_tiny_onnx", {"input": ["batch", 3, 32, 128]}, {"output": ["batch", 26, 95]}),
    ],
)
def test_signature_and_dynamic_axes_survive_simplification(request, fixture, inputs, outputs):
    result = request.getfixturevalue(fixture)
    model = onnx.load(str(result.onnx_path), load_external_data=False)
    assert _dims(model.graph.input) == inputs
    assert _dims(model.graph.output) == outputs  # craft: no `output1` unless asked for
    assert result.report["onnx"]["inputs"] == inputs and result.report["onnx"]["outputs"] == outputs
    assert not list(result.onnx_path.parent.glob("*.data"))  # one self-contained file


def test_parseq_tiny_matches_official_nar_logits(parseq_tiny_onnx, shared):
    x = np.load(shared / "oracles/parseq/inputs_A.npy")
    expected = np.load(shared / "oracles/parseq/logits_A_nar.npy")
    got = _run(parseq_tiny_onnx.onnx_path, x)
    comparison = compare_outputs({"output": expected}, got, atol=1e-4)
    assert comparison, comparison.describe()
    assert np.array_equal(got["output"].argmax(-1), expected.argmax(-1))
    assert parseq_tiny_onnx.report["opset"] == 14


def test_crnn_matches_easyocr_logits(crnn_onnx, shared):
    """Two float32 hops (EasyOCR torch -> our torch -> ORT), each ~1e-4 on logits up to |45|."""
    crops = np.load(shared / "oracles/easyocr/english_g2_crops_A.npz")
    for name in (Path(str(n)).stem for n in crops["crop_names"]):
        expected = crops[f"{name}_logits"]
        got = _run(crnn_onnx.onnx_path, crops[f"{name}_input"])
        comparison = compare_outputs({"output": expected}, got, atol=3e-4)
        assert comparison, f"{name}: {comparison.describe()}"
        assert np.array_equal(got["output"].argmax(-1), expected.argmax(-1))


def test_craft_matches_easyocr_score_map(craft_onnx, shared, tmp_path):
    """img02 as EasyOCR feeds it: its uint8 canvas, normalised inside the graph bit-exactly as
    EasyOCR normalises it (sha256 checked); y is stored as fp16."""
    import cv2
    import onnx

    summary = json.loads((shared / "oracles/craft/craft_oracle_summary.json").read_text())["images"]["img02.png"]
    oracle = np.load(shared / "oracles/craft" / summary["npz"])
    rgb = cv2.imread(str(shared / "testdata/scenes_A/img02.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    h, w = rgb.shape[:2]
    canvas = np.zeros((-(-h // 32) * 32, -(-w // 32) * 32, 3), np.uint8)
    canvas[:h, :w] = rgb
    pixels = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])
    graph = onnx.load(str(craft_onnx.onnx_path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    # the graph's own normalisation (input -> Cast -> Sub -> Div), cut out and run alone
    div = next(n for n in graph.node if n.op_type == "Div")
    onnx.utils.extract_model(str(craft_onnx.onnx_path), str(tmp_path / "norm.onnx"), ["input"], [div.output[0]])
    normalised = _run(tmp_path / "norm.onnx", pixels)[div.output[0]]
    assert hashlib.sha256(normalised.tobytes()).hexdigest() == summary["input_sha256_float32"]
    got = _run(craft_onnx.onnx_path, pixels)
    comparison = compare_outputs({"output": oracle["y_fp16"].astype(np.float32)}, got, atol=1e-3)
    assert comparison, comparison.describe()
    assert craft_onnx.report["opset"] == 11


# --- the report ------------------------------------------------------------------------------


def test_report_records_versions_hashes_nodes_parity_and_time(crnn_onnx):
    report = crnn_onnx.report
    assert json.loads(crnn_onnx.report_path.read_text()) == report
    assert crnn_onnx.report_path == crnn_onnx.onnx_path.parent / "report.json"
    assert {"torch", "onnx", "onnxruntime", "onnxsim", "onnxslim"} <= set(report["versions"])
    assert report["opset"] == get_spec("crnn-en").opset
    assert report["weights"]["sha256"] == "e2272681d9d67a04e2dff396b6e95077bc19001f8f6d3593c307b9852e1c29e8"
    assert report["onnx"]["sha256"] == sha256_file(crnn_onnx.onnx_path)
    assert len(report["onnx"]["graph_sha256"]) == 64
    final = len(onnx.load(str(crnn_onnx.onnx_path)).graph.node)
    assert report["nodes"]["final"] == final <= report["nodes"]["exported"]
    simplifier = report["simplifier"]
    assert simplifier["candidates"][simplifier["chosen"]]["parity"] == "passed"
    parity = report["parity"]
    assert [tuple(s["input_shape"]) for s in parity["shapes"]] == list(get_spec("crnn-en").validation_shapes)
    assert all(s["passed"] for s in parity["shapes"])
    assert 0 <= parity["max_abs"] <= parity["atol"] == 1e-4
    assert {"export", "check", "simplify", "parity", "total"} <= set(report["seconds"])


# --- the cache -------------------------------------------------------------------------------


def test_second_export_is_a_cache_hit(crnn_onnx):
    again = export_model("crnn-en", progress=False)
    assert again.cached
    assert again.onnx_path == crnn_onnx.onnx_path
    assert again.report["onnx"]["sha256"] == crnn_onnx.report["onnx"]["sha256"]
    assert ensure_onnx("crnn-en") == crnn_onnx.onnx_path


def test_cache_key_covers_options_and_weights():
    spec = get_spec("craft")
    base = cache_key(spec, "a" * 64, 11, False)
    assert base.startswith("craft-opset11-")
    assert cache_key(spec, "a" * 64, 11, True).startswith("craft-opset11-features-")
    assert len({base, cache_key(spec, "b" * 64, 11, False), cache_key(spec, "a" * 64, 12, False)}) == 3
    assert cache_key(spec, "a" * 64, 11, False) == base


def test_out_writes_model_and_report(crnn_onnx, tmp_path):
    out = tmp_path / "models" / "crnn.onnx"
    result = export_model("crnn-en", out=out, progress=False)
    assert result.cached and result.onnx_path == out
    assert sha256_file(out) == crnn_onnx.report["onnx"]["sha256"]
    assert result.report_path == tmp_path / "models" / "crnn.onnx.json"
    assert json.loads(result.report_path.read_text())["cache_key"] == crnn_onnx.report["cache_key"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["crnn.onnx", "crnn.onnx.json"]  # no temp files


@pytest.mark.slow
def test_corrupted_cached_model_is_reexported(crnn_onnx, tmp_path, monkeypatch):
    entry = _private_cache(crnn_onnx, tmp_path, monkeypatch)
    assert export_model("crnn-en", progress=False).cached  # the copy is a valid entry
    model = entry / "model.onnx"
    with open(model, "r+b") as fh:  # flip bytes in the middle of the weights
        fh.seek(model.stat().st_size // 2)
        fh.write(b"\x00\xff" * 64)
    assert cached_export(entry) is None
    result = export_model("crnn-en", progress=False)
    assert not result.cached and result.onnx_path == model
    assert sha256_file(model) == result.report["onnx"]["sha256"]
    onnx.checker.check_model(str(model), full_check=True)


@pytest.mark.slow
def test_force_reexports_and_clears_leftovers_of_killed_exports(crnn_onnx, tmp_path, monkeypatch):
    entry = _private_cache(crnn_onnx, tmp_path, monkeypatch)
    stale = entry.parent / f".{entry.name}.dead.staging"
    stale.mkdir()
    (stale / "exported.onnx").write_bytes(b"half a model")
    result = export_model("crnn-en", force=True, progress=False)
    assert not result.cached and result.onnx_path == entry / "model.onnx"
    assert sha256_file(result.onnx_path) == result.report["onnx"]["sha256"]
    assert not stale.exists()
    assert sorted(p.name for p in entry.parent.iterdir() if not p.name.endswith(".lock")) == [entry.name]


@pytest.mark.slow
def test_killed_export_leaves_nothing_where_the_cache_looks(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "STDR_DEPLOY_CACHE": str(cache)}
    code = "from stdr_deploy.onnx_files import export_model; export_model('crnn-en', progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(cache.glob("onnx/.*.staging/exported.onnx")):  # the export is under way
            assert proc.poll() is None, "the export ended before it could be killed"
            assert time.monotonic() < deadline, "the export never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    entries = [p for p in (cache / "onnx").iterdir() if not p.name.startswith(".")]
    assert entries == []  # only the hidden staging folder and the lock file remain
    assert not list((cache / "onnx").glob("*/model.onnx"))


# --- errors ----------------------------------------------------------------------------------


def test_cli_unknown_model_exits_2():
    result = _cli("export", "craftt")
    assert result.returncode == 2
    assert "unknown model 'craftt'" in result.stderr and "crnn-en" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_weights_file_exits_6(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a checkpoint")
    result = _cli("export", "crnn-en", "--weights", str(bad))
    assert result.returncode == 6
    assert f"cannot read weights file {bad}" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_opset_too_low_for_the_model_names_the_working_range(shared):
    result = _cli("export", "parseq-tiny", "--weights", str(shared / PARSEQ_A), "--opset", "13")
    assert result.returncode == 2
    assert "parseq-tiny cannot be expressed in ONNX opset 13" in result.stderr
    assert "opsets 14..20" in result.stderr
    assert "Torch IR graph" not in result.stderr and "Traceback" not in result.stderr


def test_cli_opset_outside_the_exporter_range_exits_2():
    result = _cli("export", "craft", "--opset", "6")
    assert result.returncode == 2
    assert "opset 6 is outside" in result.stderr and "opsets 11..20" in result.stderr


def test_opset_onnx_runtime_cannot_load_is_a_validation_error():
    with pytest.raises(ValidationError, match="ONNX Runtime cannot load the crnn-en export at opset 8") as info:
        export_model("crnn-en", opset=8, progress=False)
    assert "opsets 14..20" in info.value.hint


def test_with_features_only_for_craft():
    with pytest.raises(UserInputError, match="no optional feature output"):
        export_model("crnn-en", with_features=True, progress=False)


def test_cli_json_reports_a_cached_export(crnn_onnx):
    result = _cli("export", "crnn-en", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["cached"] is True
    assert data["onnx_path"] == str(crnn_onnx.onnx_path)
    assert data["report"]["cache_key"] == crnn_onnx.report["cache_key"]


def test_calibration_images_are_deterministic_and_varied():
    from stdr_deploy.calibration import SIDE_RANGE, calibration_images

    images = calibration_images(count=6)
    again = calibration_images(count=6)
    assert all(np.array_equal(a, b) for a, b in zip(images, again))
    assert not np.array_equal(images[0], calibration_images(count=1, seed=1)[0])
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in images)
    assert all(SIDE_RANGE[0] <= side <= SIDE_RANGE[1] for im in images for side in im.shape[:2])
    assert len({im.shape for im in images}) == len(images)  # varied sizes
    assert all(im.std() > 10 for im in images)  # words and backgrounds, not flat images


@pytest.mark.slow
def test_int8_craft_reads_the_smoke_image_like_fp32_and_is_cached(craft_int8_onnx, craft_onnx):
    from stdr_deploy.runners import make_pipeline
    from stdr_deploy.smoke_image import SMOKE_WORDS, smoke_image

    report = craft_int8_onnx.report
    assert report["precision"] == "int8" and report["fp32"]["onnx_sha256"] == craft_onnx.report["onnx"]["sha256"]
    assert report["validation"]["smoke_words"] == list(SMOKE_WORDS)
    assert 0 < report["validation"]["score_map_max_abs"] < 0.5
    assert report["flavour"]["runtime"] == "onnxruntime" and report["flavour"]["activation_type"] == "QUInt8"
    assert craft_int8_onnx.onnx_path.parent.name.startswith("craft-int8-")
    ops = [n.op_type for n in onnx.load(str(craft_int8_onnx.onnx_path)).graph.node]
    assert ops.count("QuantizeLinear") > 10 and "DequantizeLinear" in ops
    assert sha256_file(craft_int8_onnx.onnx_path) == report["onnx"]["sha256"]

    again = export_model("craft", precision="int8", progress=False)
    assert again.cached and again.onnx_path == craft_int8_onnx.onnx_path
    words = make_pipeline(detector_precision="int8").read(smoke_image())
    assert [w.text for w in words] == list(SMOKE_WORDS)


@pytest.mark.slow
def test_the_openvino_int8_flavour_concatenates_in_float_and_reads_right_on_openvino(
    craft_int8_openvino_onnx, craft_int8_onnx, craft_onnx, shared
):
    """OpenVINO computes a Concat of quantized inputs wrongly (score maps off by up to ~0.96 on
    this graph); its flavour feeds the U-net's Concat nodes float tensors, and OpenVINO's maps
    are then as close to fp32 as ONNX Runtime's int8 (max ~0.05)."""
    import openvino as ov

    from stdr_deploy.ocr import read_image
    from stdr_deploy.ocr.detector_input import detector_input
    from stdr_deploy.ort_runner import OrtRunner

    report = craft_int8_openvino_onnx.report
    assert report["flavour"]["runtime"] == "openvino" and report["flavour"]["float_concat"] is True
    assert report["validation"]["smoke_words"] == craft_int8_onnx.report["validation"]["smoke_words"]
    assert craft_int8_openvino_onnx.onnx_path.parent.name.startswith("craft-int8-openvino-")

    def concat_inputs_from_dequantize(path) -> tuple[int, int]:
        graph = onnx.load(str(path)).graph
        producer = {out: node.op_type for node in graph.node for out in node.output}
        inputs = [name for node in graph.node if node.op_type == "Concat" for name in node.input]
        return sum(producer.get(name) == "DequantizeLinear" for name in inputs), len(inputs)

    assert concat_inputs_from_dequantize(craft_int8_openvino_onnx.onnx_path)[0] == 0
    quantized, total = concat_inputs_from_dequantize(craft_int8_onnx.onnx_path)
    assert quantized == 8 < total  # the U-net's four concatenations of two quantized inputs (and shape concats)

    tensor = detector_input(read_image(shared / "testdata" / "scenes_A" / "img00.png"), 1600, 1.0).tensor
    reference = OrtRunner(craft_onnx.onnx_path).infer({"input": tensor})["output"]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(craft_int8_openvino_onnx.onnx_path)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    got = np.asarray(compiled.create_infer_request().infer({0: tensor})[compiled.outputs[0]])
    assert got.shape == reference.shape and np.abs(got - reference).max() < 0.1


def test_int8_only_for_the_craft_detector():
    with pytest.raises(UserInputError, match="int8"):
        export_model("crnn-en", precision="int8", progress=False)
    with pytest.raises(UserInputError, match="int8"):
        export_model("craft", precision="int8", with_features=True, progress=False)
    with pytest.raises(UserInputError, match="precision"):
        export_model("craft", precision="bf16", progress=False)
    with pytest.raises(UserInputError, match="fp16"):
        export_model("craft", precision="fp16", with_features=True, progress=False)


# --- fp16 mixed precision (stdr_deploy.precision) -----------------------------------------------


def _fp32_inputs_of(model: onnx.ModelProto, op_types: set[str]) -> dict[str, bool]:
    """Per op type in `op_types`: whether every node of it reads float32 (not float16) tensors."""
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    types.update({init.name: init.data_type for init in graph.initializer})
    seen: dict[str, bool] = {}
    for node in graph.node:
        if node.op_type in op_types:
            first = types.get(node.input[0])
            seen[node.op_type] = seen.get(node.op_type, True) and first == onnx.TensorProto.FLOAT
    return seen


def _check_fp16_export(result, fp32, kept: set[str]) -> None:
    from stdr_deploy.precision import FP16_TOLERANCE
    from stdr_deploy.smoke_image import SMOKE_WORDS

    report = result.report
    assert report["precision"] == "fp16" and report["fp32"]["onnx_sha256"] == fp32.report["onnx"]["sha256"]
    assert result.onnx_path.parent.name.startswith(f"{report['model']}-fp16-")
    assert sha256_file(result.onnx_path) == report["onnx"]["sha256"]
    model = onnx.load(str(result.onnx_path))
    # fp32 in and out, fp16 compute (half the weight bytes), the sensitive ops fed fp32
    assert {v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)} == {onnx.TensorProto.FLOAT}
    assert sum(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer) > 5
    # half the weight bytes, less where kept ops hold weights: CRNN's LSTM (~45 % of them) stays fp32
    assert report["onnx"]["bytes"] < (0.8 if "LSTM" in kept else 0.6) * fp32.report["onnx"]["bytes"]
    assert _fp32_inputs_of(model, kept) == {op: True for op in kept}
    parity = report["parity"]
    assert parity["tolerance"] == FP16_TOLERANCE and 0 < parity["max_scaled"] <= FP16_TOLERANCE
    assert len(parity["shapes"]) == len(get_spec(report["model"]).validation_shapes) >= 3
    if report["model"] in ("crnn-en", "ppocr"):  # the smoke image's words mean something with real weights
        assert report["validation"]["smoke_words"] == list(SMOKE_WORDS)
    again = export_model(report["model"], weights=fp32.report["weights"]["path"], precision="fp16", progress=False)
    assert again.cached and again.onnx_path == result.onnx_path


@pytest.mark.slow
def test_fp16_crnn_keeps_the_lstm_and_reductions_fp32_and_matches_fp32(crnn_fp16_onnx, crnn_onnx):
    _check_fp16_export(crnn_fp16_onnx, crnn_onnx, {"LSTM", "ReduceMean"})
    recognizer_parity = crnn_fp16_onnx.report["parity"]["shapes"][0]["outputs"]["output"]
    assert recognizer_parity["argmax"]["decisive_flips"] == 0


@pytest.mark.slow
def test_fp16_parseq_keeps_layernorm_softmax_and_reductions_fp32(parseq_tiny_fp16_onnx, parseq_tiny_onnx):
    _check_fp16_export(parseq_tiny_fp16_onnx, parseq_tiny_onnx, {"Softmax", "ReduceMean", "Pow", "Sqrt"})
    # every decomposed LayerNorm (30 in parseq-tiny) keeps its Sub, Add(eps) and Div in fp32 too
    assert parseq_tiny_fp16_onnx.report["kept_fp32"]["nodes"] == 90


@pytest.mark.slow
def test_fp16_ppocr_keeps_softmax_and_layernorms_fp32_and_its_charset(ppocr_fp16_onnx):
    """PP-OCRv4's graph ends in a Softmax, which the converter cannot leave fp32 at a graph output
    on its own (precision.outputs_past_kept_ops); the charset rides along in the metadata."""
    from stdr_deploy.ocr.recognizers import model_charset
    from stdr_deploy.precision import cpu_runner

    fp32 = export_model("ppocr", progress=False)
    _check_fp16_export(ppocr_fp16_onnx, fp32, {"Softmax", "ReduceMean", "Pow", "Sqrt"})
    for shape in ppocr_fp16_onnx.report["parity"]["shapes"]:
        assert shape["outputs"]["output"]["argmax"]["decisive_flips"] == 0, shape
    charsets = [model_charset("ppocr", cpu_runner(r.onnx_path)) for r in (fp32, ppocr_fp16_onnx)]
    assert len(charsets[0]) == 6623 and charsets[1] == charsets[0]


def test_a_graph_output_made_by_a_kept_op_converts_through_an_identity(tmp_path):
    """A graph ending in Softmax converts to fp16 and runs, its output within fp16 rounding."""
    from onnx import TensorProto, helper, numpy_helper

    from stdr_deploy.ort_runner import OrtRunner
    from stdr_deploy.precision import mixed_precision

    weight = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["output"], axis=-1)],
        "tail", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [2, 5])], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    half, _ = mixed_precision(model)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Softmax"]  # the caller's graph is left as it was
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    paths = {}
    for name, m in (("fp32", model), ("fp16", half)):
        paths[name] = tmp_path / f"{name}.onnx"
        onnx.save(m, str(paths[name]))
    got = {name: OrtRunner(path).infer({"input": x})["output"] for name, path in paths.items()}
    assert np.abs(got["fp16"] - got["fp32"]).max() < 5e-3


@pytest.mark.slow
def test_fp16_crnn_reads_the_crops_like_fp32(shared, crnn_fp16_onnx, crnn_onnx):
    """Real data: the 20 word crops of crops_A through the pipeline's own crop input and decoder."""
    from PIL import Image

    from stdr_deploy.ocr.recognizers import get_family
    from stdr_deploy.precision import cpu_runner

    family = get_family("crnn-en")
    runners = {"fp32": cpu_runner(crnn_onnx.onnx_path), "fp16": cpu_runner(crnn_fp16_onnx.onnx_path)}
    labels = json.loads((shared / "testdata/crops_A/labels.json").read_text())
    read = {name: [] for name in runners}
    for file in sorted(labels):
        x = family.make_input(np.asarray(Image.open(shared / "testdata/crops_A" / file).convert("RGB")))[None]
        for name, runner in runners.items():
            read[name].append(family.decode(runner.infer({"input": x})["output"][0]).text)
    assert len(read["fp16"]) == 20 and read["fp16"] == read["fp32"]
    assert sum(a == b for a, b in zip(read["fp16"], (labels[f] for f in sorted(labels)))) >= 10


@pytest.mark.slow
def test_fp16_craft_matches_fp32_on_a_scene_and_keeps_its_words(shared, craft_fp16_onnx, craft_onnx, crnn_onnx):
    """Real data: a scenes_A image; the score maps within the fp16 tolerance, the same words read."""
    from stdr_deploy.ocr import OcrPipeline, PipelineSettings
    from stdr_deploy.ocr.detector_input import detector_input
    from stdr_deploy.ocr.image_io import read_image
    from stdr_deploy.precision import FP16_TOLERANCE, cpu_runner, half_vs_full

    report = craft_fp16_onnx.report
    assert report["precision"] == "fp16" and 0 < report["parity"]["max_scaled"] <= FP16_TOLERANCE
    image = read_image(shared / "testdata/scenes_A/img03.png")
    settings = PipelineSettings(canvas_size=960)  # small: fp16 runs slowly on a CPU
    runners = {"fp32": cpu_runner(craft_onnx.onnx_path), "fp16": cpu_runner(craft_fp16_onnx.onnx_path)}
    feeds = {"input": detector_input(image, settings.canvas_size, settings.mag_ratio).tensor}
    maps = {name: runner.infer(feeds)["output"] for name, runner in runners.items()}
    row = half_vs_full(maps["fp32"], maps["fp16"], argmax=False)
    assert row["passed"], row
    recognizer = cpu_runner(crnn_onnx.onnx_path)
    words = {
        name: [w.text for w in OcrPipeline(runner, recognizer, "crnn-en", settings).read(image)]
        for name, runner in runners.items()
    }
    assert len(words["fp32"]) >= 5 and words["fp16"] == words["fp32"]


def test_each_plan_precision_is_served_from_its_own_graph():
    from stdr_deploy.onnx_files import onnx_precision

    assert [onnx_precision(p) for p in ("fp32", "fp16", "int8")] == ["fp32", "fp16", "int8"]
    with pytest.raises(UserInputError, match="precision"):
        onnx_precision("tf32")


def test_fp16_is_rendered_for_gpu_instances_only():
    import dataclasses

    from stdr_deploy.hardware import load_host
    from stdr_deploy.planner import make_plan
    from stdr_deploy.render import model_context

    hosts = Path(__file__).resolve().parent / "hosts"
    gpu = make_plan(load_host(hosts / "a5000-24g.vendor.json"), variant="onnxruntime").recognizer
    assert gpu.instance_kind == "KIND_GPU"
    assert model_context(dataclasses.replace(gpu, precision="fp16"), "model.onnx")["precision"] == "fp16"
    cpu = make_plan(load_host(hosts / "cpu-xeon-2core.json"), recognizer="crnn-en").recognizer
    with pytest.raises(UserInputError, match="crnn_en is fp16 on onnxruntime KIND_CPU") as info:
        model_context(dataclasses.replace(cpu, precision="fp16"), "model.onnx")
    assert "fp16 is for GPU instances" in info.value.hint
