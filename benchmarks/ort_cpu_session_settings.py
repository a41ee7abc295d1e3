"""ONNX Runtime's CPU memory settings: time per run and peak RSS of one model under each.

The settings are those a CPU plan could render; each runs in a process of its own.

    STDR_DEPLOY_CACHE=... python benchmarks/ort_cpu_session_settings.py [--family craft --precision int8]
        [--shape 1x3x1408x1152] [--rounds 2] [--json OUT]

Settings (`stdr_deploy/render.py` renders the first for CPU plans; the memory data is measured so):
- arena-off-pattern-off: enable_cpu_mem_arena = enable_mem_pattern = False;
- arena-off-pattern-on: the arena off, ORT's per-shape memory pattern on;
- arena-on: ORT's defaults (both on);
- arena-on-shrink: both on, and the arena shrunk after every run (what GPU plans render).
2 threads, one warm-up run, then the best and median of --repeat runs on a random input.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SETTINGS = ("arena-off-pattern-off", "arena-off-pattern-on", "arena-on", "arena-on-shrink")


def run_one(path: str, setting: str, shape: tuple[int, ...], dtype: str, repeat: int) -> dict:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.enable_cpu_mem_arena = setting.startswith("arena-on")
    options.enable_mem_pattern = setting != "arena-off-pattern-off"
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    run_options = onnxruntime.RunOptions()
    if setting == "arena-on-shrink":
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape, dtype=np.uint8) if dtype == "uint8" else rng.standard_normal(shape, dtype=np.float32)
    feed = {session.get_inputs()[0].name: x}
    session.run(None, feed, run_options)
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(None, feed, run_options)
        seconds.append(time.perf_counter() - start)
    return {"setting": setting, "best_s": min(seconds), "median_s": sorted(seconds)[len(seconds) // 2],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="craft")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--shape", default="1x3x1408x1152")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", nargs=2, metavar=("PATH", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    dtype = "uint8" if args.family == "craft" else "float32"  # CRAFT's graph takes uint8 pixels
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], shape, dtype, args.repeat)))
        return 0
    from stdr_deploy.onnx_files import ensure_onnx

    path = str(ensure_onnx(args.family, precision=args.precision))
    runs = []
    for round_ in range(args.rounds):
        for setting in SETTINGS:
            child = [sys.executable, __file__, "--family", args.family, "--shape", args.shape,
                     "--repeat", str(args.repeat), "--one", path, setting]
            result = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
            runs.append({**result, "round": round_})
            print(f"{setting}: best {result['best_s']:.3f} s, peak RSS {result['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    result = {"command": " ".join(sys.argv), "model": f"{args.family} {args.precision}", "shape": args.shape, "runs": runs}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
