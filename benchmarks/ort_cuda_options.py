"""Which CUDA EP settings should the rendered configs use? Time them side by side on the GPU.

The served recognizer was 5-6x slower per call than the model-level benchmark on the H100
(22 ms against 3-4 ms). The two differ in the cuDNN convolution algorithm search (configs:
HEURISTIC; model level: ORT's default, EXHAUSTIVE) and in intra-op threads (configs: 1). This
script times CRAFT and CRNN sessions under each combination, on the shapes real traffic brings:
the first call at a new shape (which pays for any algorithm search) and the steady p50.

    PYTHONPATH=. python benchmarks/ort_cuda_options.py --out "$OUT"   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from stdr_deploy.onnx_files import ensure_onnx
from stdr_deploy.ort_runner import random_session_input

SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
THREADS = (1, 0)  # 1: what the configs render for GPU instances; 0: ORT's choice
CRAFT_SHAPES = [(1, 3, 480, 352), (1, 3, 2560, 2048), (1, 3, 512, 416), (1, 3, 1600, 1216), (1, 3, 736, 992)]
CRNN_SHAPES = [(b, 1, 64, w) for b in (1, 4, 16) for w in (96, 256, 448, 800)]
REPEATS = 10


def session(path: Path, search: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    cuda = {"device_id": "0", "cudnn_conv_algo_search": search, "arena_extend_strategy": "kSameAsRequested"}
    return ort.InferenceSession(str(path), options, providers=[("CUDAExecutionProvider", cuda), "CPUExecutionProvider"])


def time_shapes(sess: ort.InferenceSession, shapes: list[tuple[int, ...]]) -> list[dict]:
    name = sess.get_inputs()[0].name
    rows = []
    rng = np.random.default_rng(0)
    for shape in shapes:
        feed = {name: random_session_input(sess, shape, rng)}
        start = time.perf_counter()
        sess.run(None, feed)
        first = time.perf_counter() - start
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - start)
        rows.append({"shape": list(shape), "first_ms": first * 1e3, "p50_ms": statistics.median(times) * 1e3})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    models = {"craft": (ensure_onnx("craft"), CRAFT_SHAPES), "crnn-en": (ensure_onnx("crnn-en"), CRNN_SHAPES)}
    results = []
    for model, (path, shapes) in models.items():
        for search in SEARCHES:
            for threads in THREADS:
                rows = time_shapes(session(path, search, threads), shapes)
                results.append({"model": model, "search": search, "threads": threads, "rows": rows})
                total_first = sum(r["first_ms"] for r in rows)
                total_p50 = sum(r["p50_ms"] for r in rows)
                print(f"{model:8s} {search:10s} threads={threads}: first calls {total_first:8.1f} ms, p50 sum {total_p50:7.1f} ms")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ort_cuda_options.json").write_text(json.dumps({"onnxruntime": ort.__version__, "results": results}, indent=1))
    lines = ["| model | search | threads | shape | first ms | p50 ms |", "|---|---|---:|---|---:|---:|"]
    for entry in results:
        for row in entry["rows"]:
            lines.append(
                f"| {entry['model']} | {entry['search']} | {entry['threads']} | {'x'.join(map(str, row['shape']))} "
                f"| {row['first_ms']:.1f} | {row['p50_ms']:.2f} |"
            )
    (args.out / "ort_cuda_options.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
