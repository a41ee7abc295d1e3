"""The smoke image: known words drawn in code, so no data file is needed.

The deployment smoke test reads it through the served pipeline; the fp16 and int8 exports must
read it with the same words as fp32.
"""

from __future__ import annotations

import numpy as np

# Short, distinct words, no ambiguous glyphs (0/O, 1/l/I).
SMOKE_WORDS = ("STDR", "deploy", "Triton", "2026")


def smoke_image(words: tuple[str, ...] = SMOKE_WORDS, size: int = 44) -> np.ndarray:
    """RGB image with `words` drawn one per row in Pillow's bundled font (no font files needed)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    width, row = 480, int(size * 2.2)
    image = Image.new("RGB", (width, row * len(words) + size), (245, 243, 236))
    draw = ImageDraw.Draw(image)
    for i, word in enumerate(words):
        draw.text((40 + 30 * (i % 2), size // 2 + i * row), word, fill=(20, 24, 32), font=font)
    return np.asarray(image)
