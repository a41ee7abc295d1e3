"""End-to-end word metrics, the same definition as the project's scorer (`tools/ocr_score.py`).

Per image, each word becomes the axis-aligned bounds of its polygon (or its `bbox`); ground
truth and predictions are paired one-to-one, best IoU first (ties: earlier gt word, then earlier
prediction), keeping pairs at or above the IoU threshold. A gt word is a hit when paired and
its stripped text equals the prediction's exactly. Totals are summed over images (micro
average); the headline is `word_accuracy` = hits / gt words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Box = tuple[float, float, float, float]


class ScoreFormatError(ValueError):
    """A ground-truth or prediction document does not have the expected layout."""


def word_bounds(word: Any, where: str) -> Box:
    if not isinstance(word, dict):
        raise ScoreFormatError(f"{where}: a word must be an object")
    if word.get("polygon") is not None:
        xs, ys = _polygon_coords(word["polygon"], where)
    elif word.get("bbox") is not None:
        bbox = word["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise ScoreFormatError(f"{where}: bbox must be [x0, y0, x1, y1]")
        xs, ys = [float(bbox[0]), float(bbox[2])], [float(bbox[1]), float(bbox[3])]
    else:
        raise ScoreFormatError(f"{where}: a word needs a 'polygon' or a 'bbox'")
    return min(xs), min(ys), max(xs), max(ys)


def _polygon_coords(polygon: Any, where: str) -> tuple[list[float], list[float]]:
    """[[x, y], ...] or a flat [x0, y0, x1, y1, ...] -> (xs, ys), at least 2 points."""
    if not isinstance(polygon, (list, tuple)) or not polygon:
        raise ScoreFormatError(f"{where}: polygon must be a non-empty list")
    if all(isinstance(p, (list, tuple)) for p in polygon):
        if any(len(p) < 2 for p in polygon):
            raise ScoreFormatError(f"{where}: every polygon point needs x and y")
        flat = [float(v) for p in polygon for v in p[:2]]
    elif len(polygon) % 2 == 0:
        flat = [float(v) for v in polygon]
    else:
        raise ScoreFormatError(f"{where}: a flat polygon needs an even count of numbers")
    if len(flat) < 4:
        raise ScoreFormatError(f"{where}: polygon needs at least 2 points")
    return flat[0::2], flat[1::2]


def iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def pair_words(gt: list[Box], pred: list[Box], threshold: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one pairing by descending IoU: [(gt index, pred index, iou)]."""
    candidates = sorted(
        ((-v, g, p) for g, gb in enumerate(gt) for p, pb in enumerate(pred) if (v := iou(gb, pb)) >= threshold and v > 0)
    )
    taken_gt: set[int] = set()
    taken_pred: set[int] = set()
    pairs = []
    for negative, g, p in candidates:
        if g not in taken_gt and p not in taken_pred:
            taken_gt.add(g)
            taken_pred.add(p)
            pairs.append((g, p, -negative))
    return pairs


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute all cost 1)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        diagonal, row[0] = row[0], i
        for j, cb in enumerate(b, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ca != cb))
    return row[-1]


@dataclass
class _Tally:
    gt: int = 0
    pred: int = 0
    matched: int = 0
    hits: int = 0
    ci_hits: int = 0
    edits: int = 0
    chars: int = 0

    def add(self, other: "_Tally") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _text(word: dict) -> str:
    value = word.get("text")
    return "" if value is None else str(value).strip()


def _images(doc: Any, name: str) -> dict[str, list]:
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise ScoreFormatError(f"{name}: expected an object with an 'images' list")
    images: dict[str, list] = {}
    for k, image in enumerate(doc["images"]):
        if not isinstance(image, dict) or "file" not in image:
            raise ScoreFormatError(f"{name}: images[{k}] needs a 'file'")
        words = image.get("words", [])
        if not isinstance(words, list):
            raise ScoreFormatError(f"{name}: images[{k}].words must be a list")
        if image["file"] in images:
            raise ScoreFormatError(f"{name}: image {image['file']!r} is listed twice")
        images[image["file"]] = words
    return images


def score(gt_doc: dict, pred_doc: dict, iou_threshold: float = 0.5, keep_errors: bool = False) -> dict:
    """Score predictions against ground truth; keys and values as `ocr_score.score` returns them."""
    gt_images = _images(gt_doc, "GT")
    pred_images = _images(pred_doc, "PRED")
    total = _Tally()
    rows = []
    for file, gt_words in gt_images.items():
        pred_words = pred_images.get(file, [])
        tally, errors = _score_image(file, gt_words, pred_words, iou_threshold)
        total.add(tally)
        row = {
            "file": file, "gt": tally.gt, "pred": tally.pred, "matched": tally.matched, "hits": tally.hits,
            "word_accuracy": _ratio(tally.hits, tally.gt),
            "ci_word_accuracy": _ratio(tally.ci_hits, tally.gt),
            "det_recall": _ratio(tally.matched, tally.gt),
            "det_precision": _ratio(tally.matched, tally.pred),
        }
        if keep_errors:
            row["errors"] = errors
        rows.append(row)
    recall = _ratio(total.matched, total.gt)
    precision = _ratio(total.matched, total.pred)
    accuracy = _ratio(total.hits, total.gt)
    e2e_precision = _ratio(total.hits, total.pred)
    return {
        "word_accuracy": accuracy,
        "ci_word_accuracy": _ratio(total.ci_hits, total.gt),
        "det_recall": recall,
        "det_precision": precision,
        "det_f1": _ratio(2 * precision * recall, precision + recall),
        "e2e_precision": e2e_precision,
        "e2e_f1": _ratio(2 * e2e_precision * accuracy, e2e_precision + accuracy),
        "matched_cer": _ratio(total.edits, total.chars),
        "total_gt": total.gt, "total_pred": total.pred, "matched": total.matched,
        "hits": total.hits, "ci_hits": total.ci_hits,
        "iou_threshold": iou_threshold,
        "images": rows,
        "ignored_pred_images": sorted(set(pred_images) - set(gt_images)),
    }


def _score_image(file: str, gt_words: list, pred_words: list, threshold: float) -> tuple[_Tally, list[dict]]:
    gt_boxes = [word_bounds(w, f"GT {file} words[{i}]") for i, w in enumerate(gt_words)]
    pred_boxes = [word_bounds(w, f"PRED {file} words[{i}]") for i, w in enumerate(pred_words)]
    pairs = pair_words(gt_boxes, pred_boxes, threshold)
    tally = _Tally(gt=len(gt_words), pred=len(pred_words), matched=len(pairs))
    errors = []
    for g, p, overlap in pairs:
        truth, read = _text(gt_words[g]), _text(pred_words[p])
        tally.hits += truth == read
        tally.ci_hits += truth.casefold() == read.casefold()
        tally.edits += edit_distance(truth, read)
        tally.chars += len(truth)
        if truth != read:
            errors.append({"gt": truth, "pred": read, "iou": round(overlap, 3), "kind": "text"})
    paired = {g for g, _, _ in pairs}
    errors += [
        {"gt": _text(w), "pred": None, "iou": None, "kind": "missed"}
        for g, w in enumerate(gt_words) if g not in paired
    ]
    return tally, errors


def image_files(doc: Any, name: str = "GT") -> list[str]:
    """The image file names of a document, in order, after checking its layout."""
    return list(_images(doc, name))
