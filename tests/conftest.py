"""Shared test fixtures: where ../shared lives, and one export cache for the whole session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STDR_SHARED", ROOT.parent / "shared"))
HOSTS = Path(__file__).resolve().parent / "hosts"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED}: tests read oracles and test data from it")
    return SHARED


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test shares one cache, so each model is exported once per test run.

    Set STDR_TEST_CACHE to reuse a cache across runs while developing.
    """
    path = Path(os.environ.get("STDR_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["STDR_DEPLOY_CACHE"] = str(path)
    return path


# One real export per model per test session (cached in `session_cache`), for every test file
# that needs an ONNX model. Tests that re-export or corrupt an export use their own cache.


@pytest.fixture(scope="session")
def craft_onnx(session_cache: Path):
    from stdr_deploy.onnx_files import export_model

    return export_model("craft", progress=False)


@pytest.fixture(scope="session")
def craft_int8_onnx(craft_onnx, crnn_onnx):
    """The int8 CRAFT quantized from `craft_onnx` (its validation reads with `crnn_onnx`)."""
    from stdr_deploy.onnx_files import export_model

    return export_model("craft", precision="int8", progress=False)


@pytest.fixture(scope="session")
def craft_int8_openvino_onnx(craft_int8_onnx):
    """The int8 CRAFT in OpenVINO's flavour (its calibration ranges are `craft_int8_onnx`'s)."""
    from stdr_deploy.onnx_files import export_model

    return export_model("craft", precision="int8-openvino", progress=False)


@pytest.fixture(scope="session")
def crnn_onnx(session_cache: Path):
    from stdr_deploy.onnx_files import export_model

    return export_model("crnn-en", progress=False)


@pytest.fixture(scope="session")
def parseq_tiny_onnx(session_cache: Path, shared: Path):
    """parseq-tiny with the oracle's random weights (the release weights need a download)."""
    from stdr_deploy.onnx_files import export_model

    return export_model("parseq-tiny", weights=shared / "oracles/parseq/parseq_tiny_random_A.pt", progress=False)


@pytest.fixture(scope="session")
def craft_fp16_onnx(craft_onnx, crnn_onnx):
    """The fp16 mixed-precision CRAFT made from `craft_onnx` (its validation reads with `crnn_onnx`)."""
    from stdr_deploy.onnx_files import export_model

    return export_model("craft", precision="fp16", progress=False)


@pytest.fixture(scope="session")
def crnn_fp16_onnx(craft_onnx, crnn_onnx):
    from stdr_deploy.onnx_files import export_model

    return export_model("crnn-en", precision="fp16", progress=False)


@pytest.fixture(scope="session")
def parseq_tiny_fp16_onnx(craft_onnx, parseq_tiny_onnx, shared: Path):
    from stdr_deploy.onnx_files import export_model

    weights = shared / "oracles/parseq/parseq_tiny_random_A.pt"
    return export_model("parseq-tiny", weights=weights, precision="fp16", progress=False)


@pytest.fixture(scope="session")
def ppocr_fp16_onnx(craft_onnx, session_cache: Path):
    """The fp16 mixed-precision PP-OCRv4 recognizer (GPU plans' default), from the wheel's file."""
    from stdr_deploy.onnx_files import export_model

    return export_model("ppocr", precision="fp16", progress=False)


@pytest.fixture(scope="session")
def scenes_a_predictions(shared: Path) -> dict:
    """The default pipeline's predictions on scenes_A through `stdr-deploy ocr --json` (in-process,
    ONNX Runtime): CRAFT at a 2560 canvas is the most expensive thing the suite does, so once."""
    from click.testing import CliRunner

    from stdr_deploy.cli import cli

    images = sorted((shared / "testdata/scenes_A").glob("img*.png"))
    assert len(images) == 8
    result = CliRunner().invoke(cli, ["ocr", "--json", *map(str, images)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
