"""Word accuracy on scenes_A: the default pipeline next to EasyOCR 1.7.2, in one run.

    python benchmarks/accuracy_scenes_a.py [--scenes ../shared/testdata/scenes_A] [--out benchmarks/results]

Runs the default pipeline (craft + crnn-en, ONNX Runtime, CPU) and EasyOCR's `readtext` (CPU
defaults, the same two weight files) on every image of the set, scores both with the project's
metric (`stdr_deploy.ocr.metrics`, identical to tools/ocr_score.py) and writes
`accuracy_scenes_A.json` and `.md`. EasyOCR needs the `easyocr` extra; without it the recorded
baseline (`oracles/easyocr/easyocr_A.json`) is scored instead and the report says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=Path, default=ROOT.parent / "shared/testdata/scenes_A")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    gt = json.loads((args.scenes / "gt.json").read_text())
    paths = [args.scenes / image["file"] for image in gt["images"]]

    ours, our_seconds = run_pipeline(paths)
    easyocr, easyocr_seconds, easyocr_source = run_easyocr(paths, args.scenes)
    result = {
        "set": gt.get("set", args.scenes.name),
        "metric": "word_accuracy: gt words matched at IoU >= 0.5 (axis-aligned bounds, one-to-one, greedy) "
                  "with exactly equal stripped text, over all gt words",
        "environment": environment(),
        "systems": {
            "stdr-deploy": system_entry(gt, ours, our_seconds,
                                        "craft + crnn-en, ONNX Runtime CPU, default PipelineSettings"),
            "easyocr": system_entry(gt, easyocr, easyocr_seconds, easyocr_source),
        },
    }
    result["words"] = word_table(gt, result["systems"])
    from stdr_deploy.workspace import write_json_atomic, write_text_atomic

    name = f"accuracy_scenes_{result['set']}"
    write_json_atomic(args.out / f"{name}.json", result)
    write_text_atomic(args.out / f"{name}.md", markdown(result))
    print(f"wrote {args.out / name}.json and .md")


def run_pipeline(paths: list[Path]) -> tuple[dict, dict[str, float]]:
    from stdr_deploy.ocr import OcrPipeline, read_image
    from stdr_deploy.runners import make_pipeline

    pipeline = make_pipeline("onnxruntime", "crnn-en")
    images, seconds = [], {}
    for path in paths:
        start = time.perf_counter()
        words = pipeline.read(read_image(path))
        seconds[path.name] = round(time.perf_counter() - start, 2)
        images.append(OcrPipeline.to_prediction(path.name, words))
    return {"images": images}, seconds


def run_easyocr(paths: list[Path], scenes: Path) -> tuple[dict, dict[str, float], str]:
    from stdr_deploy.bench.easyocr_baseline import make_reader, read_words, versions
    from stdr_deploy.errors import MissingDependency

    try:
        reader = make_reader(threads=2)
    except MissingDependency:
        recorded = scenes.parents[1] / "oracles/easyocr/easyocr_A.json"
        return json.loads(recorded.read_text()), {}, f"recorded predictions {recorded.name} (easyocr not installed)"
    images, seconds = [], {}
    for path in paths:
        start = time.perf_counter()
        words = read_words(reader, path)
        seconds[path.name] = round(time.perf_counter() - start, 2)
        images.append({"file": path.name, "words": [{"text": t, "polygon": p} for t, p in words]})
    v = versions()
    return {"images": images}, seconds, f"EasyOCR {v['easyocr']} readtext, CPU defaults (quantize=True), run live"


def system_entry(gt: dict, pred: dict, seconds: dict[str, float], description: str) -> dict[str, Any]:
    from stdr_deploy.ocr.metrics import score

    scored = score(gt, pred, 0.5, keep_errors=True)
    return {
        "description": description,
        "scores": {k: v for k, v in scored.items() if k != "images"},
        "images": [{**row, "seconds": seconds.get(row["file"])} for row in scored["images"]],
        "predictions": pred,
    }


def word_table(gt: dict, systems: dict[str, dict]) -> list[dict[str, Any]]:
    """Per gt word: what each system read for it (None = no box matched it at IoU 0.5)."""
    from stdr_deploy.ocr.metrics import pair_words, word_bounds

    rows = []
    for image in gt["images"]:
        truth = [word_bounds(w, image["file"]) for w in image["words"]]
        reads: dict[str, dict[int, tuple[str, float]]] = {}
        for name, system in systems.items():
            pred = next((im for im in system["predictions"]["images"] if im["file"] == image["file"]), {"words": []})
            boxes = [word_bounds(w, image["file"]) for w in pred["words"]]
            reads[name] = {g: (pred["words"][p]["text"].strip(), round(v, 3)) for g, p, v in pair_words(truth, boxes, 0.5)}
        for g, word in enumerate(image["words"]):
            rows.append({"file": image["file"], "gt": word["text"], "height": word.get("height"),
                         "angle": word.get("angle"),
                         **{name: {"text": r[g][0], "iou": r[g][1]} if g in r else None for name, r in reads.items()}})
    return rows


def environment() -> dict[str, str]:
    import cv2
    import numpy
    import onnxruntime

    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": str(_cpus()),
            "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__, "opencv": cv2.__version__}


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def markdown(result: dict) -> str:
    ours, theirs = result["systems"]["stdr-deploy"], result["systems"]["easyocr"]
    lines = [
        f"# Word accuracy on scenes_{result['set']}: stdr-deploy vs EasyOCR",
        "",
        f"Metric: {result['metric']}.",
        "",
        f"- stdr-deploy: {ours['description']}",
        f"- EasyOCR: {theirs['description']}",
        f"- Environment: {', '.join(f'{k} {v}' for k, v in result['environment'].items())}",
        "",
        "| system | word accuracy | case-insensitive | det recall | det precision | matched CER |",
        "|---|---|---|---|---|---|",
    ]
    for name, system in result["systems"].items():
        s = system["scores"]
        lines.append(
            f"| {name} | **{100 * s['word_accuracy']:.2f}%** ({s['hits']}/{s['total_gt']}) | "
            f"{100 * s['ci_word_accuracy']:.2f}% | {100 * s['det_recall']:.2f}% ({s['matched']}/{s['total_gt']}) | "
            f"{100 * s['det_precision']:.2f}% ({s['matched']}/{s['total_pred']}) | {100 * s['matched_cer']:.2f}% |"
        )
    lines += ["", "## Per image", "", "| image | gt | stdr-deploy hits | EasyOCR hits | stdr-deploy s | EasyOCR s |",
              "|---|---|---|---|---|---|"]
    for a, b in zip(ours["images"], theirs["images"]):
        lines.append(f"| {a['file']} | {a['gt']} | {a['hits']} | {b['hits']} | {a['seconds'] or ''} | {b['seconds'] or ''} |")
    lines += ["", "## Words either system got wrong", "",
              "| image | gt word | ink height | angle | stdr-deploy | EasyOCR |", "|---|---|---|---|---|---|"]
    for row in result["words"]:
        cells = [_cell(row["gt"], row[name]) for name in ("stdr-deploy", "easyocr")]
        if any(not c.startswith("ok") for c in cells):
            lines.append(f"| {row['file']} | `{row['gt']}` | {row['height']} | {row['angle']} | {cells[0]} | {cells[1]} |")
    lines += ["", "Seconds are wall time per image on this machine, for orientation only (other work shared the CPU)."]
    return "\n".join(lines) + "\n"


def _cell(truth: str, read: dict | None) -> str:
    if read is None:
        return "missed (no box at IoU >= 0.5)"
    if read["text"] == truth:
        return f"ok (IoU {read['iou']})"
    return f"`{read['text']}` (IoU {read['iou']})"


if __name__ == "__main__":
    main()
