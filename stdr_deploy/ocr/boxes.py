"""Score maps -> word boxes: CRAFT's post-processing, with tighter boxes fitted to the ink.

CRAFT predicts, at half the input resolution, a region score (a Gaussian bump per character)
and an affinity score (a bump between neighbouring characters of a word). Words are found as
CRAFT does: threshold both maps, take 4-connected components, keep those whose region score
peaks above `text_threshold`.

The box of a word is then fitted in one of two ways:

- `"craft"`: CRAFT's own box (dilate the component, `minAreaRect`), which EasyOCR uses. It is
  1.1-1.9x taller than the text, because the component is grown by a margin.
- `"ink"` (default): the word's outline is where its region score falls to `box_level` x its
  peak, found on a 4x upsampled map for sub-pixel edges. The box is oriented along the line
  through the character centres (the region-score blobs), which italic slant does not tilt,
  and snapped straight when that line is within `straight_below_deg` of horizontal.
  Pieces of one word that CRAFT's affinity cut apart (it is weak next to punctuation:
  'nature.' + 'org'), and faint characters next to a word (a trailing '.', quotes) whose
  region score never reached `text_threshold`, are joined to it when the gap is tiny, or
  when the region score bridges the gap (an underscore: 'up_down'), which a word space rarely
  does. The same test cuts a component that the affinity carried across a word space (photos).

Polygons come back in original-image coordinates, clockwise from the word's top-left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .detector_input import DetectorInput

UPSAMPLE = 4  # score-map pixels are split 4x4 when fitting ink boxes
MIN_COMPONENT_AREA = 10  # score-map pixels; smaller components are noise (CRAFT's rule)
BRIDGE_REACH = 1.2  # heights: the widest gap a region-score bridge may span


@dataclass(frozen=True)
class WordBox:
    """One detected word: its polygon (4x2, image pixels) and its peak region score."""

    polygon: np.ndarray
    score: float

    @property
    def angle_deg(self) -> float:
        """Direction of the top edge, degrees, positive = clockwise on screen (y points down)."""
        (x0, y0), (x1, y1) = self.polygon[0], self.polygon[1]
        return math.degrees(math.atan2(y1 - y0, x1 - x0))

    @property
    def size(self) -> tuple[float, float]:
        """(width along the text, height across it), image pixels."""
        p = self.polygon
        return float(np.linalg.norm(p[1] - p[0])), float(np.linalg.norm(p[3] - p[0]))


@dataclass(frozen=True)
class Components:
    """Connected components of the thresholded maps, and which of them are words."""

    labels: np.ndarray  # int32 label image, 0 = background
    stats: np.ndarray  # cv2 stats per label: x, y, w, h, area
    words: tuple[int, ...]  # labels that passed the size and peak tests
    faint: tuple[int, ...]  # the other labels with region score above low_text (e.g. a lone '.')
    text_mask: np.ndarray  # region > low_text
    link_mask: np.ndarray  # affinity > link_threshold
    peaks: np.ndarray  # float32 peak region score per label, for `words` and `faint` (0 elsewhere)


@dataclass(frozen=True)
class Ink:
    """Points inside a word's outline, on the 1/UPSAMPLE grid of score-map units, kept as
    horizontal runs: run i holds the points (x0[i] + k / UPSAMPLE, y[i]) for k < n[i].

    Every later step needs only the extremes of the points along and across a direction, their
    count, and the gaps between them along a direction; a projection is monotonic along a row
    (also after float rounding), so each run's two ends stand for all its points. A large word
    holds 10^5-10^6 points but a few thousand runs.
    """

    y: np.ndarray  # float64 per run
    x0: np.ndarray  # float64, the run's first point
    x1: np.ndarray  # float64, the run's last point
    n: np.ndarray  # int64 points per run

    def __len__(self) -> int:
        return int(self.n.sum())

    @classmethod
    def concat(cls, inks: list["Ink"]) -> "Ink":
        return cls(*(np.concatenate([getattr(ink, f) for ink in inks]) for f in ("y", "x0", "x1", "n")))

    def take(self, runs: np.ndarray) -> "Ink":
        return Ink(self.y[runs], self.x0[runs], self.x1[runs], self.n[runs])

    def points(self) -> np.ndarray:
        """Every point, (N, 2) float64 x, y, run by run."""
        first = np.repeat(np.cumsum(self.n) - self.n, self.n)
        steps = np.arange(len(self), dtype=np.float64) - first
        return np.stack([np.repeat(self.x0, self.n) + steps * (1.0 / UPSAMPLE), np.repeat(self.y, self.n)], axis=1)

    def singles(self) -> "Ink":
        """The same points, one run each."""
        xs, ys = self.points().T
        return Ink(ys, xs, xs.copy(), np.ones(len(xs), dtype=np.int64))

    def bounds(self) -> tuple[float, float, float, float]:
        """x min, y min, x max, y max."""
        return float(self.x0.min()), float(self.y.min()), float(self.x1.max()), float(self.y.max())

    def ends(self) -> tuple[np.ndarray, np.ndarray]:
        """x and y of both ends of every run: first ends, then last ends."""
        return np.concatenate([self.x0, self.x1]), np.concatenate([self.y, self.y])


def find_words(region: np.ndarray, link: np.ndarray, text_threshold: float, link_threshold: float,
               low_text: float) -> Components:
    """CRAFT's word grouping: components of (region > low_text) | (link > link_threshold).

    A component's peak passes a threshold exactly when one of its pixels does, so one count of
    labels over each thresholded map sorts every component in a linear pass; the peak values
    themselves are read only for the words and faint pieces, inside their bounding boxes.
    """
    text_mask = region > low_text
    link_mask = link > link_threshold
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (text_mask | link_mask).astype(np.uint8), connectivity=4
    )
    strong = np.bincount(labels[region >= _float32_at_least(text_threshold)], minlength=count) > 0
    textual = np.bincount(labels[text_mask], minlength=count) > 0
    strong[0] = textual[0] = False
    is_word = strong & (stats[:, cv2.CC_STAT_AREA] >= MIN_COMPONENT_AREA)
    words = tuple(np.flatnonzero(is_word).tolist())
    faint = tuple(np.flatnonzero(textual & ~is_word).tolist())
    peaks = np.zeros(count, dtype=np.float32)
    for k in words + faint:
        x, y, w, h = (int(v) for v in stats[k, :4])
        peaks[k] = region[y:y + h, x:x + w][labels[y:y + h, x:x + w] == k].max()
    return Components(labels=labels, stats=stats, words=words, faint=faint, text_mask=text_mask,
                      link_mask=link_mask, peaks=peaks)


def _float32_at_least(value: float) -> np.float32:
    """The smallest float32 >= `value`: `a >= it` on a float32 array `a` equals comparing in float64."""
    rounded = np.float32(value)
    return rounded if rounded >= value else np.nextafter(rounded, np.float32(np.inf))


def craft_polygon(components: Components, label: int) -> np.ndarray:
    """CRAFT's box in score-map pixels: dilate the component, fit `minAreaRect`.

    The dilation grows with the component's thickness; a near-square box is replaced by the
    axis-aligned bounds (CRAFT's fix for diamond-shaped rectangles). Starts at the corner with the
    smallest x + y, like CRAFT.
    """
    x, y, w, h, area = (int(v) for v in components.stats[label])
    height, width = components.labels.shape
    grow = int(math.sqrt(area * min(w, h) / (w * h)) * 2)
    x0, x1 = max(x - grow, 0), min(x + w + grow + 1, width)
    y0, y1 = max(y - grow, 0), min(y + h + grow + 1, height)
    window = (components.labels[y0:y1, x0:x1] == label).astype(np.uint8) * 255
    window[components.link_mask[y0:y1, x0:x1] & ~components.text_mask[y0:y1, x0:x1]] = 0
    window = cv2.dilate(window, cv2.getStructuringElement(cv2.MORPH_RECT, (grow + 1, grow + 1)))
    ys, xs = np.nonzero(window)
    points = np.stack([xs + x0, ys + y0], axis=1).astype(np.float32)
    box = cv2.boxPoints(cv2.minAreaRect(points))
    side_a, side_b = np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[1] - box[2])
    if abs(1 - max(side_a, side_b) / (min(side_a, side_b) + 1e-5)) <= 0.1:
        left, right, top, bottom = points[:, 0].min(), points[:, 0].max(), points[:, 1].min(), points[:, 1].max()
        box = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], dtype=np.float32)
    return np.roll(box, 4 - int(box.sum(axis=1).argmin()), axis=0)


def ink_runs(region: np.ndarray, components: Components, label: int, box_level: float) -> Ink:
    """The points (score-map units, 1/4-pixel grid) inside the word's outline at `box_level` x its peak.

    The outline is searched near the word's core (its pixels with region score above `low_text`)
    only: at most a fifth of the core's thickness away, so a faint blob that the affinity map
    attached to the word does not stretch the box. Pixels nearer to another word never count.
    Coordinates are continuous: score-map pixel (i, j) covers [j, j+1) x [i, i+1).
    """
    x, y, w, h, _ = (int(v) for v in components.stats[label])
    reach = max(2, math.ceil(0.5 * min(w, h)))
    height, width = region.shape
    x0, x1 = max(x - reach, 0), min(x + w + reach, width)
    y0, y1 = max(y - reach, 0), min(y + h + reach, height)
    labels = components.labels[y0:y1, x0:x1]
    mine = labels == label
    core = mine & components.text_mask[y0:y1, x0:x1]
    level = box_level * float(components.peaks[label])
    half_thickness = float(cv2.distanceTransform(core.view(np.uint8), cv2.DIST_L2, 3).max())
    to_core = cv2.distanceTransform((~core).view(np.uint8), cv2.DIST_L2, 3)
    near = to_core <= max(1.5, 0.4 * half_thickness)
    others = (labels > 0) & ~mine
    if others.any():
        to_others = cv2.distanceTransform((~others).view(np.uint8), cv2.DIST_L2, 3)
        near &= to_core <= to_others
    scores = np.where(near, region[y0:y1, x0:x1], np.float32(0.0))
    r0, r1, c0, c1 = 0, scores.shape[0], 0, scores.shape[1]
    empty = Ink(np.empty(0), np.empty(0), np.empty(0), np.empty(0, dtype=np.int64))
    if level > 0:
        # Upsample only around the pixels near the level: a finer pixel is a weighted mean of
        # the 2x2 pixels around it, so it can exceed the level only next to one that (nearly)
        # does. One more row and column on each side keep the interpolation exact.
        rows = np.flatnonzero(scores.max(axis=1) > level * (1 - 1e-6))
        cols = np.flatnonzero(scores.max(axis=0) > level * (1 - 1e-6))
        if not len(rows):
            return empty
        r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, r1)
        c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, c1)
    part = scores[r0:r1, c0:c1]
    fine = cv2.resize(part, (part.shape[1] * UPSAMPLE, part.shape[0] * UPSAMPLE), interpolation=cv2.INTER_LINEAR)
    # Runs of inside pixels per fine row, from where the row changes state: a column of zeros
    # after each row keeps rows apart in the flat array, and the first change is a start.
    rows_n, cols_n = fine.shape
    inside = np.zeros((rows_n, cols_n + 1), dtype=bool)
    np.greater(fine, level, out=inside[:, :cols_n])
    flat = inside.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1])
    if flat[0]:
        changes = np.concatenate([[-1], changes])
    if not len(changes):
        return empty
    first, last = changes[0::2] + 1, changes[1::2]  # flat indices of each run's first and last pixel
    row, col0 = np.divmod(first, cols_n + 1)
    col1 = last - row * (cols_n + 1)
    # Fine pixel i of the part is at (i + 0.5) / UPSAMPLE + part offset + window offset: every
    # term is a multiple of 1/8 (UPSAMPLE 4), exact in float64.
    scale = 1.0 / UPSAMPLE
    return Ink(y=row * scale + (y0 + r0 + 0.5 / UPSAMPLE), x0=col0 * scale + (x0 + c0 + 0.5 / UPSAMPLE),
               x1=col1 * scale + (x0 + c0 + 0.5 / UPSAMPLE), n=col1 - col0 + 1)


def text_angle(region: np.ndarray, components: Components, labels: tuple[int, ...]) -> float:
    """Direction of the line through the word's character centres (radians; 0 = horizontal).

    Character centres are the score-weighted centroids of the region-score blobs above the
    word's mid level; italic slant moves them sideways only, so it does not tilt the line.
    Fewer than two blobs, or blobs stacked vertically, give 0.
    """
    stats = components.stats[list(labels)]
    x0, y0 = stats[:, 0].min(), stats[:, 1].min()
    x1, y1 = (stats[:, 0] + stats[:, 2]).max(), (stats[:, 1] + stats[:, 3]).max()
    window = components.labels[y0:y1, x0:x1]
    mine = window == labels[0] if len(labels) == 1 else np.isin(window, labels)
    scores = np.where(mine, region[y0:y1, x0:x1], np.float32(0.0))
    level = 0.5 * (float(scores.max()) + float(scores[mine].min()))
    count, blobs = cv2.connectedComponents((scores > level).view(np.uint8), connectivity=4)
    if count < 3:
        return 0.0
    ys, xs = np.nonzero(blobs)  # the blobs' pixels only, in the same order as a full scan
    ids, values = blobs[ys, xs], scores[ys, xs]
    weights = np.bincount(ids, weights=values, minlength=count)[1:]
    cx = np.bincount(ids, weights=values * xs, minlength=count)[1:] / weights
    cy = np.bincount(ids, weights=values * ys, minlength=count)[1:] / weights
    if np.ptp(cx) <= np.ptp(cy):
        return 0.0
    return math.atan(np.polyfit(cx, cy, 1, w=np.sqrt(weights))[0])


def fragment_groups(inks: list[Ink], angles: list[float], faint: list[bool],
                    merge_gap: float, region: np.ndarray, bridge_floor: float) -> list[list[int]]:
    """Group pieces that are one word cut apart; every group holds at least one non-faint piece.

    Seen along the larger piece's direction, two pieces join when they overlap across the line
    by half the smaller one's height and the gap between them is at most `merge_gap` x the
    larger one's height. Word spaces are wider than that (0.16+ heights in blurred photos). A gap
    of up to `BRIDGE_REACH` heights also joins when the `region` score never falls below
    `bridge_floor` on the way across it (see `bridge_level`). Faint pieces only ever join a
    word, never each other, and are dropped when they join nothing.
    """
    parent = list(range(len(inks)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    bounds = np.array([ink.bounds() for ink in inks]).reshape(-1, 4)
    for i, j in _near_pairs(bounds, max(merge_gap, BRIDGE_REACH)):
        if faint[i] and faint[j]:
            continue
        big, small = (i, j) if len(inks[i]) >= len(inks[j]) else (j, i)
        (a0, a1, c0, c1), (b0, b1, d0, d1) = (_extent(inks[k], angles[big]) for k in (big, small))
        if min(c1, d1) - max(c0, d0) < 0.5 * min(c1 - c0, d1 - d0):
            continue
        gap_along = max(b0 - a1, a0 - b1)
        if gap_along <= merge_gap * (c1 - c0) or (
            gap_along <= BRIDGE_REACH * (c1 - c0)
            and bridge_level(region, (min(a1, b1), max(a0, b0)), (min(c0, d0), max(c1, d1)), angles[big]) >= bridge_floor
        ):
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(inks)):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if not all(faint[i] for i in g)]


def split_at_spaces(ink: Ink, angle: float, region: np.ndarray, merge_gap: float,
                    bridge_floor: float) -> list[Ink]:
    """Cut one component's ink where a word space runs across it.

    CRAFT's affinity map sometimes links the last character of a word to the first of the next
    (blur and low contrast in photos: 'PAY FOR'). A cut is made where, along the line, the ink
    leaves a gap wider than `merge_gap` x the component's height that the region score does not
    bridge above `bridge_floor`: the same test `fragment_groups` uses to join pieces, so what is
    cut here is never joined again there.

    The gaps are those between the points sorted along the line. Each run covers an interval
    along it with steps of at most 1/UPSAMPLE, so where the limit is wider than a step no gap
    falls inside a run: the gaps are those of the union of the runs' intervals, found by one
    sort of the runs. Thinner ink (limit within a step) is handled point by point.
    """
    cos, sin = math.cos(angle), math.sin(angle)
    xs, ys = ink.ends()
    along = xs * cos + ys * sin
    across = -xs * sin + ys * cos
    height = float(np.ptp(across)) if len(along) else 0.0
    limit = merge_gap * height
    if limit <= abs(cos) / UPSAMPLE + 1e-6 and len(along):
        ink = ink.singles()
        xs, ys = ink.ends()
        along = xs * cos + ys * sin
    runs = len(ink.n)
    low, high = np.minimum(along[:runs], along[runs:]), np.maximum(along[:runs], along[runs:])
    order = np.argsort(low, kind="stable")
    starts, reached = low[order], np.maximum.accumulate(high[order])
    gaps = np.flatnonzero(starts[1:] - reached[:-1] > limit)
    band = (float(across.min()), float(across.max())) if len(along) else (0.0, 0.0)
    cuts = [float(starts[g + 1]) for g in gaps
            if bridge_level(region, (float(reached[g]), float(starts[g + 1])), band, angle) < bridge_floor]
    if not cuts:
        return [ink]
    piece = np.searchsorted(np.array(cuts), low, side="right")
    return [ink.take(piece == k) for k in range(len(cuts) + 1)]


def bridge_level(region: np.ndarray, along: tuple[float, float], across: tuple[float, float],
                 angle: float, step: float = 0.5) -> float:
    """Lowest region score met crossing the gap `along` (start, end) between two pieces, where
    each step along the line counts the best score within the band `across` (the two pieces'
    extent across the line), in the rotated frame of `angle`; score-map units.

    Characters of one word leave a ridge of region score between them even where the affinity
    is cut (an underscore scores 0.15-0.3); a word space drops to 0.06 or less.
    """
    ts = np.arange(along[0], along[1] + step / 2, step)
    us = np.arange(across[0], across[1] + step / 2, step)
    t, u = np.meshgrid(ts, us)
    cos, sin = math.cos(angle), math.sin(angle)
    # continuous coordinate c is array index c - 0.5
    xs = (t * cos - u * sin - 0.5).astype(np.float32)
    ys = (t * sin + u * cos - 0.5).astype(np.float32)
    samples = cv2.remap(region, xs, ys, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return float(samples.max(axis=0).min())


def _near_pairs(bounds: np.ndarray, gap: float) -> list[tuple[int, int]]:
    """Index pairs (i < j, in order) whose axis-aligned bounds overlap vertically and lie within
    `gap` x the taller one's height horizontally: the only pairs worth a closer look.

    Sort and sweep: with the boxes ordered by top edge, a box's vertical partners are the boxes
    after it whose top lies above its bottom, a contiguous run found by binary search.
    """
    n = len(bounds)
    order = np.argsort(bounds[:, 1], kind="stable")
    x0, y0, x1, y1 = bounds[order].T
    runs = np.maximum(np.searchsorted(y0, y1, side="right") - np.arange(n) - 1, 0)
    first = np.repeat(np.arange(n), runs)
    second = first + 1 + np.arange(len(first)) - np.repeat(np.cumsum(runs) - runs, runs)
    height = y1 - y0
    reach = gap * np.maximum(height[first], height[second]) + 1
    near = (x0[first] <= x1[second] + reach) & (x0[second] <= x1[first] + reach) & (y0[first] <= y1[second])
    i, j = order[first[near]], order[second[near]]
    pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return [(int(a), int(b)) for a, b in pairs]


def _extent(ink: Ink, angle: float) -> tuple[float, float, float, float]:
    """(min, max) along and (min, max) across the direction `angle` of a word's ink: those of
    its runs' ends, as a projection is monotonic along each run."""
    if angle == 0.0:  # the same numbers as the rotation below
        x0, y0, x1, y1 = ink.bounds()
        return x0, x1, y0, y1
    xs, ys = ink.ends()
    cos, sin = math.cos(angle), math.sin(angle)
    along = xs * cos
    along += ys * sin
    across = ys * cos
    across -= xs * sin
    return float(along.min()), float(along.max()), float(across.min()), float(across.max())


def oriented_box(ink: Ink, angle: float, pad: float) -> np.ndarray:
    """Smallest rectangle at `angle` around the ink (grown by `pad`), clockwise from top-left."""
    a0, a1, c0, c1 = _extent(ink, angle)
    a0, a1, c0, c1 = a0 - pad, a1 + pad, c0 - pad, c1 + pad
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(a0, c0), (a1, c0), (a1, c1), (a0, c1)]
    return np.array([[a * cos - c * sin, a * sin + c * cos] for a, c in corners], dtype=np.float32)


