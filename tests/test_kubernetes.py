"""`render --target kubernetes`: manifests for recorded hosts, validated against real schemas.

No cluster runs here. What these tests check: every Kubernetes manifest passes
`kubernetes-validate` (the Kubernetes API's OpenAPI schemas, strict: unknown fields fail) for
KUBERNETES; the InferenceService loads field by field into the `kserve` SDK's
V1beta1InferenceService model (unknown fields and wrong types fail) and serializes back to the
same document; resources equal the plan's figures; the repository beside them is `render`'s.
The A5000 plan is TensorRT: its engines cannot be built here, so its CLI render gets stand-in
engine files (rendering only places them), as tests/test_render.py does.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from stdr_deploy.cli import cli
from stdr_deploy.errors import UserInputError
from stdr_deploy.hardware import load_host
from stdr_deploy.kubernetes import (
    GPU_RESOURCE,
    GROUP_LABEL,
    MARKER,
    Options,
    group_plans,
    manifests,
    pod_plan,
)
from stdr_deploy.planner import make_plan
from stdr_deploy.profiles import resolve_profile
from stdr_deploy.render import render_texts, repository_files
from stdr_deploy.server import NGC_TRITON_IMAGE

HOSTS = Path(__file__).resolve().parent / "hosts"
CPU_HOST, A5000_HOST = HOSTS / "cpu-xeon-2core.json", HOSTS / "a5000-24g.vendor.json"
KUBERNETES = "1.37.0"  # a current release whose schemas kubernetes-validate bundles
SINGLE = Options(fleet=False, storage_uri=None, storage_class=None, max_replicas=None)
KSERVE_CHECK = Path(__file__).resolve().parent / "kserve_model.py"


def plan_for(path: Path):
    host = load_host(path)
    return make_plan(host, resolve_profile(host), recognizer="crnn-en")  # the ONNX files these tests link


def validate(*manifests: dict) -> None:
    """Kubernetes kinds through kubernetes-validate; InferenceServices through the kserve SDK (in a
    subprocess: see tests/kserve_model.py)."""
    services = [m for m in manifests if m["kind"] == "InferenceService"]
    for manifest in manifests:
        if manifest["kind"] != "InferenceService":
            kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
    if services:
        done = subprocess.run([sys.executable, str(KSERVE_CHECK)], input=json.dumps(services),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"{len(services)} InferenceService(s) loaded" in done.stdout


def containers(docs: dict) -> list[dict]:
    return [docs["triton/deployment.yaml"]["spec"]["template"]["spec"]["containers"][0],
            docs["kserve/inferenceservice.yaml"]["spec"]["predictor"]["model"]]


def pod_specs(docs: dict) -> list[dict]:
    return [docs["triton/deployment.yaml"]["spec"]["template"]["spec"],
            docs["kserve/inferenceservice.yaml"]["spec"]["predictor"]]


@pytest.mark.parametrize("host_file", [CPU_HOST, A5000_HOST], ids=["cpu", "a5000"])
def test_manifests_of_recorded_hosts_validate_and_are_sized_by_the_plan(host_file: Path):
    plan = plan_for(host_file)
    [group] = group_plans([(host_file.name, plan)])
    docs = manifests(group, SINGLE, repository_bytes=300 << 20)
    assert {d["kind"] for d in docs.values()} == {
        "PersistentVolumeClaim", "Pod", "InferenceService", "Deployment", "Service", "HorizontalPodAutoscaler"}
    validate(*(yaml.safe_load(yaml.safe_dump(m)) for m in docs.values()))  # as written to disk

    threads_x_instances = [max(1, m.intra_op_threads) * m.instance_count for m in plan.models()]
    cpu = max(*threads_x_instances, plan.pipeline.instance_count)
    gpus = len(plan.detector.gpus) if plan.device == "gpu" else 0
    for container in containers(docs):
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert int(requests["cpu"]) == int(limits["cpu"]) == cpu
        assert int(requests["memory"]) == plan.host_memory_estimate_bytes
        assert int(limits["memory"]) == plan.host_memory_budget_bytes
        assert int(requests.get(GPU_RESOURCE, 0)) == int(limits.get(GPU_RESOURCE, 0)) == gpus
        probes = {kind: container[kind]["httpGet"]["path"] for kind in ("readinessProbe", "livenessProbe")}
        assert probes == {"readinessProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}
    deployment, isvc = containers(docs)
    assert deployment["image"] == NGC_TRITON_IMAGE
    assert NGC_TRITON_IMAGE.endswith(":" + isvc["runtimeVersion"])
    assert isvc["storageUri"] == f"pvc://{docs['storage/volume.yaml']['metadata']['name']}/model_repository"

    if plan.device == "cpu":
        assert cpu == threads_x_instances[0] <= plan.host["usable_cores"]  # the detector uses the cores
        assert all("affinity" not in spec and "tolerations" not in spec for spec in pod_specs(docs))
    else:
        assert gpus == 1 and group.gpu_products == ("NVIDIA-RTX-A5000",)  # GFD: the NVML name, dashed
        for spec in pod_specs(docs):
            [term] = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"]
            assert term["matchExpressions"] == [
                {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-RTX-A5000"]}]
            assert spec["tolerations"][0]["key"] == GPU_RESOURCE


def test_a_plan_on_a_later_gpu_serves_on_gpu_0_of_its_pod():
    plan = plan_for(A5000_HOST)
    on_gpu_1 = dataclasses.replace(
        plan, detector=dataclasses.replace(plan.detector, gpus=(1,)),
        recognizer=dataclasses.replace(plan.recognizer, gpus=(1,)))
    [group] = group_plans([("a", on_gpu_1)])
    assert [m.gpus for m in group.plan.models()] == [(0,), (0,)]
    filenames = {m.triton_name: "model.plan" for m in plan.models()}
    config = render_texts(group.plan, filenames)["craft/config.pbtxt"]
    assert re.search(r"gpus: \[\s*0\s*\]", config), config


def test_fleet_groups_hosts_with_the_same_plan_and_routes_pods_by_label(tmp_path: Path):
    twin = tmp_path / "cpu-xeon-2core-twin.json"  # a second machine of the same kind
    twin.write_text(json.dumps({**json.loads(CPU_HOST.read_text()), "memory_available_mib": 20000}))
    named = [(str(p), plan_for(p)) for p in (CPU_HOST, HOSTS / "cpu-4g-4core.vendor.json", twin, A5000_HOST)]
    groups = group_plans(named)
    assert [g.hosts for g in groups] == [
        (str(CPU_HOST), str(twin)), (str(HOSTS / "cpu-4g-4core.vendor.json"),), (str(A5000_HOST),)]
    assert len({g.name for g in groups}) == 3 and [g.plan.device for g in groups] == ["cpu", "cpu", "gpu"]
    fleet = dataclasses.replace(SINGLE, fleet=True, storage_uri="s3://bucket/ocr/{group}")
    every = []
    for group in groups:
        docs = manifests(group, fleet, repository_bytes=1 << 30)
        for spec in pod_specs(docs):
            assert spec["nodeSelector"] == {GROUP_LABEL: group.name}
        assert docs["triton/autoscaler.yaml"]["spec"]["maxReplicas"] == len(group.hosts)
        assert docs["kserve/inferenceservice.yaml"]["spec"]["predictor"]["model"]["storageUri"] == (
            f"s3://bucket/ocr/{group.name}")
        every += docs.values()
    validate(*every)


@pytest.fixture(scope="module")
def cpu_plan_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    path.write_text(json.dumps(plan_for(CPU_HOST).to_dict()))
    return path


def written_manifests(folder: Path) -> dict[str, dict]:
    return {p.relative_to(folder).as_posix(): yaml.safe_load(p.read_text())
            for p in sorted(folder.glob("*/*.yaml")) if p.parent.name != "model_repository"}


def test_cli_writes_the_repository_and_valid_manifests_for_a_cpu_plan(
    tmp_path: Path, cpu_plan_file: Path, craft_int8_onnx, crnn_onnx
):
    plan = plan_for(CPU_HOST)
    assert plan.detector.precision == "int8" and plan.recognizer.precision == "fp32"
    craft, crnn = craft_int8_onnx.onnx_path, crnn_onnx.onnx_path
    out = tmp_path / "k8s"
    args = ["render", "--target", "kubernetes", "--plan", str(cpu_plan_file), "--out", str(out),
            "--artifact", f"craft={craft}", "--artifact", f"crnn_en={crnn}", "--json"]
    dry = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["dry_run"] and not out.exists()

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [group] = report["groups"]
    assert group["resources"]["requests"]["memory"] == str(plan.host_memory_estimate_bytes)
    assert json.loads((out / MARKER).read_text())["groups"] == report["groups"]

    expected = repository_files(pod_plan(plan), {"craft": craft, "crnn_en": crnn})
    written = sorted(p.relative_to(out / "model_repository").as_posix()
                     for p in (out / "model_repository").rglob("*") if p.is_file())
    assert written == sorted(expected)
    for rel, source in expected.items():
        data = source if isinstance(source, bytes) else source.read_bytes()
        assert (out / "model_repository" / rel).read_bytes() == data, rel

    docs = written_manifests(out)
    assert set(docs) == {"storage/volume.yaml", "storage/loader.yaml", "kserve/inferenceservice.yaml",
                         "triton/deployment.yaml", "triton/service.yaml", "triton/autoscaler.yaml"}
    validate(*docs.values())
    readme = (out / "README.md").read_text()
    for command in ("kubectl apply -f storage/", "kubectl apply -f kserve/", "kubectl apply -f triton/",
                    f"kubectl cp model_repository {group['names']['loader']}:/models/model_repository"):
        assert command in readme

    again = CliRunner().invoke(cli, args)  # its own output is replaced
    assert again.exit_code == 0, again.output


def test_cli_renders_the_a5000_plan_with_its_engines(tmp_path: Path):
    plan = plan_for(A5000_HOST)
    assert plan.variant == "tensorrt_plan"
    engines = []
    for model in plan.models():  # stand-ins: no TensorRT here to build them
        engines += ["--artifact", f"{model.triton_name}={tmp_path / (model.triton_name + '.plan')}"]
        (tmp_path / f"{model.triton_name}.plan").write_bytes(b"engine stand-in")
    out = tmp_path / "k8s"
    result = CliRunner().invoke(cli, ["render", "--target", "kubernetes", "--host", str(A5000_HOST),
                                      "--host", str(A5000_HOST), "--recognizer", "crnn-en", "--out", str(out),
                                      *engines, "--json"])
    assert result.exit_code == 0, result.output
    [group] = json.loads(result.stdout)["groups"]
    assert group["hosts"] == [str(A5000_HOST)] * 2 and group["max_replicas"] == 2
    docs = written_manifests(out / group["name"])
    validate(*docs.values())
    assert docs["triton/deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        GPU_RESOURCE] == str(len(plan.detector.gpus))
    assert (out / group["name"] / "model_repository" / "craft" / "1" / "craft.plan").is_file()
    assert f"{GROUP_LABEL}={group['name']}" in (out / "README.md").read_text()


def test_cli_refuses_what_it_cannot_do_well(tmp_path: Path, cpu_plan_file: Path):
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    runner = CliRunner()
    cases = [
        (["--plan", str(cpu_plan_file), "--out", str(foreign)], "refusing to replace"),
        (["--host", str(CPU_HOST), "--host", str(A5000_HOST), "--storage-uri", "s3://b/ocr"], "{group}"),
        (["--host", str(CPU_HOST), "--host", str(A5000_HOST), "--artifact", "craft=x.onnx"], "2 groups"),
        (["--plan", str(cpu_plan_file), "--host", str(CPU_HOST)], "exclude each other"),
    ]
    for extra, message in cases:
        result = runner.invoke(cli, ["render", "--target", "kubernetes", "--out", str(tmp_path / "o"), *extra])
        error = result.exception
        assert isinstance(error, UserInputError) and error.exit_code == 2, (extra, result.output)
        assert message in f"{error} {error.hint}", (extra, error)
    assert (foreign / "notes.txt").read_text() == "mine" and not (tmp_path / "o").exists()
    wrong = runner.invoke(cli, ["render", "--storage-class", "nfs", "--plan", str(cpu_plan_file)])
    assert isinstance(wrong.exception, UserInputError) and "--target kubernetes" in str(wrong.exception)
    shutil.rmtree(foreign)


def test_the_schema_checks_reject_a_misspelt_field():
    [group] = group_plans([("cpu", plan_for(CPU_HOST))])
    docs = manifests(group, SINGLE, repository_bytes=1 << 30)
    deployment = json.loads(json.dumps(docs["triton/deployment.yaml"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    service = json.loads(json.dumps(docs["kserve/inferenceservice.yaml"]))
    service["spec"]["predictor"]["model"]["storageURI"] = service["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(AssertionError, match="storageURI"):
        validate(service)
