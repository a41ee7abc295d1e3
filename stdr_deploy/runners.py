"""Runners: one model behind `infer(feeds) -> outputs`, the interface `OcrPipeline` drives.

Feeds and outputs are dicts of numpy arrays keyed by the ONNX/Triton tensor names of the
model's spec, so the pipeline cannot tell PyTorch, ONNX Runtime or a Triton server apart (the
Triton runners live in `stdr_deploy.triton_client` and the served pipeline's `model.py`).
torch and onnxruntime are imported only when a runner of theirs is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from stdr_deploy.artifacts import ExportCache, OnnxSource
from stdr_deploy.errors import UserInputError, require_torch
from stdr_deploy.ocr import OcrPipeline, PipelineSettings
from stdr_deploy.ocr.recognizers import model_charset
from stdr_deploy.ort_runner import OrtRunner

RUNTIMES = ("onnxruntime", "torch")
DETECTOR = "craft"


class TorchRunner:
    """A model of the registry run eagerly in PyTorch (float32, CPU), with its weights loaded."""

    def __init__(self, family: str, weights: str | Path | None = None):
        torch = require_torch()

        from stdr_deploy.models import get_spec, load_model

        self._torch = torch
        self.spec = get_spec(family)
        self.model = load_model(family, weights)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self._torch.from_numpy(np.ascontiguousarray(feeds[self.spec.input.name], dtype=self.spec.input.dtype))
        with self._torch.inference_mode():
            y = self.model(x)
        outputs = y if isinstance(y, (tuple, list)) else (y,)
        names = [t.name for t in self.spec.outputs + self.spec.optional_outputs]
        return {name: out.numpy() for name, out in zip(names, outputs)}


def make_runner(
    runtime: str,
    family: str,
    weights: str | Path | None = None,
    precision: str = "fp32",
    onnx: OnnxSource | None = None,
):
    """`precision` "int8" (craft on onnxruntime only) runs the quantized export.

    `onnx` says where ONNX files come from (default: exported from `weights`, cached).
    """
    if runtime == "torch":
        if precision != "fp32":
            raise UserInputError(f"the torch runtime runs {family} in fp32 only", hint="use --runtime onnxruntime")
        return TorchRunner(family, weights)
    if runtime == "onnxruntime":
        source = onnx or ExportCache({family: weights} if weights is not None else {})
        return OrtRunner(source.onnx_file(family, precision))
    raise UserInputError(f"unknown runtime {runtime!r}", hint=f"use one of {', '.join(RUNTIMES)}")


def make_pipeline(
    runtime: str = "onnxruntime",
    recognizer: str = "crnn-en",
    weights: Mapping[str, str | Path] | None = None,
    settings: PipelineSettings | None = None,
    detector_precision: str = "fp32",
    onnx: OnnxSource | None = None,
    detector: str = DETECTOR,
) -> OcrPipeline:
    """`detector` + `recognizer` on `runtime`; `weights` maps a model name to a file or registry name.

    `detector_precision` "int8" runs the quantized CRAFT (as an int8 plan serves it). `onnx`
    (e.g. an `ArtifactDir`) supplies the ONNX files instead of exporting them, so ONNX Runtime
    needs no torch.
    """
    weights = dict(weights or {})
    unknown = sorted(set(weights) - {detector, recognizer})
    if unknown:
        raise UserInputError(
            f"weights given for {', '.join(unknown)}, which this pipeline does not use",
            hint=f"the pipeline runs {detector} and {recognizer}",
        )
    rec_runner = make_runner(runtime, recognizer, weights.get(recognizer), onnx=onnx)
    return OcrPipeline(
        make_runner(runtime, detector, weights.get(detector), detector_precision, onnx),
        rec_runner,
        recognizer,
        settings or PipelineSettings(),
        detector_family=detector,
        charset=model_charset(recognizer, rec_runner),
    )
