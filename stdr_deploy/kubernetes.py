"""Kubernetes manifests sized by a plan: KServe's Triton runtime, or NGC's Triton image on its own.

Pure half: a plan (or a fleet of them) becomes `Group`s, and each group becomes plain manifest
dicts and a README: a KServe `InferenceService`, and for clusters without KServe a
`Deployment` + `Service` + `HorizontalPodAutoscaler`, with the volume that holds the model
repository and a loader pod to fill it. I/O half: one folder holding, per group, the rendered
repository and the manifests, swapped in whole as `render` does for a repository.

Sizing comes from the plan alone: CPU = the plan's threads x instances, memory request = its
host-RAM estimate, limit = its host-RAM budget, `nvidia.com/gpu` = the GPUs it uses. The image
is NGC's container of the Triton core the configs were checked against (`server.NGC_TRITON_IMAGE`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from stdr_deploy.errors import UserInputError
from stdr_deploy.plan_schema import Plan
from stdr_deploy.render import pip_install_words, repository_files, template_environment, tidy, write_tree
from stdr_deploy.server import NGC_TRITON_IMAGE, TRITON_VERSION

APP = "stdr-ocr"
GROUP_LABEL = "stdr-deploy/group"  # nodes of a fleet group carry it; their pods select it
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set by NVIDIA GPU Feature Discovery (GPU Operator)
GPU_RESOURCE = "nvidia.com/gpu"  # NVIDIA device plugin
KSERVE_RUNTIME = "kserve-tritonserver"  # KServe's ClusterServingRuntime for Triton
KSERVE_MODEL_DIR = "/mnt/models"  # where KServe puts storageUri's content
KSERVE_PORTS = {"http": 8080, "grpc": 9000}  # the ports KServe's Triton runtime declares
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}  # tritonserver's defaults
VOLUME_MOUNT = "/models"  # the repository volume in the Deployment and the loader pod
REPOSITORY = "model_repository"  # folder of a group, and on the volume
LIVE, READY = "/v2/health/live", "/v2/health/ready"
# Start-up = pip install of the pipeline's packages + loading every model (TensorRT engines, ORT
# sessions and their warm-up): up to 20 minutes before liveness counts.
STARTUP_PERIOD_S, STARTUP_FAILURES = 10, 120
CPU_TARGET_UTILIZATION = 80  # percent of the request, where the autoscaler adds a replica
SHM_SIZE = "1Gi"  # the Python backend moves tensors through /dev/shm; a container's default is 64 MiB
MARKER = "manifests.json"  # written last into every output folder; a folder without it is not ours
GIB = 1 << 30
LABEL_VALUE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")


@dataclass(frozen=True)
class Group:
    """Hosts that get the same plan: one repository and one set of manifests."""

    name: str  # DNS label: the device and a hash of the plan
    plan: Plan  # as served in a pod (GPU indices renumbered from 0)
    hosts: tuple[str, ...]  # where each host's plan came from (host file or plan file)
    gpu_products: tuple[str, ...]  # node label values of the GPU models among the hosts


@dataclass(frozen=True)
class Options:
    fleet: bool  # route pods to their group's nodes by GROUP_LABEL
    storage_uri: str | None  # KServe storageUri; "{group}" is replaced; None: the group's volume
    storage_class: str | None  # of the repository volume; None: the cluster's default
    max_replicas: int | None  # None: one per host of the group


# --- pure half: plans -> groups -> manifests --------------------------------------------


def pod_plan(plan: Plan) -> Plan:
    """The plan as a pod sees it: the device plugin hands it GPUs numbered from 0."""
    if plan.device != "gpu":
        return plan
    models = {}
    for model in plan.models():
        models[model.role] = dataclasses.replace(model, gpus=tuple(range(len(model.gpus))))
    return dataclasses.replace(plan, **models)


def plan_key(plan: Plan) -> str:
    """Equal for plans that serve the same way: everything but where they came from and why."""
    data = pod_plan(plan).to_dict()
    for provenance in ("host", "reasons"):
        data.pop(provenance)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def gpu_product_label(name: str) -> str:
    """GPU Feature Discovery's label value for an NVML name: spaces become dashes."""
    value = "-".join(name.split())
    if not LABEL_VALUE.match(value):
        raise UserInputError(f"GPU name {name!r} does not make a node label value", hint="re-probe the host")
    return value


