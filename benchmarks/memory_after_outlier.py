"""Does the server give memory back after an outlier request, and what does that cost?

Serves the CPU plan of a host file (real tritonserver, real exported CRAFT and CRNN from the
export cache), then, over gRPC:
  1. reads a normal image `--warm` times and samples the resident memory (VmRSS) of every
     process of the server: tritonserver and each backend stub ("before");
  2. sends an oversized image (`--oversized` pixels a side: above the plan's pixel limit, so it
     is refused after its upload) and the largest image the plan accepts, as outliers;
  3. samples the same processes every second for `--after` seconds, and reports the peak, the
     level at the end, and end / before.
Latency: the normal image `--reads` times before the outliers, p50 and mean.

The server's allocator is what this measures, so the process environment (e.g. MALLOC_* glibc
tunables) is passed to tritonserver and its stubs unchanged; `--label` names the run.
`--keep-grpc-pool` runs the server as before issue 23, without --grpc-infer-allocation-pool-size=0.
`--supervised` runs the supervisor beside it, as `serve` and `auto` do (probing every 10 s; it
reloads the pipeline in place once the Python backend's shared-memory pool has grown).
`--as-deployed` starts from the state `auto` serves in: its smoke has driven every model at its
max profile shape (every instance busy) before serving, so "before" includes that working memory.

  python benchmarks/memory_after_outlier.py --label default --out benchmarks/results/memory-after-outlier
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from stdr_deploy.onnx_files import export_model
from stdr_deploy.hardware import load_host
from stdr_deploy.ocr.image_io import read_image
from stdr_deploy.planner import make_plan
from stdr_deploy.smoke import drive_max_shapes
from stdr_deploy.render import render
from stdr_deploy import server as server_module
from stdr_deploy.server import TritonServer, live_group_members
from stdr_deploy.triton_client import TritonPipelineClient

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def rss_by_process(pid: int) -> dict[str, dict[str, int]]:
    """{process: {"rss", "anon", "shmem"} in bytes} for each live process of the server's group,
    keyed "tritonserver" or "stub <model>". `shmem` is the Python backend's shared-memory pool,
    counted in both tritonserver and the stub that maps it."""
    found = {}
    for member in live_group_members(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
            cmdline = Path(f"/proc/{member}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in status.splitlines()
                  if line.startswith(("VmRSS:", "RssAnon:", "RssShmem:"))}
        name = "tritonserver" if member == pid else f"stub {_stub_model(cmdline)}"
        found[name] = {"rss": fields.get("VmRSS", 0), "anon": fields.get("RssAnon", 0), "shmem": fields.get("RssShmem", 0)}
    return found


def _stub_model(cmdline: list[bytes]) -> str:
    """The model a stub serves: its first argument is <repo>/<model>/<version>/<model file>."""
    return Path(cmdline[1].decode(errors="replace")).parent.parent.name if len(cmdline) > 1 else "?"


def shm_pool_bytes(prefix: str) -> int:
    """Bytes of the server's shared-memory files in /dev/shm (each counted once)."""
    return sum(path.stat().st_blocks * 512 for path in Path("/dev/shm").glob(f"{prefix}*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host-file", type=Path, default=ROOT / "tests/hosts/cpu-xeon-2core.json")
    parser.add_argument("--image", type=Path, default=ROOT.parent / "shared/testdata/scenes_A/img00.png")
    parser.add_argument("--oversized", type=int, default=10000, help="side of the refused square image")
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--after", type=float, default=60.0)
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep-grpc-pool", action="store_true",
                        help="leave out --grpc-infer-allocation-pool-size=0 (the server before issue 23)")
    parser.add_argument("--supervised", action="store_true", help="run the supervisor beside the server, as serve does")
    parser.add_argument("--as-deployed", action="store_true",
                        help="first drive every model at its max shape, as auto's smoke does before it serves")
    args = parser.parse_args()
    if args.keep_grpc_pool:
        command = server_module.server_command
        server_module.server_command = lambda *a: [arg for arg in command(*a) if "allocation-pool-size" not in arg]

    plan = make_plan(load_host(args.host_file), recognizer="crnn-en")  # as in the earlier runs
    onnx = {"craft": export_model("craft", precision=plan.detector.precision, progress=False).onnx_path,
            "crnn-en": export_model("crnn-en", progress=False).onnx_path}
    workdir = Path(tempfile.mkdtemp(prefix=f"outlier-{args.label}-"))
    render(plan, workdir / "repo", {m.triton_name: onnx[m.family] for m in plan.models()})
    image = read_image(args.image)
    side = math.isqrt(plan.pipeline.max_image_pixels)
    largest = np.full((side, side, 3), 255, np.uint8)
    largest[side // 3: side // 3 + image.shape[0], side // 3: side // 3 + image.shape[1]] = image
    oversized = np.zeros((args.oversized, args.oversized, 3), np.uint8)

    events: list[dict] = []
    with TritonServer(workdir / "repo", log_path=workdir / "server.log") as server, ExitStack() as stack:
        if args.as_deployed:  # what auto's smoke does before it serves (and before its supervisor starts)
            failed = [(name, exc) for name, exc in drive_max_shapes(server.grpc_url, plan, print) if exc]
            if failed:
                raise SystemExit(f"the max-shape drive failed: {failed}")
        if args.supervised:
            from stdr_deploy.supervise import Policy, watch

            stop = threading.Event()
            thread = threading.Thread(target=watch, args=(server, workdir / "repo", Policy(),
                                                          lambda event: events.append(event.to_dict()), stop))
            thread.start()
            stack.callback(thread.join)
            stack.callback(stop.set)
        client = TritonPipelineClient(server.grpc_url)
        for _ in range(args.warm):
            client.read(image)
        seconds = []
        for _ in range(args.reads):
            started = time.perf_counter()
            client.read(image)
            seconds.append(time.perf_counter() - started)
        before, shm_before = rss_by_process(server.pid), shm_pool_bytes(server.shm_prefix)
        refused = ""
        try:
            client.read(oversized)
        except Exception as exc:  # noqa: BLE001 - the refusal is the expected outcome
            refused = str(exc)[:200]
        del oversized
        words = len(client.read(largest))
        samples = []
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            samples.append((round(elapsed, 1), rss_by_process(server.pid), shm_pool_bytes(server.shm_prefix)))
            if elapsed >= args.after:
                break
            time.sleep(1.0)

    names = sorted(before)
    end, shm_end = samples[-1][1], samples[-1][2]

    def mib(value: int) -> float:
        return round(value / MIB, 1)

    def totals(rss: dict, shm: int) -> dict[str, float]:
        """Anonymous memory of all processes plus the shared pool once (RSS would count it twice)."""
        return {"anon": mib(sum(r["anon"] for r in rss.values())), "shm_pool": mib(shm),
                "total": mib(sum(r["anon"] for r in rss.values()) + shm)}

    result = {
        "label": args.label,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "plan": {"canvas": plan.pipeline.canvas_size, "max_image_pixels": plan.pipeline.max_image_pixels},
        "oversized": f"{args.oversized}x{args.oversized}", "refused": refused, "supervised": args.supervised,
        "as_deployed": args.as_deployed,
        "supervisor_events": events,
        "largest_accepted": f"{side}x{side}", "largest_words": words,
        "latency_s": {"p50": statistics.median(seconds), "mean": statistics.fmean(seconds), "reads": len(seconds)},
        "rss_mib": {
            name: {
                "before": {key: mib(value) for key, value in before[name].items()},
                "peak_after": mib(max(s[1].get(name, {}).get("rss", 0) for s in samples)),
                "end": {key: mib(value) for key, value in end.get(name, {}).items()},
                "rss_end_over_before": round(end.get(name, {}).get("rss", 0) / before[name]["rss"], 3),
            }
            for name in names
        },
        "before_mib": totals(before, shm_before),
        "peak_after_mib": max(totals(rss, shm)["total"] for _, rss, shm in samples),
        "end_mib": totals(end, shm_end),
        "end_over_before": round(totals(end, shm_end)["total"] / totals(before, shm_before)["total"], 3),
        "samples_total_mib": [(t, totals(rss, shm)["total"]) for t, rss, shm in samples],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.label}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("label", "latency_s", "rss_mib", "before_mib", "peak_after_mib",
                                          "end_mib", "end_over_before")}, indent=1))


if __name__ == "__main__":
    main()