def word_boxes(score_map: np.ndarray, det: DetectorInput, *, text_threshold: float, link_threshold: float,
               low_text: float, box_fit: str, box_level: float, straight_below_deg: float,
               merge_gap: float, min_size: float, bridge_floor: float) -> list[WordBox]:
    """Detector output [1, H/2, W/2, 2] (or [H/2, W/2, 2]) -> word boxes on the original image.

    Polygons are not clipped to the image: a word cut by the border still gets a rectangle, and
    the crop stage pads what lies outside.
    """
    maps = score_map[0] if score_map.ndim == 4 else score_map
    region, link = cv2.split(np.ascontiguousarray(maps, dtype=np.float32))  # one pass over the interleaved maps
    components = find_words(region, link, text_threshold, link_threshold, low_text)
    peaks = components.peaks
    if box_fit == "craft":
        found = [(craft_polygon(components, k), float(peaks[k])) for k in components.words]
    elif box_fit == "ink":
        found = _ink_boxes(region, components, peaks, box_level, straight_below_deg, merge_gap, bridge_floor)
    else:
        raise ValueError(f"box_fit must be 'ink' or 'craft', not {box_fit!r}")
    scale_x, scale_y = det.scale_xy
    to_image = np.array([2.0 * scale_x, 2.0 * scale_y], dtype=np.float32)
    boxes = [WordBox(polygon=(polygon * to_image).astype(np.float32), score=score) for polygon, score in found]
    return [box for box in boxes if max(box.size) >= min_size]


