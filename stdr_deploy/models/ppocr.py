"""PP-OCRv4 (PaddleOCR), ONNX-native: the official ONNX files are the artefacts, no torch network.

Both files come inside the `rapidocr_onnxruntime` 1.4.4 wheel on PyPI (weights registry
`ppocrv4-det`, `ppocrv4-rec`: found in an installed distribution without importing it, or
extracted from the pinned wheel, sha256-checked). Licence: Apache-2.0 (PaddleOCR's models and
RapidOCR alike; see LICENSES/THIRD_PARTY.md). Their "export" is onnx.checker + simplify +
parity against the original file, with the IO renamed to the project's `input`/`output`, so
runners, Triton configs and the orchestrator treat them like every other family.

- `ppocr-det` (DBNet): `x` [N,3,H,W] (H, W multiples of 32, BGR, (v/255-0.5)/0.5) ->
  `sigmoid_0.tmp_0` [N,1,H,W], the text probability map; boxes by `stdr_deploy.ocr.db_postprocess`.
- `ppocr` (SVTR-LCNet + CTC): `x` [N,3,48,W] (BGR, (v/255-0.5)/0.5, zero-padded on the right)
  -> `softmax_11.tmp_0` [N,W/8,6625], probabilities (already softmaxed). Class 0 is the CTC blank,
  classes 1..6623 the dictionary stored in the file's metadata `character` (one per line), the
  last class a space (RapidOCR's and PaddleOCR's `use_space_char`).
"""

from __future__ import annotations

from pathlib import Path

from stdr_deploy.errors import UserInputError
from stdr_deploy.models.spec import ModelSpec, TensorSpec

CHARACTER_KEY = "character"  # ONNX metadata key of the recognizer's dictionary
NUM_CLASSES = 6625  # blank + 6623 dictionary entries + space
LICENSE = "Apache-2.0"


def _no_network(name: str):
    def build(**_: object):
        raise UserInputError(
            f"{name} is ONNX-native: there is no PyTorch network to build",
            hint="run it with ONNX Runtime (--runtime onnxruntime); its ONNX file is the artefact",
        )

    return build


def charset_from_onnx(path: str | Path) -> str:
    """The recognizer's dictionary, one character per class 1..6623 (blank and space excluded).

    Read through ONNX Runtime, which the deployment core has (the onnx package is an extra)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only the metadata is wanted
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types for unreadable files
        raise UserInputError(f"cannot read ONNX model {path}: {exc}") from exc
    props = session.get_modelmeta().custom_metadata_map
    if CHARACTER_KEY not in props:
        raise UserInputError(f"{path} has no {CHARACTER_KEY!r} metadata: it is not a PP-OCR recognizer")
    return charset_from_metadata(props[CHARACTER_KEY])


def charset_from_metadata(value: str) -> str:
    chars = value.splitlines()
    if any(len(c) != 1 for c in chars) or len(chars) != NUM_CLASSES - 2:
        raise UserInputError(
            f"PP-OCR dictionary has {len(chars)} entries, expected {NUM_CLASSES - 2} single characters"
        )
    return "".join(chars)


# Both PP-OCRv4 models take BGR images scaled to [0, 1], then (x - 0.5) / 0.5.
PADDLE_INPUT = {"color": "bgr", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "pixel_scale": 255.0}

DET_SPEC = ModelSpec(
    name="ppocr-det",
    role="detector",
    triton_name="ppocr_det",
    default_weights="ppocrv4-det",
    inputs=(TensorSpec("input", "float32", ("batch", 3, "height", "width")),),
    outputs=(TensorSpec("output", "float32", ("batch", 1, "height", "width")),),
    opset=12,
    atol=1e-4,
    preprocess={
        # RapidOCR 1.4.4 defaults (config.yaml, TextDetector): images whose long side exceeds
        # 2000 are first shrunk to it; then limit_type "min": the short side is scaled up to
        # 736 if smaller (never down), and each side rounded to a multiple of 32; BGR; bilinear.
        **PADDLE_INPUT,
        "size_multiple": 32,
        "max_side_len": 2000,
        "limit_side_len": 736,
        "limit_type": "min",
        # DB post-processing (RapidOCR 1.4.4 defaults)
        "thresh": 0.3,
        "box_thresh": 0.5,
        "unclip_ratio": 1.6,
        "max_candidates": 1000,
        "min_size": 3,
        "use_dilation": True,
        "score_mode": "fast",
    },
    charset=None,
    num_classes=None,
    params=1_171_841,
    validation_shapes=((1, 3, 320, 480), (1, 3, 736, 992), (2, 3, 256, 256)),
    example_hw=(640, 640),
    build=_no_network("ppocr-det"),
    onnx_native={"input": "x", "output": "sigmoid_0.tmp_0"},
)

REC_SPEC = ModelSpec(
    name="ppocr",
    role="recognizer",
    triton_name="ppocr_rec",
    default_weights="ppocrv4-rec",
    inputs=(TensorSpec("input", "float32", ("batch", 3, 48, "width")),),
    outputs=(TensorSpec("output", "float32", ("batch", "steps", NUM_CLASSES)),),
    opset=12,
    atol=1e-4,
    preprocess={
        # BGR crop resized to height 48 keeping its aspect ratio (width ceil(48 * w / h)), bilinear,
        # x = (v / 255 - 0.5) / 0.5, zero-padded on the right to the input width (RapidOCR pads
        # to the widest crop of its batch, at least 320)
        **PADDLE_INPUT,
        "height": 48,
        "min_width": 320,
        "width_multiple": 8,
        "interpolation": "linear",
        "pad": "zeros",
        "output_stride": 8,  # steps = width / 8
        "blank_index": 0,
        "probabilities": True,
    },
    charset=None,  # in the ONNX file's metadata (`charset_from_onnx`)
    num_classes=NUM_CLASSES,
    params=2_690_352,
    validation_shapes=((1, 3, 48, 320), (4, 3, 48, 480), (8, 3, 48, 1024)),
    example_hw=(48, 320),
    build=_no_network("ppocr"),
    onnx_native={"input": "x", "output": "softmax_11.tmp_0"},
)
