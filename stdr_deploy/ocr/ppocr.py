"""PP-OCRv4's pre-processing and CTC decoding, as RapidOCR 1.4.4 does them (numbers, not its code).

PaddleOCR models read OpenCV's BGR order, so RGB crops/images are flipped first.

- Recognizer: the crop resized to height 48 keeping its aspect ratio (width ceil(48 w / h),
  bilinear), x = (v / 255 - 0.5) / 0.5, zero-padded on the right. RapidOCR pads each batch to
  its widest crop (at least 320); we pad to the next of a few width buckets (`REC_WIDTHS`) so
  crops of one bucket batch together, in-process and in Triton alike, and ONNX Runtime's CUDA
  EP sees a few fixed shapes (one session each) instead of re-planning for every new width.
- Its output is already a probability per class: argmax per step, repeats merged, blank
  (class 0) dropped; class i in 1..6623 is `charset[i - 1]`, the last class is a space. Each
  character's confidence is the probability of the first step of its run and the word's is
  their mean (RapidOCR's `text_score`, which it filters at 0.5).
- Detector: long side above 2000 shrunk to 2000 (RapidOCR's `max_side_len`), then the short side
  scaled up to 736 if smaller (`limit_type` "min"), each side rounded to a multiple of 32.
  Unlike RapidOCR, that upscale stops where the long side would pass 2000, so the input never
  exceeds ~2000 px a side (a 2000x100 strip would otherwise become 14720x736); RapidOCR pads
  such flat images first (its letterbox for h <= 30 or w / h > 8), which is not applied here.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .decoders import Decoded
from .detector_input import DetectorInput

REC_HEIGHT = 48
# Input widths: 320 is RapidOCR's rec_img_shape width (narrower inputs are padded to it), 2048
# the planner's profile max (wider crops, over ~42:1, are squeezed to it). Doubling steps keep a
# GPU instance at 4 widths x its batch sizes of sessions; padding costs CPU plans < 10 % of
# the recognizer's time (benchmarks/results/ppocr-width-buckets/).
REC_WIDTHS = (320, 640, 1280, 2048)
REC_MIN_WIDTH, REC_MAX_WIDTH = REC_WIDTHS[0], REC_WIDTHS[-1]
DET_MAX_SIDE = 2000
DET_LIMIT_SIDE = 736
DET_MULTIPLE = 32


def to_bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)


def rec_width(height: int, width: int) -> int:
    """Model input width of a crop: its resized width rounded up to the next bucket."""
    resized = math.ceil(REC_HEIGHT * width / height)
    return next((bucket for bucket in REC_WIDTHS if bucket >= resized), REC_MAX_WIDTH)


def rec_input(crop: np.ndarray, width: int | None = None) -> np.ndarray:
    """RGB or gray uint8 crop -> float32 [3, 48, W], W = `width` or `rec_width`, zeros on the right."""
    height, crop_w = crop.shape[:2]
    total = width or rec_width(height, crop_w)
    resized_w = max(min(math.ceil(REC_HEIGHT * crop_w / height), total), 1)
    resized = cv2.resize(to_bgr(crop), (resized_w, REC_HEIGHT), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((3, REC_HEIGHT, total), dtype=np.float32)
    out[:, :, :resized_w] = (resized.astype(np.float32).transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return out


def ctc_probabilities(probs: np.ndarray, charset: str) -> Decoded:
    """[T, C] class probabilities of one crop; class 0 blank, 1..len(charset) the charset, C-1 space."""
    best = probs.argmax(axis=-1)
    best_p = probs.max(axis=-1)
    keep = best != 0
    keep[1:] &= best[1:] != best[:-1]
    table = charset + " "
    chars = [table[i - 1] for i in best[keep].tolist()]
    scores = tuple(float(p) for p in best_p[keep])
    return Decoded(text="".join(chars), char_scores=scores, score=float(np.mean(scores)) if scores else 0.0)


def _round32(value: float) -> int:
    return int(round(value / DET_MULTIPLE) * DET_MULTIPLE)


def _shrunk(height: int, width: int) -> tuple[int, int]:
    """RapidOCR's first resize: a long side above 2000 scaled to it, sides rounded to 32."""
    if max(height, width) <= DET_MAX_SIDE:
        return height, width
    ratio = DET_MAX_SIDE / max(height, width)
    return max(_round32(int(height * ratio)), DET_MULTIPLE), max(_round32(int(width * ratio)), DET_MULTIPLE)


def det_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of the detector input for an image of this size (see the module doc)."""
    height, width = _shrunk(height, width)
    if min(height, width) < DET_LIMIT_SIDE:
        ratio = min(DET_LIMIT_SIDE / min(height, width), max(DET_MAX_SIDE / max(height, width), 1.0))
        height, width = int(height * ratio), int(width * ratio)
    return max(_round32(height), DET_MULTIPLE), max(_round32(width), DET_MULTIPLE)


def det_input(image: np.ndarray) -> DetectorInput:
    """RGB uint8 HxWx3 -> float32 [1, 3, H', W'] (no padding: the whole input is the image)."""
    height, width = image.shape[:2]
    th, tw = det_size(height, width)
    if max(height, width) > DET_MAX_SIDE:  # RapidOCR resizes twice; so do we, for the same pixels
        sh, sw = _shrunk(height, width)
        image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_LINEAR)
    resized = cv2.resize(to_bgr(image), (tw, th), interpolation=cv2.INTER_LINEAR)
    tensor = ((resized.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
    return DetectorInput(tensor=np.ascontiguousarray(tensor), resized_hw=(th, tw), image_hw=(height, width))
