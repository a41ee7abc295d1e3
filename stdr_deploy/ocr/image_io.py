"""Turn any image file or array into the RGB uint8 array the pipeline reads.

Pillow does the decoding (PNG, JPEG, BMP, TIFF, WebP, ...) because it applies EXIF orientation
and keeps 16-bit samples; OpenCV is the fallback for files Pillow cannot open. Whatever the source
(gray, palette, RGBA, 16-bit, float), the result is HxWx3 uint8 RGB.
"""

from __future__ import annotations

import os
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadImageError, ImageReadError

# Below this many pixels on a side an array holds no legible text: such a request (a 1x1 image,
# or encoded file bytes sent as one row of pixels) is refused rather than answered with no words.
MIN_IMAGE_SIDE = 8


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read `path` as RGB uint8, upright as its EXIF orientation says."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImageReadError(name, exc.strerror or str(exc)) from None
    if not data:
        raise ImageReadError(name, "the file is empty")
    try:
        return _read_with_pillow(name)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        pillow_reason = str(exc) or type(exc).__name__
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageReadError(name, f"not an image format Pillow or OpenCV can decode ({pillow_reason})")
    if decoded.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if decoded.shape[2] == 4 else cv2.COLOR_BGR2RGB
        decoded = cv2.cvtColor(decoded, code)
    return to_rgb8(decoded)


def _read_with_pillow(name: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(name) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("P", "PA"):
                img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
            elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            return to_rgb8(np.asarray(img))


def to_rgb8(array: np.ndarray) -> np.ndarray:
    """Gray, gray+alpha, RGB or RGBA of any integer or float depth -> RGB uint8.

    Alpha is composited over white: transparent backgrounds usually carry dark text, and the
    colour stored under fully transparent pixels is arbitrary (often black).
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise BadImageError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise BadImageError(f"image has no pixels (shape {a.shape})")
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3:
        return np.ascontiguousarray(a)
    scaled = _to_unit_range(a)
    if scaled.ndim == 2:
        scaled = scaled[:, :, None]
    channels = scaled.shape[2]
    if channels in (2, 4):
        color, alpha = scaled[:, :, :-1], scaled[:, :, -1:]
        scaled = color * alpha + (1.0 - alpha)
    if scaled.shape[2] == 1:
        scaled = np.repeat(scaled, 3, axis=2)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def _to_unit_range(a: np.ndarray) -> np.ndarray:
    """Samples as float32 in [0, 1], judging the range from the dtype (and values for int32)."""
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if np.issubdtype(a.dtype, np.integer):
        # Pillow gives 16-bit gray PNG/TIFF as int32 ("I" mode); wider data is rescaled to fit.
        top = float(a.max()) if a.size else 0.0
        full = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        return np.clip(a.astype(np.float32) / full, 0.0, 1.0)
    if np.issubdtype(a.dtype, np.floating):
        top = float(np.nanmax(a)) if a.size else 0.0
        full = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
        return np.clip(np.nan_to_num(a.astype(np.float32)) / full, 0.0, 1.0)
    raise BadImageError(f"unsupported pixel type {a.dtype}")


def check_image(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """Validate the pipeline's input: RGB uint8 HxWx3, at least MIN_IMAGE_SIDE a side, at most
    `max_pixels` pixels."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise BadImageError(f"expected an RGB uint8 HxWx3 array, got {dtype} with shape {shape}")
    height, width = image.shape[:2]
    if height < 1 or width < 1:
        raise BadImageError(f"image has no pixels (shape {image.shape})")
    if min(height, width) < MIN_IMAGE_SIDE:
        raise BadImageError(
            f"image of {width}x{height} pixels is too small to hold text (each side needs at least {MIN_IMAGE_SIDE})"
        )
    if height * width > max_pixels:
        raise BadImageError(f"image of {width}x{height} = {height * width} pixels exceeds the limit of {max_pixels}")
    return image
