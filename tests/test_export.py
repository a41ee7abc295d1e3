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
from stdr_deploy.export import cache_key, cached_export, ensure_onnx, export_model
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


def test_craft_matches_easyocr_score_map(craft_onnx, shared):
    """img02 rebuilt bit-exactly (sha256 checked) as EasyOCR feeds it; y is stored as fp16."""
    import cv2

    summary = json.loads((shared / "oracles/craft/craft_oracle_summary.json").read_text())["images"]["img02.png"]
    oracle = np.load(shared / "oracles/craft" / summary["npz"])
    rgb = cv2.imread(str(shared / "testdata/scenes_A/img02.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    h, w = rgb.shape[:2]
    canvas = np.zeros((-(-h // 32) * 32, -(-w // 32) * 32, 3), np.float32)
    canvas[:h, :w] = rgb
    canvas -= np.array([0.485 * 255, 0.456 * 255, 0.406 * 255], dtype=np.float32)
    canvas /= np.array([0.229 * 255, 0.224 * 255, 0.225 * 255], dtype=np.float32)
    x = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])
    assert hashlib.sha256(x.tobytes()).hexdigest() == summary["input_sha256_float32"]
    got = _run(craft_onnx.onnx_path, x)
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
    code = "from stdr_deploy.export import export_model; export_model('crnn-en', progress=False)"
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
    from stdr_deploy.smoke import SMOKE_WORDS, smoke_image

    report = craft_int8_onnx.report
    assert report["precision"] == "int8" and report["fp32"]["onnx_sha256"] == craft_onnx.report["onnx"]["sha256"]
    assert report["validation"]["smoke_words"] == list(SMOKE_WORDS)
    assert 0 < report["validation"]["score_map_max_abs"] < 0.5
    assert craft_int8_onnx.onnx_path.parent.name.startswith("craft-int8-")
    ops = [n.op_type for n in onnx.load(str(craft_int8_onnx.onnx_path)).graph.node]
    assert ops.count("QuantizeLinear") > 10 and "DequantizeLinear" in ops
    assert sha256_file(craft_int8_onnx.onnx_path) == report["onnx"]["sha256"]

    again = export_model("craft", precision="int8", progress=False)
    assert again.cached and again.onnx_path == craft_int8_onnx.onnx_path
    words = make_pipeline(detector_precision="int8").read(smoke_image())
    assert [w.text for w in words] == list(SMOKE_WORDS)


def test_int8_only_for_the_craft_detector():
    with pytest.raises(UserInputError, match="int8"):
        export_model("crnn-en", precision="int8", progress=False)
    with pytest.raises(UserInputError, match="int8"):
        export_model("craft", precision="int8", with_features=True, progress=False)
    with pytest.raises(UserInputError, match="precision"):
        export_model("craft", precision="fp16", progress=False)
