"""The latency cost of `--grpc-infer-allocation-pool-size=0` (no gRPC request objects kept for reuse).

A tiny real ONNX model (`output = input * 2`, FP32 [-1]) served by the embedded tritonserver,
once with the flag (as stdr-deploy serves) and once without (Triton's default pool of 8),
taking turns `--rounds` times; each time `--requests` sequential gRPC inferences of each payload
size (4 KiB and 1 MiB: a ~600x600 RGB image) after a warm-up. The model's own work is nearly nil,
so what differs is the server's per-request cost.

  python benchmarks/grpc_pool_cost.py --out benchmarks/results/memory-after-outlier
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper

from stdr_deploy import server as server_module
from stdr_deploy.server import TritonServer

CONFIG = """
name: "double"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "input" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""
PAYLOADS = {"4KiB": 1024, "1MiB": 256 * 1024}  # float32 elements


def write_repo(root: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "two"], ["output"])], "double",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (root / "double" / "1").mkdir(parents=True)
    onnx.save(model, root / "double" / "1" / "model.onnx")
    (root / "double" / "config.pbtxt").write_text(CONFIG)
    return root


def timed_requests(url: str, requests: int) -> dict[str, list[float]]:
    client = grpcclient.InferenceServerClient(url.split("://", 1)[1])
    seconds: dict[str, list[float]] = {}
    for label, size in PAYLOADS.items():
        x = np.ones(size, np.float32)
        tensor = grpcclient.InferInput("input", [size], "FP32")
        tensor.set_data_from_numpy(x)
        for _ in range(20):
            client.infer("double", [tensor])
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            client.infer("double", [tensor])
            times.append(time.perf_counter() - started)
        seconds[label] = times
    client.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    repo = write_repo(Path(tempfile.mkdtemp(prefix="grpc-pool-")))
    with_flag = server_module.server_command

    def without_flag(*a):
        return [arg for arg in with_flag(*a) if "allocation-pool-size" not in arg]

    settings = {"pool-0 (stdr-deploy)": with_flag, "pool-8 (Triton default)": without_flag}
    collected: dict[str, dict[str, list[float]]] = {name: {label: [] for label in PAYLOADS} for name in settings}
    for _ in range(args.rounds):
        for name, command in settings.items():
            server_module.server_command = command
            with TritonServer(repo) as server:
                for label, times in timed_requests(server.grpc_url, args.requests).items():
                    collected[name][label] += times
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "latency_ms": {
            name: {label: {"p50": round(statistics.median(t) * 1e3, 3), "mean": round(statistics.fmean(t) * 1e3, 3),
                           "requests": len(t)} for label, t in by_payload.items()}
            for name, by_payload in collected.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grpc_pool_cost.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["latency_ms"], indent=1))


if __name__ == "__main__":
    main()
