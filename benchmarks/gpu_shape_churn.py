"""Does the ONNX Runtime CUDA EP pay again whenever the input shape changes? Time it in one process.

The served pipeline sends CRAFT a different padded image size per image and the CRNN recognizer a
different (batch, width) per call, unlike `gpu_fast_path.py`, which times one shape at a time.
This script cycles the four benchmark images' detector shapes and a stream of recognizer shapes,
as the served pipeline does, under each setting, and reports per-call p50 next to the p50 of the
same shapes run one at a time (steady):

    python benchmarks/gpu_shape_churn.py --craft craft-fp32.onnx --crnn crnn-fp32.onnx --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from stdr_deploy.ort_runner import random_session_input

CRAFT_SHAPES = [(1, 3, 480, 352), (1, 3, 2560, 2048), (1, 3, 512, 416), (1, 3, 1600, 1216)]
WIDTHS = (64, 128, 256, 512, 1024)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def session(path: str, nhwc: bool, arena: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    cuda = {"device_id": "0", "cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": arena,
            "cudnn_conv_use_max_workspace": "1", "prefer_nhwc": "1" if nhwc else "0"}
    return ort.InferenceSession(path, options, providers=[("CUDAExecutionProvider", cuda), "CPUExecutionProvider"])


def call(sess, shape) -> float:
    x = random_session_input(sess, shape, np.random.default_rng(0))
    start = time.perf_counter()
    sess.run(None, {sess.get_inputs()[0].name: x})
    return (time.perf_counter() - start) * 1e3


def recognizer_stream(n: int, bucket_batch: bool, seed: int = 1) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(n):
        batch = int(rng.integers(1, 12))
        if bucket_batch:
            batch = next(b for b in BATCH_BUCKETS if b >= batch)
        shapes.append((batch, 1, 64, int(rng.choice(WIDTHS[:4]))))
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--craft", required=True)
    parser.add_argument("--crnn", required=True)
    parser.add_argument("--label", default="fp32")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for nhwc in (True, False):
        for arena in ("kSameAsRequested", "kNextPowerOfTwo"):
            sess = session(args.craft, nhwc, arena)
            cycled = [call(sess, shape) for _ in range(6) for shape in CRAFT_SHAPES]
            steady = [statistics.median([call(sess, shape) for _ in range(5)]) for shape in CRAFT_SHAPES]
            rows.append({"model": "craft", "nhwc": nhwc, "arena": arena, "cycled_first_round_ms": cycled[:4],
                         "cycled_p50_per_shape_ms": [statistics.median(cycled[4 + i::4]) for i in range(4)],
                         "steady_p50_per_shape_ms": steady})
            print(json.dumps(rows[-1]), flush=True)
            for bucket in (False, True):
                sess = session(args.crnn, nhwc, arena)
                stream = recognizer_stream(80, bucket)
                times = [call(sess, shape) for shape in stream]
                again = [call(sess, shape) for shape in stream]
                rows.append({"model": "crnn", "nhwc": nhwc, "arena": arena, "batch_buckets": bucket,
                             "distinct_shapes": len(set(stream)), "first_pass_total_ms": sum(times),
                             "first_pass_p50_ms": statistics.median(times), "second_pass_p50_ms": statistics.median(again),
                             "second_pass_total_ms": sum(again)})
                print(json.dumps(rows[-1]), flush=True)
    (args.out / f"shape-churn-{args.label}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
