"""`stdr-deploy render`: write the Triton model repository a plan describes, or Kubernetes manifests."""

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
    recognizer_option,
    weights_option,
)
from stdr_deploy.cli.output import console, print_json
from stdr_deploy.errors import UserInputError
from stdr_deploy.plan_schema import VARIANTS

STATUS_STYLE = {"added": "green", "changed": "yellow", "removed": "red", "kept": "cyan", "unchanged": "dim"}
DEFAULT_OUT = {"repository": Path("model_repository"), "kubernetes": Path("kubernetes")}
MIB = 1 << 20


@click.command("render")
@plan_option
@click.option("--target", type=click.Choice(tuple(DEFAULT_OUT)), default="repository", show_default=True,
              help="What to write: the Triton model repository, or (kubernetes) the repository plus KServe "
              "and plain Kubernetes manifests sized by the plan, with a README that says how to apply them.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Output folder, replaced as a whole, atomically. Default: model_repository "
              "(--target repository), kubernetes (--target kubernetes).")
@click.option("--host", "host_paths", multiple=True, type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="--target kubernetes: plan for this host file instead of --plan (repeatable: a fleet). "
              "Hosts that get the same plan form a group with one repository and one set of manifests; "
              "pods select their group's nodes by a label.")
@recognizer_option
@click.option("--variant", type=click.Choice(VARIANTS),
              help="With --host: force a variant for every host (e.g. onnxruntime, where TensorRT engines "
              "cannot be built for each GPU model).")
@click.option("--storage-uri", metavar="URI",
              help="--target kubernetes: where KServe reads the repository (s3://, gs://, pvc://...; "
              "'{group}' is replaced by the group's name). Default: the volume the manifests create.")
@click.option("--storage-class", metavar="NAME",
              help="--target kubernetes: StorageClass of the repository volume (needs ReadWriteMany). "
              "Default: the cluster's default class.")
@click.option("--max-replicas", type=click.IntRange(1), default=None,
              help="--target kubernetes: autoscaler maximum. Default: one replica per host of the group.")
@click.option("--artifact", "artifact_args", multiple=True, metavar="MODEL=FILE",
              help="Model file to serve for a Triton model (craft, crnn_en, ppocr_rec or parseq): an .onnx file, or the "
              "TensorRT engine (.plan) a tensorrt_plan plan needs. Repeatable. ONNX models not given are "
              "exported from their weights (cached), or taken from --artifacts.")
@weights_option
@artifacts_option
@click.option("--prune", is_flag=True, help="Also delete model folders that stdr-deploy did not render "
              "(kept by default, e.g. a model you added yourself).")
@click.option("--dry-run", is_flag=True, help="List what would be added, changed or removed; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the file list with sha256s as JSON on stdout.")
def command(plan_path, target, out, host_paths, recognizer, variant, storage_uri, storage_class, max_replicas,
            artifact_args, weights, artifacts, prune, dry_run, as_json):
    """Render config.pbtxt files from the templates, place the model files and the BLS orchestrator.

    The repository gets craft/, the recognizer (ppocr_rec/, crnn_en/ or parseq/) and pipeline/, each with a
    config.pbtxt and a version folder 1/. Everything is written into a staging folder beside
    --out and swapped in at the end, so an interrupted render leaves the previous repository
    intact; a render that would change nothing writes nothing.

    --target kubernetes writes that repository beside manifests for it (docs/kubernetes.md):
    a KServe InferenceService on the Triton runtime, and a Deployment of NGC's Triton image with a
    Service and a HorizontalPodAutoscaler, sized by the plan (CPU = threads x instances, memory
    request = the estimate, limit = the budget, GPUs and GPU model), for one plan or, with
    several --host files, one folder per group of hosts that get the same plan.
    """
    out = out or DEFAULT_OUT[target]
    ctx = click.get_current_context()
    if not host_paths and ctx.get_parameter_source("recognizer") is not click.core.ParameterSource.DEFAULT:
        raise UserInputError("--recognizer is for --host (a plan file has its recognizer)",
                             hint="re-run `stdr-deploy plan --recognizer ...`, or pass --host files")
    if target == "kubernetes":
        if prune:
            raise UserInputError("--prune is for --target repository", hint="leave it out")
        _kubernetes(ctx, plan_path, out, host_paths, recognizer, variant,
                    storage_uri, storage_class, max_replicas, artifact_args, weights, artifacts, dry_run, as_json)
        return
    given = [name for name, value in (("--host", host_paths), ("--variant", variant), ("--storage-uri", storage_uri),
                                      ("--storage-class", storage_class), ("--max-replicas", max_replicas)) if value]
    if given:
        raise UserInputError(f"{given[0]} is for --target kubernetes", hint="add --target kubernetes, or leave it out")
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
        m.triton_name for m in plan.models() if m.backend == "tensorrt" and m.triton_name not in given
    ]
    if missing_engines:
        raise UserInputError(
            f"the plan serves {', '.join(missing_engines)} from TensorRT engines, and none was given",
            hint=PLATFORMS["tensorrt"].hint,
        )
    return {
        m.triton_name: source.onnx_file(m.family, onnx_precision(m.precision, m.backend))
        for m in plan.models()
        if m.triton_name not in given
    }


