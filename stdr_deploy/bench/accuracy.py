"""Word accuracy on a labelled scene set (gt.json + images), scored by the shared reference scorer.

The scorer (`tools/ocr_score.py` of the shared test data: IoU >= 0.5 one-to-one matching on
axis-aligned boxes, exact case-sensitive text) is loaded from its file rather than copied, so the
benchmark's numbers are the same numbers every other report of this project uses.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Sequence

from stdr_deploy.errors import UserInputError

HEADLINE = ("word_accuracy", "ci_word_accuracy", "det_recall", "det_precision", "matched_cer", "hits", "total_gt", "total_pred")


def load_scorer(path: Path) -> ModuleType:
    if not Path(path).is_file():
        raise UserInputError(f"scorer not found: {path}", hint="pass --scorer PATH to ocr_score.py")
    spec = importlib.util.spec_from_file_location("ocr_score", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


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


def score(scorer: ModuleType, gt: dict[str, Any], pred: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers plus per-image rows and the missed or misread words."""
    result = scorer.score(gt, pred, keep_errors=True)
    return {
        **{key: result[key] for key in HEADLINE},
        "images": [
            {k: row[k] for k in ("file", "gt", "pred", "hits", "word_accuracy", "errors")} for row in result["images"]
        ],
    }


def served_reader(url: str, model: str = "pipeline") -> Callable[[Path], list[tuple[str, Any]]]:
    """`read(path)` through the served pipeline (the deployment under test)."""
    from stdr_deploy.ocr.image_io import read_image
    from stdr_deploy.triton_client import TritonPipelineClient

    client = TritonPipelineClient(url, model)
    return lambda path: [(w.text, w.polygon) for w in client.read(read_image(path))]
