"""The OCR pipeline: image -> detector -> word boxes -> crops -> recognizer -> words.

It drives its two networks through the smallest possible interface, a *runner*: anything with
`infer(feeds) -> outputs`, dicts of numpy arrays keyed by the ONNX/Triton tensor names. The same
object therefore runs on PyTorch, ONNX Runtime, Triton BLS calls inside the server, or a Triton
client, and gives the same words. A runner that can have several calls in flight at once (the
served pipeline's BLS runner) also offers `infer_many(list of feeds) -> list of outputs`; the
recognizer calls of one image then go out together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .boxes import WordBox
from .crops import batches, grow, principal_gray, rectify, stretch_contrast
from .decoders import Decoded
from .detectors import get_detector, split_words
from .image_io import check_image
from .recognizers import get_family
from .settings import PipelineSettings
from .stages import StageClock


class Runner(Protocol):
    """One model: input arrays by tensor name in, output arrays by tensor name out."""

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def infer_all(runner: Runner, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Every call of `feeds`, at once when the runner offers `infer_many`, else one after another."""
    many = getattr(runner, "infer_many", None)
    return many(feeds) if many is not None else [runner.infer(f) for f in feeds]


@dataclass(frozen=True)
class Word:
    """One read word. `polygon`: 4 [x, y] points, image pixels, clockwise from the top-left."""

    text: str
    polygon: list[list[float]]
    score: float
    char_scores: tuple[float, ...] = field(default=())

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "polygon": [[round(x, 2), round(y, 2)] for x, y in self.polygon],
            "score": round(self.score, 6),
        }


class OcrPipeline:
    """Detector: `input` [1,3,H,W] -> `output` [1,H/2,W/2,2]; recognizer: `input` [N,...] ->
    `output` [N, steps, classes], called with at most `settings.recognizer_batch` crops at a time."""

    def __init__(self, detector: Runner, recognizer: Runner, recognizer_family: str,
                 settings: PipelineSettings | None = None, detector_family: str = "craft",
                 charset: str | None = None):
        """`charset`: for recognizer families whose charset is in their model file (ppocr)."""
        self.detector = detector
        self.recognizer = recognizer
        self.family = get_family(recognizer_family, charset)
        self.detector_family = get_detector(detector_family)
        self.settings = settings or PipelineSettings()

    def read(self, image: np.ndarray, clock: StageClock | None = None) -> list[Word]:
        """RGB uint8 HxWx3 -> the words in it; `clock`, when given, gets each stage's time."""
        clock = clock or StageClock()
        check_image(image, self.settings.max_image_pixels)
        return self.recognize(image, self.detect(image, clock), clock)

    def detect(self, image: np.ndarray, clock: StageClock | None = None) -> list[WordBox]:
        """Word boxes of an RGB image, from one detector call."""
        clock = clock or StageClock()
        family, s = self.detector_family, self.settings
        det = family.prepare(image, s)
        clock.lap("pre")
        output = self.detector.infer({"input": det.tensor})["output"]
        clock.lap("detector")
        boxes = family.boxes(output, det, s)
        clock.lap("post")
        return boxes

    def recognize(self, image: np.ndarray, boxes: list[WordBox], clock: StageClock | None = None) -> list[Word]:
        """Read each box: crop it upright with a margin, recognize the crops in batches, and read
        the unsure ones once more from their main colour axis, contrast-stretched."""
        clock = clock or StageClock()
        s = self.settings
        crops = []
        for box in boxes:
            height = box.size[1] if self.detector_family.crop_margin else 0.0
            crops.append(rectify(image, grow(box.polygon, s.crop_margin_along * height, s.crop_margin_across * height)))
        decoded = self.read_crops(crops, clock)
        retry = [i for i, d in enumerate(decoded) if d.score < s.contrast_retry_below]
        if retry:
            again = self.read_crops([stretch_contrast(principal_gray(crops[i]), s.contrast_target) for i in retry], clock)
            for i, d in zip(retry, again):
                if d.score > decoded[i].score:
                    decoded[i] = d
        image_h, image_w = image.shape[:2]
        words = []
        for box, d in zip(boxes, decoded):
            if not d.text:
                continue
            pieces = split_words(box.polygon, d.text) if " " in d.text else [(d.text, box.polygon, slice(None))]
            for text, corners, chars in pieces:
                polygon = [[min(max(float(x), 0.0), image_w), min(max(float(y), 0.0), image_h)] for x, y in corners]
                words.append(Word(text=text, polygon=polygon, score=d.score, char_scores=d.char_scores[chars]))
        clock.lap("decode")
        return words

    def read_crops(self, crops: list[np.ndarray], clock: StageClock | None = None) -> list[Decoded]:
        """Recognize uint8 crops, batching those whose inputs share a shape (the family pads them
        to a few widths); all batches go out at once where the recognizer runner allows it."""
        clock = clock or StageClock()
        items = [self.family.make_input(c) for c in crops]
        groups = batches([x.shape for x in items], self.settings.recognizer_batch)
        feeds = [{"input": np.stack([items[i] for i in group])} for group in groups]
        clock.lap("crops")
        outputs = infer_all(self.recognizer, feeds)
        clock.lap("recognizer")
        decoded: dict[int, Decoded] = {}
        for group, output in zip(groups, outputs):
            decoded.update((i, self.family.decode(row)) for i, row in zip(group, output["output"]))
        clock.lap("decode")
        return [decoded[i] for i in range(len(items))]

    @staticmethod
    def to_prediction(file: str, words: list[Word]) -> dict:
        """One image entry of the scorer's prediction format (`{"images": [entry, ...]}`)."""
        return {"file": file, "words": [w.to_dict() for w in words]}
