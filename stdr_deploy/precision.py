"""fp32 export -> fp16 mixed-precision ONNX: fp16 compute, fp32 inputs/outputs, sensitive ops in fp32.

Why a graph and not a builder flag: TensorRT 11 (and TensorRT-RTX) build strongly typed
networks only, so the precision of every tensor must be in the ONNX file. The same file is
served by ONNX Runtime's CUDA provider and built by TensorRT, so both run the same numerics.

Recipe (every value is in the cache key): onnxconverter-common's
`float16.convert_float_to_float16(keep_io_types=True)` with its default op block list (ops it
knows to lack fp16 kernels, e.g. Resize) plus:
- `KEPT_FP32_OPS`: Softmax and the Reduce* ops (a sum of up to thousands of terms overflows
  fp16's 65504 or loses the small terms), LayerNormalization, Pow and Sqrt, and the recurrent
  ops (LSTM/GRU/RNN: the cell state is a running sum carried over up to 511 steps in CRNN);
- the nodes of a LayerNorm decomposed below opset 17 (`ReduceMean -> Sub -> Pow -> ReduceMean
  -> Add(eps) -> Sqrt -> Div`): `(x - mean)^2` overflows for |x - mean| > 256 and eps = 1e-5 is
  below fp16's normal range, so the Sub, Add and Div of that chain stay fp32 too;
- the chain that normalises an integer input (CRAFT's uint8 pixels: `Cast -> Sub -> Div`): the
  converter turns its constants to fp16 but not the Cast's target type, which leaves a Sub of
  float and fp16 (onnx.checker refuses it); kept fp32, it computes what the fp32 graph does and
  hands fp16 to the first convolution, as the fp16 graph of a float input does.
The converter leaves stale fp32 `value_info` behind the Casts it adds after a blocked Resize
(ONNX Runtime then refuses the graph), so the value_info is dropped and inferred again.

Validation (tolerance `FP16_TOLERANCE`): on seeded inputs at the spec's validation shapes,
every output's max abs difference to the fp32 graph, divided by the fp32 output's largest
magnitude (at least 1: CRAFT's score maps live in [0, 1] and are thresholded at 0.4-0.7, but
random inputs drive them only to ~0.02), must be <= 2e-2. Why 2e-2: fp16 keeps 11 significant bits, a relative rounding of
2^-11 = 4.9e-4 per stored value; rounding errors of ~30 layers in sequence add up to at most
~30 x 4.9e-4 = 1.5e-2 of the output's scale (worst case; random-signed errors grow like the
square root), rounded up. Recognizers must also keep the greedy class wherever fp32 is decisive
(top-1 beats top-2 by more than twice the tolerance). And the pipeline must read the smoke
image with the same words as fp32 (else the export fails).
On the CPU, ONNX Runtime runs the fp16 nodes it has no fp16 kernel for in fp32 between Casts,
so these CPU figures measure the weight rounding and the fp16 kernels ONNX Runtime has, not
a GPU's fp16 accumulation. ONNX Runtime 1.32's CPU provider crashes (SIGSEGV, while creating
the session) on the fp16 PARSeq graph in its `NchwcTransformer` optimisation, so the checks
here run with that pass off (`cpu_runner`); fp16 is served on GPUs only (render refuses it on
KIND_CPU instances).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stdr_deploy.compare import argmax_flips
from stdr_deploy.errors import ValidationError, require_onnx
from stdr_deploy.export.cache import ExportResult, cached_or_built
from stdr_deploy.ort_runner import OrtRunner
from stdr_deploy.progress import Stages
from stdr_deploy.workspace import cache_dir, sha256_file, write_json_atomic

if TYPE_CHECKING:
    import onnx

REPORT_FORMAT = 1
NORMALISING_OPS = ("Cast", "Sub", "Div", "Mul", "Add")  # what turns integer pixels into a network's input
UNIT_SCALE = 1.0  # outputs smaller than this are judged in absolute terms (see half_vs_full)
FP16_TOLERANCE = 2e-2  # max abs difference / max |fp32 output|, see the module docstring
KEPT_FP32_OPS = (
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSumExp",
    "LayerNormalization",
    "Pow",
    "Sqrt",
    "LSTM",
    "GRU",
    "RNN",
)
RECIPE = {
    "format": REPORT_FORMAT,
    "converter": "onnxconverter_common.float16.convert_float_to_float16",
    "keep_io_types": True,
    "kept_fp32_ops": "converter defaults + " + ",".join(KEPT_FP32_OPS),
    "layernorm_chain_fp32": True,
    "input_normalisation_fp32": True,
    "tolerance": FP16_TOLERANCE,
}
_VERSIONED = ("onnx", "onnxruntime", "onnxconverter-common")


def fp16_cache_key(model: str, fp32_sha256: str) -> str:
    """`<model>-fp16-<hash>` of the fp32 model's bytes, the recipe, this code and the tool versions."""
    content = {
        "fp32_sha256": fp32_sha256,
        "recipe": RECIPE,
        "source": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "versions": _versions(),
    }
    return f"{model}-fp16-" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def half_precision(fp32: ExportResult, *, stages: Stages | None = None, force: bool = False) -> ExportResult:
    """The fp16 mixed-precision twin of the fp32 export `fp32`: cached, else converted and validated."""
    stages = stages or Stages(None)
    model = fp32.report["model"]
    entry = cache_dir() / "onnx" / fp16_cache_key(model, fp32.report["onnx"]["sha256"])
    return cached_or_built(entry, lambda folder: _build(fp32, folder, stages), force=force)


