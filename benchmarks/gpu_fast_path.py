"""Which ONNX Runtime CUDA settings make CRAFT + CRNN fastest? Time them side by side on the GPU.

Issue 15 asks for the CUDA EP settings to be chosen by measurement and rendered into the
configs: NHWC convolutions (`prefer_nhwc`), the cuDNN algorithm search, device-resident I/O
(IO binding) and CUDA graphs where shapes are fixed. This script times, in one process:

1. CRAFT, fp32 and fp16 graphs, each combination of `prefer_nhwc` and cuDNN search, at the
   detector shapes of the four benchmark images and at 2560x2560 (host arrays in and out, as the
   served backend runs it): first call (pays for any algorithm search) and steady p50;
2. the same CRAFT runs with the input already on the GPU and the output left there (IO binding):
   what device-resident I/O would save;
3. CRNN, fp32 and fp16, with and without `prefer_nhwc`, at batch x bucket width, and with a
   CUDA graph captured at one fixed shape (IO binding, `enable_cuda_graph`);
4. the chain CRAFT 2560x2560 + one batch of 16 crops 64x256, with the best settings found:
   the GPU budget of one large request (target <= 20 ms p50, goal 15 ms).

    python benchmarks/gpu_fast_path.py --craft-fp32 A.onnx --craft-fp16 B.onnx \
        --crnn-fp32 C.onnx --crnn-fp16 D.onnx --out "$OUT/fast-path"

`--providers CPUExecutionProvider --quick` runs a smoke version on a CPU machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from stdr_deploy.ort_runner import random_session_input

# Detector inputs of the four benchmark images at canvas 2560 (padded to 32), and the worst case.
CRAFT_SHAPES = [(1, 3, 480, 352), (1, 3, 2560, 2048), (1, 3, 512, 416), (1, 3, 1600, 1216), (1, 3, 2560, 2560)]
CRNN_SHAPES = [(1, 1, 64, 256), (16, 1, 64, 256), (16, 1, 64, 512), (64, 1, 64, 256)]
CHAIN = ((1, 3, 2560, 2560), (16, 1, 64, 256))
SEARCHES = ("HEURISTIC", "EXHAUSTIVE")


def cuda_options(nhwc: bool, search: str, graph: bool = False) -> dict[str, str]:
    options = {
        "device_id": "0",
        "cudnn_conv_algo_search": search,
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_use_max_workspace": "1",
        "prefer_nhwc": "1" if nhwc else "0",
    }
    if graph:
        options["enable_cuda_graph"] = "1"
    return options


def session(path: Path, provider: str, nhwc: bool = False, search: str = "HEURISTIC", graph: bool = False):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if provider == "CUDAExecutionProvider":
        providers = [(provider, cuda_options(nhwc, search, graph)), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


def timed(fn, repeats: int, warmup: int = 2) -> dict[str, float]:
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return {"first_ms": round(first * 1e3, 3), "p50_ms": round(statistics.median(samples) * 1e3, 3),
            "min_ms": round(min(samples) * 1e3, 3)}


def feed(sess, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return random_session_input(sess, shape, np.random.default_rng(seed))


def host_run(sess, shape):
    name = sess.get_inputs()[0].name
    x = feed(sess, shape)
    return lambda: sess.run(None, {name: x})


def resident_run(sess, shape, device: str):
    """Input copied to the device once; outputs stay there (what IO binding can save)."""
    binding = sess.io_binding()
    x = ort.OrtValue.ortvalue_from_numpy(feed(sess, shape), device, 0)
    binding.bind_ortvalue_input(sess.get_inputs()[0].name, x)
    for out in sess.get_outputs():
        binding.bind_output(out.name, device)

    def run():
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run


def graph_run(sess, shape, device: str):
    """CUDA graph replay: fixed input and output buffers bound once, shapes fixed."""
    binding = sess.io_binding()
    x = ort.OrtValue.ortvalue_from_numpy(feed(sess, shape), device, 0)
    binding.bind_ortvalue_input(sess.get_inputs()[0].name, x)
    probe = sess.run(None, {sess.get_inputs()[0].name: feed(sess, shape)})
    for out, value in zip(sess.get_outputs(), probe):
        y = ort.OrtValue.ortvalue_from_numpy(np.zeros_like(value), device, 0)
        binding.bind_ortvalue_output(out.name, y)

    def run():
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run


CHOICE_RULE = (
    "per precision, prefer_nhwc when CRAFT's summed steady p50 over the benchmark shapes (HEURISTIC) is >= 5 % "
    "lower with it; EXHAUSTIVE only when it is >= 10 % faster than HEURISTIC at the chosen layout for both "
    "precisions (it re-searches every new input shape, and the detector sees new shapes all the time)"
)


def choose_settings(rows: list[dict]) -> dict:
    """The settings the configs should render, from the CRAFT rows (see CHOICE_RULE)."""
    sums: dict[tuple[str, bool, str], float] = {}
    for row in rows:
        if row["model"] == "craft" and row["io"] == "host":
            key = (row["precision"], row["nhwc"], row["search"])
            sums[key] = sums.get(key, 0.0) + row["p50_ms"]
    prefer = {p: sums[(p, True, "HEURISTIC")] <= 0.95 * sums[(p, False, "HEURISTIC")] for p in ("fp32", "fp16")}
    exhaustive = all(sums[(p, prefer[p], "EXHAUSTIVE")] <= 0.9 * sums[(p, prefer[p], "HEURISTIC")] for p in prefer)
    return {
        "format_version": 1,
        "what": "ONNX Runtime CUDA EP settings the renderer writes into GPU configs, chosen by "
                "benchmarks/gpu_fast_path.py --settings-out",
        "cudnn_conv_algo_search": "EXHAUSTIVE" if exhaustive else "HEURISTIC",
        "prefer_nhwc": prefer,
        "sums": {f"{p} nhwc={n} {s}": round(v, 2) for (p, n, s), v in sorted(sums.items())},
    }


def gpu_name() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        return name.decode() if isinstance(name, bytes) else name
    except Exception:  # noqa: BLE001 - provenance only
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("craft-fp32", "craft-fp16", "crnn-fp32", "crnn-fp16"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--providers", default="CUDAExecutionProvider")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats (CPU smoke run)")
    parser.add_argument("--settings-out", type=Path,
                        help="write the chosen settings here (stdr_deploy/memory_data/cuda-ep-settings.json)")
    args = parser.parse_args()
    provider = args.providers
    cuda = provider == "CUDAExecutionProvider"
    device = "cuda" if cuda else "cpu"
    craft_shapes = CRAFT_SHAPES if not args.quick else [(1, 3, 256, 224)]
    crnn_shapes = CRNN_SHAPES if not args.quick else [(4, 1, 64, 256)]
    chain = CHAIN if not args.quick else ((1, 3, 256, 224), (4, 1, 64, 256))
    repeats = args.repeats if not args.quick else 2
    paths = {("craft", "fp32"): args.craft_fp32, ("craft", "fp16"): args.craft_fp16,
             ("crnn-en", "fp32"): args.crnn_fp32, ("crnn-en", "fp16"): args.crnn_fp16}
    craft_grid = list(itertools.product((False, True), SEARCHES)) if cuda else [(False, "HEURISTIC")]
    crnn_grid = [(False, "HEURISTIC"), (True, "HEURISTIC")] if cuda else [(False, "HEURISTIC")]
    rows: list[dict] = []

    def record(**row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    best: dict[str, tuple[float, dict]] = {}
    for (model, precision), path in paths.items():
        shapes = craft_shapes if model == "craft" else crnn_shapes
        for nhwc, search in craft_grid if model == "craft" else crnn_grid:
            sess = session(path, provider, nhwc, search)
            total = 0.0
            for shape in shapes:
                result = timed(host_run(sess, shape), repeats)
                total += result["p50_ms"]
                record(model=model, precision=precision, nhwc=nhwc, search=search, io="host", shape=list(shape), **result)
            setting = {"precision": precision, "nhwc": nhwc, "search": search}
            if model not in best or total < best[model][0]:
                best[model] = (total, setting)
            del sess
    for model, (_, setting) in best.items():
        shapes = craft_shapes if model == "craft" else crnn_shapes
        sess = session(paths[(model, setting["precision"])], provider, setting["nhwc"], setting["search"])
        for shape in shapes:
            record(model=model, **setting, io="resident", shape=list(shape), **timed(resident_run(sess, shape, device), repeats))
        del sess
        if cuda and model == "crnn-en":
            for shape in crnn_shapes:
                sess = session(paths[(model, setting["precision"])], provider, setting["nhwc"], setting["search"], graph=True)
                try:
                    result = timed(graph_run(sess, shape, device), repeats)
                    record(model=model, **setting, io="cuda-graph", shape=list(shape), **result)
                except Exception as exc:  # noqa: BLE001 - a refused capture is a finding, not a crash
                    record(model=model, **setting, io="cuda-graph", shape=list(shape), error=str(exc).splitlines()[0])
                del sess
    chain_rows = {}
    baseline = {"precision": "fp32", "nhwc": False, "search": "HEURISTIC"}  # what the configs rendered before
    for label, det_setting, rec_setting in (("fp32", baseline, baseline), ("best", best["craft"][1], best["crnn-en"][1])):
        det = session(paths[("craft", det_setting["precision"])], provider, det_setting["nhwc"], det_setting["search"])
        rec = session(paths[("crnn-en", rec_setting["precision"])], provider, rec_setting["nhwc"], rec_setting["search"])
        a, b = host_run(det, chain[0]), host_run(rec, chain[1])
        result = timed(lambda: (a(), b()), repeats)
        chain_rows[label] = {"detector": det_setting, "recognizer": rec_setting, **result}
        record(model="chain", label=label, shapes=[list(s) for s in chain], **result)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "onnxruntime": ort.__version__,
        "provider": provider,
        "best": {model: setting for model, (_, setting) in best.items()},
        "chain": chain_rows,
        "rows": rows,
    }
    (args.out / "fast_path.json").write_text(json.dumps(summary, indent=1))
    lines = [
        f"# ONNX Runtime {ort.__version__} {provider}: CRAFT and CRNN settings side by side",
        "",
        "| model | precision | prefer_nhwc | cuDNN search | I/O | shape | first ms | p50 ms |",
        "|---|---|---|---|---|---|---:|---:|",
    ]
    for row in rows:
        if row["model"] == "chain":
            continue
        lines.append(
            f"| {row['model']} | {row['precision']} | {row['nhwc']} | {row['search']} | {row['io']} | "
            f"{'x'.join(map(str, row['shape']))} | {row.get('first_ms', '-')} | {row.get('p50_ms', row.get('error', '-'))} |"
        )
    lines += ["", "| chain (CRAFT 2560x2560 + 16 crops 64x256, host I/O) | p50 ms | min ms |", "|---|---:|---:|"]
    for label, row in chain_rows.items():
        lines.append(f"| {label}: {row['detector']} / {row['recognizer']} | {row['p50_ms']} | {row['min_ms']} |")
    (args.out / "fast_path.md").write_text("\n".join(lines) + "\n")
    if args.settings_out and cuda:
        settings = choose_settings(rows)
        settings["measured"] = {"onnxruntime": ort.__version__, "gpu": gpu_name(),
                                "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
                                "rule": CHOICE_RULE, "craft_p50_sum_ms": settings.pop("sums")}
        args.settings_out.write_text(json.dumps(settings, indent=2) + "\n")


if __name__ == "__main__":
    main()
