"""The post-build check: an engine must reproduce its ONNX model within a stated tolerance.

The reference is ONNX Runtime (CPU) on the very ONNX file the engine was built from; the export
step already proved that file equal to torch within 1e-4. Inputs are seeded, in each model's
normalised range, at the profile's opt and min shapes (so not only the shape tuned for).

Tolerances (max abs error, rtol 0):
- FP32 engines: 1e-3 (TF32 is off, so this is accumulation-order noise with headroom);
- fp16 engines (the fp16 mixed-precision graph, compared with ONNX Runtime on that same graph):
  5e-2 on every output;
- int8 engines (QDQ graph, against the same graph): 5e-2 as well;
- recognizers, both precisions: the greedy class (argmax over the last axis) must also equal the
  reference's wherever the reference's top-1 beats its top-2 by more than twice the tolerance;
  closer calls may legitimately flip and are counted, not failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from stdr_deploy.compare import argmax_flips, compare_outputs
from stdr_deploy.engines.spec import BuildSpec
from stdr_deploy.errors import ValidationError

ATOL = {"fp32": 1e-3, "fp16": 5e-2, "int8": 5e-2}


class Runner(Protocol):
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Tolerance:
    atol: float
    argmax: bool  # also require equal greedy classes where the reference is decisive


def engine_tolerance(spec: BuildSpec) -> Tolerance:
    return Tolerance(ATOL[spec.precision], argmax=spec.role == "recognizer")


class OnnxRunner:
    """ONNX Runtime on the CPU: the reference the engine is compared with."""

    def __init__(self, path: str | Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.output_names = [out.name for out in self.session.get_outputs()]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, dict(feeds))))


def validation_feeds(spec: BuildSpec, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Seeded inputs at the opt and min shapes: uniform pixels, in the form the model takes."""
    from stdr_deploy.models import get_spec

    model = get_spec(spec.family)
    rng = np.random.default_rng(seed)
    feeds = []
    for pick in ("opt", "min"):
        shapes = {p.name: getattr(p, pick) for p in spec.profiles}
        if any(shapes == {n: s.shape for n, s in f.items()} for f in feeds):
            continue
        feeds.append({name: model.random_input(shape, rng) for name, shape in shapes.items()})
    return feeds


def check_engine_accuracy(
    engine: Runner,
    reference: Runner,
    feeds: list[Mapping[str, np.ndarray]],
    tolerance: Tolerance,
    *,
    name: str = "engine",
) -> dict[str, Any]:
    """Compare `engine` with `reference` on every feed; return the report or raise ValidationError."""
    runs = []
    failures = []
    for feed in feeds:
        expected = reference.infer(feed)
        got = engine.infer(feed)
        comparison = compare_outputs(expected, got, atol=tolerance.atol)
        run: dict[str, Any] = {
            "input_shapes": {k: list(np.shape(v)) for k, v in feed.items()},
            "comparison": comparison.to_dict(),
        }
        if not comparison:
            failures.append(comparison.describe())
        if tolerance.argmax and comparison:
            flips = {out: argmax_flips(expected[out], got[out], 2 * tolerance.atol) for out in expected}
            run["argmax"] = flips
            failures += [
                f"{out}: greedy class differs at {f['decisive_flips']} decisive positions"
                for out, f in flips.items()
                if f["decisive_flips"]
            ]
        runs.append(run)
    report = {"atol": tolerance.atol, "argmax": tolerance.argmax, "passed": not failures, "runs": runs}
    if failures:
        raise ValidationError(
            f"{name} is not accurate enough (atol {tolerance.atol:g}):\n" + "\n".join(failures),
            hint="the engine was not kept; plan the model at fp32 or report the ONNX model and TensorRT version",
        )
    return report
