"""The whole pipeline on real models (ONNX Runtime and PyTorch), on the small scenes of set A."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from stdr_deploy.ocr import BadImageError, OcrPipeline, PipelineSettings, read_image
from stdr_deploy.ocr.metrics import score
from stdr_deploy.runners import TorchRunner, make_pipeline

SMALL = ("img00.png", "img02.png", "img04.png", "img06.png")


@pytest.fixture(scope="module")
def ort_pipeline() -> OcrPipeline:
    return make_pipeline("onnxruntime", "crnn-en")


@pytest.fixture(scope="module")
def small_reads(shared, ort_pipeline) -> dict[str, list]:
    return {name: ort_pipeline.read(read_image(shared / "testdata/scenes_A" / name)) for name in SMALL}


def test_small_scenes_are_read(shared, small_reads):
    gt = json.loads((shared / "testdata/scenes_A/gt.json").read_text())
    subset = {"images": [im for im in gt["images"] if im["file"] in SMALL]}
    pred = {"images": [OcrPipeline.to_prediction(name, words) for name, words in small_reads.items()]}
    result = score(subset, pred)
    assert result["total_gt"] == 35
    assert result["det_recall"] >= 34 / 35
    assert result["hits"] >= 31  # 32 measured (ONNX Runtime, CPU)
    assert [w.text for w in small_reads["img00.png"]] == ["ENTRY", "~70", "1972", "18%", "Did", "Ethan", "#219"]


def test_words_carry_polygons_scores_and_char_scores(small_reads):
    for words in small_reads.values():
        for word in words:
            polygon = np.asarray(word.polygon)
            assert polygon.shape == (4, 2)
            top, right = polygon[1] - polygon[0], polygon[2] - polygon[1]
            assert np.cross(top, right) > 0  # clockwise on screen (y down), from the top-left
            assert 0.0 <= word.score <= 1.0
            assert len(word.char_scores) == len(word.text)
    entry = OcrPipeline.to_prediction("img00.png", small_reads["img00.png"])
    assert entry["file"] == "img00.png"
    assert set(entry["words"][0]) == {"text", "polygon", "score"}


def test_padding_the_detector_input_to_gpu_shapes_reads_the_same_words(shared, ort_pipeline, small_reads):
    """GPU plans pad detector inputs to multiples of 640 (a few fixed shapes). CRAFT sees the wider
    black border, so scores move (up to 0.11 on img00) and one word of scenes_A changes (img03's
    'p.m.' reads 'p.m:'); the small scenes read the same words with their boxes in place."""
    padded = OcrPipeline(ort_pipeline.detector, ort_pipeline.recognizer, "crnn-en", PipelineSettings(pad_to=640))
    for name in SMALL:
        words = padded.read(read_image(shared / "testdata/scenes_A" / name))
        assert [w.text for w in words] == [w.text for w in small_reads[name]], name
        for word, plain in zip(words, small_reads[name]):
            np.testing.assert_allclose(word.polygon, plain.polygon, atol=3.0)  # pixels


def test_recognizer_batch_size_does_not_change_the_words(shared, ort_pipeline, small_reads):
    one_by_one = OcrPipeline(ort_pipeline.detector, ort_pipeline.recognizer, "crnn-en",
                             PipelineSettings(recognizer_batch=1))
    words = one_by_one.read(read_image(shared / "testdata/scenes_A/img02.png"))
    expected = small_reads["img02.png"]
    assert [w.text for w in words] == [w.text for w in expected]
    np.testing.assert_allclose([w.score for w in words], [w.score for w in expected], atol=1e-5)


def test_recognizer_is_called_in_batches_of_at_most_the_setting(shared, ort_pipeline):
    calls = []

    class Counting:
        def infer(self, feeds):
            calls.append(feeds["input"].shape)
            return ort_pipeline.recognizer.infer(feeds)

    pipeline = OcrPipeline(ort_pipeline.detector, Counting(), "crnn-en",
                           PipelineSettings(recognizer_batch=2, contrast_retry_below=0.0))
    words = pipeline.read(read_image(shared / "testdata/scenes_A/img00.png"))
    assert sum(shape[0] for shape in calls) == len(words) == 7
    assert all(shape[0] <= 2 for shape in calls)
    assert len(calls) < len(words)  # crops of one width share a call


def test_a_runner_with_infer_many_gets_all_batches_of_a_read_at_once(shared, ort_pipeline, small_reads):
    """The served BLS runner sends an image's recognizer batches together; in-process, the same
    contract: one `infer_many` per round of crops, answers in order, the same words."""
    rounds = []

    class Concurrent:
        def infer(self, feeds):
            raise AssertionError("infer_many should have been used")

        def infer_many(self, feeds_list):
            rounds.append([feeds["input"].shape for feeds in feeds_list])
            return [ort_pipeline.recognizer.infer(feeds) for feeds in reversed(feeds_list)][::-1]

    pipeline = OcrPipeline(ort_pipeline.detector, Concurrent(), "crnn-en", PipelineSettings(recognizer_batch=2))
    words = pipeline.read(read_image(shared / "testdata/scenes_A/img00.png"))
    assert [w.text for w in words] == [w.text for w in small_reads["img00.png"]]
    assert 1 <= len(rounds) <= 2  # the crops, then maybe the contrast retries
    assert len(rounds[0]) > 1 and sum(shape[0] for shape in rounds[0]) == 7


def test_torch_and_onnxruntime_read_the_same(shared, small_reads):
    torch_pipeline = make_pipeline("torch", "crnn-en")
    words = torch_pipeline.read(read_image(shared / "testdata/scenes_A/img00.png"))
    expected = small_reads["img00.png"]
    assert [w.text for w in words] == [w.text for w in expected]
    np.testing.assert_allclose([w.polygon for w in words], [w.polygon for w in expected], atol=0.5)


def test_parseq_family_reads_the_oracle_crops(shared):
    """The parseq path (RGB 32x128 input, EOS-cut decode) on the oracle's random-weight model."""
    folder = shared / "oracles/parseq"
    recognizer = TorchRunner("parseq-tiny", folder / "parseq_tiny_random_A.pt")
    pipeline = OcrPipeline(detector=None, recognizer=recognizer, recognizer_family="parseq-tiny")
    crops = [np.asarray(Image.open(folder / f"img_A{i}.png").convert("RGB")) for i in range(3)]
    decoded = pipeline.read_crops(crops)
    expected = json.loads((folder / "decoded_A.json").read_text())["settings"]["nar"]["items"]
    assert [d.text for d in decoded] == [item["text"] for item in expected]
    for d, item in zip(decoded, expected):
        np.testing.assert_allclose(d.char_scores, item["char_confidences"][: len(d.text)], atol=1e-5)


def test_unusable_arrays_are_refused_before_any_work(ort_pipeline):
    with pytest.raises(BadImageError, match="RGB uint8"):
        ort_pipeline.read(np.zeros((32, 32), dtype=np.uint8))
    small_limit = OcrPipeline(ort_pipeline.detector, ort_pipeline.recognizer, "crnn-en",
                              PipelineSettings(max_image_pixels=1000))
    with pytest.raises(BadImageError, match="exceeds"):
        small_limit.read(np.zeros((40, 40, 3), dtype=np.uint8))


def test_a_blank_image_has_no_words(ort_pipeline):
    assert ort_pipeline.read(np.full((64, 96, 3), 200, dtype=np.uint8)) == []
