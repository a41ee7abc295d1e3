"""Merge what served model instances held into the planner's memory data.

`stdr-deploy auto`/`smoke` drives every model at its max shape with every instance busy and
records each model's summed VmHWM (`host_high_water_marks_bytes`) in `deploy.json`. Divided by
the plan's instance count, that is the host RAM of one served instance: the bare ONNX Runtime
session that `benchmarks/measure_memory.py` measures, plus Triton's Python-backend stub, our
backend module and, on the GPU, the per-shape sessions. Where smoke attributed GPU memory to each
model (NVML per process), the GPU memory of one instance is recorded too. This script appends those figures to
`stdr_deploy/memory_data/<device>-<runtime>.json` under `served` (the runtime that served the
model: onnxruntime, or openvino on the CPU); the planner adds the largest
excess over the bare measurement to every instance (`stdr_deploy.memory.served_excess`). On the
GPU, tritonserver's own host RAM goes under `servers`, by recognizer family
(`stdr_deploy.memory.served_server`): the recognizer's outputs pass through it.

    python benchmarks/served_memory.py benchmarks/results/*/deploy*.json [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "stdr_deploy" / "memory_data"


def served_entries(deploy_file: Path) -> tuple[str, list[dict]]:
    """(device, entries) of one deployment record: one entry per detector/recognizer model."""
    deploy = json.loads(deploy_file.read_text())
    plan = deploy["plan"]
    smoke = next(s for s in deploy["steps"] if s["name"] == "smoke")
    memory = (smoke.get("outputs") or {}).get("memory", {})
    marks = memory.get("host_high_water_marks_bytes")
    on_gpu = memory.get("gpu_by_process_bytes") or {}  # per model, where smoke could attribute it
    if not marks:
        raise SystemExit(f"{deploy_file}: smoke recorded no per-model high-water marks")
    device = "cuda" if plan["device"] == "gpu" else "cpu"
    host = deploy["host"]
    where = host["gpus"][0]["name"] if device == "cuda" else host["cpu"]["model_name"]
    entries = []
    for role in ("detector", "recognizer"):
        model = plan[role]
        if model["backend"] not in ("onnxruntime", "openvino") or model["triton_name"] not in marks:
            continue
        (max_shape,) = [shape["max"] for shape in model["profile"].values()]
        entries.append({
            "runtime": model["backend"],
            "family": model["family"],
            "precision": model["precision"],
            "elements": math.prod(max_shape),
            "max_shape": max_shape,
            "instances": model["instance_count"],
            "shape_sessions": model.get("shape_sessions", 0),
            "host_bytes_per_instance": marks[model["triton_name"]] // model["instance_count"],
            **({"device_bytes_per_instance": on_gpu[model["triton_name"]] // model["instance_count"]}
               if model["triton_name"] in on_gpu else {}),
            "measured_at": host["taken_at"],
            "host": where,
            "deployment": str(deploy_file),
        })
    server = {"recognizer": plan["recognizer"]["family"], "host_bytes": marks["tritonserver"],
              "measured_at": host["taken_at"], "host": where, "deployment": str(deploy_file)} if "tritonserver" in marks else None
    return device, entries, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("deploy", nargs="+", type=Path, help="deploy.json files written by `auto`")
    parser.add_argument("--out", type=Path, help="data directory (default: stdr_deploy/memory_data)")
    args = parser.parse_args()
    out_dir = args.out or DATA
    for deploy_file in args.deploy:
        device, entries, server = served_entries(deploy_file)
        for runtime in dict.fromkeys(["onnxruntime", *(e["runtime"] for e in entries)]):
            path = out_dir / f"{device}-{runtime}.json"
            data = json.loads(path.read_text())
            served = data.setdefault("served", [])
            for entry in (e for e in entries if e["runtime"] == runtime):
                key = (entry["family"], entry["precision"], entry["measured_at"])
                served[:] = [s for s in served if (s["family"], s["precision"], s["measured_at"]) != key]
                served.append({k: v for k, v in entry.items() if k != "runtime"})
                print(f"{path.name}: {entry['family']} {entry['precision']} "
                      f"{entry['host_bytes_per_instance'] >> 20} MiB per served instance ({deploy_file})")
            if server and device == "cuda" and runtime == "onnxruntime":  # on the CPU, SERVER_BYTES covers it
                servers = data.setdefault("servers", [])
                servers[:] = [s for s in servers if s["deployment"] != server["deployment"]]
                servers.append(server)
                print(f"{path.name}: tritonserver {server['host_bytes'] >> 20} MiB with {server['recognizer']} ({deploy_file})")
            path.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
