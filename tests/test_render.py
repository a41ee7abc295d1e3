"""Rendering: every config.pbtxt parsed into Triton's ModelConfig schema and checked field by field
against its plan; golden configs for a CPU plan; dry runs, no-op re-renders and atomic swaps.

Plans come from two sources: three hand-built ones (CPU, GPU with ONNX Runtime, GPU with
TensorRT) and, for every recorded host in tests/hosts, `make_plan` for each recognizer and each
variant the host supports. Model files are stand-ins: rendering only links them into place, and
the TensorRT engines could not be built here anyway.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from stdr_deploy.cli import cli
from stdr_deploy.errors import HostUnsupported, UserInputError
from stdr_deploy.plan_schema import VARIANTS, DynamicBatching, ModelPlan, PipelinePlan, Plan, ShapeProfile
from stdr_deploy.render import RENDERED_MARKER, cuda_ep_settings, render, render_texts

TESTS = Path(__file__).resolve().parent
HOSTS = TESTS / "hosts"
GOLDEN = TESTS / "golden" / "cpu_crnn_en"
ROOT = TESTS.parent

# What each served model must declare (the project's decisions, SEED_NOTES for craft/parseq).
EXPECTED_IO = {
    "craft": ([("input", "TYPE_UINT8", [3, -1, -1])], [("output", "TYPE_FP32", [-1, -1, 2])]),
    "crnn_en": ([("input", "TYPE_FP32", [1, 64, -1])], [("output", "TYPE_FP32", [-1, 97])]),
    "parseq": ([("input", "TYPE_FP32", [3, 32, 128])], [("output", "TYPE_FP32", [26, 95])]),
    "pipeline": (
        [("input", "TYPE_UINT8", [-1, -1, 3])],
        [("output", "TYPE_STRING", [-1]), ("boxes", "TYPE_FP32", [-1, 9])],
    ),
}
FIXED_SHAPE = {"parseq"}  # the models that get model_warmup
PLATFORM = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}  # Triton's OpenVINO backend has none
DEFAULT_FILE = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "openvino": "model.xml"}


def _model(name, family, role, backend, max_batch, kind, gpus=(), count=1, precision="fp32", batching=None):
    shape = {"craft": (3, 736, 736), "crnn_en": (1, 64, 256), "parseq": (3, 32, 128)}[name]
    return ModelPlan(
        triton_name=name,
        family=family,
        role=role,
        backend=backend,
        precision=precision,
        max_batch_size=max_batch,
        profile={"input": ShapeProfile((1, *shape), (max(1, max_batch // 2), *shape), (max_batch, *shape))},
        instance_count=count,
        instance_kind=kind,
        gpus=tuple(gpus),
        intra_op_threads=2 if backend == "onnxruntime" else 0,
        inter_op_threads=1 if backend == "onnxruntime" else 0,
        workspace_bytes=0 if backend == "onnxruntime" else 1 << 30,
        dynamic_batching=batching,
        memory_estimate_bytes=1 << 28,
    )


def _pipeline(kind, batch):
    return PipelinePlan(
        instance_count=1, instance_kind=kind, canvas_size=1280, mag_ratio=1.0, max_image_pixels=12_000_000,
        recognizer_batch=batch, text_threshold=0.7, link_threshold=0.4, low_text=0.4,
    )


def hand_built_plans() -> dict[str, Plan]:
    batching = DynamicBatching(preferred_batch_sizes=(4, 8), max_queue_delay_us=200)
    cpu = Plan(
        variant="onnxruntime", device="cpu",
        detector=_model("craft", "craft", "detector", "onnxruntime", 1, "KIND_CPU"),
        recognizer=_model("crnn_en", "crnn-en", "recognizer", "onnxruntime", 8, "KIND_CPU", batching=batching),
        pipeline=_pipeline("KIND_CPU", 8), memory_budget_bytes=8 << 30, memory_estimate_bytes=1 << 30,
    )
    gpu_ort = Plan(
        variant="onnxruntime", device="gpu",
        detector=_model("craft", "craft", "detector", "onnxruntime", 1, "KIND_GPU", gpus=(0,), count=2),
        recognizer=_model("parseq", "parseq", "recognizer", "onnxruntime", 16, "KIND_GPU", gpus=(0,),
                          batching=DynamicBatching((4, 16), 100)),
        pipeline=_pipeline("KIND_GPU", 16), memory_budget_bytes=12 << 30, memory_estimate_bytes=2 << 30,
    )
    gpu_trt = Plan(
        variant="tensorrt_plan", device="gpu",
        detector=_model("craft", "craft", "detector", "tensorrt", 1, "KIND_GPU", gpus=(0, 1)),
        recognizer=_model("parseq", "parseq-tiny", "recognizer", "tensorrt", 16, "KIND_GPU", gpus=(0, 1),
                          precision="fp16", batching=DynamicBatching((4, 16), 100)),
        pipeline=_pipeline("KIND_GPU", 16), memory_budget_bytes=12 << 30, memory_estimate_bytes=2 << 30,
    )
    return {"hand-cpu": cpu, "hand-gpu-onnxruntime": gpu_ort, "hand-gpu-tensorrt": gpu_trt}


def host_plans() -> dict[str, Plan]:
    """make_plan for every recorded host x recognizer x variant the host can run."""
    files = sorted(HOSTS.glob("*.json"))
    if not files:
        return {}
    from stdr_deploy.hardware import HostFacts
    from stdr_deploy.planner import make_plan

    plans = {}
    for file in files:
        host = HostFacts.from_dict(json.loads(file.read_text()))
        for recognizer in ("crnn-en", "parseq"):
            for variant in VARIANTS:
                try:
                    plan = make_plan(host, recognizer=recognizer, variant=variant)
                    plans[f"{file.stem}-{recognizer}-{variant}"] = plan
                except HostUnsupported:
                    continue
    return plans


PLANS = {**hand_built_plans(), **host_plans()}
CPU_PLAN = PLANS["hand-cpu"]


def stand_in_artifacts(plan: Plan, folder: Path) -> dict[str, Path]:
    """A small file per model: `model.onnx` for ONNX Runtime and OpenVINO, `<name>.plan` for TensorRT engines."""
    artifacts = {}
    for model in plan.models():
        name = f"{model.triton_name}.plan" if model.backend == "tensorrt" else "model.onnx"
        path = folder / model.triton_name / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"stand-in {model.backend} model file for {model.triton_name}\n".encode())
        artifacts[model.triton_name] = path
    return artifacts


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def io_of(tensors) -> list[tuple[str, str, list[int]]]:
    return [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in tensors]


def parameters_of(config) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def check_model_config(config, model: ModelPlan, filename: str) -> None:
    assert config.name == model.triton_name
    if model.backend == "openvino":  # named by `backend:`, as Triton's OpenVINO backend wants
        assert (config.platform, config.backend) == ("", "openvino")
    else:
        assert (config.platform, config.backend) == (PLATFORM[model.backend], "")
    assert config.max_batch_size == model.max_batch_size
    assert config.default_model_filename == ("" if filename == DEFAULT_FILE[model.backend] else filename)
    inputs, outputs = EXPECTED_IO[model.triton_name]
    assert io_of(config.input) == inputs
    assert io_of(config.output) == outputs

    [group] = config.instance_group
    assert group.count == model.instance_count
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == model.instance_kind
    assert list(group.gpus) == (list(model.gpus) if model.instance_kind == "KIND_GPU" else [])

    if model.dynamic_batching is None:
        assert not config.HasField("dynamic_batching")
    else:
        assert list(config.dynamic_batching.preferred_batch_size) == list(model.dynamic_batching.preferred_batch_sizes)
        assert config.dynamic_batching.max_queue_delay_microseconds == model.dynamic_batching.max_queue_delay_us

    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    # the plan's max profile past the batch axis, which our backends enforce (both of them)
    limits = {f"max_input_dims:{name}": ",".join(map(str, shape.max[1:])) for name, shape in model.profile.items()}
    if model.backend == "onnxruntime":
        expected = {
            **limits,
            "intra_op_thread_count": str(model.intra_op_threads),
            "inter_op_thread_count": str(model.inter_op_threads),
        }
        if not model.memory_arena:  # CPU plans: the memory data is measured with both off
            expected["enable_mem_arena"] = expected["enable_mem_pattern"] = "0"
        else:  # the CPU arena returns an outlier's memory after the run (issue 23)
            expected["memory.enable_memory_arena_shrinkage"] = "cpu:0"
        if model.instance_kind == "KIND_GPU":
            measured = cuda_ep_settings()  # the GPU measurement decides search mode and layout
            expected["cudnn_conv_algo_search"] = {"EXHAUSTIVE": "0", "HEURISTIC": "1"}[measured["cudnn_conv_algo_search"]]
            expected["arena_extend_strategy"] = "1"  # kSameAsRequested: GPU memory near the estimate
            [cuda] = accelerators
            assert cuda.name == "cuda"
            wanted = {"cudnn_conv_use_max_workspace": "1"}
            if measured["prefer_nhwc"][model.precision]:
                wanted["prefer_nhwc"] = "1"
            assert dict(cuda.parameters) == wanted
            if model.shape_sessions:  # one session per input shape (the CUDA EP re-plans at every change)
                expected["sessions_per_shape"] = str(model.shape_sessions)
                expected["session.use_device_allocator_for_initializers"] = "1"  # weights outside the arena
                # each made and run at load (the backend's warm-up), as many as the sessions kept
                expected["warm_shapes"] = " ".join("x".join(map(str, shape)) for shape in model.fixed_shapes)
                assert len(model.fixed_shapes) == model.shape_sessions
        else:
            assert not config.HasField("optimization")
        assert parameters_of(config) == expected
    elif model.backend == "openvino":  # OpenVINO property names: one stream, latency, the plan's float precision
        assert parameters_of(config) == {
            **limits, "INFERENCE_NUM_THREADS": str(model.intra_op_threads), "NUM_STREAMS": "1",
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": model.float_precision,
        }
        assert not config.HasField("optimization")
    else:
        assert parameters_of(config) == limits
        assert not config.HasField("optimization")

    if model.triton_name in FIXED_SHAPE:
        warmups = [(w.name, w.batch_size) for w in config.model_warmup]
        assert sorted(b for _, b in warmups) == sorted({1, model.max_batch_size})
        for warmup in config.model_warmup:
            [(key, data)] = warmup.inputs.items()
            assert key == "input"
            assert model_config_pb2.DataType.Name(data.data_type) == "TYPE_FP32"
            assert list(data.dims) == inputs[0][2]
            assert data.random_data
    else:
        assert len(config.model_warmup) == 0


def check_pipeline_config(config, plan: Plan) -> None:
    assert config.name == "pipeline"
    assert config.backend == "python"
    assert config.platform == ""
    assert config.max_batch_size == 1
    inputs, outputs = EXPECTED_IO["pipeline"]
    assert io_of(config.input) == inputs
    assert io_of(config.output) == outputs
    [group] = config.instance_group
    assert group.count == plan.pipeline.instance_count
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == plan.pipeline.instance_kind
    pipe = plan.pipeline
    assert parameters_of(config) == {
        "detector_model": plan.detector.triton_name,
        "recognizer_model": plan.recognizer.triton_name,
        "recognizer_family": plan.recognizer.family,
        "canvas_size": str(pipe.canvas_size),
        "mag_ratio": str(pipe.mag_ratio),
        "max_image_pixels": str(pipe.max_image_pixels),
        "recognizer_batch": str(pipe.recognizer_batch),
        "text_threshold": str(pipe.text_threshold),
        "link_threshold": str(pipe.link_threshold),
        "pad_to": str(pipe.pad_to),
        "low_text": str(pipe.low_text),
    }
    assert int(parameters_of(config)["recognizer_batch"]) <= plan.recognizer.max_batch_size


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("plan_id", sorted(PLANS))
def test_rendered_configs_match_the_plan(plan_id, tmp_path):
    plan = PLANS[plan_id]
    artifacts = stand_in_artifacts(plan, tmp_path / "artifacts")
    out = tmp_path / "model_repository"
    result = render(plan, out, artifacts)

    assert result.written
    for model in plan.models():
        filename = artifacts[model.triton_name].name
        check_model_config(parse_config(out / model.triton_name / "config.pbtxt"), model, filename)
        placed = out / model.triton_name / "1" / filename
        assert os.path.samefile(placed, artifacts[model.triton_name])  # hard link, no copy
    check_pipeline_config(parse_config(out / "pipeline" / "config.pbtxt"), plan)
    assert (out / "pipeline" / "1" / "model.py").read_bytes() == (ROOT / "templates" / "pipeline_model.py").read_bytes()
    # its malloc settings, the same file our backends get
    assert (out / "pipeline" / "1" / "stub_malloc.py").read_bytes() == \
        (ROOT / "stdr_deploy" / "backends" / "stub_malloc.py").read_bytes()
    assert sorted(result.config_sha256) == sorted([plan.detector.triton_name, plan.recognizer.triton_name, "pipeline"])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "pipeline", plan.detector.triton_name, plan.recognizer.triton_name]
    )


def test_cpu_configs_equal_the_golden_files():
    """Set STDR_UPDATE_GOLDEN=1 to rewrite them after an intended template change (and review the diff)."""
    texts = render_texts(CPU_PLAN, {"craft": "model.onnx", "crnn_en": "model.onnx"})
    configs = {rel.split("/")[0]: text for rel, text in texts.items() if rel.endswith("config.pbtxt")}
    if os.environ.get("STDR_UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in configs.items():
            (GOLDEN / f"{name}.pbtxt").write_text(text)
    assert sorted(configs) == sorted(p.stem for p in GOLDEN.glob("*.pbtxt"))
    for name, text in configs.items():
        assert text == (GOLDEN / f"{name}.pbtxt").read_text(), f"{name}/config.pbtxt differs from its golden file"


def test_orchestrator_package_is_a_self_contained_copy_of_the_ocr_package(tmp_path):
    out = tmp_path / "repo"
    render(CPU_PLAN, out, stand_in_artifacts(CPU_PLAN, tmp_path / "artifacts"))
    source = ROOT / "stdr_deploy" / "ocr"
    copied = out / "pipeline" / "1" / "stdr_ocr"
    expected = {rel: data for rel, data in tree(source).items() if "__pycache__" not in rel}
    assert tree(copied) == expected
    # Every module imports with stdr_deploy made unimportable, as in a bare Triton container.
    script = (
        "import sys, pkgutil, importlib; sys.modules['stdr_deploy'] = None; "
        f"sys.path.insert(0, {str(copied.parent)!r}); import stdr_ocr; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(stdr_ocr.__path__, 'stdr_ocr.')]; "
        "print(sorted(m for m in sys.modules if m.startswith('stdr_ocr')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "stdr_ocr.pipeline" in done.stdout


def test_dry_run_writes_nothing_and_lists_every_change(tmp_path):
    artifacts = stand_in_artifacts(CPU_PLAN, tmp_path / "artifacts")
    out = tmp_path / "repo"

    first = render(CPU_PLAN, out, artifacts, dry_run=True)
    assert not out.exists()
    assert not list(tmp_path.glob(".repo*"))
    assert first.changed and not first.written
    assert {f.status for f in first.files} == {"added"}
    assert "craft/config.pbtxt" in first.paths("added") and "crnn_en/1/model.onnx" in first.paths("added")

    render(CPU_PLAN, out, artifacts)
    (out / "retired").mkdir()
    (out / "retired" / "config.pbtxt").write_text(f'# {RENDERED_MARKER} (an earlier plan)\nname: "retired"\n')
    before = tree(out)
    bigger = dataclasses.replace(CPU_PLAN, detector=dataclasses.replace(CPU_PLAN.detector, instance_count=2))
    dry = render(bigger, out, artifacts, dry_run=True)
    assert tree(out) == before
    assert dry.paths("changed") == ["craft/config.pbtxt"]
    assert dry.paths("removed") == ["retired/config.pbtxt"]
    assert dry.paths("added") == []
    assert dry.config_sha256["crnn_en"] == render(CPU_PLAN, out, artifacts, dry_run=True).config_sha256["crnn_en"]


def test_every_rendered_config_carries_the_marker_that_tells_our_models_apart(tmp_path):
    artifacts = stand_in_artifacts(CPU_PLAN, tmp_path / "artifacts")
    render(CPU_PLAN, tmp_path / "repo", artifacts)
    configs = sorted((tmp_path / "repo").glob("*/config.pbtxt"))
    assert [c.parent.name for c in configs] == ["craft", "crnn_en", "pipeline"]
    assert all(RENDERED_MARKER in c.read_text() for c in configs)


def test_a_model_the_user_added_is_kept_unless_pruned(tmp_path):
    artifacts = stand_in_artifacts(CPU_PLAN, tmp_path / "artifacts")
    out = tmp_path / "repo"
    render(CPU_PLAN, out, artifacts)
    mine = out / "mymodel"
    (mine / "1").mkdir(parents=True)
    (mine / "config.pbtxt").write_text('name: "mymodel"\nbackend: "python"\n')
    (mine / "1" / "model.py").write_text("# the user's own model\n")
    bigger = dataclasses.replace(CPU_PLAN, detector=dataclasses.replace(CPU_PLAN.detector, instance_count=2))

    kept = render(bigger, out, artifacts)
    assert kept.written and kept.kept_models == ["mymodel"]
    assert kept.paths("kept") == ["mymodel/1/model.py", "mymodel/config.pbtxt"] and not kept.paths("removed")
    assert (mine / "1" / "model.py").read_text() == "# the user's own model\n"
    assert "instance_count" not in (mine / "config.pbtxt").read_text()
    assert not render(bigger, out, artifacts).changed  # a kept model is no change

    listed = CliRunner().invoke(cli, ["render", "--plan", str(_plan_file(bigger, tmp_path)), "--out", str(out),
                                      *_artifact_args(artifacts), "--dry-run", "--prune"])
    assert listed.exit_code == 0, listed.output
    assert "mymodel/config.pbtxt" in listed.stderr and "removed" in listed.stderr
    assert mine.exists()  # a dry run
    shown = CliRunner().invoke(cli, ["render", "--plan", str(_plan_file(bigger, tmp_path)), "--out", str(out),
                                     *_artifact_args(artifacts)])
    assert "mymodel/" in shown.stderr and "kept (not rendered by stdr-deploy" in shown.stderr

    pruned = render(bigger, out, artifacts, prune=True)
    assert pruned.paths("removed") == ["mymodel/1/model.py", "mymodel/config.pbtxt"]
    assert not mine.exists() and (out / "craft" / "config.pbtxt").is_file()


def _plan_file(plan, folder: Path) -> Path:
    path = folder / "plan.json"
    path.write_text(json.dumps(plan.to_dict()))
    return path


def _artifact_args(artifacts) -> list[str]:
    return [arg for name, path in artifacts.items() for arg in ("--artifact", f"{name}={path}")]


def test_rerendering_the_same_plan_changes_nothing(tmp_path):
    artifacts = stand_in_artifacts(CPU_PLAN, tmp_path / "artifacts")
    out = tmp_path / "repo"
    first = render(CPU_PLAN, out, artifacts)
    inode = out.stat().st_ino
    again = render(CPU_PLAN, out, artifacts)
    assert not again.changed and not again.written
    assert {f.status for f in again.files} == {"unchanged"}
    assert again.config_sha256 == first.config_sha256
    assert out.stat().st_ino == inode  # not even swapped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "repo"]  # no staging left behind


def test_a_changed_plan_swaps_in_a_new_tree(tmp_path):
    artifacts = stand_in_artifacts(CPU_PLAN, tmp_path / "artifacts")
    out = tmp_path / "repo"
    first = render(CPU_PLAN, out, artifacts)
    gpu = PLANS["hand-gpu-onnxruntime"]
    second = render(gpu, out, stand_in_artifacts(gpu, tmp_path / "artifacts-gpu"))
    assert second.written
    assert set(second.paths("removed")) >= {"crnn_en/config.pbtxt", "crnn_en/1/model.onnx"}
    assert second.config_sha256["craft"] != first.config_sha256["craft"]
    check_pipeline_config(parse_config(out / "pipeline" / "config.pbtxt"), gpu)
    assert not (out / "crnn_en").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "artifacts-gpu", "repo"]


def test_a_folder_that_is_not_a_model_repository_is_never_replaced(tmp_path):
    artifacts = stand_in_artifacts(CPU_PLAN, tmp_path / "artifacts")
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("keep me\n")
    for dry_run in (True, False):
        with pytest.raises(UserInputError, match="not a model repository .*notes.txt"):
            render(CPU_PLAN, project, artifacts, dry_run=dry_run)
    assert tree(project) == {"notes.txt": b"keep me\n"}
    # The placeholder the project's own model_repository/ ships with (a README alone) is fine.
    placeholder = tmp_path / "model_repository"
    placeholder.mkdir()
    (placeholder / "README.md").write_text("Default output of `stdr-deploy render`.\n")
    assert render(CPU_PLAN, placeholder, artifacts).written


def test_tensorrt_plan_without_engines_is_a_clear_error(tmp_path):
    plan = PLANS["hand-gpu-tensorrt"]
    onnx_files = stand_in_artifacts(PLANS["hand-gpu-onnxruntime"], tmp_path / "onnx")
    with pytest.raises(UserInputError, match="needs a TensorRT engine") as err:
        render(plan, tmp_path / "repo", onnx_files)
    assert "stdr-deploy build" in err.value.hint
    engine = tmp_path / "craft.plan"
    engine.write_bytes(b"stand-in engine")
    with pytest.raises(UserInputError, match="no model file for 'parseq'"):
        render(plan, tmp_path / "repo", {"craft": engine})
    assert not (tmp_path / "repo").exists()


def test_model_files_must_belong_to_the_plan(tmp_path):
    artifacts = stand_in_artifacts(CPU_PLAN, tmp_path / "artifacts")
    with pytest.raises(UserInputError, match="parseq"):
        render(CPU_PLAN, tmp_path / "repo", {**artifacts, "parseq": artifacts["crnn_en"]})
    with pytest.raises(UserInputError, match="not found"):
        render(CPU_PLAN, tmp_path / "repo", {**artifacts, "craft": tmp_path / "missing.onnx"})


def test_recognizer_batch_above_the_recognizer_max_batch_is_refused(tmp_path):
    plan = dataclasses.replace(CPU_PLAN, pipeline=dataclasses.replace(CPU_PLAN.pipeline, recognizer_batch=32))
    with pytest.raises(UserInputError, match="recognizer_batch 32"):
        render(plan, tmp_path / "repo", stand_in_artifacts(plan, tmp_path / "artifacts"))


KILLED_RENDER = """
import json, os, signal, sys
from pathlib import Path
from stdr_deploy import render
from stdr_deploy.plan_schema import Plan

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

