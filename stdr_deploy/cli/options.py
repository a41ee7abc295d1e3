"""Option groups shared by several subcommands, so they read the same everywhere."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable

import click

from stdr_deploy.errors import UserInputError
from stdr_deploy.ocr.detectors import DETECTORS
from stdr_deploy.ocr.recognizers import RECOGNIZER_NAMES
from stdr_deploy.plan_schema import PRECISIONS
from stdr_deploy.planner import INT8_WORDS_LOST
from stdr_deploy.runners import RUNTIMES
from stdr_deploy.supervise import Policy
from stdr_deploy.workspace import default_workspace



def recognizer_option(fn: Callable) -> Callable:
    return click.option(
        "--recognizer",
        type=click.Choice(RECOGNIZER_NAMES),
        default=None,
        help="Recognizer family (default: ppocr, which reads the most words over the check sets). "
        "crnn-en ships trained weights offline; ppocr is PP-OCRv4's ONNX recognizer, from the "
        "rapidocr_onnxruntime wheel (found installed, else downloaded once).",
    )(fn)


def detector_option(fn: Callable) -> Callable:
    return click.option(
        "--detector",
        type=click.Choice(list(DETECTORS)),
        default="craft",
        show_default=True,
        help="Detector family: craft (word boxes) or ppocr-det (PP-OCRv4 DBNet, ONNX Runtime only: "
        "text lines, split into words after reading).",
    )(fn)


def detector_precision_option(fn: Callable) -> Callable:
    return click.option(
        "--detector-precision",
        type=click.Choice(PRECISIONS),
        default=None,
        help="Detector precision (default: from the host; GPU fp16, CPU int8 where the CPU has "
        "VNNI/AMX int8 units or AVX2, else fp32). int8 is CPU-only (a statically quantized CRAFT, "
        f"{INT8_WORDS_LOST}), fp16 GPU-only.",
    )(fn)


def cpu_backend_option(fn: Callable) -> Callable:
    return click.option(
        "--cpu-backend",
        type=click.Choice(("onnxruntime", "openvino")),
        default=None,
        help="CPU plans: openvino serves the models OpenVINO was measured to run faster (the int8 CRAFT, "
        "the ppocr recognizer: 2.2x and 2.6x on a 2-core AMX Xeon, 1.6x and 1.75x without AMX, the same "
        "words); onnxruntime serves every model on ONNX Runtime. Default: openvino where it is installed "
        "(the `openvino` extra).",
    )(fn)


def recognizer_precision_option(fn: Callable) -> Callable:
    return click.option(
        "--recognizer-precision",
        type=click.Choice(("fp32", "fp16")),
        default=None,
        help="Recognizer precision (default: from the host; GPU fp16, CPU fp32). fp16 is GPU-only.",
    )(fn)


def canvas_option(fn: Callable) -> Callable:
    return click.option(
        "--canvas",
        type=click.IntRange(640, 4096),
        default=None,
        help="Detector canvas: long side of the detector input (default: from the host; CPU plans "
        "size it from a latency budget, GPU plans use EasyOCR's 2560). The memory fit keeps it.",
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


def parse_weights(values: tuple[str, ...], recognizer: str | None) -> dict[str, str]:
    """`("craft=a.pth", "b.pt")` -> `{"craft": "a.pth", recognizer: "b.pt"}`."""
    from stdr_deploy.models import MODEL_SPECS

    weights: dict[str, str] = {}
    for value in values:
        family, sep, path = value.partition("=")
        if not sep:
            if recognizer is None:
                raise UserInputError(
                    f"--weights {value!r}: a bare PATH is for the recognizer, and none was named "
                    "(the plan chooses it by host)",
                    hint="name the model: --weights crnn-en=PATH, or add --recognizer NAME",
                )
            family, path = recognizer, value
        if family not in MODEL_SPECS:
            raise UserInputError(
                f"--weights {value!r}: unknown model {family!r}",
                hint=f"use one of {', '.join(sorted(MODEL_SPECS))}, e.g. --weights craft=PATH",
            )
        weights[family] = path
    return weights


def workspace_option(fn: Callable) -> Callable:
    return click.option(
        "--workspace",
        type=click.Path(path_type=Path, file_okay=False),
        default=default_workspace,
        show_default="$STDR_DEPLOY_WORKSPACE, else workspace",
        help="Folder for host.json, plan.json, status.json, server.log and deploy.json.",
    )(fn)


def plan_option(fn: Callable) -> Callable:
    return click.option(
        "--plan",
        "plan_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=lambda: default_workspace() / "plan.json",
        show_default="<workspace>/plan.json, the workspace being $STDR_DEPLOY_WORKSPACE, else workspace",
        help="The plan (written by `stdr-deploy plan` or `auto`).",
    )(fn)


def artifacts_option(fn: Callable) -> Callable:
    return click.option(
        "--artifacts",
        type=click.Path(path_type=Path, file_okay=False, exists=True),
        help="Take the ONNX models from a directory written by `stdr-deploy package` (each sha256-checked) "
        "instead of exporting them: needs no torch.",
    )(fn)


def onnx_source(artifacts: Path | None, weights: dict[str, str]):
    """Where ONNX files come from: the artefact directory, or exports of `weights` (cached)."""
    from stdr_deploy.artifacts import ArtifactDir, ExportCache

    if artifacts is None:
        return ExportCache(weights)
    if weights:
        raise UserInputError(
            "--weights and --artifacts exclude each other: the artefacts were exported from their own weights",
            hint="package the weights you want: stdr-deploy package DIR --weights MODEL=PATH",
        )
    return ArtifactDir(artifacts)


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


def supervision_options(fn: Callable) -> Callable:
    """--probe-interval, --probe-timeout, --max-restarts, --restart-window, passed on as one
    `policy` (stdr_deploy.supervise.Policy)."""
    default = Policy()

    @functools.wraps(fn)
    def with_policy(*args, probe_interval, probe_timeout, max_restarts, restart_window, **kwargs):
        policy = Policy(interval_s=probe_interval, timeout_s=probe_timeout, max_restarts=max_restarts,
                        window_s=restart_window)
        return fn(*args, policy=policy, **kwargs)

    options = [
        click.option("--probe-interval", type=click.FloatRange(min=1), default=default.interval_s, show_default=True,
                     help="Seconds between inference probes (a small image through the pipeline, the smallest "
                     "input through each model); a model that fails one is reloaded."),
        click.option("--probe-timeout", type=click.FloatRange(min=1), default=default.timeout_s, show_default=True,
                     help="Seconds one probe request may take before it counts as failed."),
        click.option("--max-restarts", type=click.IntRange(min=0), default=default.max_restarts, show_default=True,
                     help="Model reloads and server restarts allowed within --restart-window; one more ends the "
                     "command with exit code 7 (0: no recovery, stop at the first failure)."),
        click.option("--restart-window", type=click.FloatRange(min=1), default=default.window_s, show_default=True,
                     help="Seconds over which --max-restarts counts."),
    ]
    for option in reversed(options):
        with_policy = option(with_policy)
    return with_policy
