"""Does the int8 CRAFT read the same words on OpenVINO as on ONNX Runtime? Every check set, both.

`benchmarks/cpu_int8_kernels.py` found OpenVINO's CPU plugin running the int8 CRAFT graph ~2.3x
faster than ONNX Runtime on the 2-core Xeon (AMX). This reads every check set with the CPU plans'
pipeline (int8 CRAFT at canvas 1600, ppocr), the detector on ONNX Runtime (its int8 graph) and
then on OpenVINO (`--openvino-graph`: int8-openvino, whose concatenations are float, by default;
int8, ONNX Runtime's own graph, which OpenVINO computes wrongly), dynamic shapes, `--threads`, the
recognizer on ONNX Runtime for both, and scores both with the project's metric.

    pip install 'stdr-deploy[openvino]'
    python benchmarks/openvino_words.py scenes_A=../shared/testdata/scenes_A real_A=... --out DIR

Writes words.json and words.md to DIR.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


class OpenVinoRunner:
    """`infer(feeds) -> outputs` on OpenVINO's CPU plugin, for the pipeline's detector slot."""

    def __init__(self, path: Path, threads: int, precision_hint: str = "f32"):
        import openvino as ov

        core = ov.Core()
        model = core.compile_model(core.read_model(str(path)), "CPU",
                                   {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                    "INFERENCE_PRECISION_HINT": precision_hint})
        self.request = model.create_infer_request()
        self.names = [port.get_any_name() for port in model.outputs]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer({0: next(iter(feeds.values()))})
        return {name: np.array(results[i]) for i, name in enumerate(self.names)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", metavar="NAME=DIR")
    parser.add_argument("--canvas", type=int, default=1600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--openvino-graph", default="int8-openvino", choices=("int8-openvino", "int8"),
                        help="the int8 graph OpenVINO runs: its own flavour (float concatenations), or ONNX Runtime's")
    parser.add_argument("--precision-hints", default="f32",
                        help="comma-separated INFERENCE_PRECISION_HINTs, one OpenVINO column each (f32, bf16)")
    parser.add_argument("--no-onnxruntime", action="store_true", help="skip the ONNX Runtime column")
    parser.add_argument("--recognizer-on-openvino", action="store_true",
                        help="the OpenVINO columns run the ppocr recognizer on OpenVINO too, at the same hint")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from stdr_deploy.bench.accuracy import load_scenes, predictions, score
    from stdr_deploy.ocr import PipelineSettings, read_image
    from stdr_deploy.onnx_files import ensure_onnx
    from stdr_deploy.runners import make_pipeline

    pipeline = make_pipeline("onnxruntime", "ppocr", settings=PipelineSettings(canvas_size=args.canvas),
                             detector_precision="int8")
    graph = ensure_onnx("craft", precision=args.openvino_graph)
    ort_recognizer = pipeline.recognizer
    detectors = {} if args.no_onnxruntime else {"onnxruntime": (pipeline.detector, ort_recognizer)}
    for hint in args.precision_hints.split(","):
        recognizer = (OpenVinoRunner(ensure_onnx("ppocr", precision="fp32"), args.threads, hint)
                      if args.recognizer_on_openvino else ort_recognizer)
        detectors[f"openvino {hint}"] = (OpenVinoRunner(graph, args.threads, hint), recognizer)
    rows = []
    for name, folder in (item.split("=", 1) for item in args.sets):
        gt, paths = load_scenes(Path(folder))
        for label, (detector, recognizer) in detectors.items():
            pipeline.detector, pipeline.recognizer = detector, recognizer
            started = time.perf_counter()
            pred = predictions(paths, lambda path: [(w.text, w.polygon) for w in pipeline.read(read_image(path))])
            report = score(gt, pred)
            rows.append({"set": name, "detector": label, "hits": report["hits"], "gt": report["total_gt"],
                         "seconds": round(time.perf_counter() - started, 1)})
            print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "words.json").write_text(json.dumps(
        {"canvas": args.canvas, "threads": args.threads, "openvino_graph": args.openvino_graph,
         "recognizer_on_openvino": args.recognizer_on_openvino, "rows": rows}, indent=2) + "\n")
    lines = ["| set | " + " | ".join(f"words, CRAFT int8 on {d}" for d in detectors) + " | seconds, "
             + " / ".join(detectors) + " |", "|---|" + "---:|" * (len(detectors) + 1)]
    for name in dict.fromkeys(r["set"] for r in rows):
        cells = [next(r for r in rows if r["set"] == name and r["detector"] == d) for d in detectors]
        lines.append(f"| {name} | " + " | ".join(f"{r['hits']}/{r['gt']}" for r in cells) + " | "
                     + " / ".join(str(r["seconds"]) for r in cells) + " |")
    (args.out / "words.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