point, plan_file, out, artifacts = sys.argv[1:]
if point == "placing-model-files":
    os.link = die  # the first model file placed into the staging folder
else:
    render.replace_dir_atomic = die  # staging complete, swap not started
plan = Plan.from_dict(json.loads(Path(plan_file).read_text()))
render.render(plan, Path(out), {k: Path(v) for k, v in json.loads(artifacts).items()})
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", ["placing-model-files", "before-swap"])
def test_a_killed_render_leaves_the_previous_repository_intact(point, tmp_path):
    out = tmp_path / "repo"
    render(CPU_PLAN, out, stand_in_artifacts(CPU_PLAN, tmp_path / "old"))
    before = tree(out)
    gpu = PLANS["hand-gpu-onnxruntime"]
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(gpu.to_dict()))
    artifacts = {k: str(v) for k, v in stand_in_artifacts(gpu, tmp_path / "new").items()}

    done = subprocess.run(
        [sys.executable, "-c", KILLED_RENDER, point, str(plan_file), str(out), json.dumps(artifacts)],
        capture_output=True, text=True,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert len(list(tmp_path.glob(".repo.staging-*"))) == 1  # it died mid-way
    assert tree(out) == before

    assert render(gpu, out, {k: Path(v) for k, v in artifacts.items()}).written  # and the next one works
    check_pipeline_config(parse_config(out / "pipeline" / "config.pbtxt"), gpu)


def test_cli_render_json_and_dry_run(tmp_path):
    from stdr_deploy.cli import cli

    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(CPU_PLAN.to_dict()))
    artifacts = stand_in_artifacts(CPU_PLAN, tmp_path / "artifacts")
    out = tmp_path / "repo"
    args = ["render", "--plan", str(plan_file), "--out", str(out)]
    args += [f"--artifact={name}={path}" for name, path in artifacts.items()]

    dry = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run, nothing written" in dry.stderr
    assert not out.exists()

    done = CliRunner().invoke(cli, [*args, "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["written"] and report["out"] == str(out)
    assert report["configs"]["craft"] == next(f["sha256"] for f in report["files"] if f["path"] == "craft/config.pbtxt")
    check_model_config(parse_config(out / "craft" / "config.pbtxt"), CPU_PLAN.detector, "model.onnx")

    again = CliRunner().invoke(cli, [*args, "--json"])
    assert json.loads(again.stdout)["changed"] is False


def test_cli_needs_engines_for_a_tensorrt_plan(tmp_path):
    from stdr_deploy.cli import cli

    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(PLANS["hand-gpu-tensorrt"].to_dict()))
    result = CliRunner().invoke(cli, ["render", "--plan", str(plan_file), "--out", str(tmp_path / "repo")])
    assert isinstance(result.exception, UserInputError)
    assert "TensorRT engines" in str(result.exception)
    assert "--artifact" in result.exception.hint


def render_cli(plan: Plan, tmp_path: Path) -> Path:
    """`stdr-deploy render --plan` of `plan` (its ONNX files exported, or from the cache): the repository."""
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan.to_dict()))
    out = tmp_path / "repo"
    done = CliRunner().invoke(cli, ["render", "--plan", str(plan_file), "--out", str(out), "--json"])
    assert done.exit_code == 0, done.output
    return out