def group_plans(named: Sequence[tuple[str, Plan]]) -> list[Group]:
    """Group (source, plan) pairs by `plan_key`, in the order groups first appear."""
    if not named:
        raise UserInputError("no plan to render", hint="pass --plan FILE or --host FILE (repeatable)")
    groups: dict[str, list[tuple[str, Plan]]] = {}
    for source, plan in named:
        groups.setdefault(plan_key(plan), []).append((source, plan))
    found = []
    for key, members in groups.items():
        plan = pod_plan(members[0][1])
        products = sorted(
            {gpu_product_label(g["name"]) for _, p in members for g in p.host.get("gpus", ())}
        ) if plan.device == "gpu" else []
        found.append(Group(f"{plan.device}-{key[:8]}", plan, tuple(s for s, _ in members), tuple(products)))
    return found


def gpu_count(plan: Plan) -> int:
    if plan.device != "gpu":
        return 0
    det, rec = plan.models()
    if len(det.gpus) != len(rec.gpus) or not det.gpus:
        raise UserInputError("plan: the detector and the recognizer use different GPUs",
                             hint="re-run `stdr-deploy plan`")
    return len(det.gpus)


def cpu_cores(plan: Plan) -> int:
    """The plan's threads x instances: the largest of the detector's, the recognizer's and the
    pipeline's (one thread each). The detector and recognizer of a request run one after the
    other, and the plan sizes each to the host's cores, so the pod needs the largest, not the
    sum. A model with no thread count (TensorRT) has one launching thread per instance."""
    figures = [max(1, m.intra_op_threads) * m.instance_count for m in plan.models()]
    return max(*figures, plan.pipeline.instance_count)


def resources(plan: Plan) -> dict[str, dict[str, str]]:
    """Requests and limits: CPU = `cpu_cores`, memory = the host-RAM estimate (request) and
    budget (limit), in bytes as the plan has them; GPU plans add their GPU count."""
    if plan.host_memory_estimate_bytes <= 0 or plan.host_memory_budget_bytes <= 0:
        raise UserInputError("plan has no host-RAM estimate and budget (written by an older stdr-deploy)",
                             hint="re-run `stdr-deploy plan`")
    cpu = str(cpu_cores(plan))
    requests = {"cpu": cpu, "memory": str(plan.host_memory_estimate_bytes)}
    limits = {"cpu": cpu, "memory": str(plan.host_memory_budget_bytes)}
    if gpus := gpu_count(plan):
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus)
    return {"requests": requests, "limits": limits}


def names(group: Group) -> dict[str, str]:
    base = f"{APP}-{group.name}"
    return {"app": base, "volume": f"{base}-models", "loader": f"{base}-loader"}


def labels(group: Group) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": names(group)["app"], GROUP_LABEL: group.name}


def placement(group: Group, options: Options) -> dict[str, Any]:
    """Pod fields that put it on its group's nodes: the group label (fleets), the GPU model."""
    fields: dict[str, Any] = {}
    if options.fleet:
        fields["nodeSelector"] = {GROUP_LABEL: group.name}
    if group.gpu_products:
        term = {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(group.gpu_products)}
        fields["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [term]}]}}}
    if group.plan.device == "gpu":  # GPU nodes are often tainted so that only GPU pods land there
        fields["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return fields


def serve_script(repository: str, ports: Mapping[str, int]) -> str:
    """Install what the pipeline imports, then become tritonserver on the repository."""
    flags = " ".join(f"--{name}-port={port}" for name, port in ports.items())
    return f"{pip_install_words()} && exec tritonserver --model-repository={repository} {flags}"


def probes(port: int | str) -> dict[str, Any]:
    def get(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "failureThreshold": failures}

    return {
        "startupProbe": get(LIVE, STARTUP_PERIOD_S, STARTUP_FAILURES),
        "livenessProbe": get(LIVE, 10, 3),
        "readinessProbe": get(READY, 5, 3),
    }


def max_replicas(group: Group, options: Options) -> int:
    """One replica per host of the group: each pod is sized to a whole host."""
    return options.max_replicas or len(group.hosts)


def storage_uri(group: Group, options: Options) -> str:
    if options.storage_uri is None:
        return f"pvc://{names(group)['volume']}/{REPOSITORY}"
    return options.storage_uri.replace("{group}", group.name)


def inference_service(group: Group, options: Options) -> dict[str, Any]:
    """KServe InferenceService on KServe's Triton runtime, pinned to the checked release."""
    model = {
        "modelFormat": {"name": "triton"},
        "runtime": KSERVE_RUNTIME,
        "runtimeVersion": NGC_TRITON_IMAGE.rsplit(":", 1)[1],
        "protocolVersion": "v2",
        "storageUri": storage_uri(group, options),
        "command": ["bash", "-c"],
        "args": [serve_script(KSERVE_MODEL_DIR, KSERVE_PORTS)],
        "resources": resources(group.plan),
        **probes(KSERVE_PORTS["http"]),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": names(group)["app"],
            "labels": labels(group),
            # a plain Deployment + HPA underneath: no Knative needed
            "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": max_replicas(group, options),
                "scaleMetric": "cpu",
                "scaleTarget": CPU_TARGET_UTILIZATION,
                **placement(group, options),
                "volumes": [_shm_volume()],
                "model": model,
            }
        },
    }


