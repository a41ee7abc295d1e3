"""Where the int8 CRAFT's CPU time goes, and how fast this CPU's int8 units could go.

Issue 16 asks whether CRAFT can reach RapidOCR's latency on a 2-core box. This script answers
with three measurements in one process (ONNX Runtime, `--threads` intra-op threads):
1. the int8 CRAFT (stdr_deploy.quantize's QDQ graph, as CPU plans serve it) on one image's
   detector input (`--image` at `--canvas`, as the pipeline makes it):
   its best time, each op type's kernel time (the least over three profiled runs) and share, and
   the multiply-accumulates per second of the quantized convolutions (MACs from their weights and
   output shapes, over those convolutions' own kernel time);
2. the same graph with every weight zero point moved from 0 to -1 and the weights shifted with it
   (the dequantized weights are bit-identical): ONNX Runtime then cannot take its symmetric
   direct-convolution kernels and runs im2col + its int8 GEMM instead;
3. that int8 GEMM alone (`MatMulInteger`, uint8 x int8, 4096 cubed), whose kernels use AMX where
   the CPU has it: what int8 matrix units give through ONNX Runtime;
4. where the `openvino` package is installed (not a dependency: `pip install openvino`), the same
   int8 graph compiled by OpenVINO for the CPU with dynamic height and width: its best time, the
   first call at a second size (what a new shape costs), and its score maps against the fp32
   CRAFT's on ONNX Runtime, as ONNX Runtime's int8 ones are.

    python benchmarks/cpu_int8_kernels.py --out DIR [--image PNG --canvas 1600 --threads 2]

Writes kernels.json and kernels.md to DIR.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(model: bytes | str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def best_of(run, repeats: int) -> float:
    run()  # warm-up: first-call allocations and weight packing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def kernel_sizes(path: str) -> dict[str, int]:
    """Conv node name -> input channels x kernel area, from the weight its DequantizeLinear reads."""
    import onnx

    graph = onnx.load(path).graph
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    dequantized = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {n.name: int(np.prod(inits[dequantized[n.input[1]]][1:])) for n in graph.node
            if n.op_type == "Conv" and dequantized.get(n.input[1]) in inits}


def op_profile(path: str, feed: dict, threads: int, folder: Path, runs: int = 3) -> dict:
    """Per op type: its kernel time (the least over `runs` profiled runs, after a warm-up) and share,
    and the quantized convolutions' MAC rate over their own kernel time.

    Profiling slows some ops several-fold in one run and not the next (seen: the fp32 convolutions
    and ReorderOutput at 3-8x), so no single run's shares are applied to an unprofiled time."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "profile")
    s = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        s.run(None, feed)
    events = json.loads(Path(s.end_profiling()).read_text())
    per_output = kernel_sizes(path)
    model_runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    per_run = [collections.Counter() for _ in model_runs]
    macs = 0
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        index = next((i for i, (start, end) in enumerate(model_runs) if start <= e["ts"] <= end), None)
        if index is None:
            continue
        op = e["args"]["op_name"]
        per_run[index][op] += e["dur"] / 1e3
        if op == "QLinearConv" and index == 0:  # named after the Conv it replaced: "<conv>_token_<n>"
            out = next(iter(e["args"]["output_type_shape"][0].values()))
            macs += int(np.prod(out)) * per_output[e["name"].rsplit("_token_", 1)[0]]
    ms = {op: min(run[op] for run in per_run) for op in per_run[0]}
    total = sum(ms.values())
    conv_s = ms["QLinearConv"] / 1e3
    return {"runs": len(per_run),
            "ops": {op: {"ms": round(t, 1), "share": round(t / total, 3)} for op, t in sorted(ms.items(), key=lambda kv: -kv[1])},
            "total_ms": round(total, 1), "run_totals_ms": [round(sum(run.values()), 1) for run in per_run],
            "qlinearconv_gmac": round(macs / 1e9, 1), "qlinearconv_tmac_per_s": round(macs / 1e12 / conv_s, 3)}


