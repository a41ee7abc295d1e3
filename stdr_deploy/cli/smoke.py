"""`stdr-deploy smoke`: check a deployed repository, on a running server or one started for it."""

from __future__ import annotations

import dataclasses

import contextlib
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
from stdr_deploy.cli.output import activity, console, print_json


@click.command("smoke")
@click.option("--url", "urls", multiple=True,
              help="Server to check, http://HOST:PORT or grpc://HOST:PORT (repeatable). "
              "Default: start the embedded server on --repo for the duration of the check.")
@click.option("--repo", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True,
              help="The rendered repository (its config.pbtxt files are compared with the served ones).")
@plan_option
@weights_option
@artifacts_option
@click.option("--no-text", is_flag=True, help="Skip the exact-text check (recognizer weights not trained for it).")
@click.option("--json", "as_json", is_flag=True, help="Print every check as JSON on stdout.")
def command(urls, repo, plan_path, weights, artifacts, no_text, as_json):
    """Health, served configs, min/opt/max shapes per model, and the pipeline reading known text.

    The served pipeline's words and boxes must also equal the in-process pipeline's
    (ONNX Runtime variant). Exit 8 when a check fails, naming model, check, expected and got.
    """
    from stdr_deploy.onnx_files import onnx_precision
    from stdr_deploy.runners import make_pipeline
    from stdr_deploy.ocr import PipelineSettings
    from stdr_deploy.smoke import run_smoke

    plan = read_plan(plan_path)
    weights_map = parse_weights(weights, plan.recognizer.family)
    source = onnx_source(artifacts, weights_map)
    reference = None
    if plan.variant == "onnxruntime":
        reference = make_pipeline(
            runtime="onnxruntime",
            recognizer=plan.recognizer.family,
            weights=weights_map,
            settings=PipelineSettings.from_plan(dataclasses.asdict(plan.pipeline)),
            detector_precision=onnx_precision(plan.detector.precision),
            onnx=source,
        ).read
    with _server(urls, repo) as targets:
        with activity("smoke") as update:
            report = run_smoke(list(targets), repo, plan, reference=reference, expect_text=not no_text,
                               progress=update)
    if as_json:
        print_json(report.to_dict())
    else:
        table = Table("model", "check", "protocol", "result", "expected", "got")
        for c in report.checks:
            table.add_row(c.model, c.check, c.protocol, "[green]ok[/]" if c.ok else "[red]FAIL[/]",
                          "" if c.ok else c.expected, "" if c.ok else c.got)
        console.print(table)
    report.raise_for_failures()


@contextlib.contextmanager
def _server(urls: tuple[str, ...], repo: Path):
    if urls:
        yield urls
        return
    from stdr_deploy.server import TritonServer

    with TritonServer(repo) as server:
        server.wait_ready()
        yield (server.http_url, server.grpc_url)
