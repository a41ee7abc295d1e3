"""fp32 CRAFT export -> int8 (static QDQ) ONNX for CPU serving, checked and cached like an export.

Why: on CPUs with int8 units, ONNX Runtime (MLAS) runs the quantized detector several times
faster than fp32 for a fraction of a percent of the words read (measured figures:
`cpu_speed.INT8_XEON_IMG01_S`, the planner's `INT8_WORDS_READ`, and the README), so CPU plans serve it.

Recipe (measured on the 2-core Xeon; every value is in the cache key):
1. opset 11 -> 13 with `onnx.version_converter` (per-channel DequantizeLinear needs opset 13);
2. `quant_pre_process` (shape inference and graph clean-up; the symbolic pass is skipped, as
   it fails on CRAFT's dynamic height and width);
3. `quantize_static`: QDQ format, weights int8 per channel, activations and biases as the
   runtime wants them (`FLAVOURS`), MinMax ranges
   from `stdr_deploy.calibration` images (MinMax takes inputs of any size; Percentile needs one
   shape and ran out of memory). The first convolution (raw image statistics) and the score
   head (`conv_cls`, whose outputs are the thresholded maps) stay fp32: quantizing them cost
   the most accuracy.
Three flavours of the same recipe, because the runtimes want different QDQ:
- `onnxruntime` (CPU plans, the default): uint8 activations and int32 biases, which ONNX
  Runtime fuses into its fast u8s8 QLinearConv kernels;
- `openvino` (CPU plans whose detector runs on OpenVINO): the same, except that the U-net's
  four Concat nodes take their inputs before the Q/DQ pairs, in float. OpenVINO (2026.4, CPU
  plugin) computes a Concat of quantized inputs wrongly: the score maps differed from fp32 by up
  to 0.96 and the pipeline read 108 of 276 words; with float concatenations it reads 247 (ONNX
  Runtime's int8: 246) and still runs 2.2x faster than ONNX Runtime on the 2-core AMX Xeon
  (benchmarks/results/cpu-xeon-2c-int8/openvino/). ONNX Runtime runs this flavour 2x slower:
  a convolution with a float consumer no longer fuses into QLinearConv;
- `tensorrt` (strongly typed TensorRT builds): symmetric int8 activations and float biases.
  TensorRT's ONNX parser rejects an int32 input to DequantizeLinear and a non-zero zero point
  (checked with TensorRT-RTX 1.7's parser). On ONNX Runtime CPU this flavour is slower: on the
  loaded 2-core Xeon, img03 at 1600x1216 ran 1.29x faster than fp32 against 1.83x for the
  onnxruntime flavour (same run, 2 threads).

Validation: the int8 pipeline must read the smoke image with the same words as fp32 (else the
export fails); the largest score-map difference on a calibration image is recorded, not judged.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from stdr_deploy.errors import ValidationError, require_onnx
from stdr_deploy.export.cache import ExportResult, cached_or_built
from stdr_deploy.export.fp32 import tool_versions
from stdr_deploy.progress import Stages
from stdr_deploy.workspace import cache_dir, sha256_file, write_json_atomic

REPORT_FORMAT = 1
QUANT_OPSET = 13
EXCLUDED_CONVS = ("slice1.0", "conv_cls")  # substrings of the Conv node names kept in fp32
CALIBRATION_CANVAS = 2560  # the planner's default canvas: calibration images keep their size
RECIPE = {
    "format": REPORT_FORMAT,
    "opset": QUANT_OPSET,
    "quant_format": "QDQ",
    "per_channel": True,
    "flavours": "see FLAVOURS",
    "weight_type": "QInt8",
    "calibrate_method": "MinMax",
    "excluded_convs": list(EXCLUDED_CONVS),
    "calibration_canvas": CALIBRATION_CANVAS,
}
# Per runtime: activation type and the quantize_static extra options that differ (docstring).
FLAVOURS = {
    "onnxruntime": {"activation_type": "QUInt8", "QuantizeBias": True, "ActivationSymmetric": False},
    "openvino": {"activation_type": "QUInt8", "QuantizeBias": True, "ActivationSymmetric": False, "float_concat": True},
    "tensorrt": {"activation_type": "QInt8", "QuantizeBias": False, "ActivationSymmetric": True},
}
_SOURCES = ("quantize.py", "calibration.py")  # code hashed into the key


def _key_content(fp32_sha256: str) -> dict[str, Any]:
    root = Path(__file__).resolve().parent
    return {
        "fp32_sha256": fp32_sha256,
        "recipe": RECIPE,
        "sources": {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in _SOURCES},
        "versions": {dist: tool_versions()[dist] for dist in ("onnx", "onnxruntime")},  # None: not installed
    }


def _digest(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def int8_cache_key(fp32_sha256: str, flavour: str = "onnxruntime") -> str:
    """`craft-int8[-<flavour>]-<hash>` of the fp32 model's bytes, the recipe, the code and the tool versions."""
    prefix = "craft-int8-" if flavour == "onnxruntime" else f"craft-int8-{flavour}-"
    return prefix + _digest({**_key_content(fp32_sha256), "flavour": FLAVOURS[flavour]})


