"""`stdr-deploy build`: build (or reuse) the TensorRT engines of a tensorrt_plan plan, or check them."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from rich.table import Table

from stdr_deploy.cli.options import parse_weights, read_plan, weights_option
from stdr_deploy.cli.output import console, print_json
from stdr_deploy.errors import UserInputError
from stdr_deploy.workspace import default_workspace, write_json_atomic


@click.command("build")
@click.option("--plan", "plan_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The plan (written by `stdr-deploy plan`). Default: <workspace>/plan.json.")
@click.option("--host", "host_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Host file the engines are built for. Default: <workspace>/host.json if present, "
              "else this machine is probed.")
@click.option("--onnx", "onnx_args", multiple=True, metavar="MODEL=FILE",
              help="ONNX file for a Triton model (craft, crnn_en, ppocr_rec or parseq). Repeatable. "
              "Models not given are exported from their weights (cached).")
@weights_option
@click.option("--dry-run", is_flag=True,
              help="Print each build's trtexec command on stdout (the specs as a table on stderr); needs no TensorRT, only the onnx package.")
@click.option("--check", is_flag=True,
              help="Build every engine ahead of time with TensorRT-RTX for the plan's GPU, with the plan's "
              "min/opt/max profiles, and keep none: checks the graphs and profiles on hosts without TensorRT "
              "or GPU (pip install '.[tensorrt-rtx]').")
@click.option("--json", "as_json", is_flag=True, help="Print the specs, checks or results as JSON on stdout.")
def command(plan_path, host_path, onnx_args, weights, dry_run, check, as_json):
    """Build the plan's TensorRT engines, sized to the GPU, and keep them in the engine cache.

    Engines are cached per host fingerprint (GPU, compute capability, TensorRT version, driver
    major) and build inputs; a cached engine that is corrupt or stale is rebuilt. A build that
    runs out of GPU memory is retried smaller (recognizer max batch halved, detector max shape
    stepped down); the plan file is then updated to match the engines. Each engine is checked
    against ONNX Runtime before it is kept.

    Builds are strongly typed: each model's precision is that of its ONNX graph (the plan's
    precision picks the fp32, fp16 mixed-precision or int8 QDQ export).

    \b
    Exit codes: 0 built (or checked), 2 bad input (e.g. the plan is not tensorrt_plan),
    3 TensorRT (or, with --check, TensorRT-RTX; with --dry-run, the onnx package) missing, 4 out of GPU memory even at the
    smallest shape, 5 a build, check or accuracy check failed (the message names the model,
    the ONNX node and the profile).
    """
    from stdr_deploy import engines

    if dry_run and check:
        raise UserInputError("--dry-run and --check exclude each other", hint="pass one of them")
    plan_path = plan_path or default_workspace() / "plan.json"
    plan = read_plan(plan_path)
    if plan.variant != "tensorrt_plan":
        raise UserInputError(
            f"{plan_path} plans the {plan.variant} variant: there are no TensorRT engines to build",
            hint="plan with `stdr-deploy plan --variant tensorrt_plan` on a GPU host with TensorRT",
        )
    host = _read_host(host_path)
    onnx_paths = _parse_onnx(onnx_args)
    missing = [m for m in plan.models() if m.triton_name not in onnx_paths]
    if missing:
        with console.status("exporting ONNX models (cached)"):
            exported = engines.export_onnx(plan, parse_weights(weights, plan.recognizer.family))
        onnx_paths.update({m.triton_name: exported[m.triton_name] for m in missing})

    if dry_run:
        trt_version = host.runtimes.tensorrt_version or "unknown"
        planned = engines.plan_builds(plan, onnx_paths, host, trt_version)
        if as_json:
            print_json({"dry_run": True, "builds": [p.to_dict() for p in planned]})
        else:
            _show_planned(planned)
        return
    if check:
        with console.status("building the engines ahead of time with TensorRT-RTX") as status:
            checks = engines.check_engines(plan, onnx_paths, host, progress=status.update)
        if as_json:
            print_json({"check": True, "engines": [c.to_dict() for c in checks]})
        else:
            _show_checks(checks)
        return

    builder = engines.Builder.tensorrt()
    with console.status("building TensorRT engines") as status:
        results = engines.build_engines(plan, onnx_paths, host, builder=builder, progress=status.update)
    adjusted = engines.apply_build_results(plan, results)
    if adjusted != plan:
        write_json_atomic(plan_path, adjusted.to_dict())
        console.print(
            f"[yellow]the engines are smaller than planned (out of GPU memory); {plan_path} now matches them[/]"
        )
    if as_json:
        print_json({name: _result_dict(r) for name, r in results.items()})
        return
    _show_results(results)
    artifacts = " ".join(f"--artifact {name}={r.engine_path}" for name, r in results.items())
    console.print(f"render with: stdr-deploy render --plan {plan_path} {artifacts}", soft_wrap=True)


def _read_host(path: Path | None):
    from stdr_deploy.hardware import load_host, probe_host

    if path is not None:
        return load_host(path)
    default = default_workspace() / "host.json"
    return load_host(default) if default.is_file() else probe_host()


def _parse_onnx(values: tuple[str, ...]) -> dict[str, Path]:
    paths = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UserInputError(f"--onnx {value!r} is not MODEL=FILE", hint="e.g. --onnx craft=craft.onnx")
        if not Path(path).is_file():
            raise UserInputError(f"--onnx {value!r}: {path} does not exist")
        paths[name] = Path(path)
    return paths


def _shapes(spec) -> str:
    return "; ".join(
        f"{p.name} {'x'.join(map(str, p.min))} / {'x'.join(map(str, p.opt))} / {'x'.join(map(str, p.max))}"
        for p in spec.profiles
    )


def _show_planned(planned) -> None:
    from stdr_deploy.engines.spec import shell_line

    table = Table("model", "precision", "profile min / opt / max", "workspace", "engine")
    for p in planned:
        spec = p.spec
        table.add_row(spec.triton_name, spec.precision, _shapes(spec), f"{spec.workspace_bytes >> 20} MiB",
                      str(p.engine_path))
    console.print(table)
    console.print(f"host fingerprint {planned[0].fingerprint.slug}; trtexec lines on stdout", soft_wrap=True)
    for p in planned:  # the commands are the output: stdout, one line each, ready for a shell
        sys.stdout.write(f"mkdir -p {shlex.quote(str(p.engine_path.parent))} && {shell_line(p.trtexec)}\n")


def _show_checks(checks) -> None:
    table = Table("model", "precision", "profile min / opt / max", "builder", "target", "engine", "seconds")
    for c in checks:
        table.add_row(c.spec.triton_name, c.spec.precision, _shapes(c.spec), c.builder, c.target,
                      f"{c.engine_bytes / 1e6:.1f} MB", f"{c.seconds:.2f}")
    console.print(table)
    console.print("every engine builds; none was kept (TensorRT-RTX checks, full TensorRT serves)")


def _show_results(results) -> None:
    table = Table("model", "engine", "how", "attempts", "profile min / opt / max")
    for name, r in results.items():
        attempts = len(r.report.get("attempts", []))
        how = "cached" if r.cached else "built" + (" (shrunk)" if r.shrunk else "")
        table.add_row(name, str(r.engine_path), how, str(attempts), _shapes(r.spec))
    console.print(table)


def _result_dict(result) -> dict:
    return {
        "engine": str(result.engine_path),
        "report": str(result.report_path),
        "key": result.key,
        "fingerprint": result.fingerprint.slug,
        "cached": result.cached,
        "shrunk": result.shrunk,
        "engine_sha256": result.report.get("engine_sha256"),
        "spec": result.spec.to_dict(),
    }