def _kubernetes(ctx, plan_path, out, host_paths, recognizer, variant, storage_uri, storage_class, max_replicas,
                artifact_args, weights, artifacts, dry_run, as_json):
    from stdr_deploy.kubernetes import Options, check_replaceable, group_plans, render_kubernetes

    if host_paths:
        if ctx.get_parameter_source("plan_path") is not click.core.ParameterSource.DEFAULT:
            raise UserInputError("--plan and --host exclude each other", hint="pass plan files or host files, not both")
        named = [(str(path), _plan_for_host(path, recognizer, variant)) for path in host_paths]
    else:
        if variant:
            raise UserInputError("--variant is for --host (a plan file has its variant)",
                                 hint="re-run `stdr-deploy plan --variant ...`, or pass --host files")
        named = [(str(plan_path), read_plan(plan_path))]
    groups = group_plans(named)
    if len(groups) > 1 and storage_uri and "{group}" not in storage_uri:
        raise UserInputError(f"--storage-uri {storage_uri!r} would be the same for {len(groups)} groups",
                             hint="put {group} in it, e.g. s3://bucket/ocr/{group}")
    given = _parse_artifacts(artifact_args)
    if given and len(groups) > 1:
        raise UserInputError(f"--artifact gives one file per model, and the hosts make {len(groups)} groups",
                             hint="render each group from its plan (--plan) with its own --artifact files")
    check_replaceable(out.absolute())  # before any export: minutes lost otherwise
    source = onnx_source(artifacts, parse_weights(weights, groups[0].plan.recognizer.family))

    def model_files(group):
        files = dict(given)
        files.update(_exported_models(group.plan, files, source))
        return files

    options = Options(fleet=bool(host_paths), storage_uri=storage_uri, storage_class=storage_class,
                      max_replicas=max_replicas)
    result = render_kubernetes(groups, out, model_files, options, dry_run=dry_run)
    if as_json:
        print_json(result)
        return
    table = Table("group", "hosts", "plan", "CPU", "memory request / limit", "GPUs", "folder")
    for group in result["groups"]:
        requests, limits = group["resources"]["requests"], group["resources"]["limits"]
        gpus = requests.get("nvidia.com/gpu", "-") + (f" {', '.join(group['gpu_products'])}" if group["gpu_products"] else "")
        table.add_row(group["name"], "\n".join(group["hosts"]), f"{group['variant']} {group['device']}",
                      requests["cpu"], f"{int(requests['memory']) // MIB} / {int(limits['memory']) // MIB} MiB",
                      gpus, group["folder"])
    console.print(table)
    verdict = "dry run, nothing written" if dry_run else "written"
    console.print(f"{result['out']}: {len(result['files'])} files ({verdict}); apply as its README.md says",
                  soft_wrap=True)


def _plan_for_host(path: Path, recognizer: str, variant: str | None):
    from stdr_deploy.hardware import load_host
    from stdr_deploy.planner import make_plan
    from stdr_deploy.profiles import resolve_profile

    host = load_host(path)
    return make_plan(host, resolve_profile(host), recognizer=recognizer, variant=variant)
