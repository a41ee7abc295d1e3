"""Box -> crop: cut each word out upright, then shape it into the recognizer's input.

A word box is an oriented rectangle. Its crop is the rectangle grown by a margin and mapped onto
an upright image with a perspective warp, so a rotated word reaches the recognizer level (EasyOCR
cuts the axis-aligned bounds of most rotated words instead). Axis-aligned boxes are snapped to
whole pixels first, which makes their warp an exact copy with no resampling blur.

Recognizer inputs:
- crnn-en (EasyOCR english_g2): gray, height 64, width from the aspect ratio (bilinear), then
  padded to a multiple of 64 by repeating the last column, x = (v / 255 - 0.5) / 0.5.
- parseq: RGB squeezed to 32x128 with Pillow's bicubic filter (as PARSeq's transform),
  x = (v / 255 - 0.5) / 0.5.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

CRNN_HEIGHT = 64
# The widest recognizer input the planner's profile admits (planner.CRNN_MAX_WIDTH): a crop
# wider than 16:1 is squeezed to it rather than refused by a TensorRT engine.
CRNN_MAX_WIDTH = 1024
PARSEQ_HW = (32, 128)


def grow(polygon: np.ndarray, along: float, across: float) -> np.ndarray:
    """Move each side of an oriented rectangle outwards by `along` (ends) / `across` (top, bottom)."""
    p = np.asarray(polygon, dtype=np.float64)
    u = p[1] - p[0]
    v = p[3] - p[0]
    u /= max(np.linalg.norm(u), 1e-9)
    v /= max(np.linalg.norm(v), 1e-9)
    du, dv = along * u, across * v
    return np.array([p[0] - du - dv, p[1] + du - dv, p[2] + du + dv, p[3] - du + dv])


def rectify(image: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Warp the quadrilateral `polygon` (clockwise from top-left, continuous pixel coordinates)
    onto an upright image as wide and tall as its top and left sides; outside pixels repeat the
    border."""
    p = np.asarray(polygon, dtype=np.float64)
    if p[0, 1] == p[1, 1] and p[0, 0] == p[3, 0]:  # axis-aligned: whole pixels, exact copy
        return _copy_window(image, math.floor(p[:, 0].min()), math.floor(p[:, 1].min()),
                            math.ceil(p[:, 0].max()), math.ceil(p[:, 1].max()))
    width = max(int(round(np.linalg.norm(p[1] - p[0]))), 1)
    height = max(int(round(np.linalg.norm(p[3] - p[0]))), 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    # cv2 addresses pixel centres: continuous coordinate c is index c - 0.5
    matrix = cv2.getPerspectiveTransform((p - 0.5).astype(np.float32), (target - 0.5).astype(np.float32))
    return cv2.warpPerspective(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _copy_window(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Pixels [y0, y1) x [x0, x1) (at least one of each), the border repeated outside the image:
    what a warp by whole pixels gives, as a plain copy of the window (a tenth of the time)."""
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    height, width = image.shape[:2]
    if 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height:
        return image[y0:y1, x0:x1].copy()
    rows = np.clip(np.arange(y0, y1), 0, height - 1)
    cols = np.clip(np.arange(x0, x1), 0, width - 1)
    return image[rows[:, None], cols]


def stretch_contrast(crop: np.ndarray, target: float) -> np.ndarray:
    """Spread a flat crop's 10th-90th percentile range over most of 0-255 (EasyOCR's retry idea).

    Contrast is (p90 - p10) / (p90 + p10); crops already above `target` are returned unchanged.
    """
    low, high = np.percentile(crop, (10, 90))
    if (high - low) / max(10.0, high + low) >= target:
        return crop
    gain = 200.0 / max(10.0, high - low)
    return np.clip((crop.astype(np.float32) - low) * gain + 25.0, 0, 255).astype(np.uint8)


def principal_gray(crop: np.ndarray) -> np.ndarray:
    """Gray image along the crop's main colour axis (its first principal component).

    Text and background of equal luminance (lavender on green) vanish in ordinary gray; they
    still differ along the direction in RGB space where the crop's colours vary most.
    """
    if crop.ndim == 2:
        return crop
    pixels = crop.reshape(-1, 3).astype(np.float32)
    centred = pixels - pixels.mean(axis=0)
    _, _, axes = np.linalg.svd(centred[:: max(1, len(centred) // 4096)], full_matrices=False)
    axis = axes[0] if axes[0].sum() >= 0 else -axes[0]
    projected = centred @ axis
    low, high = float(projected.min()), float(projected.max())
    scaled = (projected - low) * (255.0 / max(high - low, 1e-6))
    return scaled.reshape(crop.shape[:2]).astype(np.uint8)


def to_gray(crop: np.ndarray) -> np.ndarray:
    return crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)


def crnn_width(height: int, width: int) -> int:
    """Model input width of a crop: its aspect ratio rounded up to whole multiples of 64."""
    return min(math.ceil(max(width / height, 1.0)) * CRNN_HEIGHT, CRNN_MAX_WIDTH)


def crnn_input(crop: np.ndarray) -> np.ndarray:
    """RGB or gray uint8 crop -> float32 [1, 64, W], W = `crnn_width`, last column repeated."""
    gray = to_gray(crop)
    height, width = gray.shape
    scaled_w = min(max(int(CRNN_HEIGHT * width / height), 1), CRNN_MAX_WIDTH)
    resized = cv2.resize(gray, (scaled_w, CRNN_HEIGHT), interpolation=cv2.INTER_LINEAR)
    total = crnn_width(height, width)
    padded = np.concatenate([resized, np.repeat(resized[:, -1:], total - resized.shape[1], axis=1)], axis=1)
    return ((padded.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5))[None]


def parseq_input(crop: np.ndarray) -> np.ndarray:
    """RGB (or gray) uint8 crop -> float32 [3, 32, 128]."""
    rgb = crop if crop.ndim == 3 else cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB)
    resized = np.asarray(Image.fromarray(rgb).resize(PARSEQ_HW[::-1], Image.BICUBIC), dtype=np.float32)
    return ((resized / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)


def pad_width(item: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """Pad a [C, H, W] recognizer input to the smallest of `widths` that holds it, repeating its
    last column (as EasyOCR pads the crops of one batch to the widest); wider items stay as they are.

    Crops then come in a few shapes, so those of one image, and of concurrent requests in a
    server's dynamic batcher, share recognizer calls.
    """
    width = item.shape[-1]
    target = next((w for w in sorted(widths) if w >= width), width)
    if target == width:
        return item
    return np.concatenate([item, np.repeat(item[..., -1:], target - width, axis=-1)], axis=-1)


def batches(shapes: list[tuple[int, ...]], limit: int) -> list[list[int]]:
    """Group item indices so each group shares one input shape and has at most `limit` items."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(index)
    return [members[i:i + limit] for members in groups.values() for i in range(0, len(members), limit)]
