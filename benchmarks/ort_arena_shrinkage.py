"""What ONNX Runtime's CPU arena keeps after an outlier, and what giving it back costs.

For each setting, in a fresh subprocess (its resident memory is the point), open a real session
of the exported model, run `--shape` `--runs` times (latency), read VmRSS, run `--outlier` once
(VmHWM: the peak), run `--shape` once more, wait `--settle` seconds and read VmRSS again. The
settings take turns, `--rounds` times, so a busy machine slows them alike. Settings:
  arena-off        enable_cpu_mem_arena = enable_mem_pattern = False (what CPU plans render)
  arena-off-pattern the arena off, ONNX Runtime's per-shape memory pattern on
  arena            the arena and memory pattern on (ONNX Runtime's default; GPU plans' CPU side)
  arena-shrink     the arena on, and run option memory.enable_memory_arena_shrinkage = "cpu:0",
                   which returns the arena's unused chunks after every run

  python benchmarks/ort_arena_shrinkage.py --out benchmarks/results/ort-arena-shrinkage
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = ("arena-off", "arena-off-pattern", "arena", "arena-shrink")
MIB = 1 << 20


def vm(field: str) -> int:
    """VmRSS or VmHWM of this process, bytes."""
    text = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith(f"{field}:"))


def measure(setting: str, onnx: str, shape: list[int], outlier: list[int], runs: int, settle: float, threads: int) -> dict:
    """One setting, in this process."""
    import numpy as np
    import onnxruntime as ort

    from stdr_deploy.ort_runner import random_session_input

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_cpu_mem_arena = setting in ("arena", "arena-shrink")
    options.enable_mem_pattern = setting != "arena-off"
    run_options = ort.RunOptions()
    if setting == "arena-shrink":
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    session = ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    normal = random_session_input(session, shape, np.random.default_rng(0))
    big = random_session_input(session, outlier, np.random.default_rng(1))
    session.run(None, {name: normal}, run_options)  # first-run allocations out of the timing
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {name: normal}, run_options)
        seconds.append(time.perf_counter() - started)
    before = vm("VmRSS")
    session.run(None, {name: big}, run_options)
    peak = vm("VmHWM")
    session.run(None, {name: normal}, run_options)
    time.sleep(settle)
    after = vm("VmRSS")
    return {
        "setting": setting,
        "seconds": seconds,
        "rss_mib": {"before_outlier": round(before / MIB, 1), "peak_with_outlier": round(peak / MIB, 1),
                    "settled": round(after / MIB, 1), "settled_over_before": round(after / before, 3)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", help="default: the exported fp32 CRAFT from the export cache")
    parser.add_argument("--shape", default="1x3x736x736")
    parser.add_argument("--outlier", default="1x3x1600x1600")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", choices=SETTINGS, help=argparse.SUPPRESS)  # the subprocess's own run
    args = parser.parse_args()
    shape, outlier = ([int(d) for d in text.split("x")] for text in (args.shape, args.outlier))
    if args.one:
        print(json.dumps(measure(args.one, args.onnx, shape, outlier, args.runs, args.settle, args.threads)))
        return
    if args.onnx is None:
        from stdr_deploy.onnx_files import export_model

        args.onnx = str(export_model("craft", progress=False).onnx_path)
    runs = {setting: [] for setting in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            done = subprocess.run([sys.executable, __file__, "--one", setting, "--onnx", args.onnx, "--shape",
                                   args.shape, "--outlier", args.outlier, "--runs", str(args.runs), "--settle",
                                   str(args.settle), "--threads", str(args.threads)],
                                  capture_output=True, text=True, check=True)
            runs[setting].append(json.loads(done.stdout))
            print(done.stdout.strip(), flush=True)
    results = []
    for setting, rounds in runs.items():
        seconds = [s for one in rounds for s in one["seconds"]]
        results.append({
            "setting": setting,
            "latency_ms": {"p50": round(statistics.median(seconds) * 1e3, 1), "min": round(min(seconds) * 1e3, 1),
                           "runs": len(seconds)},
            "rss_mib_per_round": [one["rss_mib"] for one in rounds],
        })
    import onnxruntime

    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "onnxruntime": onnxruntime.__version__,
        "model": args.onnx, "shape": args.shape, "outlier": args.outlier,
        "results": results,
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
