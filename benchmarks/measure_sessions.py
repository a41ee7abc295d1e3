"""Measure what each extra per-shape session of a served GPU instance holds, for the planner.

A GPU plan on ONNX Runtime keeps one session per fixed input shape in every instance of a model
(`planner.fixed_shapes`), all made at load (`warm_shapes`). The bare measurement of
`measure_memory.py` is one session; this one is the rest. In one process, as one Triton
instance, it imports the real `onnxruntime` backend (`backends/onnxruntime/model.py` with the
`triton_python_backend_utils.py` that Triton ships), initialises it from a rendered
`config.pbtxt` with its warm-up left out, then runs the shapes of `warm_shapes` largest first, as
the backend's warm-up does, then the largest once more, and reads after each
  device: the GPU memory NVML charges to this process (sampled every 2 ms; the peak is kept),
  host:   VmHWM (peak resident set),
and how much each grew with that session. The first shape's figures are the whole instance with
one session; the growth of each later one is stored as a point (its input's element count,
bytes) under family -> precision -> `sessions` in `memory_data/cuda-onnxruntime.json`, which the
planner sums (`memory.sessions_bytes`).

Run on the GPU host, after `stdr-deploy auto` (or plan + export + render) made the repository:

  python benchmarks/measure_sessions.py --repo model_repository --model ppocr_rec \
      --family ppocr --precision fp32
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure_memory import DATA, FORMAT_VERSION, gpu_used_bytes, host_words, versions, vm_kib  # noqa: E402


def read_config(path: Path) -> dict:
    """config.pbtxt as the JSON Triton hands a Python backend (field names as in the proto)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    message = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def load_backend():
    """backends/onnxruntime/model.py beside its shared module, with Triton's own pb_utils file;
    its log lines go to stderr (pb_utils.Logger exists only inside a stub)."""
    from stdr_deploy.server import backend_directory

    backends = backend_directory()
    sys.path.insert(0, str(backends / "python"))
    spec = importlib.util.spec_from_file_location("onnxruntime_backend_model", backends / "onnxruntime" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.log_info = module.log_warning = lambda message: print(message, file=sys.stderr)
    return module


class ProcessGpuPeak:
    """The most GPU memory NVML charged to this process, sampled every 2 ms (per process; the
    benchmark's `stdr_deploy.bench.gpu_sampler.GpuSampler` reads whole GPUs and their utilisation)."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.peak = 0
        self.stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, gpu_used_bytes(os.getpid()))
            time.sleep(0.002)

    def read(self) -> int:
        time.sleep(0.05)
        return max(self.peak, gpu_used_bytes(os.getpid()))


def measure(repo: Path, model_name: str, kind: str, overrides: dict[str, str]) -> dict:
    from stdr_deploy.server import WARM_SHAPES

    backend = load_backend()
    config = read_config(repo / model_name / "config.pbtxt")
    for key, value in overrides.items():
        config.setdefault("parameters", {})[key] = {"string_value": value}
    shapes = backend.warm_shapes(config)
    if not shapes:
        raise SystemExit(f"{model_name}: its config has no warm_shapes (a GPU plan on ONNX Runtime has them)")
    cold = json.loads(json.dumps(config))
    cold["parameters"].pop(WARM_SHAPES)
    gpu = ProcessGpuPeak() if kind == "GPU" else None
    model = backend.TritonPythonModel()
    model.initialize({
        "model_config": json.dumps(cold), "model_name": model_name, "model_instance_kind": kind,
        "model_instance_device_id": "0", "model_repository": str(repo / model_name), "model_version": "1",
    })
    dtype = backend.pb_utils.triton_string_to_numpy(config["input"][0]["data_type"])
    rows = []
    for shape in shapes:
        model.run({model.inputs[0]: np.zeros(shape, dtype)})
        rows.append({
            "shape": list(shape),
            "elements": int(np.prod(shape)),
            "device_bytes": gpu.read() if gpu else None,
            "host_bytes": vm_kib("VmHWM") * 1024,
            "sessions": len(model.sessions),
        })
        print(json.dumps(rows[-1]), flush=True)
    if len(model.sessions) != len(shapes):
        raise SystemExit(f"{model_name}: {len(shapes)} shapes made {len(model.sessions)} sessions")
    # then the largest again, on noise, as smoke and traffic do after load: memory freed by the
    # first run but taken since by later sessions makes the arena grow here
    model.run({model.inputs[0]: np.random.default_rng(1).standard_normal(shapes[0]).astype(dtype)})
    again = {"shape": list(shapes[0]), "device_bytes": gpu.read() if gpu else None, "host_bytes": vm_kib("VmHWM") * 1024}
    print(json.dumps(again), flush=True)
    points = [
        {
            "shape": row["shape"],
            "elements": row["elements"],
            "device_bytes": row["device_bytes"] - before["device_bytes"] if gpu else None,
            "host_bytes": row["host_bytes"] - before["host_bytes"],
        }
        for before, row in zip(rows, rows[1:])
    ]
    return {"first": rows[0], "last": rows[-1], "again": again, "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, required=True, help="rendered model repository")
    parser.add_argument("--model", required=True, help="model folder in it, e.g. craft, ppocr_rec, crnn_en")
    parser.add_argument("--family", required=True, help="the model's family: craft | crnn-en | ppocr | ...")
    parser.add_argument("--precision", required=True, help="the rendered model's precision")
    parser.add_argument("--kind", default="GPU", choices=("GPU", "CPU"),
                        help="instance kind (CPU only checks this script where no GPU is; nothing is stored)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config parameter (an experiment: the result is printed, not stored)")
    parser.add_argument("--out", type=Path, help="data file to merge into (default: memory_data/cuda-onnxruntime.json)")
    parser.add_argument("--note", help="stored with the data (e.g. where the weights came from)")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    result = measure(args.repo, args.model, args.kind, overrides)
    if args.kind != "GPU" or overrides:
        print(json.dumps(result))
        return
    out = args.out or DATA / "cuda-onnxruntime.json"
    data = json.loads(out.read_text()) if out.exists() else {
        "format_version": FORMAT_VERSION, "device": "cuda", "runtime": "onnxruntime", "families": {}}
    entry = data["families"].setdefault(args.family, {}).setdefault(args.precision, {})
    entry["sessions"] = {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host_words(),
        "versions": versions(),
        "command": f"python benchmarks/measure_sessions.py --repo REPO --model {args.model} "
                   f"--family {args.family} --precision {args.precision}",
        "parameters": read_config(args.repo / args.model / "config.pbtxt").get("parameters", {}),
        **result,
        **({"note": args.note} if args.note else {}),
    }
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
