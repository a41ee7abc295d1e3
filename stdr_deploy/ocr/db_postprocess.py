"""DBNet post-processing: text probability map -> oriented text-line boxes (PP-OCR's detector).

The steps and defaults are RapidOCR 1.4.4's (`Det` in its config.yaml): binarise the map at
`THRESH` (0.3), dilate with a 2x2 kernel, take the outer contours (at most `MAX_CANDIDATES`),
fit each a minimum-area rectangle, drop those thinner than `MIN_SIZE` (3) map pixels or whose
mean probability inside the rectangle is under `BOX_THRESH` (0.5, "fast" score), then "unclip":
grow the rectangle by d = area * `UNCLIP_RATIO` (1.6) / perimeter on every side. RapidOCR offsets
the polygon with pyclipper (round joins) and refits a rectangle; for a rectangle that refit is
exactly the plain offset used here, up to pyclipper's integer rounding. Boxes thinner than
MIN_SIZE + 2 after unclipping, or 3 image pixels or less on a side, are dropped.
"""

from __future__ import annotations

import cv2
import numpy as np

from .boxes import WordBox
from .detector_input import DetectorInput

THRESH = 0.3
BOX_THRESH = 0.5
UNCLIP_RATIO = 1.6
MAX_CANDIDATES = 1000
MIN_SIZE = 3
DILATION = np.ones((2, 2), dtype=np.uint8)


def clockwise(points: np.ndarray) -> np.ndarray:
    """4 corners ordered top-left, top-right, bottom-right, bottom-left (the two leftmost points
    are the left side, each side's upper point first)."""
    by_x = points[np.argsort(points[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float64)


def box_score(prob: np.ndarray, corners: np.ndarray) -> float:
    """Mean probability inside the polygon `corners` (map pixels), over its bounding rectangle."""
    h, w = prob.shape
    x0, x1 = (np.clip([np.floor(corners[:, 0].min()), np.ceil(corners[:, 0].max())], 0, w - 1)).astype(int)
    y0, y1 = (np.clip([np.floor(corners[:, 1].min()), np.ceil(corners[:, 1].max())], 0, h - 1)).astype(int)
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillPoly(mask, [(corners - [x0, y0]).astype(np.int32)], 1)
    return float(cv2.mean(prob[y0:y1 + 1, x0:x1 + 1], mask)[0])


def unclip(rect: tuple, ratio: float) -> tuple:
    """A `cv2.minAreaRect` result grown by area * ratio / perimeter on every side."""
    centre, (w, h), angle = rect
    d = w * h * ratio / max(2.0 * (w + h), 1e-9)
    return centre, (w + 2 * d, h + 2 * d), angle


def db_boxes(prob: np.ndarray, det: DetectorInput) -> list[WordBox]:
    """[H, W] probability map of `det`'s input -> text-line boxes in image pixels, top to bottom."""
    mask = cv2.dilate((prob > THRESH).astype(np.uint8), DILATION)
    contours, _ = cv2.findContours(mask * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    map_h, map_w = prob.shape
    image_h, image_w = det.image_hw
    scale = np.array([image_w / map_w, image_h / map_h])
    boxes = []
    for contour in contours[:MAX_CANDIDATES]:
        rect = cv2.minAreaRect(contour)
        if min(rect[1]) < MIN_SIZE:
            continue
        score = box_score(prob, cv2.boxPoints(rect))
        if score < BOX_THRESH:
            continue
        grown = unclip(rect, UNCLIP_RATIO)
        if min(grown[1]) < MIN_SIZE + 2:
            continue
        corners = clockwise(cv2.boxPoints(grown).astype(np.float64))
        corners = np.clip(corners * scale, 0, [image_w, image_h])
        if min(np.linalg.norm(corners[1] - corners[0]), np.linalg.norm(corners[3] - corners[0])) <= 3:
            continue
        boxes.append(WordBox(polygon=corners, score=score))
    boxes.sort(key=lambda b: (round(b.polygon[0, 1] / 10), b.polygon[0, 0]))
    return boxes
