"""`stdr-deploy export`: one model to a checked, simplified, parity-tested ONNX file."""

from __future__ import annotations

from pathlib import Path

import click

from stdr_deploy.cli.output import console, print_json
from stdr_deploy.plan_schema import ONNX_GRAPHS


@click.command("export")
@click.argument("model", metavar="MODEL")
@click.option("--weights", help="Weights file or registry name (default: the model's registry weights).")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also copy the model to FILE.onnx, with its report beside it as FILE.onnx.json.",
)
@click.option("--opset", type=int, help="ONNX opset (default: the model's tested one: craft 11, others 14).")
@click.option(
    "--with-features",
    is_flag=True,
    help="craft only: also export the 32-channel feature map as a second output `output1` "
    "([N,32,H/2,W/2]). Inference does not use it and it costs memory, so it is off by default.",
)
@click.option(
    "--precision",
    type=click.Choice(ONNX_GRAPHS),
    default="fp32",
    show_default=True,
    help="fp16: also convert the fp32 export to mixed precision (fp16 compute, fp32 inputs/outputs, "
    "LayerNorm/Softmax/reductions/LSTM in fp32) for GPU plans and TensorRT. int8 (craft only): also "
    "quantize it (static QDQ, calibrated on generated images) for CPU plans with --detector-precision "
    "int8; int8-openvino: the same with CRAFT's concatenations left in float, which OpenVINO needs (plans whose "
    "detector runs on OpenVINO). Each is checked against fp32 (parity figures and the smoke image's words) and "
    "cached beside it.",
)
@click.option("--force", is_flag=True, help="Export again even if the cache holds this export.")
@click.option("--json", "as_json", is_flag=True, help="Print the result and report as JSON on stdout.")
def command(
    model: str,
    weights: str | None,
    out: Path | None,
    opset: int | None,
    with_features: bool,
    precision: str,
    force: bool,
    as_json: bool,
) -> None:
    """Export MODEL (craft, crnn-en, parseq, parseq-tiny; ppocr and ppocr-det are ONNX-native) to ONNX.

    Stages: export (torch legacy exporter, dynamic batch and image axes), onnx.checker full
    check, simplification (onnxsim / onnxslim, the smaller graph that keeps parity), then
    parity of ONNX Runtime against torch at several input shapes (max abs diff <= 1e-4, or
    the export fails with exit code 5). Exports are cached by content under
    $STDR_DEPLOY_CACHE/onnx/, so running it again is instant; a JSON report (versions, hashes,
    node counts, parity figures, timings) sits beside every model.
    """
    from stdr_deploy.errors import require_torch
    from stdr_deploy.onnx_files import export_model

    require_torch()
    result = export_model(
        model,
        weights=weights,
        out=out,
        opset=opset,
        with_features=with_features,
        precision=precision,
        force=force,
        progress=True,
    )
    if as_json:
        print_json(
            {
                "onnx_path": str(result.onnx_path),
                "report_path": str(result.report_path),
                "cached": result.cached,
                "report": result.report,
            }
        )
        return
    report = result.report
    size_mb = report["onnx"]["bytes"] / 1e6
    origin = "cached" if result.cached else f"exported in {report['seconds']['total']:.1f} s"
    if report.get("precision") == "int8":
        check = report["validation"]
        console.print(
            f"[bold]{report['model']} int8[/] -> {result.onnx_path} ({size_mb:.1f} MB, opset {report['onnx']['opset']}), "
            f"smoke image read as {' '.join(check['smoke_words'])} (like fp32), score-map max abs diff "
            f"{check['score_map_max_abs']:.2g} vs fp32, {origin}"
        )
        return
    if report.get("precision") == "fp16":
        console.print(
            f"[bold]{report['model']} fp16[/] -> {result.onnx_path} ({size_mb:.1f} MB, opset {report['onnx']['opset']}), "
            f"{', '.join(report['kept_fp32']['ops']) or 'no op'} kept fp32, max diff {report['parity']['max_scaled']:.2g} "
            f"of the fp32 output scale (tolerance {report['parity']['tolerance']:g}), smoke image read as "
            f"{' '.join(report['validation']['smoke_words'])} (like fp32), {origin}"
        )
        return
    nodes = report["nodes"]
    console.print(
        f"[bold]{report['model']}[/] -> {result.onnx_path} ({size_mb:.1f} MB, opset {report['opset']}), "
        f"nodes {nodes['exported']} -> {nodes['final']} ({report['simplifier']['chosen']}), "
        f"max abs diff {report['parity']['max_abs']:.2g} over {len(report['parity']['shapes'])} shapes, {origin}"
    )