def calibration_ranges_path(fp32_sha256: str) -> Path:
    """Where the MinMax activation ranges of one fp32 model are kept (ONNX Runtime's calibration
    cache). The flavours differ only in how the ranges become QDQ, so they share them: the second
    flavour skips the calibration inference (about a minute on a 2-core CPU)."""
    return cache_dir() / "calibration" / f"craft-ranges-{_digest(_key_content(fp32_sha256))}.json"


def quantize_detector(
    fp32: ExportResult, *, flavour: str = "onnxruntime", stages: Stages | None = None, force: bool = False
) -> ExportResult:
    """The int8 twin of the fp32 CRAFT export `fp32` for `flavour`'s runtime: cached, else quantized and validated."""
    stages = stages or Stages(None)
    entry = cache_dir() / "onnx" / int8_cache_key(fp32.report["onnx"]["sha256"], flavour)
    return cached_or_built(entry, lambda folder: _build(fp32, folder, stages, flavour), force=force)


def _build(fp32: ExportResult, folder: Path, stages: Stages, flavour: str) -> dict[str, Any]:
    from stdr_deploy.calibration import CALIBRATION_SEED, calibration_images

    started = time.perf_counter()
    images = calibration_images()
    model_path = folder / "model.onnx"
    with stages.stage("quantize", total=len(images)) as task:
        ranges = calibration_ranges_path(fp32.report["onnx"]["sha256"])
        excluded = _quantize(fp32.onnx_path, model_path, folder, images, task, FLAVOURS[flavour], ranges)
    with stages.stage("validate"):
        validation = _validate(fp32.onnx_path, model_path, images[0])
    report = {
        "format": REPORT_FORMAT,
        "model": "craft",
        "precision": "int8",
        "fp32": {"onnx_sha256": fp32.report["onnx"]["sha256"], "cache_key": fp32.report["cache_key"]},
        "recipe": RECIPE,
        "flavour": {"runtime": flavour, **FLAVOURS[flavour]},
        "excluded_nodes": excluded,
        "calibration": {"seed": CALIBRATION_SEED, "shapes": [list(image.shape[:2]) for image in images]},
        "versions": {dist: tool_versions()[dist] for dist in ("onnx", "onnxruntime")},  # None: not installed
        "onnx": {"sha256": sha256_file(model_path), "bytes": model_path.stat().st_size, "opset": QUANT_OPSET},
        "validation": validation,
        "seconds": {**stages.seconds, "total": round(time.perf_counter() - started, 3)},
    }
    write_json_atomic(folder / "report.json", report)
    return json.loads((folder / "report.json").read_text())


def _quantize(
    fp32_path: Path, out: Path, folder: Path, images: list[np.ndarray], task: Any, flavour: dict[str, Any],
    ranges: Path,
) -> list[str]:
    """Run the recipe; intermediate graphs are written to `folder` and removed. Returns the fp32 nodes."""
    import inspect

    onnx = require_onnx("the int8 export", "export")
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    converted, prepared = folder / "opset13.onnx", folder / "prepared.onnx"
    onnx.save(version_converter.convert_version(onnx.load(str(fp32_path)), QUANT_OPSET), str(converted))
    quant_pre_process(str(converted), str(prepared), skip_symbolic_shape=True)
    nodes = onnx.load(str(prepared)).graph.node
    excluded = [n.name for n in nodes if n.op_type == "Conv" and any(part in n.name for part in EXCLUDED_CONVS)]
    if not excluded:
        raise ValidationError(
            f"none of the Conv nodes named like {EXCLUDED_CONVS} was found in the craft export",
            hint="the export's node names changed: update stdr_deploy.quantize.EXCLUDED_CONVS",
        )
    shared = {}  # ONNX Runtime >= 1.32 reads the ranges from (or saves them to) a calibration cache
    if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        shared["calibration_cache_path"] = str(ranges)
    quantize_static(
        str(prepared),
        str(out),
        _CalibrationFeeds(images, task),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=getattr(QuantType, flavour["activation_type"]),
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=excluded,
        # One image per range update: holding every activation of every image would need ~1 GB per MP.
        extra_options={
            "CalibStridedMinMax": 1,
            "QuantizeBias": flavour["QuantizeBias"],
            "ActivationSymmetric": flavour["ActivationSymmetric"],
        },
        **shared,
    )
    converted.unlink()
    prepared.unlink()
    if flavour.get("float_concat"):
        model = onnx.load(str(out))
        _float_concat_inputs(model.graph)
        onnx.save(model, str(out))
    return excluded