def _shm_volume() -> dict[str, Any]:
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}}


def deployment(group: Group, options: Options) -> dict[str, Any]:
    """NGC's Triton image serving the repository from the group's volume."""
    name = names(group)
    container = {
        "name": "tritonserver",
        "image": NGC_TRITON_IMAGE,
        "command": ["bash", "-c"],
        "args": [serve_script(f"{VOLUME_MOUNT}/{REPOSITORY}", PORTS)],
        "ports": [{"name": port, "containerPort": number} for port, number in PORTS.items()],
        "resources": resources(group.plan),
        **probes("http"),
        "volumeMounts": [
            {"name": "models", "mountPath": VOLUME_MOUNT, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name["app"], "labels": labels(group)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels(group)},
            "template": {
                "metadata": {"labels": labels(group)},
                "spec": {
                    **placement(group, options),
                    "containers": [container],
                    "volumes": [
                        {"name": "models", "persistentVolumeClaim": {"claimName": name["volume"], "readOnly": True}},
                        _shm_volume(),
                    ],
                },
            },
        },
    }


def service(group: Group) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": names(group)["app"], "labels": labels(group)},
        "spec": {
            "selector": labels(group),
            "ports": [{"name": port, "port": number, "targetPort": port} for port, number in PORTS.items()],
        },
    }


def autoscaler(group: Group, options: Options) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": names(group)["app"], "labels": labels(group)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": names(group)["app"]},
            "minReplicas": 1,
            "maxReplicas": max_replicas(group, options),
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_UTILIZATION}}}],
        },
    }


def volume(group: Group, options: Options, repository_bytes: int) -> dict[str, Any]:
    """The volume the repository is copied to: read by every replica, so ReadWriteMany."""
    size = max(1, math.ceil(repository_bytes * 1.25 / GIB))  # room for a re-copy's overlap
    spec: dict[str, Any] = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": f"{size}Gi"}}}
    if options.storage_class:
        spec["storageClassName"] = options.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": names(group)["volume"], "labels": labels(group)},
        "spec": spec,
    }


def loader(group: Group) -> dict[str, Any]:
    """A pod that mounts the volume writable, for `kubectl cp`; deleted once the copy is done."""
    name = names(group)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name["loader"], "labels": {**labels(group), "app.kubernetes.io/component": "loader"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "loader",
                "image": NGC_TRITON_IMAGE,  # has tar, which kubectl cp needs; pulled for serving anyway
                "command": ["sleep", "infinity"],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "models", "mountPath": VOLUME_MOUNT}],
            }],
            "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": name["volume"]}}],
        },
    }


def manifests(group: Group, options: Options, repository_bytes: int) -> dict[str, dict[str, Any]]:
    """Every manifest of a group, by path relative to the group's folder."""
    return {
        "storage/volume.yaml": volume(group, options, repository_bytes),
        "storage/loader.yaml": loader(group),
        "kserve/inferenceservice.yaml": inference_service(group, options),
        "triton/deployment.yaml": deployment(group, options),
        "triton/service.yaml": service(group),
        "triton/autoscaler.yaml": autoscaler(group, options),
    }


