"""Turn any image file or array into the RGB uint8 array the pipeline reads.

Pillow does the decoding (PNG, JPEG, BMP, TIFF, WebP, ...) because it applies EXIF orientation
and keeps 16-bit samples. Whatever the source (gray, palette, RGBA, 16-bit, float), the result is
HxWx3 uint8 RGB.

The size a file declares in its header is checked before anything is decoded: a 100 KB PNG can
declare 30000x30000 pixels (a decompression bomb). There is no other decoder to fall back on:
OpenCV's `imdecode` reads no header on its own and takes no size limit per call.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadImageError, ImageReadError
from .settings import PipelineSettings

# Below this many pixels on a side an array holds no legible text: such a request (a 1x1 image,
# or encoded file bytes sent as one row of pixels) is refused rather than answered with no words.
MIN_IMAGE_SIDE = 8
MAX_IMAGE_PIXELS = PipelineSettings.max_image_pixels  # the pipeline's default limit


def read_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read `path` as RGB uint8, upright as its EXIF orientation says; files whose header declares
    more than `max_pixels` pixels are refused before decoding."""
    name = os.fspath(path)
    try:
        if os.stat(name).st_size == 0:
            raise ImageReadError(name, "the file is empty")
        with warnings.catch_warnings():
            # Pillow's own bomb warning is for its larger default limit; ours is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(name) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageReadError(name, _too_many(f"{width}x{height} = {width * height}", max_pixels))
                return _decode(img)
    except Image.DecompressionBombError as exc:  # declared size above Pillow's hard limit
        raise ImageReadError(name, _too_many(str(exc).split(" pixels)")[0].split("(")[-1], max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageReadError(name, "not an image format Pillow can decode") from None
    except (OSError, ValueError, SyntaxError) as exc:  # missing, unreadable, truncated or corrupt
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ImageReadError(name, reason) from None


def _too_many(declared: str, max_pixels: int) -> str:
    return f"its header declares {declared} pixels, over the limit of {max_pixels}; nothing was decoded"


def _decode(img: Image.Image) -> np.ndarray:
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
