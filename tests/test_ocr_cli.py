"""`stdr-deploy ocr` and `eval`, and the accuracy of the default pipeline on scenes_A.

One full pass over scenes_A (`scenes_a_predictions`, through the CLI's --json output) feeds the
accuracy test, the scorer-agreement test and the JSON-format test: CRAFT at a 2560 canvas is
the most expensive thing the suite does on a CPU.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from stdr_deploy.cli import cli
from stdr_deploy.ocr.metrics import score

CLI = [sys.executable, "-c", "from stdr_deploy.cli import main; main()"]
MEASURED_HITS = 80  # of 87, default pipeline (craft + crnn-en, ONNX Runtime, CPU)


def _scorer(shared):
    spec = importlib.util.spec_from_file_location("ocr_score", shared / "tools/ocr_score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _invoke(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_default_pipeline_beats_easyocr_on_scenes_a(shared, scenes_a_predictions):
    gt = json.loads((shared / "testdata/scenes_A/gt.json").read_text())
    result = score(gt, scenes_a_predictions)
    easyocr = json.loads((shared / "oracles/easyocr/scores_A.json").read_text())["quantized"]
    assert result["total_gt"] == 87
    assert result["word_accuracy"] > easyocr["word_accuracy"]
    assert result["hits"] >= MEASURED_HITS - 1
    assert result["det_recall"] >= 0.97 and result["det_precision"] >= 0.97


@pytest.mark.slow
def test_our_metrics_equal_the_scorer(shared, scenes_a_predictions):
    scorer = _scorer(shared)
    gt = json.loads((shared / "testdata/scenes_A/gt.json").read_text())
    easyocr = json.loads((shared / "oracles/easyocr/easyocr_A.json").read_text())
    for pred in (scenes_a_predictions, easyocr):
        for threshold in (0.5, 0.4):
            assert score(gt, pred, threshold, keep_errors=True) == scorer.score(gt, pred, threshold, keep_errors=True)


@pytest.mark.slow
def test_json_output_is_accepted_by_the_scorer(shared, scenes_a_predictions, tmp_path):
    assert [im["file"] for im in scenes_a_predictions["images"]] == [f"img0{i}.png" for i in range(8)]
    for image in scenes_a_predictions["images"]:
        for word in image["words"]:
            assert set(word) == {"text", "polygon", "score"}
            assert np.asarray(word["polygon"]).shape == (4, 2)
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(scenes_a_predictions))
    done = subprocess.run(
        [sys.executable, str(shared / "tools/ocr_score.py"), str(shared / "testdata/scenes_A/gt.json"), str(path), "--json"],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(done.stdout)["total_pred"] == sum(len(im["words"]) for im in scenes_a_predictions["images"])


def test_ocr_prints_words_and_writes_annotated_images(shared, tmp_path):
    images = [shared / "testdata/scenes_A/img00.png", shared / "testdata/scenes_A/img04.png"]
    result = _invoke("ocr", "--annotate", str(tmp_path / "ann"), *map(str, images))
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "img00.png: ENTRY ~70 1972 18% Did Ethan #219"
    assert lines[1].startswith("img04.png: ")
    for image in images:
        written = tmp_path / "ann" / image.name
        annotated = np.asarray(Image.open(written))
        original = np.asarray(Image.open(image).convert("RGB"))
        assert annotated.shape == original.shape
        assert (annotated != original).any(axis=2).mean() > 0.005  # boxes and labels drawn
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["img00.png", "img04.png"]


def test_a_bad_file_is_reported_and_the_others_still_read(shared, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = shared / "testdata/scenes_A/img00.png"
    done = subprocess.run([*CLI, "ocr", "--json", str(good), str(bad)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "broken.png" in done.stderr and "Traceback" not in done.stderr
    assert "1 of 2 images could not be read" in done.stderr
    predictions = json.loads(done.stdout)
    assert [im["file"] for im in predictions["images"]] == ["img00.png"]
    assert len(predictions["images"][0]["words"]) == 7


def test_eval_scores_each_set_and_the_total(shared, tmp_path):
    from stdr_deploy.bench.synthetic import make_set

    gt = json.loads((shared / "testdata/scenes_A/gt.json").read_text())
    subset = {"set": "A-small", "images": [im for im in gt["images"] if im["file"] in ("img00.png", "img04.png")]}
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for image in subset["images"]:
        (scenes / image["file"]).symlink_to(shared / "testdata/scenes_A" / image["file"])
    (scenes / "gt.json").write_text(json.dumps(subset))
    phrases = make_set(tmp_path / "phrases", "phrases", seed=7, count=1)  # one 472x338 image
    pred_path = tmp_path / "pred.json"
    result = _invoke("eval", str(scenes / "gt.json"), str(tmp_path / "phrases"), "--json", "--predictions", str(pred_path))
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["sets"]] == ["A-small", "phrases-7"]
    scorer = _scorer(shared)
    for entry, gt_doc in zip(report["sets"], (subset, phrases)):
        pred = json.loads((tmp_path / f"pred.{entry['name']}.json").read_text())
        expected = scorer.score(gt_doc, pred, 0.5, keep_errors=True)
        assert {k: entry[k] for k in expected} == expected
    assert report["sets"][0]["total_gt"] == 15 and report["sets"][0]["hits"] >= 14
    total = report["total"]
    assert total["total_gt"] == 15 + sum(len(im["words"]) for im in phrases["images"])
    assert total["hits"] == sum(s["hits"] for s in report["sets"])
    assert total["word_accuracy"] == pytest.approx(total["hits"] / total["total_gt"])
    table = CliRunner().invoke(cli, ["eval", str(scenes)], catch_exceptions=False)
    assert table.exit_code == 0 and "word accuracy" in table.stderr and "A-small" in table.stderr


def test_eval_refuses_a_malformed_ground_truth_file(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text('{"pictures": []}')
    done = subprocess.run([*CLI, "eval", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "gt.json" in done.stderr and "images" in done.stderr and "Traceback" not in done.stderr


def test_help_describes_both_commands():
    for name in ("ocr", "eval"):
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "--runtime" in result.output and "--json" in result.output
