"""Per-output tolerance comparison of two runs of the same model.

Used after every conversion (torch -> ONNX here; ONNX -> TensorRT and the served model later):
each output gets its max abs and max rel error, and the result is truthy only when every
expected output is present with the same shape and within `atol + rtol * |expected|`.
A missing, extra or reshaped output is always a failure, whatever the tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class OutputComparison:
    """How one named output compares; `max_abs`/`max_rel` are None when shapes differ."""

    name: str
    expected_shape: tuple[int, ...] | None  # None: the output was not expected
    got_shape: tuple[int, ...] | None  # None: the output is missing
    max_abs: float | None
    max_rel: float | None
    passed: bool

    def describe(self) -> str:
        if self.got_shape is None:
            return f"{self.name}: FAIL missing (expected shape {list(self.expected_shape or ())})"
        if self.expected_shape is None:
            return f"{self.name}: FAIL unexpected output (shape {list(self.got_shape)})"
        if self.max_abs is None:
            return f"{self.name}: FAIL shape {list(self.got_shape)} != expected {list(self.expected_shape)}"
        verdict = "ok" if self.passed else "FAIL"
        return (
            f"{self.name}: {verdict} shape {list(self.got_shape)} "
            f"max_abs={self.max_abs:.3g} max_rel={self.max_rel:.3g}"
        )


@dataclass(frozen=True)
class Comparison:
    """All outputs of one comparison; truthy when every output passed."""

    outputs: tuple[OutputComparison, ...]
    atol: float
    rtol: float

    def __bool__(self) -> bool:
        return all(out.passed for out in self.outputs)

    @property
    def max_abs(self) -> float:
        """Worst max abs error over the outputs that could be compared (inf if none could)."""
        values = [out.max_abs for out in self.outputs if out.max_abs is not None]
        return max(values) if values and len(values) == len(self.outputs) else float("inf")

    def describe(self) -> str:
        """One line per output, for logs and error messages."""
        return "\n".join(out.describe() for out in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": bool(self),
            "atol": self.atol,
            "rtol": self.rtol,
            "outputs": {out.name: {k: v for k, v in asdict(out).items() if k != "name"} for out in self.outputs},
        }


def _compare_one(name: str, expected: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> OutputComparison:
    if expected.shape != got.shape:
        return OutputComparison(name, expected.shape, got.shape, None, None, False)
    exp = expected.astype(np.float64, copy=False)
    diff = np.abs(got.astype(np.float64, copy=False) - exp)
    # NaN in either side makes the diff NaN: count it as an infinite error, never as a pass.
    diff = np.where(np.isnan(diff), np.inf, diff)
    if diff.size == 0:
        return OutputComparison(name, expected.shape, got.shape, 0.0, 0.0, True)
    magnitude = np.abs(exp)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / magnitude)
    passed = bool(np.all(diff <= atol + rtol * magnitude))
    return OutputComparison(name, expected.shape, got.shape, float(diff.max()), float(rel.max()), passed)


def compare_outputs(
    expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], atol: float, rtol: float = 0.0
) -> Comparison:
    """Compare `got` against `expected`, output by output (expected's order, extras last)."""
    results = []
    for name, exp in expected.items():
        if name not in got:
            results.append(OutputComparison(name, tuple(np.shape(exp)), None, None, None, False))
        else:
            results.append(_compare_one(name, np.asarray(exp), np.asarray(got[name]), atol, rtol))
    for name in got:
        if name not in expected:
            results.append(OutputComparison(name, None, tuple(np.shape(got[name])), None, None, False))
    return Comparison(tuple(results), atol, rtol)


def argmax_flips(expected: np.ndarray, got: np.ndarray, margin: float) -> dict[str, int]:
    """Positions whose greedy class (argmax over the last axis) differs, split by whether the
    reference was decisive there (its top-1 beats its top-2 by more than `margin`)."""
    top2 = np.sort(expected, axis=-1)[..., -2:]
    decisive = (top2[..., 1] - top2[..., 0]) > margin
    flipped = np.argmax(expected, axis=-1) != np.argmax(got, axis=-1)
    return {
        "positions": int(flipped.size),
        "decisive_flips": int(np.sum(flipped & decisive)),
        "close_call_flips": int(np.sum(flipped & ~decisive)),
    }
