"""Option groups shared by several subcommands, so they read the same everywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import click

from stdr_deploy.errors import UserInputError
from stdr_deploy.plan_schema import DETECTOR_PRECISIONS

RECOGNIZERS = ("crnn-en", "parseq", "parseq-tiny", "ppocr")
DETECTORS = ("craft", "ppocr-det")
RUNTIMES = ("onnxruntime", "torch")


def recognizer_option(fn: Callable) -> Callable:
    return click.option(
        "--recognizer",
        type=click.Choice(RECOGNIZERS),
        default="crnn-en",
        show_default=True,
        help="Recognizer family (crnn-en ships trained weights offline; ppocr is PP-OCRv4's ONNX "
        "recognizer, from the rapidocr_onnxruntime wheel).",
    )(fn)


def detector_option(fn: Callable) -> Callable:
    return click.option(
        "--detector",
        type=click.Choice(DETECTORS),
        default="craft",
        show_default=True,
        help="Detector family: craft (word boxes) or ppocr-det (PP-OCRv4 DBNet, ONNX Runtime only: "
        "text lines, split into words after reading).",
    )(fn)


def detector_precision_option(fn: Callable) -> Callable:
    return click.option(
        "--detector-precision",
        type=click.Choice(DETECTOR_PRECISIONS),
        default="fp32",
        show_default=True,
        help="CPU plans only: int8 serves a statically quantized CRAFT (exported once, then cached), "
        "2.5-4x faster on CPUs with VNNI/AMX int8 units for ~0.6 % fewer words read correctly. "
        "Refused on GPU plans.",
    )(fn)


def runtime_option(fn: Callable) -> Callable:
    return click.option(
        "--runtime",
        type=click.Choice(RUNTIMES),
        default="onnxruntime",
        show_default=True,
        help="Run the models with ONNX Runtime (exported once, then cached) or PyTorch.",
    )(fn)


def weights_option(fn: Callable) -> Callable:
    return click.option(
        "--weights",
        "weights",
        multiple=True,
        metavar="[MODEL=]PATH",
        help="Weights file for a model (repeatable); a bare PATH is for the recognizer. "
        "Default: the registry's weights (offline for craft and crnn-en).",
    )(fn)


def parse_weights(values: tuple[str, ...], recognizer: str) -> dict[str, str]:
    """`("craft=a.pth", "b.pt")` -> `{"craft": "a.pth", recognizer: "b.pt"}`."""
    from stdr_deploy.models import MODEL_SPECS

    weights: dict[str, str] = {}
    for value in values:
        family, sep, path = value.partition("=")
        if not sep:
            family, path = recognizer, value
        if family not in MODEL_SPECS:
            raise UserInputError(
                f"--weights {value!r}: unknown model {family!r}",
                hint=f"use one of {', '.join(sorted(MODEL_SPECS))}, e.g. --weights craft=PATH",
            )
        weights[family] = path
    return weights


def read_plan(path: Path):
    """A plan file written by `stdr-deploy plan`, or a clear error saying how to get one."""
    from stdr_deploy.plan_schema import Plan

    if not path.is_file():
        raise UserInputError(f"plan file {path} not found", hint="run `stdr-deploy plan` first, or pass --plan FILE")
    try:
        return Plan.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserInputError(f"plan file {path} is not a valid plan: {exc}",
                             hint="write it again with `stdr-deploy plan`") from None
