"""`stdr-deploy eval`: run the pipeline on a ground-truth file's images and score the result."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from stdr_deploy.cli.ocr import raise_for_failures, read_all
from stdr_deploy.cli.options import (
    detector_option,
    parse_weights,
    recognizer_option,
    runtime_option,
    weights_option,
)
from stdr_deploy.cli.output import console, print_json
from stdr_deploy.errors import UserInputError


@click.command("eval")
@click.argument("gt_path", metavar="GT.json", type=click.Path(path_type=Path, dir_okay=False))
@runtime_option
@detector_option
@recognizer_option
@weights_option
@click.option("--iou", "iou_threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.5,
              show_default=True, help="IoU at which a predicted box matches a ground-truth word.")
@click.option("--predictions", "predictions_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the predictions (scorer format) to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores (with per-image rows) as JSON on stdout.")
def command(gt_path, runtime, detector, recognizer, weights, iou_threshold, predictions_path, as_json):
    """Read the images of GT.json (found beside it) and score them as tools/ocr_score.py does.

    Reports word accuracy (matched at IoU >= --iou with exactly the same text), detection
    recall and precision, and one row per image with its misread and missed words.
    """
    from stdr_deploy.ocr.metrics import ScoreFormatError, image_files, score
    from stdr_deploy.runners import make_pipeline
    from stdr_deploy.workspace import write_json_atomic

    gt = load_ground_truth(gt_path)
    try:
        files = image_files(gt)
    except ScoreFormatError as exc:
        raise UserInputError(f"{gt_path}: {exc}", hint="see the gt.json layout in testdata/README.md") from None
    with console.status(f"loading {detector} + {recognizer} ({runtime})"):
        pipeline = make_pipeline(runtime, recognizer, parse_weights(weights, recognizer), detector=detector)
    results, failures = read_all(pipeline, [gt_path.parent / f for f in files], names=files)
    predictions = {"images": [pipeline.to_prediction(name, words) for name, _, words in results]}
    if predictions_path is not None:
        write_json_atomic(predictions_path, predictions)
    report = score(gt, predictions, iou_threshold, keep_errors=True)
    if as_json:
        print_json(report)
    else:
        print_report(report)
    raise_for_failures(failures, len(files))


def load_ground_truth(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"ground-truth file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"cannot read ground-truth file {path}: {exc}") from None


def print_report(report: dict) -> None:
    table = Table("image", "gt", "pred", "matched", "hits", "word acc", "det R", "det P", "errors")
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
    console.print(
        f"word accuracy [bold]{100 * report['word_accuracy']:.2f}%[/] ({report['hits']}/{report['total_gt']}), "
        f"case-insensitive {100 * report['ci_word_accuracy']:.2f}%, "
        f"detection recall {100 * report['det_recall']:.2f}% ({report['matched']}/{report['total_gt']}), "
        f"precision {100 * report['det_precision']:.2f}% ({report['matched']}/{report['total_pred']}), "
        f"matched CER {100 * report['matched_cer']:.2f}% (IoU >= {report['iou_threshold']})"
    )
