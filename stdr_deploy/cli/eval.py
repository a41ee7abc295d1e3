"""`stdr-deploy eval`: run the pipeline on one or more check sets and score each, and all together."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from stdr_deploy.cli.ocr import host_pipeline, raise_for_failures, read_all
from stdr_deploy.cli.options import (
    artifacts_option,
    detector_option,
    detector_precision_option,
    recognizer_option,
    runtime_option,
    weights_option,
)
from stdr_deploy.cli.output import console, print_json
from stdr_deploy.errors import UserInputError


@click.command("eval")
@click.argument("gt_paths", metavar="GT...", nargs=-1, required=True, type=click.Path(path_type=Path))
@runtime_option
@detector_option
@recognizer_option
@weights_option
@artifacts_option
@detector_precision_option
@click.option("--url", help="Read through the `pipeline` model of a running Triton server "
              "(grpc://HOST:PORT; http://HOST:PORT only where `serve --http-inference` opened it) instead of in-process.")
@click.option("--iou", "iou_threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.5,
              show_default=True, help="IoU at which a predicted box matches a ground-truth word.")
@click.option("--predictions", "predictions_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the predictions (scorer format) to this file; with several sets, one file "
              "per set, the set's name put before the suffix (pred.json -> pred.<set>.json).")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"sets": [{"name", scores..., "images"}], "total": {...}} as JSON on stdout.')
def command(gt_paths, runtime, detector, recognizer, weights, artifacts, detector_precision, url, iou_threshold, predictions_path,
            as_json):
    """Read the images of each check set GT (a gt.json, or a folder holding one; the images lie
    beside it) and score them as tools/ocr_score.py does, set by set, then all sets together.

    Reports word accuracy (matched at IoU >= --iou with exactly the same text), detection
    recall and precision per set, one row per image with its misread and missed words, and the
    total over all sets (words summed; the mean of the sets' word accuracies too).
    """
    from stdr_deploy.bench.accuracy import set_name, total
    from stdr_deploy.ocr import OcrPipeline
    from stdr_deploy.ocr.metrics import ScoreFormatError, image_files, score
    from stdr_deploy.workspace import write_json_atomic

    sets = []
    for path in gt_paths:
        gt_path = path / "gt.json" if path.is_dir() else path
        gt = load_ground_truth(gt_path)
        try:
            files = image_files(gt)
        except ScoreFormatError as exc:
            raise UserInputError(f"{gt_path}: {exc}", hint="see the gt.json layout in testdata/README.md") from None
        sets.append((unique_name(set_name(gt, gt_path), [s[0] for s in sets]), gt_path, gt, files))
    pipeline = load_pipeline(url, runtime, detector, recognizer, weights, artifacts, detector_precision)
    reports, failures, count = [], [], 0
    for name, gt_path, gt, files in sets:
        results, failed = read_all(pipeline, [gt_path.parent / f for f in files], names=files)
        failures += failed
        count += len(files)
        predictions = {"images": [OcrPipeline.to_prediction(file, words) for file, _, words in results]}
        if predictions_path is not None:
            target = predictions_path if len(sets) == 1 else predictions_path.with_suffix(f".{name}{predictions_path.suffix}")
            write_json_atomic(target, predictions)
        reports.append({"name": name, "gt": str(gt_path), **score(gt, predictions, iou_threshold, keep_errors=True)})
    summary = {"sets": reports, "total": total(reports)}
    if as_json:
        print_json(summary)
    else:
        print_report(summary, iou_threshold)
    raise_for_failures(failures, count)


def load_pipeline(url, runtime, detector, recognizer, weights, artifacts, detector_precision):
    """The served pipeline behind `url`, or the in-process one `auto` would serve on this host."""
    if url:
        from stdr_deploy.triton_client import TritonPipelineClient

        return TritonPipelineClient(url, shared_memory=None)  # shared memory where the server is local
    return host_pipeline(runtime, detector, recognizer, weights, artifacts, detector_precision)


def unique_name(name: str, taken: list[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def load_ground_truth(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"ground-truth file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"cannot read ground-truth file {path}: {exc}") from None


def print_report(summary: dict, iou_threshold: float) -> None:
    for report in summary["sets"]:
        table = Table("image", "gt", "pred", "matched", "hits", "word acc", "det R", "det P", "errors",
                      title=f"{report['name']} ({report['gt']})")
        for row in report["images"]:
            errors = ", ".join(
                f"{e['gt']!r} missed" if e["kind"] == "missed" else f"{e['gt']!r} -> {e['pred']!r}"
                for e in row["errors"]
            )
            table.add_row(
                row["file"], str(row["gt"]), str(row["pred"]), str(row["matched"]), str(row["hits"]),
                f"{100 * row['word_accuracy']:.1f}%", f"{100 * row['det_recall']:.1f}%",
                f"{100 * row['det_precision']:.1f}%", errors,
            )
        console.print(table)
    sets = Table("set", "words", "word accuracy", "case-insens.", "det recall", "det precision", "matched CER",
                 title=f"IoU >= {iou_threshold}")
    for r in summary["sets"]:
        sets.add_row(r["name"], str(r["total_gt"]), f"{100 * r['word_accuracy']:.2f}% ({r['hits']}/{r['total_gt']})",
                     f"{100 * r['ci_word_accuracy']:.2f}%", f"{100 * r['det_recall']:.2f}%",
                     f"{100 * r['det_precision']:.2f}%", f"{100 * r['matched_cer']:.2f}%")
    t = summary["total"]
    sets.add_row("[bold]total[/]", str(t["total_gt"]),
                 f"[bold]{100 * t['word_accuracy']:.2f}%[/] ({t['hits']}/{t['total_gt']})", "",
                 f"{100 * t['det_recall']:.2f}%", f"{100 * t['det_precision']:.2f}%", "")
    console.print(sets)
    console.print(f"word accuracy [bold]{100 * t['word_accuracy']:.2f}%[/] ({t['hits']}/{t['total_gt']}) over "
                  f"{t['sets']} set(s); mean of the sets {100 * t['mean_word_accuracy']:.2f}%")
