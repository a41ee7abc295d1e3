"""Detector input: the image resized to the canvas and padded to a multiple of 32, as uint8.

The steps and their order are EasyOCR's (`resize_aspect_ratio` + `normalizeMeanVariance`), which
CRAFT's weights were tuned with: resize the uint8 image with bilinear interpolation so the long
side is `mag_ratio` times itself but at most `canvas_size`, paste it at the top-left of a black
canvas whose sides are multiples of 32 (the network downsamples 5 times), then subtract the
ImageNet mean and divide by its std, both scaled to 0-255. The last step runs inside the
exported CRAFT graph (its input is uint8): the tensor handed to the detector is a quarter of the
float32 one's bytes, and the normalisation runs where the detector runs (on the GPU there).
`normalised` is that step in NumPy, for the graph's tests and the torch runtime's reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MEAN_255 = np.array([0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0], dtype=np.float32)
STD_255 = np.array([0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0], dtype=np.float32)
STRIDE = 32


@dataclass(frozen=True)
class DetectorInput:
    """The network input and how to map score-map pixels back onto the original image."""

    tensor: np.ndarray  # [1, 3, Hp, Wp]: uint8 pixels for CRAFT, float32 for ppocr-det
    resized_hw: tuple[int, int]  # image size after the resize, before padding
    image_hw: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Original pixels per resized pixel, per axis (exact, unlike one rounded ratio)."""
        return (self.image_hw[1] / self.resized_hw[1], self.image_hw[0] / self.resized_hw[0])


def resized_size(height: int, width: int, canvas_size: int, mag_ratio: float) -> tuple[int, int]:
    """(height, width) after scaling the long side to `mag_ratio` x itself, capped at the canvas."""
    long_side = max(height, width)
    ratio = min(mag_ratio * long_side, canvas_size) / long_side
    return max(int(height * ratio), 1), max(int(width * ratio), 1)


def padded_size(height: int, width: int, pad_to: int = STRIDE, canvas_size: int | None = None) -> tuple[int, int]:
    """Sides rounded up to multiples of `pad_to` (itself a multiple of STRIDE), never past the
    canvas rounded up to STRIDE: the largest shape the plan's profiles admit."""
    cap = -(-canvas_size // STRIDE) * STRIDE if canvas_size else None

    def side(n: int) -> int:
        padded = -(-n // pad_to) * pad_to
        return max(min(padded, cap), -(-n // STRIDE) * STRIDE) if cap else padded

    return side(height), side(width)


def detector_input(image: np.ndarray, canvas_size: int, mag_ratio: float, pad_to: int = STRIDE) -> DetectorInput:
    """RGB uint8 HxWx3 -> uint8 [1, 3, Hp, Wp] whose `normalised` form is bit-identical to
    EasyOCR's tensor at `pad_to` 32.

    A larger `pad_to` gives the detector a few fixed shapes (see PipelineSettings.pad_to); the
    extra padding is black, as EasyOCR's is.
    """
    height, width = image.shape[:2]
    th, tw = resized_size(height, width, canvas_size, mag_ratio)
    resized = cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
    ph, pw = padded_size(th, tw, pad_to, canvas_size)
    tensor = np.zeros((1, 3, ph, pw), dtype=np.uint8)
    cv2.split(resized, [tensor[0, c, :th, :tw] for c in range(3)])  # straight into the planes (5x numpy's transpose)
    return DetectorInput(tensor=tensor, resized_hw=(th, tw), image_hw=(height, width))


def normalised(pixels: np.ndarray) -> np.ndarray:
    """uint8 [N, 3, H, W] -> float32 (pixel - mean) / std, per channel, in EasyOCR's float32 steps."""
    return (pixels.astype(np.float32) - MEAN_255.reshape(1, 3, 1, 1)) / STD_255.reshape(1, 3, 1, 1)