def _ink_boxes(region: np.ndarray, components: Components, peaks: np.ndarray, box_level: float,
               straight_below_deg: float, merge_gap: float, bridge_floor: float) -> list[tuple[np.ndarray, float]]:
    labels = components.words + components.faint
    faint = [k in components.faint for k in labels]
    inks = [ink_runs(region, components, k, box_level) for k in labels]
    angles = [0.0 if weak else text_angle(region, components, (k,)) for k, weak in zip(labels, faint)]
    # a component the affinity map carried across a word space is cut there into words
    pieces = [(i, part) for i in range(len(labels))
              for part in ([inks[i]] if faint[i] else split_at_spaces(inks[i], angles[i], region, merge_gap, bridge_floor))]
    owners = [i for i, _ in pieces]
    found = []
    for group in fragment_groups([part for _, part in pieces], [angles[i] for i in owners], [faint[i] for i in owners],
                                 merge_gap, region, bridge_floor):
        members = tuple(sorted({labels[owners[i]] for i in group}))
        whole = len({owners[i] for i in group}) == len(group) == len(members)  # no component was cut
        angle = (text_angle(region, components, members) if len(members) > 1 else angles[owners[group[0]]]) \
            if whole else angles[owners[group[0]]]
        if abs(math.degrees(angle)) < straight_below_deg:
            angle = 0.0
        polygon = oriented_box(Ink.concat([pieces[i][1] for i in group]), angle, pad=0.5 / UPSAMPLE)
        found.append((polygon, float(peaks[list(members)].max())))
    return found