def to_yaml(manifest: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False, width=1000)


def summary(group: Group, options: Options) -> dict[str, Any]:
    """What a group is, for the README, manifests.json and --json."""
    plan = group.plan
    return {
        "name": group.name,
        "hosts": list(group.hosts),
        "variant": plan.variant,
        "device": plan.device,
        "resources": resources(plan),
        "gpu_products": list(group.gpu_products),
        "max_replicas": max_replicas(group, options),
        "storage_uri": storage_uri(group, options),
        "names": names(group),
    }


def group_readme(group: Group, options: Options) -> str:
    context = {
        **summary(group, options),
        "fleet": options.fleet,
        "group_label": GROUP_LABEL,
        "gpu_product_label": GPU_PRODUCT_LABEL,
        "image": NGC_TRITON_IMAGE,
        "triton_version": TRITON_VERSION,
        "pip_install": pip_install_words(),
        "repository": REPOSITORY,
        "volume_mount": VOLUME_MOUNT,
        "memory_estimate_mib": group.plan.host_memory_estimate_bytes >> 20,
        "memory_budget_mib": group.plan.host_memory_budget_bytes >> 20,
        "gpu_memory": (group.plan.memory_estimate_bytes >> 20, group.plan.memory_budget_bytes >> 20)
        if group.plan.device == "gpu" else None,
        "cpu_target": CPU_TARGET_UTILIZATION,
        "models": [{"name": m.triton_name, "backend": m.backend, "precision": m.precision,
                    "instances": m.instance_count, "threads": m.intra_op_threads} for m in group.plan.models()],
        "pipeline_instances": group.plan.pipeline.instance_count,
        "ports": PORTS,
    }
    return tidy(template_environment().get_template("kubernetes.md.j2").render(group=context))


def fleet_readme(groups: Sequence[Group], options: Options) -> str:
    context = [summary(g, options) for g in groups]
    return tidy(template_environment().get_template("fleet.md.j2").render(groups=context, group_label=GROUP_LABEL))


# --- I/O half: one folder, swapped in whole ---------------------------------------------


def check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that a kubernetes render did not write (`--out .`)."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out} is a file, not a folder", hint="pass another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserInputError(
            f"refusing to replace {out}: it was not written by `stdr-deploy render --target kubernetes` "
            f"(no {MARKER})",
            hint="render into a new or empty folder, or delete that one yourself",
        )


def _size(source: bytes | Path) -> int:
    return len(source) if isinstance(source, bytes) else os.stat(source).st_size


def render_kubernetes(
    groups: Sequence[Group],
    out: str | os.PathLike,
    artifacts: Callable[[Group], Mapping[str, Path]],
    options: Options,
    *,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Write `out`: per group its repository, manifests and README (in `out/<group>/` for a
    fleet, in `out` itself for one plan), and `manifests.json`. `artifacts(group)` gives the
    model files of a group's repository (Triton name -> file)."""
    out = Path(out).absolute()
    check_replaceable(out)
    files: dict[str, bytes | Path] = {}
    for group in groups:
        prefix = f"{group.name}/" if options.fleet else ""
        repo = repository_files(group.plan, artifacts(group))
        files.update({f"{prefix}{REPOSITORY}/{rel}": source for rel, source in repo.items()})
        repo_bytes = sum(_size(source) for source in repo.values())
        for rel, manifest in manifests(group, options, repo_bytes).items():
            files[prefix + rel] = to_yaml(manifest).encode()
        files[f"{prefix}README.md"] = group_readme(group, options).encode()
    if options.fleet:
        files["README.md"] = fleet_readme(groups, options).encode()
    result = {
        "out": str(out),
        "dry_run": dry_run,
        "kubernetes_image": NGC_TRITON_IMAGE,
        "groups": [{**summary(g, options), "folder": g.name if options.fleet else "."} for g in groups],
    }
    files[MARKER] = (json.dumps(result | {"dry_run": False}, indent=2) + "\n").encode()
    result["files"] = sorted(files)
    if not dry_run:
        write_tree(dict(sorted(files.items())), out)
    return result
