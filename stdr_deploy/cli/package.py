"""`stdr-deploy package`: export every ONNX model a deployment may need into one directory."""

from __future__ import annotations

from pathlib import Path

import click

from stdr_deploy.cli.options import parse_weights, weights_option
from stdr_deploy.cli.output import console, print_json
from stdr_deploy.errors import UserInputError


@click.command("package")
@click.argument("out", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option("--family", "families", multiple=True,
              help="Model family to include (repeatable). Default: what `auto` deploys unless told "
              "otherwise: craft and ppocr.")
@click.option("--precision", "precisions", multiple=True,
              help="Precision to include (repeatable), e.g. fp32 or int8. Default: every precision the "
              "export supports for each family.")
@weights_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
def command(out, families, precisions, weights, as_json):
    """Write DIR: ONNX files, their export reports and a manifest.json (sha256s, tool versions).

    Run it where the `export` extra (torch) is installed; copy DIR to the deployment host and
    run `stdr-deploy auto --artifacts DIR` there, which needs no torch and checks every file's
    sha256 before use. Packaging into an existing DIR adds or refreshes the models asked for
    and keeps the others.
    """
    from stdr_deploy.artifacts import package
    from stdr_deploy.errors import require_torch

    require_torch()
    bare = [value for value in weights if "=" not in value]
    if bare:
        raise UserInputError(f"--weights {bare[0]!r}: package has no default model, name it (MODEL=PATH)")
    weights_map = parse_weights(weights, recognizer="")
    manifest = package(out, families or None, precisions or None, weights_map,
                       progress=lambda item: console.print(f"packaging {item}", highlight=False))
    if as_json:
        print_json(manifest)
        return
    for entry in manifest["models"]:
        console.print(f"{entry['family']:<12} {entry['precision']:<5} {entry['onnx']:<28} "
                      f"{entry['bytes'] / 1e6:7.1f} MB  sha256 {entry['sha256']}", highlight=False)
    console.print(f"{out}: {len(manifest['models'])} models; deploy with `stdr-deploy auto --artifacts {out}`",
                  highlight=False)
