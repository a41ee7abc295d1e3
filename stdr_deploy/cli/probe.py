"""`stdr-deploy probe`: read this host's GPUs, CPU, memory and runtimes (the host file)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from stdr_deploy.cli.output import console, print_json


@click.command("probe")
@click.option("--json", "as_json", is_flag=True, help="Print the host file (JSON) on stdout.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the host file here (atomically), e.g. workspace/host.json.",
)
def command(as_json: bool, out: Path | None) -> None:
    """Probe GPUs (NVML), CPU cores and features, memory, container limits and runtimes.

    A host without an NVIDIA driver is fine: it simply has no GPUs. `stdr-deploy plan --host
    FILE` plans from a host file written here, also for another machine.
    """
    from stdr_deploy.hardware import probe_host
    from stdr_deploy.workspace import write_json_atomic

    host = probe_host()
    if out is not None:
        write_json_atomic(out, host.to_dict())
        console.print(f"host file written to {out}")
    if as_json:
        print_json(host.to_dict())
        return
    table = Table("", "", show_header=False, box=None)
    cpu = host.cpu
    table.add_row(
        "CPU",
        f"{cpu.model_name}: {cpu.physical_cores} cores, {cpu.logical_cores} threads"
        + (f", {cpu.allowed_cpus} allowed" if cpu.allowed_cpus < cpu.logical_cores else ""),
    )
    table.add_row("CPU features", ", ".join(cpu.features) or "none of note")
    table.add_row("memory", f"{host.memory_total_mib} MiB total, {host.memory_available_mib} MiB available")
    if host.cgroup_cpu_limit is not None or host.cgroup_memory_limit_mib is not None:
        table.add_row(
            "container limits",
            f"CPU {host.cgroup_cpu_limit or 'none'} cores, memory {host.cgroup_memory_limit_mib or 'none'} MiB",
        )
    table.add_row("usable", f"{host.usable_cores} cores, {host.usable_memory_mib} MiB")
    if host.driver_version:
        table.add_row("NVIDIA driver", f"{host.driver_version} (CUDA {host.cuda_driver_version})")
    for gpu in host.gpus:
        cc = ".".join(map(str, gpu.compute_capability))
        table.add_row(
            f"GPU {gpu.index}",
            f"{gpu.name}: {gpu.memory_free_mib}/{gpu.memory_total_mib} MiB free, "
            f"compute capability {cc}" + (", MIG on" if gpu.mig_enabled else ""),
        )
    if not host.gpus:
        table.add_row("GPUs", "none")
    rt = host.runtimes
    table.add_row(
        "onnxruntime",
        f"{rt.onnxruntime_version} ({', '.join(rt.onnxruntime_providers)})"
        if rt.onnxruntime_version
        else "not installed",
    )
    table.add_row("TensorRT", rt.tensorrt_version or "not installed")
    table.add_row(
        "tritonserver",
        f"{rt.tritonserver} (backends: {', '.join(rt.triton_backends) or 'none found'})"
        if rt.tritonserver
        else "not found",
    )
    console.print(table)
    for note in host.notes:
        console.print(f"[dim]note: {escape(note)}[/]")