def shifted_zero_points(path: str, out: Path) -> int:
    """The graph with int8 weight zero points 0 -> -1 and weights - 1 (same dequantized values)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    shifted = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or len(node.input) < 3:
            continue
        weights, zero = (numpy_helper.to_array(inits[node.input[i]]) for i in (0, 2))
        if weights.dtype != np.int8 or zero.any() or weights.min() < -127:
            continue
        inits[node.input[0]].CopyFrom(numpy_helper.from_array((weights.astype(np.int16) - 1).astype(np.int8), node.input[0]))
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(np.full_like(zero, -1), node.input[2]))
        shifted += 1
    onnx.save(model, str(out))
    return shifted


def gemm_rate(threads: int, side: int = 4096) -> float:
    """uint8 x int8 MatMulInteger, TMAC/s (the best of 3)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weights = rng.integers(-100, 100, (side, side), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [side, side])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [side, side])],
        [helper.make_tensor("b", TensorProto.INT8, [side, side], weights.tobytes(), raw=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    s = session(model.SerializeToString(), threads)
    a = rng.integers(0, 255, (side, side), dtype=np.uint8)
    return side ** 3 / best_of(lambda: s.run(None, {"a": a}), 3) / 1e12


def openvino_run(path: str, feed: dict, reference: np.ndarray, threads: int) -> dict:
    """The graph on OpenVINO's CPU plugin (dynamic shapes, latency hint, fp32 where the graph is
    fp32: its default on AMX CPUs is bf16), its score maps against `reference` (fp32 CRAFT)."""
    try:
        import openvino as ov
    except ImportError:
        return {"installed": False}
    from openvino_words import OpenVinoRunner

    start = time.perf_counter()
    runner = OpenVinoRunner(Path(path), threads)
    output = runner.infer(feed)["output"]
    first = time.perf_counter() - start
    seconds = best_of(lambda: runner.infer(feed), 3)
    image = feed["input"]
    start = time.perf_counter()
    runner.infer({"input": image[:, :, : image.shape[2] - 64, :]})  # a new shape: 64 rows fewer
    new_shape = time.perf_counter() - start
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return {"installed": True, "version": ov.get_version(), "capabilities": capabilities,
            "compile_and_first_s": round(first, 3), "seconds": round(seconds, 3), "first_call_new_shape_s": round(new_shape, 3),
            "vs_fp32": differences(output, reference)}


def differences(output: np.ndarray, reference: np.ndarray) -> dict:
    return {"max_abs": round(float(np.abs(output - reference).max()), 4),
            "mean_abs": round(float(np.abs(output - reference).mean()), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=Path(__file__).resolve().parents[2] / "shared/testdata/scenes_A/img01.png")
    parser.add_argument("--canvas", type=int, default=1600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from stdr_deploy.ocr import read_image
    from stdr_deploy.ocr.detector_input import detector_input
    from stdr_deploy.onnx_files import ensure_onnx

    int8 = str(ensure_onnx("craft", precision="int8"))
    feed = {"input": detector_input(read_image(args.image), args.canvas, 1.0).tensor}
    shape = list(feed["input"].shape)
    with tempfile.TemporaryDirectory() as tmp:
        shifted_path = Path(tmp) / "shifted.onnx"
        shifted = shifted_zero_points(int8, shifted_path)
        runs = {}
        for label, path in (("symmetric weights (as served)", int8), ("weight zero points -1", str(shifted_path))):
            s = session(path, args.threads)
            seconds = best_of(lambda: s.run(None, feed), 3)
            runs[label] = {"seconds": round(seconds, 3), "profile": op_profile(path, feed, args.threads, Path(tmp))}
    reference = session(str(ensure_onnx("craft")), args.threads).run(None, feed)[0]
    result = {"cpu": platform.processor() or platform.machine(), "onnxruntime": ort.__version__,
              "threads": args.threads, "image": args.image.name, "input": shape, "shifted_weights": shifted,
              "runs": runs, "onnxruntime_int8_vs_fp32": differences(session(int8, args.threads).run(None, feed)[0], reference),
              "matmulinteger_u8s8_tmac_per_s": round(gemm_rate(args.threads), 3),
              "openvino": openvino_run(int8, feed, reference, args.threads)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"int8 CRAFT on {args.image.name} at canvas {args.canvas} ({'x'.join(map(str, shape))}), "
             f"ONNX Runtime {ort.__version__}, {args.threads} threads", "",
             "| graph | s (best of 3) | QLinearConv kernels ms (least of the profiled runs) | their share | QLinearConv TMAC/s |",
             "|---|---:|---:|---:|---:|"]
    for label, run in runs.items():
        p = run["profile"]
        conv = p["ops"]["QLinearConv"]
        lines.append(f"| {label} | {run['seconds']} | {conv['ms']} | {conv['share']:.0%} | {p['qlinearconv_tmac_per_s']} |")
    lines += ["", f"MatMulInteger uint8 x int8, 4096 cubed: {result['matmulinteger_u8s8_tmac_per_s']} TMAC/s", ""]
    if (ov_run := result["openvino"])["installed"]:
        lines += [f"OpenVINO {ov_run['version']} (CPU {', '.join(ov_run['capabilities'])}), the same int8 graph: "
                  f"{ov_run['seconds']} s (best of 3; compile + first call {ov_run['compile_and_first_s']} s, first call "
                  f"at a new shape {ov_run['first_call_new_shape_s']} s). Score maps against the fp32 CRAFT's: OpenVINO "
                  f"int8 max |diff| {ov_run['vs_fp32']['max_abs']}, mean {ov_run['vs_fp32']['mean_abs']}; ONNX Runtime "
                  f"int8 {result['onnxruntime_int8_vs_fp32']['max_abs']}, mean {result['onnxruntime_int8_vs_fp32']['mean_abs']}", ""]
    (args.out / "kernels.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
