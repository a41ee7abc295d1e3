"""Words that a real space separates stay apart, on a real photo and on drawn check sets.

CRAFT's region score runs across narrow, blurred word spaces in photos ('PAY FOR' on an ICDAR
2015 sign scores 0.09 between the words); pieces that close are joined only where the region
score bridges the gap, so the two words are read as two.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stdr_deploy.bench.synthetic import make_set
from stdr_deploy.ocr import read_image
from stdr_deploy.runners import make_pipeline


@pytest.fixture(scope="module")
def pipeline():
    return make_pipeline("onnxruntime", "crnn-en")


def test_words_of_a_photographed_sign_stay_apart(shared, pipeline):
    words = pipeline.read(read_image(shared / "testdata/real_A/img_8.jpg"))
    texts = [w.text for w in words]
    assert "PAY" in texts and "FOR" in texts, texts
    assert not any("PAY" in t and "FOR" in t for t in texts), texts


def test_check_sets_are_drawn_the_same_from_the_same_seed(tmp_path):
    first = make_set(tmp_path / "a", "tilt", seed=3, count=1)
    again = make_set(tmp_path / "b", "tilt", seed=3, count=1)
    assert first == again
    assert (tmp_path / "a/img00.png").read_bytes() == (tmp_path / "b/img00.png").read_bytes()
    assert make_set(tmp_path / "c", "tilt", seed=4, count=1) != first


def test_phrase_words_are_tight_ink_boxes_on_one_line(tmp_path):
    gt = make_set(tmp_path, "phrases", seed=11, count=1)
    image = gt["images"][0]
    assert (image["height"], image["width"]) == (472, 338)
    words = image["words"]
    assert len(words) >= 4
    for w in words:
        x0, y0, x1, y1 = w["bbox"]
        assert 0 <= x0 < x1 <= image["width"] and 0 <= y0 < y1 <= image["height"]
        assert w["angle"] == 0.0 and float(x0).is_integer() and float(y1).is_integer()
    # words of one line share it and do not overlap: a real space lies between them
    rows: dict[float, list] = {}
    for w in words:
        rows.setdefault(w["font_size"], []).append(w["bbox"])
    assert any(len(r) > 1 for r in rows.values())
    for boxes in rows.values():
        boxes.sort()
        for a, b in zip(boxes, boxes[1:]):
            if min(a[3], b[3]) > max(a[1], b[1]):  # same line
                assert b[0] >= a[2]


@pytest.mark.slow
def test_a_phrase_set_is_read_word_by_word(tmp_path, pipeline):
    from stdr_deploy.ocr.metrics import score

    gt = make_set(tmp_path, "phrases", seed=11, count=1)
    pred = {"images": [pipeline.to_prediction(im["file"], pipeline.read(read_image(tmp_path / im["file"])))
                       for im in gt["images"]]}
    result = score(gt, pred)
    assert result["hits"] >= result["total_gt"] - 1, json.dumps(result["images"], indent=1)


def _word_row(centres: list[float], ridge: float) -> np.ndarray:
    """A region-score row of character bumps (peak 1) on a 64x24 map, `ridge` along the line."""
    ys, xs = np.mgrid[0:24, 0:64].astype(np.float32) + 0.5
    region = np.zeros((24, 64), np.float32)
    for cx in centres:
        region = np.maximum(region, np.exp(-((xs - cx) ** 2 + (ys - 12) ** 2) / (2 * 2.5**2)))
    region[11:14, 6:58] = np.maximum(region[11:14, 6:58], ridge)
    return region


@pytest.mark.parametrize(("ridge", "pieces"), [(0.0, 2), (0.2, 1)])
def test_a_component_is_cut_at_a_word_space_but_not_at_an_underscore(ridge, pieces):
    from stdr_deploy.ocr.boxes import split_at_spaces

    region = _word_row([10, 16, 22, 40, 46, 52], ridge)  # two 3-letter words, 18 px between centres
    ys, xs = np.nonzero(region > 0.25)
    points = np.stack([xs + 0.5, ys + 0.5], axis=1).astype(np.float64)
    parts = split_at_spaces(points, 0.0, region, merge_gap=0.1, bridge_floor=0.1)
    assert len(parts) == pieces
    assert sum(len(p) for p in parts) == len(points)
    if pieces == 2:
        assert parts[0][:, 0].max() < 31 < parts[1][:, 0].min()


@settings(max_examples=200, deadline=None)
@given(
    starts=st.lists(st.integers(0, 400), min_size=1, max_size=12),
    widths=st.lists(st.integers(1, 60), min_size=12, max_size=12),
    height=st.integers(1, 30),
    angle=st.sampled_from([0.0, 0.3, -0.5]),
)
def test_split_at_spaces_cuts_exactly_where_sorted_gaps_exceed_the_limit(starts, widths, height, angle):
    """The bin test that skips the sort must never miss a gap: with no region-score bridge, the
    parts are exactly the runs of the sorted positions split where a step exceeds merge_gap x height."""
    from stdr_deploy.ocr.boxes import split_at_spaces

    rows = []
    for start, width in zip(starts, widths):
        for x in range(start, start + width):
            for y in range(0, height + 1, max(1, height // 3)):
                rows.append((x * math.cos(angle) - y * math.sin(angle) + 600, x * math.sin(angle) + y * math.cos(angle) + 600))
    points = np.array(rows, dtype=np.float32)
    region = np.zeros((1400, 1400), np.float32)  # no bridge anywhere: every wide gap is cut
    parts = split_at_spaces(points, angle, region, merge_gap=0.1, bridge_floor=0.1)
    along = points[:, 0] * math.cos(angle) + points[:, 1] * math.sin(angle)
    across = -points[:, 0] * math.sin(angle) + points[:, 1] * math.cos(angle)
    order = np.argsort(along, kind="stable")
    cut = np.flatnonzero(np.diff(along[order]) > 0.1 * float(np.ptp(across))) + 1
    expected = [points[np.sort(run)] for run in np.split(order, cut)]
    assert len(parts) == len(expected)
    for got, want in zip(parts, expected):
        np.testing.assert_array_equal(got, want)
