"""Processing stages against the oracles: detector input, boxes, crops, decoders, settings."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFont

from stdr_deploy.ocr import PipelineSettings, read_image
from stdr_deploy.ocr import boxes
from stdr_deploy.ocr.boxes import bridge_level, word_boxes
from stdr_deploy.ocr.crops import batches, crnn_input, grow, pad_width, parseq_input, principal_gray, rectify
from stdr_deploy.ocr.decoders import ctc_greedy, parseq_tokens
from stdr_deploy.ocr.detector_input import detector_input, normalised, padded_size, resized_size
from stdr_deploy.ocr.metrics import iou, pair_words
from stdr_deploy.ocr.recognizers import RECOGNIZERS

BOX_OPTIONS = dict(text_threshold=0.7, link_threshold=0.4, low_text=0.4, box_level=0.25,
                   straight_below_deg=1.0, merge_gap=0.25, min_size=8, bridge_floor=0.1)


def _craft_oracle(shared, name):
    return np.load(shared / f"oracles/craft/{name}")


def _bounds(polygon) -> tuple[float, float, float, float]:
    p = np.asarray(polygon, dtype=float)
    return p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()


# --- detector input -------------------------------------------------------------------------

def test_detector_input_equals_easyocr_tensor_img02(shared):
    oracle = _craft_oracle(shared, "craft_A_img02_512x413.npz")
    det = detector_input(read_image(shared / "testdata/scenes_A/img02.png"), 2560, 1.0)
    assert det.tensor.shape == tuple(oracle["input_shape"]) and det.tensor.dtype == np.uint8
    x = normalised(det.tensor)  # what the CRAFT graph computes from its uint8 input
    # the oracle stores it as float16: equal after the same rounding
    assert np.array_equal(x.astype(np.float16), oracle["input_fp16"])
    summary = json.loads((shared / "oracles/craft/craft_oracle_summary.json").read_text())
    assert hashlib.sha256(x.tobytes()).hexdigest() == summary["images"]["img02.png"]["input_sha256_float32"]


def test_detector_input_equals_easyocr_tensor_img03(shared):
    oracle = _craft_oracle(shared, "craft_A_img03_1600x1200.npz")
    det = detector_input(read_image(shared / "testdata/scenes_A/img03.png"), 2560, 1.0)
    assert det.tensor.shape == tuple(oracle["input_shape"])
    x = normalised(det.tensor)
    assert np.array_equal(x[:, :, :8], oracle["input_first_rows"])  # includes padding columns
    np.testing.assert_allclose(x.astype(np.float64).sum(axis=(0, 2, 3)), oracle["input_channel_sums"], rtol=1e-9)
    summary = json.loads((shared / "oracles/craft/craft_oracle_summary.json").read_text())
    assert hashlib.sha256(x.tobytes()).hexdigest() == summary["images"]["img03.png"]["input_sha256_float32"]


def test_gpu_padding_gives_few_shapes_within_the_profile_and_keeps_the_image(shared):
    image = read_image(shared / "testdata/scenes_A/img03.png")
    plain, padded = detector_input(image, 2560, 1.0), detector_input(image, 2560, 1.0, pad_to=640)
    assert padded.tensor.shape == (1, 3, 1920, 1280) and padded.resized_hw == plain.resized_hw
    h, w = plain.tensor.shape[2:]
    np.testing.assert_array_equal(padded.tensor[:, :, :h, :w], plain.tensor)
    assert not padded.tensor[0, :, h:, :].any() and not padded.tensor[0, :, :, w:].any()  # black
    # never past the canvas rounded up to 32 (the profile's max), never below the 32-padding
    assert padded_size(1000, 1590, 640, 1600) == (1280, 1600)
    assert padded_size(20, 33, 640, 2560) == (640, 640)
    with pytest.raises(ValueError, match="multiple of 32"):
        PipelineSettings(pad_to=100)


@pytest.mark.parametrize("hw, resized, padded", [
    ((472, 338), (472, 338), (480, 352)),
    ((512, 413), (512, 413), (512, 416)),
    ((1600, 1200), (1600, 1200), (1600, 1216)),
    ((3280, 2625), (2560, 2048), (2560, 2048)),
])
def test_canvas_sizes_of_the_benchmark_images(hw, resized, padded):
    assert resized_size(*hw, canvas_size=2560, mag_ratio=1.0) == resized
    assert padded_size(*resized) == padded


def test_magnification_is_capped_by_the_canvas():
    assert resized_size(472, 338, canvas_size=2560, mag_ratio=2.0) == (944, 676)
    assert resized_size(1600, 1200, canvas_size=2560, mag_ratio=2.0) == (2560, 1920)


# --- score maps -> boxes ------------------------------------------------------------------------

@pytest.mark.parametrize("image, npz", [("img02.png", "craft_A_img02_512x413.npz"),
                                        ("img03.png", "craft_A_img03_1600x1200.npz")])
def test_craft_boxes_equal_the_oracle(shared, image, npz):
    oracle = _craft_oracle(shared, npz)
    det = detector_input(read_image(shared / "testdata/scenes_A" / image), 2560, 1.0)
    boxes = word_boxes(oracle["y_fp16"].astype(np.float32), det, **{**BOX_OPTIONS, "box_fit": "craft"})
    got = np.array([b.polygon for b in boxes])
    assert got.shape == oracle["boxes"].shape
    np.testing.assert_allclose(got, oracle["boxes"], atol=1e-3)


@pytest.mark.parametrize("image, npz", [("img02.png", "craft_A_img02_512x413.npz"),
                                        ("img03.png", "craft_A_img03_1600x1200.npz")])
def test_ink_boxes_fit_the_ground_truth_tighter_than_craft(shared, image, npz):
    oracle = _craft_oracle(shared, npz)
    gt = json.loads((shared / "testdata/scenes_A/gt.json").read_text())
    words = next(im["words"] for im in gt["images"] if im["file"] == image)
    det = detector_input(read_image(shared / "testdata/scenes_A" / image), 2560, 1.0)
    truth = [tuple(w["bbox"]) for w in words]
    mean_iou = {}
    for fit in ("ink", "craft"):
        boxes = word_boxes(oracle["y_fp16"].astype(np.float32), det, **{**BOX_OPTIONS, "box_fit": fit})
        pairs = pair_words(truth, [_bounds(b.polygon) for b in boxes], 0.5)
        assert len(pairs) == len(words) == len(boxes)
        mean_iou[fit] = np.mean([v for _, _, v in pairs])
    assert mean_iou["ink"] > 0.8
    assert mean_iou["ink"] > mean_iou["craft"] + 0.04


def _blob_maps(centres: list[tuple[float, float]], links: list[tuple[float, float]], shape=(40, 120), sigma=2.2):
    """Synthetic score maps: one Gaussian per character (region) and per link (affinity)."""
    ys, xs = np.indices(shape, dtype=np.float32)
    maps = np.zeros((*shape, 2), dtype=np.float32)
    for channel, points in ((0, centres), (1, links)):
        for cx, cy in points:
            maps[:, :, channel] = np.maximum(maps[:, :, channel], np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)))
    return maps


def _synthetic_boxes(maps):
    h, w = maps.shape[:2]
    det = detector_input(np.zeros((2 * h, 2 * w, 3), dtype=np.uint8), 2560, 1.0)
    return word_boxes(maps, det, **{**BOX_OPTIONS, "box_fit": "ink"})


def test_pieces_cut_at_a_weak_link_are_one_word_but_spaced_words_stay_apart():
    word = [(10 + 5 * i, 20) for i in range(4)]
    links = [(12.5 + 5 * i, 20) for i in range(3)]
    close = [(31, 20), (36, 20)]  # one pixel past the usual pitch, and no link across
    far = [(50, 20), (55, 20)]  # a word space away
    assert len(_synthetic_boxes(_blob_maps(word + close, links + [(28, 20)]))) == 1  # linked: one word
    (joined,) = _synthetic_boxes(_blob_maps(word + close, links + [(33.5, 20)]))  # cut apart, rejoined
    assert _bounds(joined.polygon)[2] > 2 * 38
    assert len(_synthetic_boxes(_blob_maps(word + far, links + [(52.5, 20)]))) == 2


def _underscore(x0: float, x1: float, y: float, level: float, shape=(40, 120)) -> np.ndarray:
    """Region-score ridge of height `level` along a horizontal stroke, as CRAFT scores an underscore."""
    ys, xs = np.indices(shape, dtype=np.float32)
    ridge = level * np.exp(-((ys - y) ** 2) / 2.0) * ((xs >= x0) & (xs <= x1))
    return np.stack([ridge, np.zeros(shape, dtype=np.float32)], axis=-1)


def test_a_ridge_of_region_score_joins_pieces_a_word_space_does_not():
    word = [(10 + 5 * i, 20) for i in range(4)]
    links = [(12.5 + 5 * i, 20) for i in range(3)]
    after = [(38, 20), (43, 20)]  # 0.8 heights past the word, no link across: 'up' + 'down'
    maps = _blob_maps(word + after, links + [(40.5, 20)])
    assert len(_synthetic_boxes(maps)) == 2
    (joined,) = _synthetic_boxes(np.maximum(maps, _underscore(24, 40, 22.5, 0.2)))  # 'up_down'
    assert _bounds(joined.polygon)[0] < 2 * 8 and _bounds(joined.polygon)[2] > 2 * 45
    assert len(_synthetic_boxes(np.maximum(maps, _underscore(24, 40, 22.5, 0.05)))) == 2  # a space's haze


def test_bridge_level_is_the_lowest_point_of_the_best_path_across():
    region = _underscore(20, 40, 10.5, 0.3)[:, :, 0]
    region[:, 30] = np.minimum(region[:, 30], 0.12)  # a dip in the middle of the stroke
    assert bridge_level(region, (22.0, 38.0), (6.0, 15.0), 0.0) == pytest.approx(0.12, abs=0.01)
    assert bridge_level(region, (22.0, 38.0), (0.0, 5.0), 0.0) < 0.01  # the band misses the stroke


def test_a_faint_trailing_dot_joins_its_word_and_a_lone_one_is_dropped():
    word = [(10 + 5 * i, 20) for i in range(4)]
    links = [(12.5 + 5 * i, 20) for i in range(3)]
    maps = _blob_maps(word, links)
    alone = _synthetic_boxes(maps)
    dot = _blob_maps([(30, 22)], [], sigma=1.2) * 0.55  # region peak 0.55: under text_threshold
    with_dot = _synthetic_boxes(np.maximum(maps, dot))
    assert len(alone) == len(with_dot) == 1
    assert _bounds(with_dot[0].polygon)[2] > _bounds(alone[0].polygon)[2] + 4  # reaches the dot
    far_dot = _blob_maps([(100, 22)], [], sigma=1.2) * 0.55
    assert len(_synthetic_boxes(np.maximum(maps, far_dot))) == 1


def test_rotated_words_get_rotated_boxes():
    angle = math.radians(6)
    centres = [(20 + 5 * i * math.cos(angle), 20 + 5 * i * math.sin(angle)) for i in range(8)]
    links = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(centres, centres[1:])]
    (box,) = _synthetic_boxes(_blob_maps(centres, links, shape=(50, 80)))
    assert box.angle_deg == pytest.approx(6, abs=1.0)
    straight = [(20 + 5 * i, 20) for i in range(8)]
    (flat,) = _synthetic_boxes(_blob_maps(straight, [(22.5 + 5 * i, 20) for i in range(7)], shape=(50, 80)))
    assert flat.angle_deg == 0.0


# --- the fast box steps against straightforward computations, on real CRAFT score maps ----------

REAL_MAPS = [("scenes_A/img00.png", 2560), ("scenes_A/img02.png", 2560), ("real_A/img_1.jpg", 960)]


@pytest.fixture(scope="module")
def real_score_maps(shared, craft_onnx) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(region, affinity) from the real CRAFT export (ONNX Runtime) for two scenes and a photo."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(craft_onnx.onnx_path), providers=["CPUExecutionProvider"])
    maps = {}
    for name, canvas in REAL_MAPS:
        det = detector_input(read_image(shared / "testdata" / name), canvas, 1.0)
        score = session.run(["output"], {"input": det.tensor})[0][0]
        maps[name] = (np.ascontiguousarray(score[:, :, 0]), np.ascontiguousarray(score[:, :, 1]))
    return maps


def _reference_peaks(region: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    peaks = np.full(count, -np.inf, dtype=np.float32)
    np.maximum.at(peaks, labels.ravel(), region.ravel())
    return peaks


def _reference_ink_points(region, components, label, box_level) -> np.ndarray:
    """`ink_runs` the plain way: the whole window upsampled, every point listed by np.nonzero."""
    import cv2

    x, y, w, h, _ = (int(v) for v in components.stats[label])
    reach = max(2, math.ceil(0.5 * min(w, h)))
    x0, x1 = max(x - reach, 0), min(x + w + reach, region.shape[1])
    y0, y1 = max(y - reach, 0), min(y + h + reach, region.shape[0])
    labels = components.labels[y0:y1, x0:x1]
    mine = labels == label
    core = (mine & components.text_mask[y0:y1, x0:x1]).astype(np.uint8)
    scores = region[y0:y1, x0:x1]
    peak = float(scores[mine].max())
    to_core = cv2.distanceTransform(1 - core, cv2.DIST_L2, 3)
    near = to_core <= max(1.5, 0.4 * float(cv2.distanceTransform(core, cv2.DIST_L2, 3).max()))
    others = (labels > 0) & ~mine
    if others.any():
        near &= to_core <= cv2.distanceTransform((~others).astype(np.uint8), cv2.DIST_L2, 3)
    scores = np.where(near, scores, 0.0).astype(np.float32)
    fine = cv2.resize(scores, (scores.shape[1] * 4, scores.shape[0] * 4), interpolation=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(fine > box_level * peak)
    return np.stack([(xs + 0.5) / 4 + x0, (ys + 0.5) / 4 + y0], axis=1)


def _reference_text_angle(region, components, labels) -> float:
    """`text_angle` with every pixel of the window in the weighted sums."""
    import cv2

    stats = components.stats[list(labels)]
    x0, y0 = stats[:, 0].min(), stats[:, 1].min()
    x1, y1 = (stats[:, 0] + stats[:, 2]).max(), (stats[:, 1] + stats[:, 3]).max()
    mine = np.isin(components.labels[y0:y1, x0:x1], labels)
    scores = np.where(mine, region[y0:y1, x0:x1], 0.0).astype(np.float32)
    level = 0.5 * (float(scores.max()) + float(scores[mine].min()))
    count, blobs = cv2.connectedComponents((scores > level).astype(np.uint8), connectivity=4)
    if count < 3:
        return 0.0
    ys, xs = np.indices(scores.shape)
    sums = [np.bincount(blobs.ravel(), weights=(scores * v).ravel(), minlength=count)[1:] for v in (1, xs, ys)]
    cx, cy = sums[1] / sums[0], sums[2] / sums[0]
    if np.ptp(cx) <= np.ptp(cy):
        return 0.0
    return math.atan(np.polyfit(cx, cy, 1, w=np.sqrt(sums[0]))[0])


def _reference_pairs(bounds: np.ndarray, gap: float) -> list[tuple[int, int]]:
    """Every pair tested: rows overlap, and the horizontal gap is within `gap` x the taller height + 1."""
    pairs = []
    for i in range(len(bounds)):
        for j in range(i + 1, len(bounds)):
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = bounds[i], bounds[j]
            reach = gap * max(ay1 - ay0, by1 - by0) + 1
            if ay0 <= by1 and by0 <= ay1 and ax0 <= bx1 + reach and bx0 <= ax1 + reach:
                pairs.append((i, j))
    return pairs


@pytest.mark.parametrize("name", [name for name, _ in REAL_MAPS])
def test_box_steps_equal_straightforward_computations_on_real_score_maps(real_score_maps, name):
    region, link = real_score_maps[name]
    s = PipelineSettings()
    found = boxes.find_words(region, link, s.text_threshold, s.link_threshold, s.low_text)
    count = len(found.stats)
    peaks = _reference_peaks(region, found.labels, count)
    areas = found.stats[:, 4]
    words = tuple(k for k in range(1, count) if areas[k] >= boxes.MIN_COMPONENT_AREA and peaks[k] >= s.text_threshold)
    assert found.words == words and len(words) >= 3
    assert found.faint == tuple(sorted(set(np.flatnonzero(peaks > s.low_text).tolist()) - set(words) - {0}))
    assert all(found.peaks[k] == peaks[k] for k in found.words + found.faint)

    points = []
    for k in found.words + found.faint:
        points.append(boxes.ink_runs(region, found, k, s.box_level).points())
        np.testing.assert_array_equal(points[-1], _reference_ink_points(region, found, k, s.box_level))
    for k in found.words:
        assert boxes.text_angle(region, found, (k,)) == _reference_text_angle(region, found, (k,))
    assert boxes.text_angle(region, found, found.words[:3]) == _reference_text_angle(region, found, found.words[:3])

    bounds = np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in points])
    for gap in (0.3, 1.2, 5.0):
        assert boxes._near_pairs(bounds, gap) == _reference_pairs(bounds, gap)


def test_near_pairs_equal_every_pair_tested_on_crowded_boxes():
    rng = np.random.default_rng(7)
    corners = rng.uniform(0, 200, (150, 2)).round(1)  # rounded: many equal tops and touching edges
    sizes = rng.uniform(1, 30, (150, 2)).round(1)
    bounds = np.concatenate([corners, corners + sizes], axis=1)
    bounds[:20, 1] = bounds[20:40, 1]  # equal tops
    bounds[:20, 3] = bounds[:20, 1] + 5
    for gap in (0.0, 0.3, 1.2):
        assert boxes._near_pairs(bounds, gap) == _reference_pairs(bounds, gap)
    assert boxes._near_pairs(np.zeros((0, 4)), 1.0) == []


# --- box -> crop ------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([0, 3])),
    corner=st.tuples(st.floats(-30, 70), st.floats(-30, 70)),
    size=st.tuples(st.floats(0.01, 60), st.floats(0.01, 60)),  # a flat quad has no warp to compare with
    whole=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_an_upright_box_is_cut_as_a_warp_by_whole_pixels_would(shape, corner, size, whole, seed):
    """`rectify` copies an axis-aligned window (border repeated outside the image): the same
    pixels as the perspective warp of the window snapped to whole pixels, done here with cv2."""
    import cv2

    height, width, channels = shape
    image = np.random.default_rng(seed).integers(0, 256, (height, width, channels) if channels else (height, width),
                                                 dtype=np.uint8)
    (x0, y0), (w, h) = corner, size
    if whole:
        x0, y0, w, h = float(round(x0)), float(round(y0)), float(max(round(w), 1)), float(max(round(h), 1))
    polygon = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]])
    left, top = math.floor(x0), math.floor(y0)
    right, bottom = math.ceil(x0 + w), math.ceil(y0 + h)
    out_w, out_h = max(right - left, 1), max(bottom - top, 1)
    source = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], np.float32) - 0.5
    target = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], np.float32) - 0.5
    expected = cv2.warpPerspective(image, cv2.getPerspectiveTransform(source, target), (out_w, out_h),
                                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(rectify(image, polygon), expected)


def test_rotated_word_is_rectified_upright():
    font = ImageFont.truetype("DejaVuSans.ttf", 40) if _has_dejavu() else ImageFont.load_default(size=40)
    upright = Image.new("L", (260, 70), 255)
    ImageDraw.Draw(upright).text((10, 10), "Rotate", font=font, fill=0)
    angle = 7.0  # counter-clockwise on screen
    canvas = Image.new("L", (400, 300), 255)
    canvas.paste(upright, (70, 115))
    rotated = np.asarray(canvas.rotate(angle, resample=Image.BICUBIC, center=(200, 150), fillcolor=255))
    # where the upright rectangle's corners went: rotate them the same way about the centre
    corners = np.array([[70, 115], [330, 115], [330, 185], [70, 185]], dtype=float) - (200, 150)
    theta = math.radians(angle)
    turn = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    polygon = corners @ turn.T + (200, 150)
    crop = rectify(np.stack([rotated] * 3, axis=2), polygon)
    assert crop.shape[:2] == (70, 260)
    expected = np.asarray(upright, dtype=float)
    got = crop[:, :, 0].astype(float)
    assert np.corrcoef(expected.ravel(), got.ravel())[0, 1] > 0.9
    # the axis-aligned cut of the same region is far less alike
    x0, y0, x1, y1 = (int(round(v)) for v in _bounds(polygon))
    naive = np.asarray(Image.fromarray(rotated[y0:y1, x0:x1]).resize((260, 70)), dtype=float)
    assert np.corrcoef(expected.ravel(), naive.ravel())[0, 1] < 0.8


def _has_dejavu() -> bool:
    try:
        ImageFont.truetype("DejaVuSans.ttf", 10)
    except OSError:
        return False
    return True


def test_axis_aligned_crops_are_exact_copies():
    image = np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    crop = rectify(image, np.array([[10.3, 5.6], [40.2, 5.6], [40.2, 20.1], [10.3, 20.1]]))
    assert np.array_equal(crop, image[5:21, 10:41])


def test_grow_moves_each_side_outwards():
    box = np.array([[0, 0], [10, 0], [10, 4], [0, 4]], dtype=float)
    np.testing.assert_allclose(grow(box, 1, 2), [[-1, -2], [11, -2], [11, 6], [-1, 6]])


def test_crnn_input_equals_easyocr_input(shared):
    oracle = np.load(shared / "oracles/easyocr/english_g2_crops_A.npz")
    for name in oracle["crop_names"]:
        key = str(name)[:-4]
        assert np.array_equal(crnn_input(oracle[f"{key}_gray"])[None], oracle[f"{key}_input"]), key


def test_parseq_input_equals_the_official_transform(shared):
    folder = shared / "oracles/parseq"
    resized = parseq_input(np.asarray(Image.open(folder / "img_A_resize.png").convert("RGB")))
    np.testing.assert_array_equal(resized[None], np.load(folder / "preproc_A_resize.npy"))
    inputs = np.load(folder / "inputs_A.npy")
    for i in range(3):
        np.testing.assert_array_equal(parseq_input(np.asarray(Image.open(folder / f"img_A{i}.png").convert("RGB"))), inputs[i])


def test_principal_gray_separates_colours_of_equal_luminance():
    crop = np.zeros((10, 20, 3), dtype=np.uint8)
    crop[:] = (60, 200, 60)  # green background
    crop[3:7, 5:15] = (170, 125, 170)  # lavender text of about the same luminance
    import cv2

    plain = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    assert abs(int(plain[5, 10]) - int(plain[0, 0])) < 5
    gray = principal_gray(crop)
    assert abs(int(gray[5, 10]) - int(gray[0, 0])) > 200


def test_pad_width_repeats_the_last_column_up_to_the_next_bucket():
    item = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    padded = pad_width(item, (4, 8, 16))
    assert padded.shape == (2, 3, 8)
    np.testing.assert_array_equal(padded[..., :5], item)
    np.testing.assert_array_equal(padded[..., 5:], np.repeat(item[..., 4:], 3, axis=-1))
    assert pad_width(item, (5, 8)) is item  # already a bucket width
    assert pad_width(item, (2, 4)).shape == (2, 3, 5)  # wider than every bucket: as it is


def test_crnn_crops_of_many_widths_share_a_few_shapes(shared):
    family = RECOGNIZERS["crnn-en"]
    crops = [read_image(path) for path in sorted((shared / "testdata/crops_A").glob("crop*.png"))]
    natural = {crnn_input(c).shape for c in crops}
    padded = {family.make_input(c).shape for c in crops}
    assert {shape[-1] for shape in padded} <= set(family.widths)
    assert len(padded) < len(natural)
    assert RECOGNIZERS["parseq"].widths == () and RECOGNIZERS["parseq"].make_input(crops[0]).shape == (3, 32, 128)


def test_batches_share_a_shape_and_respect_the_limit():
    shapes = [(1, 64, 128), (1, 64, 256), (1, 64, 128), (1, 64, 128), (1, 64, 256)]
    groups = batches(shapes, limit=2)
    assert sorted(i for g in groups for i in g) == list(range(5))
    assert all(len(g) <= 2 and len({shapes[i] for i in g}) == 1 for g in groups)
    assert len(groups) == 3


# --- decoders -----------------------------------------------------------------------------------

def test_ctc_greedy_equals_easyocr(shared):
    oracle = np.load(shared / "oracles/easyocr/english_g2_crops_A.npz")
    summary = json.loads((shared / "oracles/easyocr/english_g2_oracle_summary.json").read_text())
    charset = RECOGNIZERS["crnn-en"].charset
    for name, expected, facts in zip(oracle["crop_names"], oracle["greedy_ctc"], summary["crops"]):
        decoded = ctc_greedy(oracle[f"{str(name)[:-4]}_logits"][0], charset)
        assert decoded.text == str(expected)
        assert len(decoded.char_scores) == len(decoded.text)
        assert decoded.score == pytest.approx(facts["easyocr_float_conf"], abs=1e-5)


def test_ctc_banned_characters_are_never_emitted():
    charset = RECOGNIZERS["crnn-en"].charset
    logits = np.full((6, 97), -5.0, dtype=np.float32)
    for step, char in enumerate("ab cd"):
        logits[step, charset.index(char) + 1] = 5.0
    logits[2, charset.index(".") + 1] = 3.0  # runner-up under the space
    logits[5, 0] = 5.0
    assert ctc_greedy(logits, charset).text == "ab cd"
    assert ctc_greedy(logits, charset, banned=" ").text == "ab.cd"


def test_parseq_tokenizer_equals_the_official_decode(shared):
    decoded = json.loads((shared / "oracles/parseq/decoded_A.json").read_text())
    charset = RECOGNIZERS["parseq"].charset
    runs = list(decoded["settings"].values()) + list(decoded["eosbias"]["settings"].values())
    for run in runs:
        logits = np.load(shared / "oracles/parseq" / run["logits_file"])
        for row, item in zip(logits, run["items"]):
            got = parseq_tokens(row, charset)
            assert got.text == item["text"]
            np.testing.assert_allclose(got.confidences, item["char_confidences"], atol=1e-5, rtol=0)
            if item["sequence_confidence"] > 1e-30:  # below that the oracle's float32 product underflows
                assert got.sequence_confidence == pytest.approx(item["sequence_confidence"], rel=1e-4)


def test_pipeline_charsets_equal_the_model_specs():
    from stdr_deploy.models import get_spec

    for name, family in RECOGNIZERS.items():
        assert family.charset == get_spec(name).charset, name


# --- settings -------------------------------------------------------------------------------

def test_settings_from_a_plan_keep_processing_fields_only():
    plan = {"instance_count": 2, "instance_kind": "KIND_CPU", "canvas_size": 1280, "mag_ratio": 1.5,
            "max_image_pixels": 4_000_000, "recognizer_batch": 8, "text_threshold": 0.6,
            "link_threshold": 0.3, "low_text": 0.35}
    settings = PipelineSettings.from_plan(plan, box_fit="craft")
    assert (settings.canvas_size, settings.mag_ratio, settings.recognizer_batch) == (1280, 1.5, 8)
    assert (settings.text_threshold, settings.link_threshold, settings.low_text) == (0.6, 0.3, 0.35)
    assert settings.box_fit == "craft" and settings.crop_margin_across == PipelineSettings().crop_margin_across


def test_settings_from_a_plan_object_and_bad_values():
    from stdr_deploy.plan_schema import PipelinePlan

    plan = PipelinePlan(instance_count=1, instance_kind="KIND_CPU", canvas_size=960, mag_ratio=1.0,
                        max_image_pixels=1_000_000, recognizer_batch=4, text_threshold=0.7,
                        link_threshold=0.4, low_text=0.4)
    assert PipelineSettings.from_plan(plan).canvas_size == 960
    with pytest.raises(ValueError, match="box_fit"):
        PipelineSettings(box_fit="tight")
    with pytest.raises(ValueError, match="recognizer_batch"):
        PipelineSettings(recognizer_batch=0)


def test_iou_of_half_overlapping_boxes():
    assert iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(1 / 3)


def test_wide_crops_are_squeezed_to_the_planned_max_width():
    """The recognizer profile stops at the planner's max width: a 40:1 crop must still fit it."""
    from stdr_deploy.ocr import crops
    from stdr_deploy.planner import CRNN_MAX_WIDTH

    assert crops.CRNN_MAX_WIDTH == CRNN_MAX_WIDTH
    wide = np.full((20, 800, 3), 200, np.uint8)
    assert crops.crnn_input(wide).shape == (1, 64, CRNN_MAX_WIDTH)
    assert crops.crnn_input(wide[:, :100]).shape == (1, 64, 320)