def test_int8_plan_renders_the_quantized_detector(craft_int8_onnx, crnn_onnx, tmp_path):
    from stdr_deploy.hardware import load_host
    from stdr_deploy.planner import make_plan
    from stdr_deploy.workspace import sha256_file

    plan = make_plan(load_host(HOSTS / "cpu-xeon-2core.json"), recognizer="crnn-en", detector_precision="int8")
    out = render_cli(plan, tmp_path)
    assert sha256_file(out / "craft" / "1" / "model.onnx") == craft_int8_onnx.report["onnx"]["sha256"]
    assert sha256_file(out / "crnn_en" / "1" / "model.onnx") == crnn_onnx.report["onnx"]["sha256"]
    text = (out / "craft" / "config.pbtxt").read_text()
    assert text.splitlines()[0].endswith("onnxruntime_onnx, int8.")
    check_model_config(parse_config(out / "craft" / "config.pbtxt"), plan.detector, "model.onnx")


def test_an_openvino_plan_renders_its_int8_graph_for_the_openvino_backend(craft_int8_openvino_onnx, crnn_onnx, tmp_path):
    from stdr_deploy.hardware import load_host
    from stdr_deploy.planner import make_plan
    from stdr_deploy.workspace import sha256_file

    host = load_host(HOSTS / "cpu-xeon-2core.json")
    host = dataclasses.replace(host, runtimes=dataclasses.replace(host.runtimes, openvino_version="2026.4.1"))
    plan = make_plan(host, recognizer="crnn-en")
    assert plan.detector.backend == "openvino"
    out = render_cli(plan, tmp_path)
    assert sha256_file(out / "craft" / "1" / "model.onnx") == craft_int8_openvino_onnx.report["onnx"]["sha256"]
    assert (out / "craft" / "config.pbtxt").read_text().splitlines()[0].endswith("openvino, int8 (float layers bf16).")
    check_model_config(parse_config(out / "craft" / "config.pbtxt"), plan.detector, "model.onnx")
    check_model_config(parse_config(out / "crnn_en" / "config.pbtxt"), plan.recognizer, "model.onnx")
    # the AMX Xeon has bf16 units: CRAFT's float layers in bf16, said in OpenVINO's own property
    assert plan.detector.float_precision == "bf16"
    assert 'key: "INFERENCE_PRECISION_HINT" value: { string_value: "bf16" }' in (out / "craft" / "config.pbtxt").read_text()
    for wrong, said in (({"precision": "fp16"}, "is fp16 on openvino KIND_CPU"),  # CPU instances only
                        ({"instance_kind": "KIND_GPU", "gpus": (0,)}, "is int8 on openvino KIND_GPU")):
        bad = dataclasses.replace(plan, detector=dataclasses.replace(plan.detector, **wrong))
        with pytest.raises(UserInputError, match=said):
            render(bad, tmp_path / "bad", stand_in_artifacts(bad, tmp_path / "artifacts"))
    on_ort = dataclasses.replace(plan, recognizer=dataclasses.replace(plan.recognizer, float_precision="bf16"))
    with pytest.raises(UserInputError, match="float_precision bf16 on onnxruntime"):  # ONNX Runtime has no such knob
        render(on_ort, tmp_path / "bad-ort", stand_in_artifacts(on_ort, tmp_path / "artifacts"))


