"""Draw read words on their image: each polygon outlined, its text on a label above it."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .pipeline import Word

BOX_COLOUR = (255, 40, 40)
LABEL_BACKGROUND = (255, 255, 255)
LABEL_TEXT = (0, 0, 0)


def annotate(image: np.ndarray, words: list[Word]) -> np.ndarray:
    """A copy of the RGB image with every word's polygon and text drawn on it."""
    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    scale = max(canvas.size) / 1000
    line = max(1, round(2 * scale))
    font = ImageFont.load_default(size=max(10, round(14 * scale)))
    for word in words:
        points = [tuple(p) for p in word.polygon]
        draw.polygon(points, outline=BOX_COLOUR, width=line)
        left = min(x for x, _ in points)
        top = min(y for _, y in points)
        label = f"{word.text} {word.score:.2f}"
        x0, y0, x1, y1 = draw.textbbox((left, top), label, font=font, anchor="lb")
        draw.rectangle((x0 - line, y0 - line, x1 + line, y1 + line), fill=LABEL_BACKGROUND)
        draw.text((left, top), label, font=font, fill=LABEL_TEXT, anchor="lb")
    return np.asarray(canvas)
