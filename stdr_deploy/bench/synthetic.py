"""Synthetic check sets of scene text, drawn by seed (numpy + Pillow, DejaVu fonts from matplotlib).

Three kinds of set, all in the layout of `testdata/scenes_A` (gt.json beside PNG images, tight ink
polygons, pixel-edge coordinates: an ink pixel at column 10 gives x0 = 10.0, one at column 20
gives x1 = 21.0; ink = coverage >= 25 %):

- `scenes`: the recipe of scenes_A: isolated words, each at least 1.5x its height from every
  other, heights 16 px to ~12 % of the image, 1 word in 8 rotated 2-8 degrees.
- `phrases`: lines of 2-4 words, scored per word, heights from 12 px, word spaces 0.5-1x the
  font's own (signs set words tight): does the pipeline keep words apart that a real space
  separates, and find small ones?
- `tilt`: words rotated 8-30 degrees, and perspective-warped signs (a plate and its word seen
  obliquely): what real photos do to text lines. The ground truth of a warped word is the
  warped ink rectangle.

Half the images of phrases and tilt are softened like a photo (Gaussian blur sigma 0.5-1.2 px and
noise), which is what makes CRAFT's affinity and region scores run across word spaces.

Image sizes are the reference benchmark's four (as in scenes_A); phrases and tilt leave out the
largest. The same seed always gives the same images and gt.json.

    python -m stdr_deploy.bench.synthetic OUT_DIR [--kind scenes|phrases|tilt] [--seed N] [--count N]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("scenes", "phrases", "tilt")
SIZES_HW = ((472, 338), (3280, 2625), (512, 413), (1600, 1200))
# phrases and tilt leave out the 3280x2625 size: a CRAFT pass at the 2560 canvas costs ~15 s of CPU
# each, and these sets test what happens to words, not to large images (scenes has all four)
SMALL_SIZES_HW = ((472, 338), (512, 413), (1600, 1200))
FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSansMono",
         "DejaVuSansMono-Bold", "DejaVuSans-Oblique", "DejaVuSerif-Italic")
INK = 64  # coverage >= 25 % of 255 is ink
SPACING = 1.5  # heights kept free around every word (line) in every direction
WORDS = (
    "open closed street market coffee bakery station platform north south east west garden museum "
    "library parking entrance exit ticket office hotel river bridge tower square central public "
    "private danger warning slow stop school police service bus train metro airport gate floor "
    "level room hall city park road avenue lane drive welcome thank please push pull sale fresh "
    "daily menu lunch dinner bread cheese fruit water juice tea milk sugar salt rice noodle soup "
    "pizza grill bar cafe shop store mall bank post clinic pharmacy doctor dental fitness yoga "
    "music theatre cinema gallery studio design print repair laundry books games toys shoes "
    "fashion beauty salon garage taxi cycle walk only free new old best great little big happy "
    "sunday monday friday summer winter spring autumn morning night open24 center village harbour"
).split()
CAPS_WORDS = ("EXIT", "STOP", "SALE", "OPEN", "CAUTION", "DANGER", "PARKING", "HOTEL", "TAXI", "POLICE",
              "ENTRANCE", "STAGE", "NOTICE", "OFFICE", "PHARMACY", "TICKETS", "LIFT", "TOILET")


@dataclass(frozen=True)
class Placed:
    """One drawn word: its text and its ink polygon (4x2, clockwise from the word's top-left)."""

    text: str
    polygon: np.ndarray
    height: int
    angle: float
    font: str
    font_size: int
    plate: bool

    def to_json(self) -> dict:
        p = [[round(float(x), 2), round(float(y), 2)] for x, y in self.polygon]
        xs, ys = [q[0] for q in p], [q[1] for q in p]
        return {"text": self.text, "polygon": p, "bbox": [min(xs), min(ys), max(xs), max(ys)],
                "height": self.height, "angle": round(self.angle, 2), "font": self.font,
                "font_size": self.font_size, "plate": self.plate}


def font_path(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf"


def make_set(out: Path, kind: str, seed: int, count: int = 8) -> dict:
    """Draw `count` images of `kind` into `out` with gt.json; returns the gt document."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for index in range(count):
        sizes = SIZES_HW if kind == "scenes" else SMALL_SIZES_HW
        height, width = sizes[index % len(sizes)]
        image, background, words = draw_image(rng, kind, height, width)
        name = f"img{index:02d}.png"
        Image.fromarray(image).save(out / name)
        words.sort(key=lambda w: (float(w.polygon[:, 1].min()), float(w.polygon[:, 0].min())))
        images.append({"file": name, "height": height, "width": width, "background": background,
                       "words": [w.to_json() for w in words]})
    gt = {"set": f"{kind}-{seed}", "generator": "stdr_deploy.bench.synthetic", "kind": kind, "seed": seed,
          "images": images}
    (out / "gt.json").write_text(json.dumps(gt, indent=1))
    return gt


def draw_image(rng: np.random.Generator, kind: str, height: int, width: int) -> tuple[np.ndarray, str, list[Placed]]:
    canvas, background = draw_background(rng, height, width)
    taken: list[tuple[float, float, float, float]] = []  # keep-out boxes of the words drawn so far
    words: list[Placed] = []
    target = int(rng.integers(6, 11)) if kind != "phrases" else int(rng.integers(4, 8))
    for _ in range(target * 25):
        if len(words) >= target:
            break
        words.extend(try_place(rng, kind, canvas, taken))
    if kind != "scenes" and rng.random() < 0.5:  # a photo's softness: defocus and sensor noise
        sigma = rng.uniform(0.5, 1.2)
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma) + rng.normal(0, 3, size=canvas.shape).astype(np.float32)
        background += f"+blur{sigma:.1f}"
    return np.clip(canvas, 0, 255).astype(np.uint8), background, words


def draw_background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, str]:
    base = rng.uniform(0, 255, size=(2, 3))
    kind = str(rng.choice(["gradient", "radial", "texture", "bokeh"]))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        t = (xs * math.cos(angle) + ys * math.sin(angle))
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    elif kind == "radial":
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        t = np.hypot(xs - cx, ys - cy)
        t /= max(float(t.max()), 1.0)
    else:
        t = np.zeros((height, width), np.float32)
    canvas = base[0] * (1 - t[..., None]) + base[1] * t[..., None]
    if kind == "texture":
        small = rng.normal(0, 40, size=(max(height // 16, 2), max(width // 16, 2), 3)).astype(np.float32)
        canvas = canvas + cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        canvas = canvas + rng.normal(0, 6, size=canvas.shape)
    elif kind == "bokeh":
        layer = np.zeros((height, width, 3), np.float32)
        for _ in range(int(rng.integers(10, 30))):
            r = int(rng.uniform(0.02, 0.1) * min(height, width))
            cv2.circle(layer, (int(rng.uniform(0, width)), int(rng.uniform(0, height))), r,
                       tuple(float(v) for v in rng.uniform(-80, 80, 3)), -1)
        k = max(3, (min(height, width) // 40) | 1)
        canvas = canvas + cv2.GaussianBlur(layer, (k, k), 0)
    if rng.random() < 0.4:
        kind += "+clutter"
        for _ in range(int(rng.integers(5, 15))):
            colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
            p = rng.uniform(0, 1, 4) * [width, height, width, height]
            cv2.line(canvas, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour,
                     int(rng.integers(1, 4)), cv2.LINE_AA)
    return canvas.astype(np.float32), kind


def pick_word(rng: np.random.Generator) -> str:
    roll = rng.random()
    word = str(rng.choice(WORDS))
    if roll < 0.15:
        return str(rng.choice(CAPS_WORDS))
    if roll < 0.3:
        return word.capitalize()
    if roll < 0.4:
        return word.upper()
    if roll < 0.48:
        return str(rng.choice([f"{rng.integers(1900, 2030)}", f"${rng.integers(1, 99)}.{rng.integers(10, 99)}",
                               f"{rng.integers(1, 99)}%", f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}",
                               f"No.{rng.integers(1, 99)}", f"B{rng.integers(1, 9)}-{rng.integers(10, 99)}"]))
    if roll < 0.54:
        return word + str(rng.choice(list("!.:?")))
    return word


def render_mask(text: str, font: ImageFont.FreeTypeFont) -> np.ndarray:
    """Coverage mask (uint8) of `text`, with the font's full box and a margin."""
    left, top, right, bottom = font.getbbox(text)
    pad = max(4, font.size // 4)
    image = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=font, fill=255)
    return np.asarray(image)


def ink_rect(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the ink, pixel-edge coordinates (x1, y1 exclusive)."""
    ys, xs = np.nonzero(mask >= INK)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def try_place(rng: np.random.Generator, kind: str, canvas: np.ndarray,
              taken: list[tuple[float, float, float, float]]) -> list[Placed]:
    """Draw one word (or one phrase) at a free random place; [] when it does not fit."""
    image_h, image_w = canvas.shape[:2]
    low = 12 if kind == "phrases" else 16
    high = max(low + 1, 0.12 * image_h if kind != "phrases" else 0.08 * image_h)
    text_h = float(np.exp(rng.uniform(math.log(low), math.log(high))))
    font_name = str(rng.choice(FONTS))
    font = ImageFont.truetype(str(font_path(font_name)), max(8, int(round(text_h * 1.35))))
    texts = [pick_word(rng) for _ in range(int(rng.integers(2, 5)))] if kind == "phrases" else [pick_word(rng)]
    line = " ".join(texts)
    # each word drawn on its own at a whole-pixel offset, so its ink rectangle is exact
    left, top, _, _ = font.getbbox(line)
    mask = render_mask(line, font) * 0
    rects, start = [], 0
    squeeze = rng.uniform(0, 0.5) if kind == "phrases" else 0.0
    for text in texts:
        start = line.index(text, start)
        own = render_mask(text, font)
        rect = ink_rect(own)
        if rect is None:
            return []
        own_left, own_top, _, _ = font.getbbox(text)
        # signs often set words closer than the font's own space: up to half of it is taken away
        tight = squeeze * font.getlength(" ") * line[:start].count(" ")
        dx, dy = int(round(font.getlength(line[:start]) - tight + own_left - left)), own_top - top
        start += len(text)
        height, width = min(own.shape[0], mask.shape[0] - dy), min(own.shape[1], mask.shape[1] - dx)
        np.maximum(mask[dy:dy + height, dx:dx + width], own[:height, :width], out=mask[dy:dy + height, dx:dx + width])
        rects.append((rect[0] + dx, rect[1] + dy, rect[2] + dx, rect[3] + dy))
    line_rect = ink_rect(mask)
    if line_rect is None:
        return []
    ink_h = line_rect[3] - line_rect[1]
    angle, warp, plate = 0.0, None, False
    if kind == "tilt":
        angle = float(rng.uniform(8, 30) * rng.choice([-1, 1]))
        plate = rng.random() < 0.5
        if plate:
            warp = rng.uniform(0.1, 0.3) * rng.choice([-1, 1])  # the sign turned about its vertical axis
    elif kind == "scenes" and rng.random() < 1 / 8:
        angle = float(rng.uniform(2, 8) * rng.choice([-1, 1]))
    elif kind == "scenes":
        plate = rng.random() < 0.15
    # the line's ink rectangle centred at the origin, then turned / warped, then moved into place
    x0, y0, x1, y1 = line_rect
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2  # whole pixels: an upright word is copied, not resampled
    plate_margin = 0.4 * ink_h if plate else 0.0
    homography = local_homography(angle, warp, (x1 - x0) + 2 * plate_margin, (y1 - y0) + 2 * plate_margin)
    outline = transform(homography, np.array([[x0 - plate_margin - cx, y0 - plate_margin - cy],
                                              [x1 + plate_margin - cx, y0 - plate_margin - cy],
                                              [x1 + plate_margin - cx, y1 + plate_margin - cy],
                                              [x0 - plate_margin - cx, y1 + plate_margin - cy]]))
    span_x, span_y = float(np.ptp(outline[:, 0])), float(np.ptp(outline[:, 1]))
    keep = SPACING * ink_h
    if span_x + 2 > image_w or span_y + 2 > image_h:
        return []
    px = int(rng.uniform(-outline[:, 0].min() + 1, image_w - outline[:, 0].max() - 1))
    py = int(rng.uniform(-outline[:, 1].min() + 1, image_h - outline[:, 1].max() - 1))
    box = (px + outline[:, 0].min(), py + outline[:, 1].min(), px + outline[:, 0].max(), py + outline[:, 1].max())
    if any(box[0] - keep < t[2] and t[0] < box[2] + keep and box[1] - keep < t[3] and t[1] < box[3] + keep
           for t in taken):
        return []
    taken.append(box)
    full = np.array([[1, 0, px], [0, 1, py], [0, 0, 1]], dtype=np.float64) @ homography \
        @ np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    background = canvas[int(max(box[1], 0)):int(box[3]) + 1, int(max(box[0], 0)):int(box[2]) + 1]
    bg = background.reshape(-1, 3).mean(axis=0)
    if plate:
        plate_colour = rng.uniform(0, 255, 3)
        corners = np.array([[x0 - plate_margin, y0 - plate_margin], [x1 + plate_margin, y0 - plate_margin],
                            [x1 + plate_margin, y1 + plate_margin], [x0 - plate_margin, y1 + plate_margin]])
        big = np.zeros((int(mask.shape[0] + 2 * plate_margin + 4), int(mask.shape[1] + 2 * plate_margin + 4)), np.uint8)
        shift = np.array([plate_margin + 2, plate_margin + 2])
        cv2.fillPoly(big, [np.round((corners + shift) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        composite(canvas, big, full @ np.array([[1, 0, -shift[0]], [0, 1, -shift[1]], [0, 0, 1]]), plate_colour)
        bg = plate_colour
    colour = text_colour(rng, bg)
    composite(canvas, mask, full, colour)
    words = []
    for text, (rx0, ry0, rx1, ry1) in zip(texts, rects):
        corners = np.array([[rx0, ry0], [rx1, ry0], [rx1, ry1], [rx0, ry1]], dtype=np.float64)
        words.append(Placed(text=text, polygon=transform(full, corners), height=int(ry1 - ry0),
                            angle=angle, font=font_name, font_size=font.size, plate=bool(plate)))
    return words


def local_homography(angle: float, warp: float | None, width: float, height: float) -> np.ndarray:
    """Rotation by `angle` degrees (positive = counter-clockwise on screen) after an optional
    perspective turn of the plane about its vertical axis (`warp`: fraction the far side shrinks)."""
    rotation = cv2.getRotationMatrix2D((0, 0), angle, 1.0)
    h = np.vstack([rotation, [0, 0, 1]])
    if warp:
        half_w, half_h = width / 2, height / 2
        src = np.float32([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
        s = 1 - abs(warp)
        dst = src.copy()
        side = [1, 2] if warp > 0 else [0, 3]
        dst[side, 1] *= s
        h = h @ cv2.getPerspectiveTransform(src, dst).astype(np.float64)
    return h


def transform(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.hstack([points, np.ones((len(points), 1))]) @ h.T
    return p[:, :2] / p[:, 2:]


def composite(canvas: np.ndarray, mask: np.ndarray, h: np.ndarray, colour: np.ndarray) -> None:
    """Blend `colour` into `canvas` through `mask` mapped by `h` (continuous coordinates)."""
    height, width = canvas.shape[:2]
    corners = transform(h, np.array([[0, 0], [mask.shape[1], 0], [mask.shape[1], mask.shape[0]], [0, mask.shape[0]]]))
    x0, y0 = max(int(math.floor(corners[:, 0].min())), 0), max(int(math.floor(corners[:, 1].min())), 0)
    x1, y1 = min(int(math.ceil(corners[:, 0].max())), width), min(int(math.ceil(corners[:, 1].max())), height)
    if x1 <= x0 or y1 <= y0:
        return
    # cv2 addresses pixel centres: continuous c is index c - 0.5 on both sides
    to_window = np.array([[1, 0, -x0 - 0.5], [0, 1, -y0 - 0.5], [0, 0, 1]]) @ h @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    if np.allclose(h[2], [0, 0, 1]) and np.allclose(h[:2, :2], np.eye(2)):
        alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
        tx, ty = int(round(h[0, 2])) - x0, int(round(h[1, 2])) - y0
        src = mask[max(0, -ty):, max(0, -tx):]
        alpha[max(ty, 0):max(ty, 0) + src.shape[0], max(tx, 0):max(tx, 0) + src.shape[1]] = \
            src[:y1 - y0 - max(ty, 0), :x1 - x0 - max(tx, 0)] / 255.0
    else:
        alpha = cv2.warpPerspective(mask.astype(np.float32) / 255.0, to_window, (x1 - x0, y1 - y0),
                                    flags=cv2.INTER_LINEAR, borderValue=0.0)
    window = canvas[y0:y1, x0:x1]
    window += (np.asarray(colour, np.float32) - window) * alpha[..., None]


def text_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A colour whose luminance is far from the background's."""
    luma = float(background @ [0.299, 0.587, 0.114])
    target = rng.uniform(0, max(luma - 90, 20)) if luma > 127 else rng.uniform(min(luma + 90, 235), 255)
    tint = rng.uniform(-30, 30, 3)
    return np.clip(target + tint, 0, 255)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--kind", choices=KINDS, default="scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=8)
    args = parser.parse_args(argv)
    gt = make_set(args.out, args.kind, args.seed, args.count)
    print(f"{args.out}: {len(gt['images'])} images, {sum(len(i['words']) for i in gt['images'])} words")


if __name__ == "__main__":
    main()
