"""What the pipeline must know about each detector family: how it finds boxes, how to crop them.

- craft: `OcrPipeline`'s own region/affinity grouping into word boxes (tuned by
  `PipelineSettings`), cropped with a margin around each tight box.
- ppocr-det (PP-OCRv4 DBNet): `ppocr.det_input` + `db_postprocess.db_boxes`, text *lines*
  already grown by the unclip step, so they are cropped as they are; a reading with spaces is
  split into words afterwards (`split_words`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .boxes import WordBox
from .db_postprocess import db_boxes
from .ppocr import det_input

Infer = Callable[[dict], dict]


def ppocr_boxes(infer: Infer, image: np.ndarray) -> list[WordBox]:
    det = det_input(image)
    prob = infer({"input": det.tensor})["output"]
    return db_boxes(prob[0, 0], det)


@dataclass(frozen=True)
class DetectorFamily:
    name: str
    detect: Callable[[Infer, np.ndarray], list[WordBox]] | None  # None: CRAFT, in OcrPipeline.detect
    crop_margin: bool  # grow boxes by the settings' crop margins before cropping
    lines: bool  # a box may hold several words


DETECTORS: dict[str, DetectorFamily] = {
    "craft": DetectorFamily("craft", None, crop_margin=True, lines=False),
    "ppocr-det": DetectorFamily("ppocr-det", ppocr_boxes, crop_margin=False, lines=True),
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