def fp32_nodes(graph: onnx.GraphProto) -> tuple[str, ...]:
    """Names of the nodes kept in fp32 beyond whole op types: the decomposed LayerNorm's Sub, Add,
    Div, and the elementwise chain that normalises an integer graph input.

    With the chain's ops (ReduceMean, Pow, Sqrt) this keeps every LayerNorm in fp32.
    """
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers[name].append(i)

    def producer_of(node: onnx.NodeProto, op_type: str) -> list[int]:
        index = producer.get(node.input[0]) if node.input else None
        return [index] if index is not None and nodes[index].op_type == op_type else []

    import onnx  # present: `graph` is one of its objects

    keep: set[int] = set()
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    for value in graph.input:
        if value.type.tensor_type.elem_type in floats:
            continue
        chain = consumers[value.name]
        while len(chain) == 1 and nodes[chain[0]].op_type in NORMALISING_OPS:
            keep.add(chain[0])
            chain = consumers[nodes[chain[0]].output[0]]
    for node in nodes:
        if node.op_type == "Pow":
            keep.update(producer_of(node, "Sub"))
        elif node.op_type == "Sqrt":
            keep.update(producer_of(node, "Add"))
            keep.update(j for j in consumers[node.output[0]] if nodes[j].op_type == "Div")
    return tuple(nodes[i].name for i in sorted(keep) if nodes[i].name)


def _build(fp32: ExportResult, folder: Path, stages: Stages) -> dict[str, Any]:
    onnx = require_onnx("the fp16 export", "export")

    started = time.perf_counter()
    model_path = folder / "model.onnx"
    with stages.stage("fp16"):
        half, kept_nodes = mixed_precision(onnx.load(str(fp32.onnx_path)))
        onnx.save(half, str(model_path))
        onnx.checker.check_model(str(model_path), full_check=True)
    name = fp32.report["model"]
    with stages.stage("parity"):
        parity = _parity(name, fp32.onnx_path, model_path)
    with stages.stage("validate"):
        validation = _smoke_words(name, fp32, model_path)
    ops = [n.op_type for n in half.graph.node]
    report = {
        "format": REPORT_FORMAT,
        "model": name,
        "triton_name": fp32.report["triton_name"],
        "precision": "fp16",
        "fp32": {"onnx_sha256": fp32.report["onnx"]["sha256"], "cache_key": fp32.report["cache_key"]},
        "recipe": RECIPE,
        "kept_fp32": {
            "ops": sorted({op for op in ops if op in KEPT_FP32_OPS}),
            "nodes": len(kept_nodes),  # the LayerNorm chains and an integer input's normalisation
            "casts": ops.count("Cast"),
        },
        "versions": _versions(),
        "onnx": {
            "sha256": sha256_file(model_path),
            "bytes": model_path.stat().st_size,
            "opset": fp32.report["opset"],
            "nodes": len(ops),
        },
        "parity": parity,
        "validation": validation,
        "seconds": {**stages.seconds, "total": round(time.perf_counter() - started, 3)},
    }
    write_json_atomic(folder / "report.json", report)
    return json.loads((folder / "report.json").read_text())


def mixed_precision(model: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """`model` converted by the recipe (module docstring); also the LayerNorm nodes kept fp32."""
    import onnx
    from onnxconverter_common import float16

    model = outputs_past_kept_ops(model)
    kept_nodes = fp32_nodes(model.graph)
    with warnings.catch_warnings():
        # "the float32 number ... will be truncated to 1e-07": the converter's documented clamping
        # of weights below fp16's range; the parity check measures what it costs.
        warnings.simplefilter("ignore", UserWarning)
        half = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *KEPT_FP32_OPS],
            node_block_list=list(kept_nodes),
        )
    del half.graph.value_info[:]  # stale types behind the converter's Casts (module docstring)
    return onnx.shape_inference.infer_shapes(half), kept_nodes


