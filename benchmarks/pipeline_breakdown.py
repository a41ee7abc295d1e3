"""Per-request time of the OCR pipeline in-process, by stage: CPU pre-processing, detector, CPU
post-processing, recognizer.

    # ONNX Runtime (add --compare REF to time the pipeline code of a git ref too)
    python benchmarks/pipeline_breakdown.py IMAGE... [--providers CUDAExecutionProvider,CPUExecutionProvider]
        [--repeat 5] [--detector-runs 5] [--compare REF] [--out DIR]

Served, `stdr-deploy bench` reports the same stages measured inside the server's pipeline model
(its "each image sent alone" table).

Stages (wall clock, median over `--repeat` reads of each image; pre and post also as CPU time of
the pipeline's thread, `*_cpu_ms`, which other processes on a busy machine disturb less), from
the pipeline's own `StageClock`:
- pre: the detector input (resize, pad);
- detector: the detector call (its own median over `--detector-runs` calls: the same input and
  output serve every read, so a slow CPU detector is not run once per read and code version;
  `--detector-outputs DIR` even keeps it across runs);
- recognizer: the recognizer calls (`infer` or `infer_many`);
- post: the rest of `read` (score maps -> boxes, crops, recognizer inputs, decoding).
`--compare REF` loads the pipeline code of a git ref (from the commit that added `StageClock`
on) as a separate package and runs it alternately with this one in the same process: on a busy
machine only such same-run ratios mean anything.

Writes breakdown.json and breakdown.md to --out (default: print the markdown only).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("pre", "detector", "post", "recognizer", "total")


class CountedRunner:
    """A runner that counts its calls."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.calls = 0

    def infer(self, feeds):
        self.calls += 1
        return self.inner.infer(feeds)


class RecordedDetector:
    """Answers the detector call with an output recorded for exactly this input."""

    def __init__(self, tensor: np.ndarray, output: np.ndarray):
        self.tensor, self.output = tensor, output

    def infer(self, feeds):
        given = feeds["input"]
        if given.dtype != self.tensor.dtype:  # code before CRAFT took uint8 pixels: compare normalised
            from stdr_deploy.ocr.detector_input import normalised

            given, recorded = (normalised(t) if t.dtype == np.uint8 else t for t in (given, self.tensor))
        else:
            recorded = self.tensor
        if not np.array_equal(given, recorded):
            raise RuntimeError("this pipeline made a different detector input than the recorded one")
        return {"output": self.output}


def load_ocr_package(ref: str) -> Any:
    """`stdr_deploy/ocr` as of git `ref` (or a folder holding a copy of it, for a checkout without
    git history such as the device machine's), imported as its own package (relative imports only)."""
    name = "stdr_ocr_" + "".join(c if c.isalnum() else "_" for c in ref)
    folder = Path(tempfile.mkdtemp(prefix="breakdown-")) / name
    if Path(ref).is_dir():
        shutil.copytree(ref, folder, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        folder.mkdir()
        files = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", ref, "stdr_deploy/ocr/"],
                               check=True, capture_output=True, text=True).stdout.split()
        for path in files:
            if path.endswith(".py"):
                text = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{path}"], check=True,
                                      capture_output=True, text=True).stdout
                (folder / Path(path).name).write_text(text)
    if not (folder / "stages.py").is_file():
        raise SystemExit(f"--compare {ref}: its pipeline code has no StageClock (stages.py); compare with a later ref")
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module(name)


def timed_read(package: Any, pipeline: Any, image: np.ndarray) -> dict[str, Any]:
    """One `read`, split into stages (seconds); `package` is the ocr package `pipeline` comes from."""
    clock = importlib.import_module(package.__name__ + ".stages").StageClock()
    pipeline.recognizer.calls = 0
    words = pipeline.read(image, clock)
    wall, cpu = clock.seconds, clock.cpu_seconds
    post = ("post", "crops", "decode")
    return {"pre": wall["pre"], "recognizer": wall["recognizer"], "total": sum(wall.values()) - wall["detector"],
            "post": sum(wall[s] for s in post), "pre_cpu": cpu["pre"], "post_cpu": sum(cpu[s] for s in post),
            "recognizer_calls": pipeline.recognizer.calls, "words": [w.text for w in words]}


