"""What the pipeline must know about each recognizer family: input maker, decoder, charset.

The charsets are restated here (not imported from `stdr_deploy.models`) because this package
also runs inside Triton's Python backend, where only it, numpy, OpenCV and Pillow exist; a test
checks they equal the model specs'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .crops import crnn_input, pad_width, parseq_input
from .decoders import Decoded, ctc_greedy, parseq_greedy
from .ppocr import ctc_probabilities, rec_input

# EasyOCR english_g2: class 0 is the CTC blank, class i is ENGLISH_G2[i - 1]
ENGLISH_G2 = "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# PARSeq 94_full: class 0 is EOS, class i is PARSEQ_94[i - 1]
PARSEQ_94 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


# Width buckets of crnn-en inputs (multiples of 64 up to the planner's max width): each crop is
# padded to the next one, so an image's crops need about one recognizer call per bucket instead
# of one per multiple of 64. Chosen by measurement (benchmarks/pipeline_breakdown.py).
CRNN_WIDTHS = (64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class RecognizerFamily:
    name: str
    charset: str
    prepare: Callable[[np.ndarray], np.ndarray]  # uint8 crop -> one input item (no batch axis)
    decode: Callable[[np.ndarray], Decoded]  # logits of one item -> text
    widths: tuple[int, ...] = ()  # width-dynamic inputs: padded up to one of these; () = as prepared

    def make_input(self, crop: np.ndarray) -> np.ndarray:
        """One recognizer input item for a uint8 crop, padded to its width bucket."""
        item = self.prepare(crop)
        return pad_width(item, self.widths) if self.widths else item


RECOGNIZERS: dict[str, RecognizerFamily] = {
    "crnn-en": RecognizerFamily(
        "crnn-en", ENGLISH_G2, crnn_input, lambda logits: ctc_greedy(logits, ENGLISH_G2, banned=" "), CRNN_WIDTHS
    ),
    "parseq": RecognizerFamily("parseq", PARSEQ_94, parseq_input, lambda logits: parseq_greedy(logits, PARSEQ_94)),
    "parseq-tiny": RecognizerFamily(
        "parseq-tiny", PARSEQ_94, parseq_input, lambda logits: parseq_greedy(logits, PARSEQ_94)
    ),
}


# Families whose charset lives in their model file (PP-OCRv4: 6,623 characters in the ONNX
# metadata `character`), so the caller passes it: `get_family("ppocr", charset)`.
MODEL_CHARSET = {
    "ppocr": lambda charset: RecognizerFamily(
        "ppocr", charset, rec_input, lambda probs: ctc_probabilities(probs, charset)
    ),
}


# Every recognizer family the pipeline reads, in the order the CLI and the planner list them.
RECOGNIZER_NAMES = (*RECOGNIZERS, *MODEL_CHARSET)


def model_charset(family: str, runner: Any) -> str | None:
    """The charset stored in a recognizer's ONNX file (ppocr; `runner` holds an ONNX Runtime
    session of it), None for families that declare theirs."""
    if family not in MODEL_CHARSET:
        return None
    from stdr_deploy.models.ppocr import CHARACTER_KEY, charset_from_metadata

    return charset_from_metadata(runner.session.get_modelmeta().custom_metadata_map[CHARACTER_KEY])


def get_family(name: str, charset: str | None = None) -> RecognizerFamily:
    if name in MODEL_CHARSET:
        if not charset:
            raise ValueError(f"recognizer family {name!r} needs the charset stored in its model file")
        return MODEL_CHARSET[name](charset)
    try:
        return RECOGNIZERS[name]
    except KeyError:
        known = ", ".join(RECOGNIZER_NAMES)
        raise ValueError(f"unknown recognizer family {name!r}; known: {known}") from None
