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


def _single_points(points: np.ndarray):
    """An `Ink` holding each of `points` (x, y) as a run of its own."""
    from stdr_deploy.ocr.boxes import Ink

    xs, ys = np.asarray(points, dtype=np.float64).T
    return Ink(ys.copy(), xs.copy(), xs.copy(), np.ones(len(xs), dtype=np.int64))


@pytest.mark.parametrize(("ridge", "pieces"), [(0.0, 2), (0.2, 1)])
def test_a_component_is_cut_at_a_word_space_but_not_at_an_underscore(ridge, pieces):
    from stdr_deploy.ocr.boxes import split_at_spaces

    region = _word_row([10, 16, 22, 40, 46, 52], ridge)  # two 3-letter words, 18 px between centres
    ys, xs = np.nonzero(region > 0.25)
    points = np.stack([xs + 0.5, ys + 0.5], axis=1).astype(np.float64)
    parts = split_at_spaces(_single_points(points), 0.0, region, merge_gap=0.1, bridge_floor=0.1)
    assert len(parts) == pieces
    assert sum(len(p) for p in parts) == len(points)
    if pieces == 2:
        assert parts[0].points()[:, 0].max() < 31 < parts[1].points()[:, 0].min()


def _reference_split(points: np.ndarray, angle: float, region: np.ndarray, merge_gap: float,
                     bridge_floor: float) -> list[np.ndarray]:
    """`split_at_spaces` point by point: sort every point along the line, cut at each step wider
    than merge_gap x the height across it that the region score does not bridge."""
    from stdr_deploy.ocr.boxes import bridge_level

    cos, sin = math.cos(angle), math.sin(angle)
    along = points[:, 0] * cos + points[:, 1] * sin
    across = -points[:, 0] * sin + points[:, 1] * cos
    limit = merge_gap * float(np.ptp(across))
    order = np.argsort(along, kind="stable")
    ends = along[order]
    band = (float(across.min()), float(across.max()))
    cuts = [g + 1 for g in np.flatnonzero(np.diff(ends) > limit)
            if bridge_level(region, (float(ends[g]), float(ends[g + 1])), band, angle) < bridge_floor]
    return [points[np.sort(part)] for part in np.split(order, cuts)]


def _sorted_rows(points: np.ndarray) -> np.ndarray:
    return points[np.lexsort((points[:, 0], points[:, 1]))]


@settings(max_examples=200, deadline=None)
@given(
    runs=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 600), st.integers(1, 80)), min_size=1, max_size=40),
    angle=st.sampled_from([0.0, 0.05, 0.3, -0.5, 1.2]),
    merge_gap=st.sampled_from([0.0, 0.02, 0.1, 0.3]),
    seed=st.integers(0, 3),
)
def test_split_at_spaces_on_runs_equals_the_point_by_point_rule(runs, angle, merge_gap, seed):
    """Runs of ink on the 1/4-pixel grid (rows, starts, lengths), split as runs, against every
    point sorted along the line; thin ink and tiny gaps too (the limit then within a step). The
    region score is random blobs, so some gaps are bridged and some are cut."""
    from stdr_deploy.ocr.boxes import Ink, split_at_spaces

    rows = np.array([r for r, _, _ in runs], dtype=np.float64) / 4 + 300.125
    starts = np.array([x for _, x, _ in runs], dtype=np.float64) / 4 + 300.125
    lengths = np.array([n for _, _, n in runs], dtype=np.int64)
    ink = Ink(rows, starts, starts + (lengths - 1) / 4, lengths)
    rng = np.random.default_rng(seed)
    region = np.zeros((700, 700), np.float32)
    region[::7, ::5] = rng.uniform(0, 0.3, region[::7, ::5].shape).astype(np.float32)
    points = ink.points()
    got = split_at_spaces(ink, angle, region, merge_gap=merge_gap, bridge_floor=0.1)
    want = _reference_split(points, angle, region, merge_gap, 0.1)
    assert len(got) == len(want)
    for part, expected in zip(got, want):
        np.testing.assert_array_equal(_sorted_rows(part.points()), _sorted_rows(expected))


@settings(max_examples=200, deadline=None)
@given(
    runs=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 4000), st.integers(1, 300)), min_size=1, max_size=30),
    angle=st.floats(-1.5, 1.5),
)
def test_extent_of_runs_equals_the_extent_of_every_point(runs, angle):
    """A word's extremes along and across a direction, from its runs' ends, against all its points."""
    from stdr_deploy.ocr.boxes import Ink, _extent

    rows = np.array([r for r, _, _ in runs], dtype=np.float64) / 4 + 0.125
    starts = np.array([x for _, x, _ in runs], dtype=np.float64) / 4 + 0.125
    lengths = np.array([n for _, _, n in runs], dtype=np.int64)
    ink = Ink(rows, starts, starts + (lengths - 1) / 4, lengths)
    xs, ys = ink.points().T
    cos, sin = math.cos(angle), math.sin(angle)
    along, across = xs * cos + ys * sin, ys * cos - xs * sin
    assert len(ink) == len(xs)
    assert _extent(ink, angle) == (along.min(), along.max(), across.min(), across.max())
