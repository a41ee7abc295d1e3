"""Calibration images for int8 quantization, drawn in code so an export needs no data files.

Static quantization fixes each activation's int8 range from what the network sees on sample
inputs, so the samples should look like scene text: words of several sizes, colours and
angles on smooth (gradient) and busy (noise) backgrounds, at several image sizes. The same
seed always gives the same pixels, so the quantized model (and its cache key) is reproducible.
"""

from __future__ import annotations

import numpy as np

CALIBRATION_SEED = 0
CALIBRATION_COUNT = 10
SIDE_RANGE = (480, 1600)  # image sides, pixels
WORDS = (
    "OPEN", "exit", "Station", "2026", "coffee", "SALE", "Main St", "parking", "HOTEL", "push",
    "Tuesday", "No 42", "bakery", "STOP", "river", "Welcome", "info", "LIMIT 30", "garden", "Bus",
)


def calibration_images(count: int = CALIBRATION_COUNT, seed: int = CALIBRATION_SEED) -> list[np.ndarray]:
    """`count` RGB uint8 images (H x W x 3), each with 6-14 words on a gradient or noise background."""
    rng = np.random.default_rng(seed)
    return [_image(rng) for _ in range(count)]


def _image(rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    height, width = (int(v) for v in rng.integers(*SIDE_RANGE, size=2, endpoint=True))
    image = Image.fromarray(_background(rng, height, width))
    for _ in range(int(rng.integers(6, 15))):
        _paste_word(rng, image)
    return np.asarray(image)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A linear gradient between two colours, or coloured noise smoothed at a random scale."""
    if rng.random() < 0.5:
        start, end = rng.integers(0, 256, size=(2, 3))
        t = np.linspace(0.0, 1.0, width if rng.random() < 0.5 else height, dtype=np.float32)
        ramp = start + np.outer(t, end - start)
        pixels = np.broadcast_to(ramp[None] if len(t) == width else ramp[:, None], (height, width, 3))
    else:
        cell = int(rng.integers(4, 40))
        coarse = rng.integers(0, 256, size=(-(-height // cell), -(-width // cell), 3))
        pixels = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:height, :width]
        pixels = pixels + rng.normal(0.0, 12.0, size=pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _paste_word(rng: np.random.Generator, image) -> None:
    """One word in a random size and colour, rotated up to 30 degrees, at a random place."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(14, 96))
    font = ImageFont.load_default(size=size)
    word = WORDS[int(rng.integers(len(WORDS)))]
    left, top, right, bottom = font.getbbox(word)
    tile = Image.new("L", (right + size // 2, bottom + size // 2), 0)
    ImageDraw.Draw(tile).text((size // 4, size // 4), word, fill=255, font=font)
    mask = tile.rotate(float(rng.uniform(-30, 30)), expand=True, resample=Image.BILINEAR)
    x = int(rng.integers(0, max(1, image.width - mask.width)))
    y = int(rng.integers(0, max(1, image.height - mask.height)))
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    image.paste(Image.new("RGB", mask.size, colour), (x, y), mask)