def in_process(paths: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    import stdr_deploy.ocr as current
    from stdr_deploy.onnx_files import ensure_onnx
    from stdr_deploy.ocr import PipelineSettings, read_image
    from stdr_deploy.ocr.detector_input import detector_input
    from stdr_deploy.ort_runner import OrtRunner
    from stdr_deploy.ocr.recognizers import model_charset

    providers = args.providers.split(",")
    detector = OrtRunner(ensure_onnx("craft", precision=args.precision), providers=providers, intra_op_threads=args.threads)
    rec_precision = "fp32" if args.precision == "int8" else args.precision  # int8 is CRAFT's alone, as in CPU plans
    rec_runner = OrtRunner(ensure_onnx(args.recognizer, precision=rec_precision), providers=providers,
                           intra_op_threads=args.threads)
    charset = model_charset(args.recognizer, rec_runner)  # ppocr's lives in its model file
    recognizer = CountedRunner(rec_runner)
    packages = {"current": current}
    if args.compare:
        packages[args.compare] = load_ocr_package(args.compare)
    settings = PipelineSettings(**({"canvas_size": args.canvas} if args.canvas else {}))
    rows = []
    for path in paths:
        image = read_image(path)
        tensor = detector_input(image, settings.canvas_size, settings.mag_ratio).tensor
        saved = args.detector_outputs / f"{path.name}.{settings.canvas_size}.npy" if args.detector_outputs else None
        seconds = [float("nan")]
        if saved is not None and saved.is_file():  # a slow CPU detector's output, kept from an earlier run
            output = np.load(saved)
        else:
            detector.infer({"input": tensor})  # warm-up: first-call allocations, CUDA kernels
            seconds = []
            for _ in range(args.detector_runs):
                start = time.perf_counter()
                output = detector.infer({"input": tensor})["output"]
                seconds.append(time.perf_counter() - start)
            if saved is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                np.save(saved, output)
        recorded = RecordedDetector(tensor, output)  # its input check is no stage's time
        pipelines = {
            label: package.OcrPipeline(recorded, recognizer, args.recognizer,
                                       package.PipelineSettings(canvas_size=settings.canvas_size), charset=charset)
            for label, package in packages.items()
        }
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in packages}
        for label, pipeline in pipelines.items():  # warm-up of each code path
            timed_read(packages[label], pipeline, image)
        for repeat in range(args.repeat):
            order = list(packages) if repeat % 2 == 0 else list(reversed(packages))
            for label in order:
                runs[label].append(timed_read(packages[label], pipelines[label], image))
        for label, samples in runs.items():
            row = {"image": path.name, "code": label, "detector_ms": 1e3 * statistics.median(seconds),
                   "recognizer_calls": samples[0]["recognizer_calls"], "words": samples[0]["words"]}
            for stage in ("pre", "post", "recognizer", "total", "pre_cpu", "post_cpu"):
                row[f"{stage}_ms"] = 1e3 * statistics.median(s[stage] for s in samples)
            row["total_ms"] += row["detector_ms"]
            rows.append(row)
        print(f"{path.name}: " + ", ".join(f"{r['code']} post {r['post_ms']:.1f} ms" for r in rows[-len(packages):]),
              file=sys.stderr, flush=True)
    return {"mode": "in-process", "providers": providers, "intra_op_threads": args.threads,
            "recognizer": args.recognizer, "canvas_size": settings.canvas_size, "repeat": args.repeat,
            "detector_runs": args.detector_runs, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| image | code | pre ms (CPU) | detector ms | post ms (CPU) | recognizer ms (calls) | total ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['image']} | {r['code']} | {r['pre_ms']:.1f} ({r['pre_cpu_ms']:.1f}) | {r['detector_ms']:.1f} | "
                     f"{r['post_ms']:.1f} ({r['post_cpu_ms']:.1f}) | {r['recognizer_ms']:.1f} ({r['recognizer_calls']}) | "
                     f"{r['total_ms']:.1f} |")
    codes = list(dict.fromkeys(r["code"] for r in result["rows"]))
    if len(codes) == 2:
        lines += ["", f"Same-run ratios {codes[1]} / {codes[0]}, thread CPU time (> 1: the current code is faster):", "",
                  "| image | pre | post | pre + post | recognizer calls | words equal |", "|---|---:|---:|---:|---|---|"]
        for image in dict.fromkeys(r["image"] for r in result["rows"]):
            new, old = ({r["code"]: r for r in result["rows"] if r["image"] == image}[c] for c in codes)
            cpu = (old["pre_cpu_ms"] + old["post_cpu_ms"]) / (new["pre_cpu_ms"] + new["post_cpu_ms"])
            lines.append(f"| {image} | {old['pre_cpu_ms'] / new['pre_cpu_ms']:.2f} | {old['post_cpu_ms'] / new['post_cpu_ms']:.2f} | "
                         f"{cpu:.2f} | {old['recognizer_calls']} -> {new['recognizer_calls']} | {old['words'] == new['words']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--providers", default="CPUExecutionProvider", help="ONNX Runtime providers, comma-separated")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    parser.add_argument("--recognizer", default="crnn-en")
    parser.add_argument("--precision", default="fp32", help="ONNX graphs of both models: fp32 or fp16 (GPU)")
    parser.add_argument("--canvas", type=int, default=None, help="detector canvas (default: the pipeline's)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--detector-runs", type=int, default=5)
    parser.add_argument("--detector-outputs", type=Path, metavar="DIR",
                        help="keep the detector's output per image here and reuse it (detector time then n/a)")
    parser.add_argument("--compare", metavar="REF", help="also time stdr_deploy/ocr of this git ref, alternately")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = in_process(args.images, args)
    result.update(command=" ".join(["python", "benchmarks/pipeline_breakdown.py", *sys.argv[1:]]),
                  host={"python": platform.python_version(), "machine": platform.machine(), "node": platform.node()})
    text = markdown(result)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "breakdown.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "breakdown.md").write_text(f"`{result['command']}`\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
