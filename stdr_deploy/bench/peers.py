"""Peer OCR systems run side by side in `stdr-deploy bench --peers` (benchmark-only).

Each peer is a reader with `read(rgb image) -> list[Word]` in the pipeline's word format, so the
bench times and scores it exactly like our pipeline. Peers install from the `peers` extra and
are imported here, lazily, only when asked for: the product never imports them.

- rapidocr: RapidOCR 1.4.4 (`rapidocr_onnxruntime`, PP-OCRv4 det + cls + rec on ONNX Runtime)
  with its default config. It returns text lines; each is split into words in proportion to its
  characters, as our pipeline splits ppocr-det's lines (`stdr_deploy.ocr.detectors.split_words`).
- easyocr: EasyOCR 1.7.2 `readtext` on the CPU with the same CRAFT + english_g2 weights as ours
  (see `easyocr_baseline`: it needs a shim beside a CPU-only torch and is skipped with the
  reason when it still cannot import).
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


class EasyOcrPeer:
    name = "easyocr"

    def __init__(self, threads: int | None = None) -> None:
        from stdr_deploy.bench import easyocr_baseline

        try:
            self.reader = easyocr_baseline.make_reader(threads)
        except MissingDependency:
            raise
        except Exception as exc:  # noqa: BLE001 - torchvision/torch mismatches fail in many ways
            raise MissingDependency(
                f"easyocr cannot be imported here: {str(exc).splitlines()[0][:200]}",
                hint="install easyocr with a torchvision that matches this torch, or leave easyocr out of --peers",
            ) from None
        self._versions = easyocr_baseline.versions

    def read(self, image: np.ndarray) -> list[Word]:
        """EasyOCR treats arrays as BGR; its boxes are already words."""
        results = self.reader.readtext(np.ascontiguousarray(image[:, :, ::-1]))
        return [Word(text=text, polygon=[[float(x), float(y)] for x, y in box], score=float(score))
                for box, text, score in results]

    def versions(self) -> dict[str, str]:
        return self._versions()


def parse_peers(value: str) -> tuple[str, ...]:
    """`"rapidocr,easyocr"` -> ("rapidocr", "easyocr"); unknown names are a UserInputError."""
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise UserInputError(f"unknown peer(s) {', '.join(unknown)}", hint=f"peers: {', '.join(PEERS)}")
    return names


def make_peer(name: str, threads: int | None = None) -> Any:
    if name == "rapidocr":
        return RapidOcrPeer()
    if name == "easyocr":
        return EasyOcrPeer(threads)
    raise UserInputError(f"unknown peer {name!r}", hint=f"peers: {', '.join(PEERS)}")
