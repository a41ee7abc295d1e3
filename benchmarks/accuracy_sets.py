"""Score every check set with the detector run once: cache CRAFT's score maps, then score the
box, crop and recognizer stages (the pipeline's own functions) on them.

    python benchmarks/accuracy_sets.py maps  CACHE NAME=DIR...   # one fp32 CRAFT pass per image
    python benchmarks/accuracy_sets.py score CACHE NAME=DIR... [--set FIELD=VALUE ...] [--json OUT]

`score` runs `word_boxes` + `OcrPipeline.recognize` with `PipelineSettings` (defaults, or the
fields given) on the cached maps, so it gives the words `stdr-deploy eval` gives (same code after
the detector) in a fraction of the CPU time, and lets settings be compared on every set at once.
With BASE=DIR in the environment, the `stdr_deploy` package under DIR is used instead (an older
commit unpacked with `git archive COMMIT stdr_deploy | tar -x -C DIR`): the "before" figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path

if os.environ.get("BASE"):
    sys.path.insert(0, os.environ["BASE"])

import numpy as np  # noqa: E402

from stdr_deploy.ocr.boxes import word_boxes  # noqa: E402
from stdr_deploy.ocr.detector_input import DetectorInput, detector_input  # noqa: E402
from stdr_deploy.ocr.image_io import read_image  # noqa: E402
from stdr_deploy.ocr.metrics import score  # noqa: E402
from stdr_deploy.ocr.pipeline import OcrPipeline  # noqa: E402
from stdr_deploy.ocr.settings import PipelineSettings  # noqa: E402
from stdr_deploy.runners import make_runner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("maps", "score"))
    parser.add_argument("cache", type=Path)
    parser.add_argument("sets", nargs="+", metavar="NAME=DIR")
    parser.add_argument("--set", dest="fields", nargs="*", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    defaults = PipelineSettings()
    overrides = {k: type(getattr(defaults, k))(v) for k, v in (f.split("=", 1) for f in args.fields)}
    settings = PipelineSettings(**overrides)
    sets = [(name, Path(folder)) for name, folder in (s.split("=", 1) for s in args.sets)]
    if args.action == "maps":
        detector = make_runner("onnxruntime", "craft")
        for name, folder in sets:
            for image in json.loads((folder / "gt.json").read_text())["images"]:
                target = args.cache / name / f"{image['file']}.pkl"
                if target.exists():
                    continue
                det = detector_input(read_image(folder / image["file"]), settings.canvas_size, settings.mag_ratio)
                maps = detector.infer({"input": det.tensor})["output"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(pickle.dumps((det.resized_hw, det.image_hw, maps)))
        return
    pipeline = OcrPipeline(None, make_runner("onnxruntime", "crnn-en"), "crnn-en", settings)
    reports = {}
    for name, folder in sets:
        gt = json.loads((folder / "gt.json").read_text())
        images = []
        for image in gt["images"]:
            resized_hw, image_hw, maps = pickle.loads((args.cache / name / f"{image['file']}.pkl").read_bytes())
            s = settings
            boxes = word_boxes(np.asarray(maps, np.float32), DetectorInput(None, resized_hw, image_hw),
                               text_threshold=s.text_threshold, link_threshold=s.link_threshold, low_text=s.low_text,
                               box_fit=s.box_fit, box_level=s.box_level, straight_below_deg=s.straight_below_deg,
                               merge_gap=s.merge_gap, min_size=s.min_size, bridge_floor=s.bridge_floor)
            words = pipeline.recognize(read_image(folder / image["file"]), boxes)
            images.append(pipeline.to_prediction(image["file"], words))
        reports[name] = score(gt, {"images": images}, keep_errors=True)
        r = reports[name]
        print(f"{name:12s} {r['hits']:3d}/{r['total_gt']:3d} {100 * r['word_accuracy']:5.1f}%  "
              f"det recall {100 * r['det_recall']:5.1f}%  precision {100 * r['det_precision']:5.1f}%", flush=True)
    hits, total = sum(r["hits"] for r in reports.values()), sum(r["total_gt"] for r in reports.values())
    print(f"{'total':12s} {hits:3d}/{total:3d} {100 * hits / total:5.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"settings": overrides, "sets": reports}, indent=1))


if __name__ == "__main__":
    main()
