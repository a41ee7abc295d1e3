"""Recognizer logits -> text with per-character confidences.

- CTC greedy (crnn-en): best class per time step, merge repeats, drop the blank (class 0).
  A character's confidence is its best probability over the steps it spans; the word's is
  EasyOCR's `prod(p) ** (2 / sqrt(n))` over the n non-blank steps, which does not punish long
  words as a plain product would.
- PARSeq: best class per position, cut at the first end-of-sequence token (class 0). As in
  PARSeq's tokenizer, the confidences include the EOS probability when an EOS was found, and the
  sequence confidence is their product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Decoded:
    text: str
    char_scores: tuple[float, ...]  # one per character of `text`
    score: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 so tiny probabilities keep their digits."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def ctc_greedy(logits: np.ndarray, charset: str, blank: int = 0, banned: str = "") -> Decoded:
    """[T, C] logits of one crop; class i > 0 is `charset[i - 1]`.

    Characters in `banned` are never emitted: their probability is zeroed and the rest
    renormalised (EasyOCR masks other languages' characters the same way).
    """
    probs = softmax(logits)
    if banned:
        probs[..., [charset.index(c) + 1 for c in banned]] = 0.0
        probs /= probs.sum(axis=-1, keepdims=True)
    best = probs.argmax(axis=-1)
    best_p = probs.max(axis=-1)
    chars: list[str] = []
    scores: list[float] = []
    previous = blank
    for cls, p in zip(best.tolist(), best_p.tolist()):
        if cls != blank and cls != previous:
            chars.append(charset[cls - 1])
            scores.append(p)
        elif cls != blank:
            scores[-1] = max(scores[-1], p)
        previous = cls
    steps = best_p[best != blank]
    score = float(np.prod(steps) ** (2.0 / math.sqrt(len(steps)))) if len(steps) else 0.0
    return Decoded(text="".join(chars), char_scores=tuple(scores), score=score)


@dataclass(frozen=True)
class TokenDecoded:
    """PARSeq's tokenizer output: confidences end with the EOS probability when one was found."""

    text: str
    confidences: tuple[float, ...]
    sequence_confidence: float


def parseq_tokens(logits: np.ndarray, charset: str, eos: int = 0) -> TokenDecoded:
    """[L, C] logits of one crop; class 0 = EOS, class i > 0 is `charset[i - 1]`."""
    probs = softmax(logits)
    ids = probs.argmax(axis=-1)
    conf = probs.max(axis=-1)
    ends = np.flatnonzero(ids == eos)
    length = int(ends[0]) if len(ends) else len(ids)
    kept = conf[: length + 1] if len(ends) else conf
    text = "".join(charset[i - 1] for i in ids[:length].tolist())
    return TokenDecoded(text=text, confidences=tuple(kept.tolist()), sequence_confidence=float(np.prod(kept)))


def parseq_greedy(logits: np.ndarray, charset: str) -> Decoded:
    tokens = parseq_tokens(logits, charset)
    return Decoded(
        text=tokens.text,
        char_scores=tokens.confidences[: len(tokens.text)],
        score=tokens.sequence_confidence,
    )