def _float_concat_inputs(graph: Any) -> int:
    """Feed every Concat the float tensor its quantized inputs were made from (the Q/DQ pairs stay
    for their other consumers). Returns how many inputs were rewired."""
    producer = {output: node for node in graph.node for output in node.output}
    rewired = 0
    for node in graph.node:
        if node.op_type != "Concat":
            continue
        for index, name in enumerate(node.input):
            dequantize = producer.get(name)
            quantize = producer.get(dequantize.input[0]) if dequantize is not None else None
            if dequantize is not None and dequantize.op_type == "DequantizeLinear" and quantize is not None \
                    and quantize.op_type == "QuantizeLinear":
                node.input[index] = quantize.input[0]
                rewired += 1
    if not rewired:
        raise ValidationError("the int8 craft has no quantized Concat input to leave in float",
                              hint="the export's graph changed: check stdr_deploy.quantize._float_concat_inputs")
    return rewired


class _CalibrationFeeds:
    """ONNX Runtime's calibration reader protocol (`get_next`, `set_range`, `len`) over our images.

    Tensors are made one at a time, when read, so only one image's input is held at once.
    """

    def __init__(self, images: list[np.ndarray], task: Any):
        self.images, self.task = images, task
        self.pending: list[np.ndarray] = list(images)

    def __len__(self) -> int:
        return len(self.images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.pending = self.images[start_index:end_index]

    def get_next(self) -> dict[str, np.ndarray] | None:
        from stdr_deploy.ocr.detector_input import detector_input

        if not self.pending:
            return None
        image, self.pending = self.pending[0], self.pending[1:]
        self.task.advance()
        return {"input": detector_input(image, CALIBRATION_CANVAS, 1.0).tensor}


def _validate(fp32_path: Path, int8_path: Path, image: np.ndarray) -> dict[str, Any]:
    """Same words as fp32 on the smoke image (or ValidationError); score-map gap on `image`."""
    from stdr_deploy.export.fp32 import fp32_onnx
    from stdr_deploy.ocr import OcrPipeline, PipelineSettings
    from stdr_deploy.ocr.detector_input import detector_input
    from stdr_deploy.ort_runner import OrtRunner
    from stdr_deploy.smoke_image import smoke_image

    recognizer = OrtRunner(fp32_onnx("crnn-en"))
    fp32, int8 = OrtRunner(fp32_path), OrtRunner(int8_path)
    smoke = smoke_image()
    words = {
        name: OcrPipeline(runner, recognizer, "crnn-en", PipelineSettings()).read(smoke)
        for name, runner in (("fp32", fp32), ("int8", int8))
    }
    texts = {name: [w.text for w in found] for name, found in words.items()}
    if texts["int8"] != texts["fp32"]:
        raise ValidationError(
            f"the int8 craft reads the smoke image as {texts['int8']}, fp32 as {texts['fp32']}",
            hint="serve the fp32 detector (--detector-precision fp32), or report this with the weights used",
        )
    feeds = {"input": detector_input(image, CALIBRATION_CANVAS, 1.0).tensor}
    gap = np.abs(fp32.infer(feeds)["output"] - int8.infer(feeds)["output"])
    return {
        "smoke_words": texts["int8"],
        "smoke_box_max_gap_px": _box_gap(words["fp32"], words["int8"]),
        "score_map_max_abs": round(float(gap.max()), 6),
        "score_map_mean_abs": round(float(gap.mean()), 6),
        "score_map_input_shape": list(feeds["input"].shape),
    }


def _box_gap(a: list, b: list) -> float:
    return max(
        (float(np.abs(np.asarray(x.polygon, float) - np.asarray(y.polygon, float)).max()) for x, y in zip(a, b)),
        default=0.0,
    )
