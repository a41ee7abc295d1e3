"""Peer OCR systems run side by side in `stdr-deploy bench --peers` (benchmark-only).

Each peer is a reader with `read(rgb image) -> list[Word]` in the pipeline's word format, so the
bench times and scores it exactly like our pipeline. Peers install from the `peers` extra and
are imported here, lazily, only when asked for: the product never imports them.

- rapidocr: RapidOCR 1.4.4 (`rapidocr_onnxruntime`, PP-OCRv4 det + cls + rec on ONNX Runtime)
  with its default config. It returns text lines; each is split into words in proportion to its
  characters, as our pipeline splits ppocr-det's lines (`stdr_deploy.ocr.detectors.split_words`).
- easyocr: EasyOCR 1.7.2, run by `easyocr_baseline` (it reads image paths, and needs a shim
  beside a CPU-only torch; skipped with the reason when it still cannot import).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import numpy as np

from stdr_deploy.errors import MissingDependency, UserInputError
from stdr_deploy.ocr import Word
from stdr_deploy.ocr.detectors import split_words

PEERS = ("rapidocr", "easyocr")
RAPIDOCR_VERSION = "1.4.4"


class RapidOcrPeer:
    name = "rapidocr"

    def __init__(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise MissingDependency(
                f"rapidocr_onnxruntime is not importable: {exc}",
                hint=f"pip install 'stdr-deploy[peers]' (rapidocr_onnxruntime=={RAPIDOCR_VERSION})",
            ) from None
        self.engine = RapidOCR()

    def read(self, image: np.ndarray) -> list[Word]:
        """RGB uint8 image -> words (RapidOCR reads BGR arrays)."""
        lines, _ = self.engine(np.ascontiguousarray(image[:, :, ::-1]))
        words = []
        for box, text, score in lines or []:
            for piece, polygon, _ in split_words(np.asarray(box, dtype=np.float64), text):
                words.append(Word(text=piece, polygon=polygon.tolist(), score=float(score)))
        return words

    @staticmethod
    def versions() -> dict[str, str]:
        return {"rapidocr_onnxruntime": importlib.metadata.version("rapidocr_onnxruntime")}


def parse_peers(value: str) -> tuple[str, ...]:
    """`"rapidocr,easyocr"` -> ("rapidocr", "easyocr"); unknown names are a UserInputError."""
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise UserInputError(f"unknown peer(s) {', '.join(unknown)}", hint=f"peers: {', '.join(PEERS)}")
    return names


def make_peer(name: str) -> Any:
    """A reader for an in-process peer (EasyOCR runs through `easyocr_baseline` instead)."""
    if name == "rapidocr":
        return RapidOcrPeer()
    raise UserInputError(f"no in-process reader for peer {name!r}", hint="in-process peers: rapidocr")
