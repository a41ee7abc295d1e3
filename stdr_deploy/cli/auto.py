"""`stdr-deploy auto`: deploy on this host end to end and keep serving."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from stdr_deploy.cli.options import (
    artifacts_option,
    canvas_option,
    cpu_backend_option,
    detector_precision_option,
    onnx_source,
    parse_weights,
    recognizer_option,
    recognizer_precision_option,
    supervision_options,
    weights_option,
    workspace_option,
)
from stdr_deploy.cli.output import console, print_json, runtime_words
from stdr_deploy.cli.serve import StopRequests, sigterm_as_ctrl_c, supervise, supervision_summary
from stdr_deploy.plan_schema import VARIANTS
from stdr_deploy.planner import OPENVINO_INSTALL_TIP, SLOW_DETECTOR
from stdr_deploy.progress import Activity, interactive, log_line


@click.command("auto")
@recognizer_option
@weights_option
@artifacts_option
@click.option("--profile", help="Hardware profile name (default: matched to the host, see `stdr-deploy plan`).")
@click.option("--variant", type=click.Choice(VARIANTS), help="Force a variant.")
@detector_precision_option
@cpu_backend_option
@recognizer_precision_option
@canvas_option
@workspace_option
@click.option("--repo", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True,
              help="Where the Triton model repository is rendered.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the server binds to.")
@click.option("--http-port", type=int, help="HTTP port (default: a free one).")
@click.option("--grpc-port", type=int, help="gRPC port (default: a free one).")
@click.option("--metrics-port", type=int, help="Metrics port (default: a free one).")
@click.option("--exit-after-smoke", is_flag=True, help="Stop the server once the smoke passes (for CI).")
@supervision_options
@click.option("--json", "as_json", is_flag=True,
              help="Print the deploy manifest as JSON on stdout, then one JSON line per supervision event.")
def command(recognizer, weights, artifacts, profile, variant, detector_precision, cpu_backend, recognizer_precision, canvas,
            workspace, repo, host, http_port, grpc_port, metrics_port, exit_after_smoke, policy, as_json):
    """Probe, plan, export, build, render, serve and smoke-test, in one go.

    While serving, the deployment is supervised as by `stdr-deploy serve`: models that fail an
    inference probe are reloaded, a dead tritonserver is restarted on the same ports, each event
    is logged, and more than --max-restarts recoveries within --restart-window end the command.

    \b
    Exit codes: 0 deployed (and, without --exit-after-smoke, served until Ctrl-C),
    2 bad arguments, 3 missing dependency, 4 host cannot run the request,
    5 export/engine validation failed, 6 weights problem, 7 server failed or recovery gave up
    (crash loop), 8 smoke failed.
    """
    from stdr_deploy.auto import AutoOptions, run_auto

    weights = parse_weights(weights, recognizer)
    onnx_source(artifacts, weights)  # refuses --weights with --artifacts, reads the manifest early
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] serving on {host}: the server accepts requests from other machines")
    options = AutoOptions(
        workspace=workspace,
        repo=repo,
        recognizer=recognizer,
        weights=weights,
        profile=profile,
        variant=variant,
        detector_precision=detector_precision,
        cpu_backend=cpu_backend,
        recognizer_precision=recognizer_precision,
        canvas=canvas,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        artifacts=artifacts,
    )
    try:
        with sigterm_as_ctrl_c():  # run_auto stops a server it started
            result = _deploy(options, run_auto)
    except KeyboardInterrupt:
        raise click.exceptions.Abort() from None
    _serve(result, options.repo, exit_after_smoke, policy, as_json)


def _deploy(options, run_auto):
    """run_auto with one line per step: a spinner on a terminal, timestamped lines in a log.

    When a later step fails (or Ctrl-C) after the server started, run_auto stops it: say so.
    """
    running: dict[str, object] = {}

    def on_start(step):
        if interactive():
            running["status"].update(f"[bold]{step.name}[/]: {step.description}")
        else:
            running["activity"] = Activity(step.name, detail=step.description)

    def on_end(step, result):
        if step.name == "serve" and result.status == "ok":
            running["served"] = True
        detail = result.outputs.get("reason", "") if result.status == "skipped" else ""
        if not interactive():
            running.pop("activity").end(result.status, detail)
            return
        style = {"ok": "green", "skipped": "dim", "failed": "red"}[result.status]
        # a failure's message is printed once, by the error handler, after this line
        console.print(f"[{style}]{result.status:>7}[/] {step.name:<7} {result.seconds:7.1f} s  {escape(detail)}", highlight=False)

    def progress(message: str) -> None:
        if interactive():
            running["status"].update(f"[bold]smoke[/]: {message}")
        else:
            log_line(f"smoke: {message}")

    try:
        if not interactive():
            return run_auto(options, on_start, on_end, progress=progress)
        with console.status("starting") as status:
            running["status"] = status
            return run_auto(options, on_start, on_end, progress=progress)
    except BaseException:
        if running.get("served"):
            console.print("server stopped")
        raise


def _serve(result, repo: Path, exit_after_smoke: bool, policy, as_json: bool) -> None:
    """Say what was deployed, keep serving it, supervised, until Ctrl-C or SIGTERM (or stop at
    once), and say that it stopped."""
    server = result.server
    with StopRequests() as stop:  # before the lines that invite a signal
        try:
            if as_json:
                print_json(result.manifest)
            else:
                console.print(summary_table(result, policy))
            if exit_after_smoke:
                stop.reason = "--exit-after-smoke"
                return
            console.print(f"serving inference on {server.grpc_url} (health and metadata also on "
                          f"{server.http_url}); Ctrl-C stops it")
            supervise(server, repo, policy, as_json, stop)  # giving up ends the command with exit code 7 and why
        except KeyboardInterrupt:
            pass  # a second Ctrl-C/SIGTERM: stop at once
        finally:
            server.stop()
            console.print(f"server stopped ({stop.reason or 'Ctrl-C'})")


def summary_table(result, policy) -> Table:
    plan = result.plan
    table = Table(title="stdr-deploy auto", show_header=False)
    host = plan.host
    gpus = ", ".join(f"{g['name']} ({g['memory_total_mib']} MiB)" for g in host.get("gpus", [])) or "none"
    table.add_row("host", f"{host.get('cpu', '?')}, {host.get('usable_cores', '?')} cores | GPUs: {gpus}")
    table.add_row("variant", f"{plan.variant} on {plan.device} (profile: {plan.profile_name or 'computed'})")
    for model in plan.models():
        shapes = ", ".join(f"{name} {list(p.min)}..{list(p.max)}" for name, p in model.profile.items())
        table.add_row(
            model.triton_name,
            f"{model.family} on {runtime_words(model)} | {shapes} | {model.instance_count} x {model.instance_kind}",
        )
    table.add_row("pipeline", f"canvas {plan.pipeline.canvas_size} | {plan.pipeline.instance_count} x {plan.pipeline.instance_kind}")
    table.add_row("memory", f"{plan.memory_estimate_bytes / 2**20:,.0f} MiB estimated of {plan.memory_budget_bytes / 2**20:,.0f} MiB budget")
    smoke = result.smoke
    if smoke.memory:
        m = smoke.memory
        table.add_row("memory measured", f"host peak {m['host_peak_bytes'] / 2**20:,.0f} MiB under max-shape load "
                      f"(estimate {m['host_estimate_bytes'] / 2**20:,.0f}, budget {m['host_budget_bytes'] / 2**20:,.0f})"
                      + (f"; GPU peak {m['gpu_peak_bytes'] / 2**20:,.0f} MiB" if m["gpu_peak_bytes"] is not None else ""))
    for warning in smoke.warnings:
        table.add_row("warning", escape(warning))
    for reason in plan.reasons:  # a CPU plan that OpenVINO would serve faster, where it is not installed
        if OPENVINO_INSTALL_TIP in reason:
            table.add_row("tip", escape(reason))  # its [openvino] is no markup
        elif reason.startswith(SLOW_DETECTOR):  # a CPU too slow for the latency budget even at the floor
            table.add_row("latency", escape(reason.removeprefix(f"{SLOW_DETECTOR}: ")))
    table.add_row("smoke", f"{'passed' if smoke.ok else 'FAILED'} ({len(smoke.checks)} checks)")
    urls = result.manifest.get("urls") or {}
    table.add_row("urls", "  ".join(f"{k}: {v}" for k, v in urls.items()))
    table.add_row("supervision", supervision_summary(policy))
    return table
