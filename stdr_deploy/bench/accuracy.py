"""Word accuracy on a labelled scene set (gt.json + images), by the project's scorer.

`stdr_deploy.ocr.metrics.score` is the same definition as the shared reference scorer
(IoU >= 0.5 one-to-one matching on axis-aligned boxes, exact case-sensitive text), so the
benchmark's numbers are the numbers every other report of this project uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from stdr_deploy.errors import UserInputError

HEADLINE = ("word_accuracy", "ci_word_accuracy", "det_recall", "det_precision", "matched_cer", "hits", "total_gt", "total_pred")


def load_scenes(folder: Path) -> tuple[dict[str, Any], list[Path]]:
    """gt.json and the image paths it lists, in its order."""
    gt_path = Path(folder) / "gt.json"
    if not gt_path.is_file():
        raise UserInputError(f"no gt.json in {folder}", hint="pass --scenes DIR holding gt.json and its images")
    gt = json.loads(gt_path.read_text())
    return gt, [Path(folder) / image["file"] for image in gt["images"]]


def predictions(paths: Sequence[Path], read: Callable[[Path], Iterable[tuple[str, Any]]]) -> dict[str, Any]:
    """PRED document from `read(path) -> [(text, polygon)]` over every image."""
    return {
        "images": [
            {"file": path.name, "words": [{"text": text, "polygon": polygon} for text, polygon in read(path)]}
            for path in paths
        ]
    }


def score(gt: dict[str, Any], pred: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers plus per-image rows with the missed or misread words."""
    from stdr_deploy.ocr.metrics import score as score_words

    result = score_words(gt, pred, keep_errors=True)
    return {
        **{key: result[key] for key in HEADLINE},
        "images": [
            {k: row[k] for k in ("file", "gt", "pred", "hits", "word_accuracy", "errors")} for row in result["images"]
        ],
    }


def set_name(gt: dict[str, Any], gt_path: Path) -> str:
    """A check set's name: gt.json's `set`, else its folder's name."""
    return str(gt.get("set") or Path(gt_path).resolve().parent.name)


def total(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several sets' scores as one: counts summed, ratios over the sums (micro average, as the
    scorer totals images), plus `mean_word_accuracy`, each set counting once."""
    sums = {key: sum(r[key] for r in reports) for key in ("hits", "total_gt", "total_pred", "matched")}

    def ratio(num: float, den: float) -> float:
        return num / den if den else 0.0

    return {
        **sums,
        "word_accuracy": ratio(sums["hits"], sums["total_gt"]),
        "det_recall": ratio(sums["matched"], sums["total_gt"]),
        "det_precision": ratio(sums["matched"], sums["total_pred"]),
        "mean_word_accuracy": ratio(sum(r["word_accuracy"] for r in reports), len(reports)),
        "sets": len(reports),
    }


def served_reader(url: str, model: str = "pipeline") -> Callable[[Path], list[tuple[str, Any]]]:
    """`read(path)` through the served pipeline (the deployment under test)."""
    from stdr_deploy.ocr.image_io import read_image
    from stdr_deploy.triton_client import TritonPipelineClient

    client = TritonPipelineClient(url, model)
    return lambda path: [(w.text, w.polygon) for w in client.read(read_image(path))]
