"""Model-level GPU benchmark for a bare GPU machine; writes bench.json, bench.md and plots.

Needs only torch, onnxruntime, onnx, numpy, opencv and Pillow (plus matplotlib for the plots),
not tritonclient, click or rich, so it runs on the device machine as it comes. Run from the
repository root:

    PYTHONPATH=. python benchmarks/gpu_bench.py --out "$OUT"

It times each model on every GPU runtime present (torch eager fp32/TF32 and fp16, ONNX
Runtime's CUDA EP and TensorRT when installed) at the reference shapes plus the detector's
max canvas, counts FLOPs from the ONNX graph against the GPU's peak, and times the budget
question: CRAFT at its max canvas followed by 16 crops recognized. Weights that are not on the
machine (the EasyOCR package, PARSeq's release) are replaced by random ones of the same
architecture: the same FLOPs and the same time, and the report says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GPU_DEFAULT_RUNTIMES = ("torch-cuda", "torch-cuda-fp16", "torch-cuda-nhwc-fp16", "torch-cuda-nhwc-fp16-resident", "ort-cuda", "tensorrt")
CHAIN_PAIRS = (  # (detector runtime, recognizer runtime); the H100 profile has CRAFT fp32, recognizer fp16
    ("torch-cuda", "torch-cuda"),
    ("torch-cuda", "torch-cuda-fp16"),
    ("torch-cuda-fp16", "torch-cuda-fp16"),
    ("torch-cuda-nhwc-fp16", "torch-cuda-nhwc-fp16"),
    ("torch-cuda-nhwc-fp16-resident", "torch-cuda-nhwc-fp16-resident"),
    ("ort-cuda", "ort-cuda"),
    ("tensorrt", "tensorrt"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-bench")), help="results folder (default: $OUT)")
    parser.add_argument("--models", default="craft,crnn-en,parseq", help="comma-separated model families")
    parser.add_argument("--runtimes", default=",".join(GPU_DEFAULT_RUNTIMES), help="comma-separated runtimes (unavailable ones are skipped and reported)")
    parser.add_argument("--canvas", type=int, default=2560, help="detector canvas (the H100 profile's is 2560)")
    parser.add_argument("--quick", action="store_true", help="small shapes and few runs (a smoke test of this script)")
    parser.add_argument("--no-chain", action="store_true", help="skip the detector + 16 crops chain")
    args = parser.parse_args()

    os.environ.setdefault("STDR_DEPLOY_CACHE", tempfile.mkdtemp(prefix="stdr-cache-"))
    from stdr_deploy.bench import host as host_mod
    from stdr_deploy.bench.models import (
        QUICK_POLICY,
        RANDOM_WEIGHTS,
        TimingPolicy,
        available_runtimes,
        plan_cases,
        run_chain_bench,
        run_model_bench,
    )
    from stdr_deploy.bench.report import markdown, targets, write_report
    from stdr_deploy.models import get_spec
    from stdr_deploy.ocr.detector_input import padded_size

    started = time.perf_counter()
    models = [m for m in args.models.split(",") if m]
    runtimes = [r for r in args.runtimes.split(",") if r]
    weights, notes = _weights(models, RANDOM_WEIGHTS)
    policy = QUICK_POLICY if args.quick else TimingPolicy(warmup=5, min_runs=20, max_runs=300, max_seconds=3.0)
    peaks = host_mod.peaks()
    result = {
        "format": 1,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/gpu_bench.py " + " ".join(sys.argv[1:]),
        "host": host_mod.host_info(),
        "load_avg": {"start": host_mod.load_average()},
        "versions": host_mod.versions(),
        "peaks": {k: v.to_dict() for k, v in peaks.items()},
        "notes": notes
        + [
            "model level only: the served pipeline needs tritonclient and nvidia-pytriton, not on this machine",
            "latency per call includes the host->GPU copy of the input and the copy of the outputs back, "
            "except on '-resident' runtimes (inputs already on the GPU, outputs left there: the GPU's own time)",
            "GPU float32 runs use TF32 tensor cores where the runtime allows it by default (cuDNN convolutions in torch); "
            "their % of peak is against the TF32 dense peak",
        ],
    }
    print(f"host {result['host']['slug']}: {result['host']['gpus']}", flush=True)
    cases = plan_cases(models, runtimes, quick=args.quick, canvas_size=args.canvas, square_canvas=True)
    bench = run_model_bench(cases, policy=policy, weights=weights, peaks=peaks, progress=lambda m: print(f"  {m}", flush=True))
    result["models"] = bench.to_dict()
    if not args.no_chain:
        side = padded_size(args.canvas, args.canvas)[0]
        ok = {r for r, why in available_runtimes().items() if why is None}
        recognizers = [m for m in models if get_spec(m).role == "recognizer"]
        result["chains"] = []
        for det_rt, rec_rt in CHAIN_PAIRS:
            if {det_rt, rec_rt} <= ok:
                for rec in recognizers:
                    print(f"  chain craft {side}x{side} on {det_rt} + {rec} x16 on {rec_rt}", flush=True)
                    chain = run_chain_bench(det_rt, (1, 3, side, side), rec, recognizer_runtime=rec_rt, policy=policy, weights=weights)
                    result["chains"].append(chain.to_dict())
    result["load_avg"]["end"] = host_mod.load_average()
    result["targets"] = targets(result)
    result["wall_s"] = time.perf_counter() - started
    written = write_report(result, args.out)
    print(markdown(result))
    print("wrote", ", ".join(str(p) for p in written.values()))
    return 0


def _weights(models: list[str], random: str) -> tuple[dict[str, str], list[str]]:
    """Each model's default weights when already on this machine, else random ones (same FLOPs
    and time). Nothing is downloaded: the device machine has no network."""
    from stdr_deploy.models import get_spec
    from stdr_deploy.weights import get_info, local_path

    weights, notes = {}, []
    for model in models:
        info = get_info(get_spec(model).default_weights)
        if local_path(info) is None:
            weights[model] = random
            notes.append(f"{model}: random weights, timing only ({info.filename} is not on this machine)")
    return weights, notes


if __name__ == "__main__":
    sys.exit(main())
