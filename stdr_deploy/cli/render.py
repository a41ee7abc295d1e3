"""`stdr-deploy render`: write the Triton model repository a plan describes."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from stdr_deploy.cli.options import (
    artifacts_option,
    onnx_source,
    parse_weights,
    plan_option,
    read_plan,
    weights_option,
)
from stdr_deploy.cli.output import console, print_json
from stdr_deploy.errors import UserInputError

STATUS_STYLE = {"added": "green", "changed": "yellow", "removed": "red", "kept": "cyan", "unchanged": "dim"}


@click.command("render")
@plan_option
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("model_repository"),
              show_default=True, help="Repository folder; replaced as a whole, atomically.")
@click.option("--artifact", "artifact_args", multiple=True, metavar="MODEL=FILE",
              help="Model file to serve for a Triton model (craft, crnn_en or parseq): an .onnx file, or the "
              "TensorRT engine (.plan) a tensorrt_plan plan needs. Repeatable. ONNX models not given are "
              "exported from their weights (cached), or taken from --artifacts.")
@weights_option
@artifacts_option
@click.option("--prune", is_flag=True, help="Also delete model folders that stdr-deploy did not render "
              "(kept by default, e.g. a model you added yourself).")
@click.option("--dry-run", is_flag=True, help="List what would be added, changed or removed; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the file list with sha256s as JSON on stdout.")
def command(plan_path, out, artifact_args, weights, artifacts, prune, dry_run, as_json):
    """Render config.pbtxt files from the templates, place the model files and the BLS orchestrator.

    The repository gets craft/, the recognizer (crnn_en/ or parseq/) and pipeline/, each with a
    config.pbtxt and a version folder 1/. Everything is written into a staging folder beside
    --out and swapped in at the end, so an interrupted render leaves the previous repository
    intact; a render that would change nothing writes nothing.
    """
    from stdr_deploy.render import check_replaceable, render

    plan = read_plan(plan_path)
    files = _parse_artifacts(artifact_args)
    check_replaceable(out.absolute())  # before any export: minutes lost otherwise
    source = onnx_source(artifacts, parse_weights(weights, plan.recognizer.family))
    files.update(_exported_models(plan, files, source))
    result = render(plan, out, files, dry_run=dry_run, prune=prune)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table("file", "status")
    for change in result.files:
        if change.status not in ("unchanged", "kept"):
            table.add_row(change.path, f"[{STATUS_STYLE[change.status]}]{change.status}[/]")
    for name in result.kept_models:
        table.add_row(f"{name}/", "[cyan]kept (not rendered by stdr-deploy; --prune deletes it)[/]")
    if result.changed or result.kept_models:
        console.print(table)
    counts = ", ".join(f"{len(result.paths(s))} {s}" for s in STATUS_STYLE if result.paths(s))
    verdict = "dry run, nothing written" if dry_run else "written" if result.written else "already up to date"
    console.print(f"{result.out}: {counts} ({verdict})", soft_wrap=True)


def _parse_artifacts(values: tuple[str, ...]) -> dict[str, Path]:
    artifacts = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UserInputError(f"--artifact {value!r} is not MODEL=FILE", hint="e.g. --artifact craft=craft.plan")
        artifacts[name] = Path(path)
    return artifacts


def _exported_models(plan, given: dict[str, Path], source) -> dict[str, Path]:
    """ONNX files for the ONNX Runtime models not given; TensorRT engines must come from the build."""
    from stdr_deploy.onnx_files import onnx_precision
    from stdr_deploy.render import PLATFORMS

    missing_engines = [
        m.triton_name for m in plan.models() if m.backend != "onnxruntime" and m.triton_name not in given
    ]
    if missing_engines:
        raise UserInputError(
            f"the plan serves {', '.join(missing_engines)} from TensorRT engines, and none was given",
            hint=PLATFORMS["tensorrt"].hint,
        )
    return {
        m.triton_name: source.onnx_file(m.family, onnx_precision(m.precision))
        for m in plan.models()
        if m.triton_name not in given
    }
