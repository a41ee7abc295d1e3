"""CRAFT on ONNX Runtime's CUDA EP with its two input forms, side by side in one process: the
graph that takes uint8 pixels and normalises them itself, against the graph of the code before
(normalised float32 in). Host I/O is what the served backend does (numpy in, numpy out);
device-resident I/O (IO binding) shows what is left once no input crosses the bus.

    python benchmarks/craft_input_types.py --uint8 craft-fp16.onnx --float craft-fp16-before.onnx \
        [--shapes 1x3x2560x2560,1x3x2560x2048] [--rounds 3] [--repeats 10] [--out DIR]

The sessions use the served settings (NHWC, HEURISTIC cuDNN search, max workspace, one thread).
The graphs alternate round by round, so drift of the machine falls on both.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from gpu_fast_path import host_run, resident_run, session, timed

PROVIDER = "CUDAExecutionProvider"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uint8", type=Path, required=True, help="CRAFT graph taking uint8 pixels")
    parser.add_argument("--float", type=Path, required=True, help="CRAFT graph taking normalised float32")
    parser.add_argument("--shapes", default="1x3x2560x2560,1x3x2560x2048")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    sessions = {label: session(path, PROVIDER, nhwc=True) for label, path in (("uint8", args.uint8), ("float32", args.float))}
    rows = []
    for shape in shapes:
        runs = {label: {"host": [], "resident": []} for label in sessions}
        for number in range(args.rounds):
            order = list(sessions) if number % 2 == 0 else list(reversed(sessions))
            for label in order:
                sess = sessions[label]
                runs[label]["host"].append(timed(host_run(sess, shape), args.repeats)["p50_ms"])
                runs[label]["resident"].append(timed(resident_run(sess, shape, "cuda"), args.repeats)["p50_ms"])
        for label, by_io in runs.items():
            rows.append({"shape": list(shape), "input": label,
                         **{f"{io}_p50_ms": round(statistics.median(v), 2) for io, v in by_io.items()},
                         "rounds": by_io})
    table = ["| shape | input | host I/O p50 ms | device-resident p50 ms |", "|---|---|---:|---:|"]
    table += [f"| {'x'.join(map(str, r['shape']))} | {r['input']} | {r['host_p50_ms']} | {r['resident_p50_ms']} |" for r in rows]
    text = "\n".join(table) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "craft_input_types.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str))
        (args.out / "craft_input_types.md").write_text(text)


if __name__ == "__main__":
    main()
