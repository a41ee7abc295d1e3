"""CRAFT and the ppocr recognizer on this CPU: ONNX Runtime against OpenVINO (f32 and bf16).

These are the figures `stdr_deploy/cpu_speed.py` keeps per CPU class.

    STDR_DEPLOY_CACHE=... python benchmarks/cpu_model_speed.py --rounds 2 --out DIR

ONNX Runtime runs with the session settings CPU plans render (memory arena and pattern off),
so the figures predict served times. Each configuration runs in a process of its own (one
model, one runtime, 2 threads), best of
--repeat calls after a warm-up, on random inputs of the planner's shapes: CRAFT at the CPU
canvas floor (1x3x1408x1152, a 4:5 image) and at 1600x1216, int8 (its ONNX Runtime graph, and
the int8-openvino graph on OpenVINO) and fp32 (ONNX Runtime); ppocr fp32 on 8x3x48x320 and
2x3x48x640. `--rounds` repeats the whole list, alternating, on a busy host. Writes speed.json
(every run) and speed.md (best per configuration, ratios) to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stdr_deploy.plan_schema import OPENVINO_INT8

THREADS = 2
CRAFT_SHAPES = ("1x3x1408x1152", "1x3x1600x1216")
PPOCR_SHAPES = ("8x3x48x320", "2x3x48x640")


def configurations() -> list[dict]:
    """(model, graph, runtime, float precision hint, shape, input type, repeat)."""
    rows = []
    for shape in CRAFT_SHAPES:
        rows += [
            dict(model="craft int8", graph=("craft", "int8"), runtime="onnxruntime", hint="-", shape=shape, dtype="uint8", repeat=4),
            dict(model="craft int8", graph=("craft", OPENVINO_INT8), runtime="openvino", hint="f32", shape=shape, dtype="uint8", repeat=4),
            dict(model="craft int8", graph=("craft", OPENVINO_INT8), runtime="openvino", hint="bf16", shape=shape, dtype="uint8", repeat=4),
        ]
    rows.append(dict(model="craft fp32", graph=("craft", "fp32"), runtime="onnxruntime", hint="-", shape=CRAFT_SHAPES[0], dtype="uint8", repeat=3))
    for shape in PPOCR_SHAPES:
        for runtime, hint in (("onnxruntime", "-"), ("openvino", "f32"), ("openvino", "bf16")):
            rows.append(dict(model="ppocr fp32", graph=("ppocr", "fp32"), runtime=runtime, hint=hint, shape=shape, dtype="float32", repeat=6))
    return rows


def onnx_path(family: str, graph: str) -> Path:
    from stdr_deploy.onnx_files import ensure_onnx

    return ensure_onnx(family, precision=graph)


def time_one(config: dict) -> dict:
    """One configuration in this process: best and median seconds of `repeat` calls after one."""
    shape = tuple(int(v) for v in config["shape"].split("x"))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape, dtype=np.uint8) if config["dtype"] == "uint8" else rng.standard_normal(shape, dtype=np.float32)
    path = str(onnx_path(*config["graph"]))
    if config["runtime"] == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
        # as CPU plans serve it (render._onnxruntime_settings): 1.25-1.5x slower than ORT's defaults
        options.enable_cpu_mem_arena = options.enable_mem_pattern = False
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run():
            session.run(None, {name: x})
    else:
        import openvino

        core = openvino.Core()
        compiled = core.compile_model(core.read_model(path), "CPU", {
            "INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": config["hint"]})
        request = compiled.create_infer_request()

        def run():
            request.infer({0: x})
    run()
    seconds = []
    for _ in range(config["repeat"]):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return {**config, "graph": "/".join(config["graph"]), "best_s": min(seconds), "median_s": sorted(seconds)[len(seconds) // 2]}


def markdown(runs: list[dict]) -> str:
    best: dict[tuple, float] = {}
    for r in runs:
        key = (r["model"], r["runtime"], r["hint"], r["shape"])
        best[key] = min(best.get(key, float("inf")), r["best_s"])
    lines = ["| model | shape | runtime | float layers | best s | x ONNX Runtime |", "|---|---|---|---|---:|---:|"]
    for (model, runtime, hint, shape), seconds in best.items():
        ort = best.get((model, "onnxruntime", "-", shape))
        ratio = f"{ort / seconds:.2f}" if ort else ""
        lines.append(f"| {model} | {shape} | {runtime} | {hint} | {seconds:.4f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one configuration as JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(time_one(json.loads(args.one))))
        return 0
    for family, graph in {c["graph"] for c in configurations()}:  # exported once, before any timing
        onnx_path(family, graph)
    runs = []
    for round_ in range(args.rounds):
        for config in configurations():
            child = [sys.executable, __file__, "--out", str(args.out), "--one", json.dumps(config)]
            result = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
            runs.append({**result, "round": round_})
            print(f"{result['model']} {result['runtime']} {result['hint']} {result['shape']}: {result['best_s']:.4f} s",
                  file=sys.stderr, flush=True)
    from stdr_deploy.hardware import probe_host

    host = probe_host()
    versions = {}
    for name in ("onnxruntime", "openvino", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    result = {"command": " ".join(sys.argv), "cpu": host.cpu.model_name, "cores": host.usable_cores,
              "features": list(host.cpu.features), "python": platform.python_version(), "versions": versions,
              "threads": THREADS, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "speed.md").write_text(
        f"{host.cpu.model_name}, {host.usable_cores} cores ({', '.join(host.cpu.features)}), {THREADS} threads, "
        f"{versions}\n\n" + markdown(runs))
    print(markdown(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
