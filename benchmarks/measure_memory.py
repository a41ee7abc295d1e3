"""Re-measure the planner's memory data: peak memory of one served model instance per shape.

Each point runs in a fresh subprocess (as Triton runs each model instance in its own stub
process): import onnxruntime and numpy, open a real session of the real exported model with the
settings the plan renders, run the shape twice, then read
  host:   VmHWM (peak resident set) of the process, from /proc/self/status;
  device: with --providers CUDAExecutionProvider, the GPU memory NVML charges to the process,
          sampled every 2 ms during the runs (the CUDA arena keeps its peak, so the last sample
          is the peak too; the maximum is taken).
Results merge into `stdr_deploy/memory_data/<device>-onnxruntime.json` under
family -> precision -> arena setting, with the host, versions, date and the command, so the
planner reads them as package data.

With `--runtime openvino` a point compiles the model with OpenVINO's CPU plugin instead, with
the properties the openvino backend's rendered config gives (`render.OPENVINO_PROPERTIES`), into
`memory_data/cpu-openvino.json` (for CRAFT int8, give its int8-openvino graph).

Needs only onnxruntime (or onnxruntime-gpu), numpy and, on a GPU, nvidia-ml-py, plus the ONNX
files given by path, so it runs on a bare device machine:

  python benchmarks/measure_memory.py --family craft --precision fp32 --onnx craft.onnx \
      --shapes 1x3x640x640,1x3x1280x1280,1x3x2560x2560
  python benchmarks/measure_memory.py --family crnn-en --precision fp32 --onnx crnn.onnx \
      --shapes 1x1x64x1024,8x1x64x1024,16x1x64x1024 --providers CUDAExecutionProvider
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "stdr_deploy" / "memory_data"
FORMAT_VERSION = 1


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def gpu_used_bytes(pid: int) -> int:
    import pynvml

    used = 0
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid and proc.usedGpuMemory:
                used += proc.usedGpuMemory
    return used


def smaller(family: str, shape: tuple[int, ...], fraction: int) -> tuple[int, ...]:
    """A smaller input of the same model: the detector's sides (multiples of 32), else the batch."""
    if family.startswith("craft"):
        return (*shape[:-2], *(max(32, side // fraction // 32 * 32) for side in shape[-2:]))
    return (max(1, shape[0] // fraction), *shape[1:])


def one_point(args: argparse.Namespace) -> dict:
    """Runs inside the child: one session, one shape, the peaks."""
    import numpy as np

    shape = tuple(int(v) for v in args.one.split("x"))
    cuda = args.providers == "CUDAExecutionProvider"
    gpu_peak = [0]
    stop = threading.Event()
    if cuda:
        import pynvml

        pynvml.nvmlInit()

        def sample() -> None:
            while not stop.is_set():
                gpu_peak[0] = max(gpu_peak[0], gpu_used_bytes(os.getpid()))
                time.sleep(0.002)

        threading.Thread(target=sample, daemon=True).start()
    baseline_kib = vm_kib("VmRSS")
    if args.runtime == "openvino":
        return _openvino_point(args, shape, baseline_kib)
    import onnxruntime as ort

    from stdr_deploy.ort_runner import random_session_input

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.enable_cpu_mem_arena = args.arena == "on"
    options.enable_mem_pattern = args.arena == "on"
    providers = [args.providers] if cuda else ["CPUExecutionProvider"]
    session = ort.InferenceSession(args.onnx, options, providers=providers)
    loaded_kib = vm_kib("VmRSS")
    name = session.get_inputs()[0].name
    feed = {name: random_session_input(session, shape, np.random.default_rng(0))}
    # Served instances see many shapes before the largest, and with the arena off freed blocks
    # can stay in the C heap (fragmentation): run a quarter- and a half-size input first.
    for fraction in (4, 2) if args.history else ():
        session.run(None, {name: random_session_input(session, smaller(args.family, shape, fraction), np.random.default_rng(1))})
    for _ in range(args.runs):
        session.run(None, feed)
    if cuda:
        time.sleep(0.05)
        stop.set()
        gpu_peak[0] = max(gpu_peak[0], gpu_used_bytes(os.getpid()))
    return peaks(shape, baseline_kib, loaded_kib, gpu_peak[0] if cuda else None)


def peaks(shape: tuple[int, ...], baseline_kib: int, loaded_kib: int, device_peak: int | None) -> dict:
    """One point's record: this process's peak resident set, and the GPU's where measured."""
    return {
        "shape": list(shape),
        "elements": math.prod(shape),
        "host_peak_bytes": vm_kib("VmHWM") * 1024,
        "host_baseline_bytes": baseline_kib * 1024,
        "host_loaded_bytes": loaded_kib * 1024,
        "device_peak_bytes": device_peak,
    }


def _openvino_point(args: argparse.Namespace, shape: tuple[int, ...], baseline_kib: int) -> dict:
    """The same point on OpenVINO's CPU plugin (uint8 or float32 input as the graph declares)."""
    import numpy as np
    import openvino as ov

    from stdr_deploy.render import OPENVINO_PROPERTIES

    core = ov.Core()
    compiled = core.compile_model(core.read_model(args.onnx), "CPU",
                                  {**OPENVINO_PROPERTIES, "INFERENCE_NUM_THREADS": args.threads,
                                   "INFERENCE_PRECISION_HINT": args.float_precision})
    request = compiled.create_infer_request()
    loaded_kib = vm_kib("VmRSS")
    dtype = compiled.inputs[0].get_element_type().to_dtype()
    rng = np.random.default_rng(0)

    def feed(of: tuple[int, ...]) -> np.ndarray:
        return (rng.integers(0, 256, of) if dtype == np.uint8 else rng.random(of)).astype(dtype)

    for fraction in (4, 2) if args.history else ():
        request.infer({0: feed(smaller(args.family, shape, fraction))})
    for _ in range(args.runs):
        request.infer({0: feed(shape)})
    return peaks(shape, baseline_kib, loaded_kib, None)


def versions() -> dict:
    from importlib import metadata

    found = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "openvino", "numpy", "nvidia-ml-py"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def host_words() -> dict:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )
    info = {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(), "python": platform.python_version()}
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        info["gpu"] = name.decode() if isinstance(name, bytes) else name
        info["driver"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # no NVML: a CPU host
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", required=True, help="craft | crnn-en | parseq | parseq-tiny | ...")
    parser.add_argument("--precision", required=True, help="fp32 | fp16 | int8: of the ONNX file given")
    parser.add_argument("--onnx", required=True, help="path of the exported model")
    parser.add_argument("--shapes", help="comma-separated input shapes, e.g. 1x3x640x640,1x3x1280x1280")
    parser.add_argument("--providers", default="CPUExecutionProvider", choices=("CPUExecutionProvider", "CUDAExecutionProvider"))
    parser.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "openvino"),
                        help="openvino: OpenVINO's CPU plugin (CPU only)")
    parser.add_argument("--float-precision", default="f32", choices=("f32", "bf16"),
                        help="OpenVINO's INFERENCE_PRECISION_HINT (the plan's float_precision; the data is keyed by graph only)")
    parser.add_argument("--arena", default="off", choices=("on", "off"), help="CPU memory arena and memory pattern")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (memory barely depends on it)")
    parser.add_argument("--runs", type=int, default=2, help="runs per point (the arena can grow on the second)")
    parser.add_argument("--history", type=int, default=1, help="1: run smaller inputs first, as a served instance does")
    parser.add_argument("--out", type=Path, help="data file to merge into (default: memory_data/<device>-<runtime>.json)")
    parser.add_argument("--note", help="stored with the data (e.g. where the weights came from)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_point(args)))
        return
    device = "cuda" if args.providers == "CUDAExecutionProvider" else "cpu"
    out = args.out or DATA / f"{device}-{args.runtime}.json"
    points = []
    for shape in args.shapes.split(","):
        child = [sys.executable, __file__, *sys.argv[1:], "--one", shape]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        point = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(point), flush=True)
        points.append(point)
    data = json.loads(out.read_text()) if out.exists() else {"format_version": FORMAT_VERSION, "device": device, "runtime": args.runtime, "families": {}}
    entry = data["families"].setdefault(args.family, {}).setdefault(args.precision, {})
    entry[f"arena_{args.arena}"] = {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host_words(),
        "versions": versions(),
        "command": "python benchmarks/measure_memory.py " + " ".join(
            Path(a).name if "/" in a else a for a in sys.argv[1:] if a not in ("--out", str(args.out), "--note", args.note)
        ),
        "runtime": args.runtime,
        "threads": args.threads,
        "runs": args.runs,
        "history": bool(args.history),
        "points": points,
        **({"note": args.note} if args.note else {}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
