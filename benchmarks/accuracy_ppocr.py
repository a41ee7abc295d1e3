"""Words read on scenes_A and real_A by detector x recognizer combinations and RapidOCR, in one run.

    python benchmarks/accuracy_ppocr.py [--sets ../shared/testdata/scenes_A ../shared/testdata/real_A]
                                        [--out benchmarks/results/accuracy_ppocr]

Systems: craft+crnn-en (the default), craft+ppocr, ppocr-det+ppocr, ppocr-det+crnn-en (ONNX
Runtime, CPU, default settings) and RapidOCR 1.4.4 itself (its defaults; needs the `peers`
extra), whose multi-word line boxes are split into words in proportion to their characters,
exactly as the pipeline splits ppocr-det's lines (`stdr_deploy.ocr.detectors.split_words`).
Scored with the project's metric (`stdr_deploy.ocr.metrics`, identical to tools/ocr_score.py).
Seconds per image are from the same run (ratios only: the 2-core box is shared).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMBOS = (("ppocr-det", "ppocr"), ("ppocr-det", "crnn-en"), ("craft", "ppocr"), ("craft", "crnn-en"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=Path, nargs="+",
                        default=[ROOT.parent / "shared/testdata/scenes_A", ROOT.parent / "shared/testdata/real_A"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/accuracy_ppocr")
    args = parser.parse_args()
    from stdr_deploy.bench.peers import make_peer
    from stdr_deploy.ocr.metrics import score
    from stdr_deploy.runners import make_pipeline
    from stdr_deploy.workspace import write_json_atomic, write_text_atomic

    systems = {"rapidocr": lambda: make_peer("rapidocr")}
    systems.update({f"{d}+{r}": (lambda d=d, r=r: make_pipeline("onnxruntime", r, detector=d)) for d, r in COMBOS})
    results: dict[str, dict] = {}
    for name, make in systems.items():
        reader = make()
        for folder in args.sets:
            gt = json.loads((folder / "gt.json").read_text())
            predictions, seconds = read_set(reader, folder, gt)
            report = score(gt, {"images": predictions})
            results.setdefault(name, {})[folder.name] = {
                "hits": report["hits"], "total": report["total_gt"],
                "word_accuracy": report["word_accuracy"], "det_precision": report["det_precision"],
                "det_recall": report["det_recall"], "seconds": seconds,
            }
            print(name, folder.name, report["hits"], "/", report["total_gt"], flush=True)
        write_json_atomic(args.out / "accuracy.json", {"systems": results})  # after each system
        write_text_atomic(args.out / "accuracy.md", markdown(results))


def read_set(reader, folder: Path, gt: dict) -> tuple[list[dict], dict[str, float]]:
    from stdr_deploy.ocr import OcrPipeline, read_image

    predictions, seconds = [], {}
    for entry in gt["images"]:
        image = read_image(folder / entry["file"])
        start = time.perf_counter()
        words = reader.read(image)
        seconds[entry["file"]] = round(time.perf_counter() - start, 3)
        predictions.append(OcrPipeline.to_prediction(entry["file"], words))
    return predictions, seconds


def markdown(results: dict) -> str:
    sets = sorted({s for r in results.values() for s in r})
    lines = ["| system | " + " | ".join(f"{s} words read | {s} det P/R" for s in sets) + " |",
             "|---|" + "---|---|" * len(sets)]
    for name, per_set in results.items():
        cells = []
        for s in sets:
            r = per_set[s]
            cells += [f"{r['hits']}/{r['total']} ({100 * r['word_accuracy']:.1f} %)",
                      f"{100 * r['det_precision']:.0f} / {100 * r['det_recall']:.0f} %"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