def test_int8_outside_the_cpu_detector_is_refused(tmp_path):
    gpu = PLANS["hand-gpu-onnxruntime"]
    for plan in (
        dataclasses.replace(gpu, detector=dataclasses.replace(gpu.detector, precision="int8")),
        dataclasses.replace(CPU_PLAN, recognizer=dataclasses.replace(CPU_PLAN.recognizer, precision="int8")),
    ):
        with pytest.raises(UserInputError, match="int8"):
            render(plan, tmp_path / "repo", stand_in_artifacts(plan, tmp_path / "artifacts"))


@pytest.mark.parametrize(
    ("field", "value"),
    [("canvas_size", -5), ("canvas_size", 10**9), ("max_image_pixels", 0), ("recognizer_batch", 2.5),
     ("text_threshold", 7.0), ("instance_count", 0)],
)
def test_render_refuses_a_plan_with_an_impossible_pipeline_value(field, value, tmp_path):
    """Issue 23: out-of-range values are refused when the plan is read, naming the field; nothing is written."""
    data = CPU_PLAN.to_dict()
    data["pipeline"][field] = value
    out = tmp_path / "repo"
    result = CliRunner().invoke(cli, ["render", "--plan", str(_plan_file_dict(data, tmp_path)), "--out", str(out)])
    assert isinstance(result.exception, UserInputError) and result.exception.exit_code == 2
    assert f"pipeline.{field}" in str(result.exception) and str(value) in str(result.exception)
    assert not out.exists()


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [(("detector", "profile", "input", "max", 2), -32, "detector.profile.input.max[2]"),
     (("detector", "profile", "input", "max", 3), 10**9, "detector.profile.input.max[3]"),
     (("recognizer", "max_batch_size"), -1, "recognizer.max_batch_size"),
     (("detector", "precision"), "fp8", "detector.precision"),
     (("detector", "float_precision"), "fp16", "detector.float_precision")],
)
def test_render_refuses_a_plan_with_an_impossible_model_value(path, value, named, tmp_path):
    data = CPU_PLAN.to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    result = CliRunner().invoke(cli, ["render", "--plan", str(_plan_file_dict(data, tmp_path)), "--out", str(tmp_path / "r")])
    assert isinstance(result.exception, UserInputError) and named in str(result.exception)


def test_render_of_a_negative_canvas_exits_2(tmp_path):
    data = CPU_PLAN.to_dict()
    data["pipeline"]["canvas_size"] = -5
    done = subprocess.run([sys.executable, "-c", "from stdr_deploy.cli import main; main()", "render", "--plan",
                           str(_plan_file_dict(data, tmp_path)), "--out", str(tmp_path / "repo")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "plan field pipeline.canvas_size is -5" in done.stderr
    assert not (tmp_path / "repo").exists()


def _plan_file_dict(data: dict, folder: Path) -> Path:
    path = folder / "plan.json"
    path.write_text(json.dumps(data))
    return path
