"""`stdr-deploy ocr`: read the text in images with the in-process pipeline."""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.markup import escape

from stdr_deploy.cli.options import (
    artifacts_option,
    detector_option,
    detector_precision_option,
    onnx_source,
    parse_weights,
    recognizer_option,
    runtime_option,
    weights_option,
)
from stdr_deploy.cli.output import activity, console, print_json
from stdr_deploy.errors import ServerError, ServerUnreachable, UserInputError


@click.command("ocr")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@runtime_option
@detector_option
@recognizer_option
@weights_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the predictions as JSON on stdout, in the scorer's format "
              '({"images": [{"file", "words": [{"text", "polygon", "score"}]}]}).')
@click.option("--url", help="Read through the `pipeline` model of a running Triton server "
              "(grpc://HOST:PORT; http://HOST:PORT only where `serve --http-inference` opened it) instead of in-process.")
@artifacts_option
@click.option("--annotate", "annotate_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Also write each image with its boxes and words drawn on it, as DIR/<name>.png.")
@detector_precision_option
def command(images, runtime, detector, recognizer, weights, as_json, url, artifacts, annotate_dir, detector_precision):
    """Detect and read the words in IMAGE... (PNG, JPEG, BMP, TIFF, WebP, ...).

    Prints one line per image: its name and the words read, top to bottom. An image that cannot
    be read is reported and skipped; the others are still read, and the exit code is then 2.
    In-process, the pipeline is the one `auto` would serve on this host (its plan's detector
    precision, canvas and thresholds).
    """
    from stdr_deploy.ocr import OcrPipeline

    if url:
        from stdr_deploy.triton_client import TritonPipelineClient

        if weights or artifacts:
            raise UserInputError("--url reads through the server's own models: --weights/--artifacts do not apply",
                                 hint="drop them, or drop --url to read in-process")
        pipeline = TritonPipelineClient(url, shared_memory=None)  # shared memory where the server is local
    else:
        pipeline = LoadOnFirstUse(lambda: host_pipeline(runtime, detector, recognizer, weights, artifacts,
                                                        detector_precision))
    results, failures = read_all(pipeline, list(images), annotate_dir)
    if as_json:
        print_json({"images": [OcrPipeline.to_prediction(name, words) for name, _, words in results]})
    else:
        for name, _, words in results:
            click.echo(f"{name}: {' '.join(w.text for w in words)}")
    raise_for_failures(failures, len(images))


class LoadOnFirstUse:
    """A pipeline built when the first image has been read: files refused on their header alone
    (missing, not an image, a decompression bomb) cost no model load and its memory."""

    def __init__(self, make):
        self._make = make
        self._pipeline = None

    def read(self, image):
        if self._pipeline is None:
            self._pipeline = self._make()
        return self._pipeline.read(image)


def host_pipeline(runtime, detector, recognizer, weights, artifacts, detector_precision):
    """The in-process pipeline as `auto` would deploy it here: the host plan's CRAFT precision
    (int8 on CPUs with int8 units) unless --detector-precision says otherwise, and its canvas and
    thresholds. A GPU plan's fp16 runs as fp32 (ONNX Runtime's CPU provider), 32-padded."""
    from stdr_deploy.hardware import probe_host
    from stdr_deploy.ocr import PipelineSettings
    from stdr_deploy.planner import TORCH_RECOGNIZER, make_plan
    from stdr_deploy.profiles import resolve_profile
    from stdr_deploy.runners import make_pipeline

    host = probe_host()
    if recognizer is None and runtime == "torch":  # ppocr, the default, has no torch model
        recognizer = TORCH_RECOGNIZER
    plan = make_plan(host, resolve_profile(host), recognizer=recognizer, variant="onnxruntime")
    recognizer = plan.recognizer.family
    precision = detector_precision or (plan.detector.precision if detector == "craft" and runtime == "onnxruntime" else "fp32")
    precision = "fp32" if precision == "fp16" else precision
    settings = PipelineSettings.from_plan(plan.pipeline, pad_to=PipelineSettings.pad_to)
    with activity("load", f"{detector} ({precision}, canvas {settings.canvas_size}) + {recognizer} ({runtime})"):
        weights = parse_weights(weights, recognizer)
        return make_pipeline(runtime, recognizer, weights, settings=settings, detector_precision=precision,
                             onnx=onnx_source(artifacts, weights), detector=detector)


def read_all(pipeline, paths: list[Path], annotate_dir: Path | None = None, names: list[str] | None = None):
    """Read every image; returns ([(name, path, words)], [path that failed]).

    Shows a progress bar on a terminal, a timestamped line per image in a log. Each failure is
    printed when it happens; `raise_for_failures` then only counts and names them. `names`
    (default: file names, made unique) label the images in the output.
    """
    from rich.progress import Progress

    from stdr_deploy.ocr import ImageReadError, OcrError, read_image
    from stdr_deploy.progress import PlainProgress, interactive

    names = names or unique_names(paths)
    results, failures = [], []
    display = Progress(console=console, transient=True) if interactive() else PlainProgress()
    with display as progress:
        task = progress.add_task("reading", total=len(paths))
        for name, path in zip(names, paths):
            progress.update(task, description=f"reading {name}")
            try:
                image = read_image(path)
                words = pipeline.read(image)
            except ServerUnreachable:
                raise  # no server: every other image would fail the same way
            except ImageReadError as exc:  # its message names the file
                failures.append(str(path))
                console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            except (OcrError, ServerError) as exc:  # a served request fails for that image alone
                failures.append(str(path))
                console.print(f"[red]error:[/] {escape(f'{path}: {exc}')}", highlight=False)
            else:
                results.append((name, path, words))
                if annotate_dir is not None:
                    write_annotated(annotate_dir / annotated_name(name), image, words)
            progress.advance(task)
    return results, failures


def unique_names(paths: list[Path]) -> list[str]:
    """File names, as the scorer matches images by name; a repeated name keeps its full path."""
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.name] = counts.get(path.name, 0) + 1
    return [path.name if counts[path.name] == 1 else str(path) for path in paths]


def annotated_name(name: str) -> str:
    """`img00.png` -> `img00.png`; `a/b/img.jpg` -> `a_b_img.png` (names stay unique)."""
    return re.sub(r"[^\w.-]", "_", str(Path(name).with_suffix(""))) + ".png"


def write_annotated(target: Path, image, words) -> None:
    from PIL import Image

    from stdr_deploy.ocr.annotate import annotate
    from stdr_deploy.workspace import atomic_path

    with atomic_path(target) as tmp:
        Image.fromarray(annotate(image, words)).save(tmp, format="PNG")


def raise_for_failures(failures: list[str], total: int) -> None:
    if failures:
        raise UserInputError(
            f"{len(failures)} of {total} images could not be read (why: above): " + ", ".join(failures),
            hint="check that each file exists and is an image (PNG, JPEG, BMP, TIFF, WebP)",
        )
