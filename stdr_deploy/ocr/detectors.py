"""What the pipeline must know about each detector family: its input, how it finds boxes in its
output, how to crop them.

- craft: `detector_input` (resize, pad; the graph normalises) and the region/affinity grouping
  into word boxes of `boxes.word_boxes` (tuned by `PipelineSettings`), cropped with a margin
  around each tight box.
- ppocr-det (PP-OCRv4 DBNet): `ppocr.det_input` + `db_postprocess.db_boxes`, text *lines*
  already grown by the unclip step, so they are cropped as they are; a reading with spaces is
  split into words afterwards (`split_words`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .boxes import WordBox, word_boxes
from .db_postprocess import db_boxes
from .detector_input import DetectorInput, detector_input
from .ppocr import det_input
from .settings import PipelineSettings


def craft_input(image: np.ndarray, s: PipelineSettings) -> DetectorInput:
    return detector_input(image, s.canvas_size, s.mag_ratio, s.pad_to)


def craft_boxes(score_map: np.ndarray, det: DetectorInput, s: PipelineSettings) -> list[WordBox]:
    return word_boxes(
        score_map, det, text_threshold=s.text_threshold, link_threshold=s.link_threshold,
        low_text=s.low_text, box_fit=s.box_fit, box_level=s.box_level,
        straight_below_deg=s.straight_below_deg, merge_gap=s.merge_gap, min_size=s.min_size,
        bridge_floor=s.bridge_floor,
    )


@dataclass(frozen=True)
class DetectorFamily:
    name: str
    prepare: Callable[[np.ndarray, PipelineSettings], DetectorInput]  # RGB image -> the detector's input
    boxes: Callable[[np.ndarray, DetectorInput, PipelineSettings], list[WordBox]]  # its output -> boxes
    crop_margin: bool  # grow boxes by the settings' crop margins before cropping
    lines: bool  # a box may hold several words


DETECTORS: dict[str, DetectorFamily] = {
    "craft": DetectorFamily("craft", craft_input, craft_boxes, crop_margin=True, lines=False),
    "ppocr-det": DetectorFamily(
        "ppocr-det", lambda image, _: det_input(image), lambda prob, det, _: db_boxes(prob[0, 0], det),
        crop_margin=False, lines=True,
    ),
}


def get_detector(name: str) -> DetectorFamily:
    try:
        return DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector family {name!r}; known: {', '.join(DETECTORS)}") from None


def split_words(polygon: np.ndarray, text: str) -> list[tuple[str, np.ndarray, slice]]:
    """A box read as several space-separated words -> (word, its box, its characters in `text`)
    per word, dividing the box along its length in proportion to the characters (spaces
    included) before and within each word."""
    words = []
    start = 0
    total = max(len(text), 1)
    p = np.asarray(polygon, dtype=np.float64)
    for piece in text.split(" "):
        if piece:
            f0, f1 = start / total, (start + len(piece)) / total
            top0, top1 = p[0] + f0 * (p[1] - p[0]), p[0] + f1 * (p[1] - p[0])
            bottom0, bottom1 = p[3] + f0 * (p[2] - p[3]), p[3] + f1 * (p[2] - p[3])
            words.append((piece, np.array([top0, top1, bottom1, bottom0]), slice(start, start + len(piece))))
        start += len(piece) + 1
    return words