def outputs_past_kept_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` itself, or where a kept-fp32 op makes a graph output (ppocr's final Softmax), a copy
    in which those outputs pass through an Identity first. Without it the converter fails on the
    Cast pair it puts between that op and the output ("The downstream node of the second cast
    node should be graph output", microsoft/onnxconverter-common#307); with it the Identity runs
    in fp16 between two Casts, so that output is rounded to fp16 once (5e-4 relative: the parity
    check covers it)."""
    import onnx

    outputs = {o.name for o in model.graph.output}
    if not any(node.op_type in KEPT_FP32_OPS and outputs & set(node.output) for node in model.graph.node):
        return model  # nothing to route (craft, crnn-en, parseq): no copy of a large graph
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in list(copy.graph.node):
        if node.op_type not in KEPT_FP32_OPS:
            continue
        for i, name in enumerate(node.output):
            if name in outputs:
                node.output[i] = f"{name}_before_identity"
                copy.graph.node.append(onnx.helper.make_node(
                    "Identity", [node.output[i]], [name], name=f"{name}_identity"))
    return copy


def _parity(name: str, fp32_path: Path, fp16_path: Path) -> dict[str, Any]:
    """fp16 against fp32 on ONNX Runtime CPU, seeded inputs at the spec's validation shapes."""
    from stdr_deploy.export.parity import parity_inputs
    from stdr_deploy.models import get_spec

    spec = get_spec(name)
    reference, half = cpu_runner(fp32_path), cpu_runner(fp16_path)
    shapes, failures = [], []
    for x in parity_inputs(spec):
        expected, got = reference.infer({"input": x}), half.infer({"input": x})
        outputs = {}
        for out, exp in expected.items():
            row = half_vs_full(exp, got[out], argmax=spec.role == "recognizer")
            outputs[out] = row
            if not row["passed"]:
                failures.append(f"{out} at input {list(x.shape)}: {row}")
        shapes.append({"input_shape": list(x.shape), "outputs": outputs})
    if failures:
        raise ValidationError(
            f"the fp16 {name} differs from fp32 beyond {FP16_TOLERANCE:g} of the output scale:\n" + "\n".join(failures),
            hint="serve fp32 (plan the model at fp32), or report this with the weights used",
        )
    return {
        "runtime": "onnxruntime CPUExecutionProvider",
        "tolerance": FP16_TOLERANCE,
        "tolerance_of": "max abs difference / max(max |fp32 output|, 1)",
        "max_scaled": max(o["scaled"] for s in shapes for o in s["outputs"].values()),
        "shapes": shapes,
    }


def half_vs_full(expected: np.ndarray, got: np.ndarray, *, argmax: bool) -> dict[str, Any]:
    """One output of the fp16 graph against fp32: abs, mean and scale-relative error, greedy-class flips."""
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    # At least 1: CRAFT's score maps live in [0, 1] and peak at ~0.02 on random inputs, where a
    # relative measure would judge 4e-4 of absolute noise (seen on ORT 1.31) against 2e-2 x 0.02.
    scale = max(float(np.abs(expected).max()), UNIT_SCALE)
    row: dict[str, Any] = {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "scale": scale,
        "scaled": float(diff.max()) / scale,
    }
    passed = bool(np.isfinite(diff).all()) and row["scaled"] <= FP16_TOLERANCE
    if argmax:
        row["argmax"] = argmax_flips(expected, got, 2 * FP16_TOLERANCE * scale)
        passed = passed and row["argmax"]["decisive_flips"] == 0
    row["passed"] = passed
    return row


def _smoke_words(name: str, fp32: ExportResult, fp16_path: Path) -> dict[str, Any]:
    """The pipeline with the fp16 model reads the smoke image like the one with the fp32 model."""
    from stdr_deploy.export.fp32 import fp32_onnx
    from stdr_deploy.models import get_spec
    from stdr_deploy.ocr import OcrPipeline, PipelineSettings
    from stdr_deploy.ocr.recognizers import model_charset
    from stdr_deploy.smoke_image import smoke_image

    if get_spec(name).role == "detector":
        family, recognizer = "crnn-en", cpu_runner(fp32_onnx("crnn-en"))
        pipelines = {p: (cpu_runner(path), recognizer) for p, path in (("fp32", fp32.onnx_path), ("fp16", fp16_path))}
    else:
        family, detector = name, cpu_runner(fp32_onnx("craft"))
        pipelines = {p: (detector, cpu_runner(path)) for p, path in (("fp32", fp32.onnx_path), ("fp16", fp16_path))}
    image = smoke_image()
    texts = {
        p: [w.text for w in OcrPipeline(det, rec, family, PipelineSettings(), charset=model_charset(family, rec)).read(image)]
        for p, (det, rec) in pipelines.items()
    }
    if texts["fp16"] != texts["fp32"]:
        raise ValidationError(
            f"the fp16 {name} reads the smoke image as {texts['fp16']}, fp32 as {texts['fp32']}",
            hint="serve fp32 (plan the model at fp32), or report this with the weights used",
        )
    return {"smoke_words": texts["fp16"], "same_as_fp32": True}


def cpu_runner(path: str | Path) -> OrtRunner:
    """ONNX Runtime's CPU provider on one graph, for the checks here. `NchwcTransformer` is off:
    with it ONNX Runtime 1.32 crashes on the fp16 PARSeq graph (module docstring); it only
    re-lays fp32 convolutions for speed, so results do not depend on it."""
    return OrtRunner(path, disabled_optimizers=("NchwcTransformer",))


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for dist in _VERSIONED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions
