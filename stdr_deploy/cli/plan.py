"""`stdr-deploy plan`: decide the deployment for a host and explain every choice."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from stdr_deploy.cli.options import (
    canvas_option, cpu_backend_option, detector_precision_option, recognizer_option, recognizer_precision_option,
)
from stdr_deploy.cli.output import console, print_json, runtime_words
from stdr_deploy.memory import MIB
from stdr_deploy.plan_schema import VARIANTS


@click.command("plan")
@click.option(
    "--host",
    "host_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Host file to plan for (from `stdr-deploy probe --json`). Default: probe this machine.",
)
@click.option(
    "--profile",
    metavar="NAME",
    help="Profile to start from (profiles/*.yaml); 'none' plans from the host's figures alone. "
    "Default: the profile matching the host, if any.",
)
@recognizer_option
@click.option(
    "--variant",
    type=click.Choice(VARIANTS),
    help="Force a variant; fails (exit 4) when the host cannot run it. Default: the best the host can run.",
)
@detector_precision_option
@cpu_backend_option
@recognizer_precision_option
@canvas_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan (JSON) on stdout.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the plan here (atomically), e.g. workspace/plan.json, which `render` reads.",
)
def command(
    host_path: Path | None,
    profile: str | None,
    recognizer: str,
    variant: str | None,
    detector_precision: str | None,
    cpu_backend: str | None,
    recognizer_precision: str | None,
    canvas: int | None,
    as_json: bool,
    out: Path | None,
) -> None:
    """Plan variant, shapes, batch sizes, instances, threads and memory for a host.

    The plan is computed from the host file alone (no I/O): TensorRT when it is importable
    and the GPU supports it, else ONNX Runtime on the GPU (CUDA EP) or the CPU. The memory
    estimate (measured per model, see stdr_deploy.memory) never exceeds the budget (total
    memory less a reserve): the plan shrinks, cheapest cost per byte saved first, until it
    fits, and the reasons say so.
    """
    from stdr_deploy.hardware import load_host, probe_host
    from stdr_deploy.planner import make_plan
    from stdr_deploy.profiles import resolve_profile
    from stdr_deploy.workspace import write_json_atomic

    host = load_host(host_path) if host_path else probe_host()
    chosen = None if profile == "none" else resolve_profile(host, profile)
    plan = make_plan(
        host,
        chosen,
        recognizer=recognizer,
        variant=variant,
        detector_precision=detector_precision,
        recognizer_precision=recognizer_precision,
        canvas=canvas,
        cpu_backend=cpu_backend,
    )
    if out is not None:
        write_json_atomic(out, plan.to_dict())
        console.print(f"plan written to {out}")
    if as_json:
        print_json(plan.to_dict())
        return
    _print_plan(plan)


def _shape(dims: tuple[int, ...]) -> str:
    return "x".join(map(str, dims))


def _print_plan(plan) -> None:
    console.print(
        f"[bold]{plan.variant}[/] on the [bold]{plan.device}[/]"
        + (f", profile {plan.profile_name}" if plan.profile_name else ", no profile")
    )
    det, rec = plan.models()
    table = Table("", f"{det.triton_name} ({det.family})", f"{rec.triton_name} ({rec.family})")
    rows = {
        "runtime": runtime_words,
        "instances": lambda m: f"{m.instance_count} {m.instance_kind}" + (f" on GPU {list(m.gpus)}" if m.gpus else ""),
        "threads": lambda m: (
            f"{m.intra_op_threads} intra-op, {m.inter_op_threads} inter-op" if m.intra_op_threads else "-"
        ),
        "max batch": lambda m: str(m.max_batch_size),
        "input min": lambda m: " ".join(_shape(p.min) for p in m.profile.values()),
        "input opt": lambda m: " ".join(_shape(p.opt) for p in m.profile.values()),
        "input max": lambda m: " ".join(_shape(p.max) for p in m.profile.values()),
        "dynamic batching": lambda m: (
            f"{list(m.dynamic_batching.preferred_batch_sizes)}, {m.dynamic_batching.max_queue_delay_us} us"
            if m.dynamic_batching
            else "-"
        ),
        "workspace": lambda m: f"{m.workspace_bytes // MIB} MiB" if m.workspace_bytes else "-",
        "memory": lambda m: f"{m.memory_estimate_bytes // MIB} MiB",
    }
    for name, cell in rows.items():
        table.add_row(name, cell(det), cell(rec))
    console.print(table)
    pipe = plan.pipeline
    console.print(
        f"pipeline: {pipe.instance_count} {pipe.instance_kind}, canvas {pipe.canvas_size}, "
        f"recognizer batch {pipe.recognizer_batch}, at most {pipe.max_image_pixels:,} pixels per image"
    )
    console.print(
        f"memory: estimate {plan.memory_estimate_bytes // MIB} MiB <= budget {plan.memory_budget_bytes // MIB} MiB"
    )
    console.print("[bold]why[/]")
    for reason in plan.reasons:
        console.print(f" - {escape(reason)}")  # reasons name extras: [openvino] is no markup
