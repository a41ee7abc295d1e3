"""Render the Triton model repository a plan describes: configs, model files and the orchestrator.

Two halves. The pure half turns a `Plan` into plain dicts and renders them with the Jinja
templates of `stdr_deploy.templates` (`StrictUndefined`: a missing key is an error, never an
empty string), giving the full file list of the repository. The I/O half compares that list
with what `out` holds, and writes the whole tree into a staging folder beside `out` that is
swapped in at the end, so an interrupted render leaves the previous repository as it was.

Layout (Triton's): `<model>/config.pbtxt` and `<model>/1/<model file>` for the detector and the
recognizer; `pipeline/1/model.py` plus `pipeline/1/stdr_ocr/`, a copy of `stdr_deploy.ocr`, so
the orchestrator runs the very functions of the in-process pipeline without needing
stdr-deploy installed in the server's Python, and `pipeline/1/stub_malloc.py` (its malloc
settings, shared with our backends).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import importlib.resources
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jinja2

from stdr_deploy.errors import UserInputError
from stdr_deploy.models import get_spec
from stdr_deploy.models.spec import TensorSpec
from stdr_deploy.ocr.recognizers import MODEL_CHARSET
from stdr_deploy.plan_schema import ModelPlan, Plan
from stdr_deploy.server import NGC_TRITON_IMAGE, STUB_MALLOC, WARM_SHAPES
from stdr_deploy.workspace import replace_dir_atomic, sha256_file, staging_dir

PIPELINE_NAME = "pipeline"
OCR_PACKAGE = "stdr_ocr"  # the name `stdr_deploy.ocr` gets inside pipeline/1/
VERSION = "1"
# What the pipeline model imports beyond NGC's Triton container (pinned as the project pins them:
# the Python backend stub needs NumPy 1, and OpenCV 4.12+ needs NumPy 2)
PIPELINE_REQUIREMENTS = ("numpy<2", "opencv-python-headless<4.12", "pillow")
CHARSET_FILE = "recognizer_charset.txt"  # in pipeline/1/, for recognizers whose charset is in their model file

DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8"}  # model spec dtype -> Triton data_type

# cuDNN convolution algorithm search, as Triton's onnxruntime backend numbers it.
CUDNN_CONV_ALGO_SEARCH = {"EXHAUSTIVE": 0, "HEURISTIC": 1, "DEFAULT": 2}
# Which CUDA EP settings GPU configs get: measured side by side on the GPU by
# benchmarks/gpu_fast_path.py, which writes this file with its numbers and provenance.
CUDA_EP_SETTINGS = "cuda-ep-settings.json"
# kSameAsRequested: the CUDA arena grows by what a run asks for, not to the next power of two
# (which doubled GPU memory against the plan's estimate on the H100: 61 GB seen, 31.5 GB planned)
ARENA_EXTEND_SAME_AS_REQUESTED = 1
ARENA_SHRINKAGE = "memory.enable_memory_arena_shrinkage"  # Triton's ORT backend parameter, a run option
INITIALIZERS_OUTSIDE_ARENA = "session.use_device_allocator_for_initializers"  # an ORT session option


@dataclass(frozen=True)
class Platform:
    """How Triton serves one ModelPlan.backend: its platform (or backend) name and model file names."""

    name: str
    default_filename: str
    suffixes: tuple[str, ...]
    hint: str
    key: str = "platform"  # the config field naming it: Triton's OpenVINO backend has no platform string


PLATFORMS = {
    "onnxruntime": Platform(
        "onnxruntime_onnx",
        "model.onnx",
        (".onnx",),
        "pass the exported model with --artifact NAME=FILE.onnx (or let render export it)",
    ),
    "tensorrt": Platform(
        "tensorrt_plan",
        "model.plan",
        (".plan", ".engine"),
        "build the TensorRT engines first (`stdr-deploy build`) and pass them with --artifact NAME=FILE.plan",
    ),
    "openvino": Platform(
        "openvino",
        "model.xml",
        (".onnx",),
        "pass the int8-openvino export with --artifact NAME=FILE.onnx (or let render export it)",
        key="backend",
    ),
}
# OpenVINO's compile properties for a CPU instance (Triton's OpenVINO backend passes parameters of
# these names to the plugin): one stream with the latency hint runs one request at a time on the
# instance's threads, as ONNX Runtime's instances do. Per model beside them: its threads, and
# INFERENCE_PRECISION_HINT from `ModelPlan.float_precision` (always said: where the CPU has 16-bit
# float units OpenVINO's own default is f16 or bf16; bf16 cost the ppocr recognizer words).
OPENVINO_PROPERTIES = {"NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}


# Statuses of a file in a RenderResult. KEPT: in a model folder stdr-deploy did not render
# (e.g. one the user added), left in place unless `prune` is asked for.
ADDED, CHANGED, UNCHANGED, REMOVED, KEPT = "added", "changed", "unchanged", "removed", "kept"
# Every config.pbtxt the templates write says so in its header; a model folder whose config
# lacks it was not made by stdr-deploy.
RENDERED_MARKER = "Rendered by stdr-deploy"


@dataclass(frozen=True)
class FileChange:
    path: str  # relative to the repository root, "/"-separated
    status: str  # ADDED | CHANGED | UNCHANGED | REMOVED | KEPT
    sha256: str | None  # of the rendered file; None when removed or kept


@dataclass(frozen=True)
class RenderResult:
    out: Path
    dry_run: bool
    files: tuple[FileChange, ...]
    config_sha256: Mapping[str, str]  # model name -> sha256 of its config.pbtxt

    @property
    def changed(self) -> bool:
        return any(f.status not in (UNCHANGED, KEPT) for f in self.files)

    @property
    def written(self) -> bool:
        """Whether this call replaced the repository (a dry run or a no-op never does)."""
        return self.changed and not self.dry_run

    def paths(self, status: str) -> list[str]:
        return [f.path for f in self.files if f.status == status]

    @property
    def kept_models(self) -> list[str]:
        """Model folders left in place because stdr-deploy did not render them."""
        return sorted({path.split("/")[0] for path in self.paths(KEPT)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "dry_run": self.dry_run,
            "changed": self.changed,
            "written": self.written,
            "configs": dict(self.config_sha256),
            "kept_models": self.kept_models,
            "files": [dataclasses.asdict(f) for f in self.files],
        }


# --- pure half: plan -> plain dicts -> texts ---------------------------------------------


def triton_dims(tensor: TensorSpec) -> list[int]:
    """Triton dims leave out the batch axis (max_batch_size > 0) and write dynamic axes as -1."""
    return [d if isinstance(d, int) else -1 for d in tensor.dims[1:]]


def _tensor(tensor: TensorSpec) -> dict[str, Any]:
    return {"name": tensor.name, "data_type": DATA_TYPES[tensor.dtype], "dims": triton_dims(tensor)}


def platform_of(model: ModelPlan) -> Platform:
    try:
        return PLATFORMS[model.backend]
    except KeyError:
        raise UserInputError(
            f"plan: model {model.triton_name!r} has backend {model.backend!r}",
            hint=f"backends: {', '.join(PLATFORMS)}",
        ) from None


def model_context(model: ModelPlan, filename: str) -> dict[str, Any]:
    """The plain dict the detector/recognizer template renders; `filename` is the file in 1/."""
    spec = get_spec(model.family)
    if spec.triton_name != model.triton_name:
        raise UserInputError(
            f"plan: family {model.family!r} is served as {spec.triton_name!r}, not {model.triton_name!r}",
            hint="re-run `stdr-deploy plan` instead of editing model names",
        )
    platform = platform_of(model)
    if model.precision == "int8" and not (
        spec.role == "detector" and model.backend in ("onnxruntime", "openvino") and model.instance_kind == "KIND_CPU"
    ):
        raise UserInputError(
            f"plan: {model.triton_name} is int8 on {model.backend} {model.instance_kind}",
            hint="int8 is for the detector on the CPU (ONNX Runtime or OpenVINO) only: re-run `stdr-deploy plan`",
        )
    if model.backend == "openvino" and (model.instance_kind != "KIND_CPU" or model.precision == "fp16"):
        raise UserInputError(
            f"plan: {model.triton_name} is {model.precision} on openvino {model.instance_kind}",
            hint="OpenVINO serves CPU instances (int8 detector, fp32 models) only: re-run `stdr-deploy plan`",
        )
    if model.float_precision != "f32" and model.backend != "openvino":
        raise UserInputError(
            f"plan: {model.triton_name} has float_precision {model.float_precision} on {model.backend}",
            hint="float_precision is OpenVINO's (its INFERENCE_PRECISION_HINT): set it to f32, or re-run `stdr-deploy plan`",
        )
    if model.precision == "fp16" and model.instance_kind != "KIND_GPU":
        raise UserInputError(
            f"plan: {model.triton_name} is fp16 on {model.backend} {model.instance_kind}",
            hint="fp16 is for GPU instances (ONNX Runtime CUDA, TensorRT); ONNX Runtime runs fp16 slowly "
            "on CPUs: re-run `stdr-deploy plan`",
        )
    inputs = [_tensor(t) for t in spec.inputs]
    fixed_shape = all(isinstance(d, int) for t in spec.inputs for d in t.dims[1:])
    warmup_batches = sorted({1, model.max_batch_size})
    return {
        "name": model.triton_name,
        "role": spec.role,  # picks the template: detector or recognizer
        "family": model.family,
        "precision": model.precision,
        "platform": platform.name,
        "platform_key": platform.key,
        "filename": filename,
        "default_model_filename": None if filename == platform.default_filename else filename,
        "max_batch_size": model.max_batch_size,
        "inputs": inputs,
        "outputs": [_tensor(t) for t in spec.outputs],
        "instance_group": {
            "count": model.instance_count,
            "kind": model.instance_kind,
            "gpus": list(model.gpus) if model.instance_kind == "KIND_GPU" else [],
        },
        "dynamic_batching": dataclasses.asdict(model.dynamic_batching) if model.dynamic_batching else None,
        # the plan's max profile past the batch axis, which our backends enforce (stdr_batching.py)
        "max_input_dims": {name: list(shape.max[1:]) for name, shape in model.profile.items()},
        "onnxruntime": _onnxruntime_settings(model) if model.backend == "onnxruntime" else None,
        "openvino": {"INFERENCE_NUM_THREADS": model.intra_op_threads, **OPENVINO_PROPERTIES,
                     "INFERENCE_PRECISION_HINT": model.float_precision}
        if model.backend == "openvino" else None,
        "warmup": [{"name": f"batch_{b}", "batch_size": b, "inputs": inputs} for b in warmup_batches]
        if fixed_shape
        else [],
    }


def _onnxruntime_settings(model: ModelPlan) -> dict[str, Any]:
    """Top-level `parameters` and CUDA accelerator options, named as Triton's ORT backend reads them."""
    parameters: dict[str, Any] = {
        "intra_op_thread_count": model.intra_op_threads,
        "inter_op_thread_count": model.inter_op_threads,
    }
    if not model.memory_arena:
        parameters["enable_mem_arena"] = 0
        parameters["enable_mem_pattern"] = 0
    else:
        # the CPU arena gives chunks back after each run instead of keeping an outlier's peak
        # (benchmarks/results/ort-arena-shrinkage); the GPU arena is bounded by max_input_dims
        parameters[ARENA_SHRINKAGE] = "cpu:0"
    cuda = None
    if model.instance_kind == "KIND_GPU":
        measured = cuda_ep_settings()
        parameters["cudnn_conv_algo_search"] = CUDNN_CONV_ALGO_SEARCH[measured["cudnn_conv_algo_search"]]
        parameters["arena_extend_strategy"] = ARENA_EXTEND_SAME_AS_REQUESTED
        cuda = {"cudnn_conv_use_max_workspace": 1}
        if measured["prefer_nhwc"].get(model.precision):
            cuda["prefer_nhwc"] = 1
    if model.shape_sessions:
        parameters["sessions_per_shape"] = model.shape_sessions
        # each session's weights outside the shared arena. Measured on the H200, this made no
        # difference (craft 6910 against 6930 MiB, h200-fp16-served/warmed-at-load/
        # initializers-in-arena/); it stays because it is the configuration measured and served
        parameters[INITIALIZERS_OUTSIDE_ARENA] = 1
    if model.fixed_shapes:
        parameters[WARM_SHAPES] = " ".join("x".join(map(str, shape)) for shape in model.fixed_shapes)
    return {"parameters": parameters, "cuda": cuda}


def cuda_ep_settings() -> dict[str, Any]:
    """The measured CUDA EP choices (see `CUDA_EP_SETTINGS`)."""
    folder = importlib.resources.files("stdr_deploy.memory_data")
    return json.loads(folder.joinpath(CUDA_EP_SETTINGS).read_text())


def pipeline_context(plan: Plan) -> dict[str, Any]:
    """The orchestrator's config: its instances, the models it calls and every processing setting."""
    pipe = plan.pipeline
    if pipe.recognizer_batch > plan.recognizer.max_batch_size:
        raise UserInputError(
            f"plan: pipeline.recognizer_batch {pipe.recognizer_batch} exceeds the recognizer's "
            f"max_batch_size {plan.recognizer.max_batch_size}",
            hint="re-run `stdr-deploy plan`, or lower recognizer_batch",
        )
    settings = {
        f.name: getattr(pipe, f.name)
        for f in dataclasses.fields(pipe)
        if f.name not in ("instance_count", "instance_kind")
    }
    return {
        "name": PIPELINE_NAME,
        "package": OCR_PACKAGE,
        "detector_model": plan.detector.triton_name,
        "recognizer_model": plan.recognizer.triton_name,
        "instance_group": {"count": pipe.instance_count, "kind": pipe.instance_kind},
        "parameters": {
            "detector_model": plan.detector.triton_name,
            # families beyond the default ones named only when used (configs of CRAFT plans unchanged)
            **({"detector_family": plan.detector.family} if plan.detector.family != "craft" else {}),
            "recognizer_model": plan.recognizer.triton_name,
            "recognizer_family": plan.recognizer.family,
            **({"recognizer_charset_file": CHARSET_FILE} if plan.recognizer.family in MODEL_CHARSET else {}),
            **settings,
        },
    }


def template_environment() -> jinja2.Environment:
    folder = importlib.resources.files("stdr_deploy.templates")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def tidy(text: str) -> str:
    """Macros leave runs of blank lines behind; keep at most one, and end with one newline."""
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text).strip() + "\n"


def render_texts(plan: Plan, filenames: Mapping[str, str]) -> dict[str, str]:
    """Every generated text file of the repository, by relative path (no model files, no package).

    `filenames` maps each model's Triton name to the name of its model file in `1/`.
    """
    env = template_environment()
    models = [model_context(m, filenames[m.triton_name]) for m in plan.models()]
    pipeline = pipeline_context(plan)
    texts = {
        f"{ctx['name']}/config.pbtxt": tidy(env.get_template(f"{ctx['role']}.pbtxt.j2").render(model=ctx))
        for ctx in models
    }
    texts[f"{PIPELINE_NAME}/config.pbtxt"] = tidy(env.get_template("pipeline.pbtxt.j2").render(pipeline=pipeline))
    summary = {"variant": plan.variant, "device": plan.device}
    texts["README.md"] = tidy(
        env.get_template("README.md.j2").render(
            plan=summary, models=models, pipeline=pipeline, image=NGC_TRITON_IMAGE, pip_install=pip_install_words()
        )
    )
    return texts


def pip_install_words() -> str:
    """The shell words that install PIPELINE_REQUIREMENTS in a container's Python."""
    return "python3 -m pip install --no-cache-dir " + " ".join(f"'{r}'" for r in PIPELINE_REQUIREMENTS)


def model_filename(model: ModelPlan, artifact: Path | None) -> str:
    """The name `artifact` keeps in `<model>/1/`, after checking it suits the model's platform."""
    platform = platform_of(model)
    kind = "a TensorRT engine" if model.backend == "tensorrt" else "an ONNX model"
    if artifact is None:
        raise UserInputError(
            f"no model file for {model.triton_name!r}: the plan serves it from {kind}", hint=platform.hint
        )
    if not artifact.is_file():
        raise UserInputError(f"model file for {model.triton_name!r} not found: {artifact}", hint=platform.hint)
    if artifact.suffix not in platform.suffixes:
        raise UserInputError(
            f"{model.triton_name!r} is served by {platform.name} and needs {kind} "
            f"({' or '.join(platform.suffixes)}), got {artifact.name}",
            hint=platform.hint,
        )
    return artifact.name


def repository_files(plan: Plan, artifacts: Mapping[str, Path]) -> dict[str, bytes | Path]:
    """Relative path -> content (bytes) or the file to place there (Path), for the whole tree."""
    names = {m.triton_name for m in plan.models()}
    unknown = sorted(set(artifacts) - names)
    if unknown:
        raise UserInputError(
            f"model file given for {', '.join(unknown)}, which the plan does not serve",
            hint=f"models of this plan: {', '.join(sorted(names))}",
        )
    paths = {m.triton_name: Path(artifacts[m.triton_name]) if m.triton_name in artifacts else None
             for m in plan.models()}
    filenames = {m.triton_name: model_filename(m, paths[m.triton_name]) for m in plan.models()}
    files: dict[str, bytes | Path] = {rel: text.encode() for rel, text in render_texts(plan, filenames).items()}
    for name, filename in filenames.items():
        files[f"{name}/{VERSION}/{filename}"] = paths[name]
    if plan.recognizer.family in MODEL_CHARSET:
        files[f"{PIPELINE_NAME}/{VERSION}/{CHARSET_FILE}"] = _model_charset(plan.recognizer, paths[plan.recognizer.triton_name])
    templates = importlib.resources.files("stdr_deploy.templates")
    files[f"{PIPELINE_NAME}/{VERSION}/model.py"] = templates.joinpath("pipeline_model.py").read_bytes()
    files[f"{PIPELINE_NAME}/{VERSION}/{STUB_MALLOC.name}"] = STUB_MALLOC.read_bytes()
    for rel, data in _package_files(importlib.resources.files("stdr_deploy.ocr")):
        files[f"{PIPELINE_NAME}/{VERSION}/{OCR_PACKAGE}/{rel}"] = data
    return dict(sorted(files.items()))


def _model_charset(model: ModelPlan, artifact: Path | None) -> bytes:
    """The charset a recognizer keeps in its ONNX file, for the orchestrator (a TensorRT plan has
    no metadata: then it is read from the family's registry file the engine was built from)."""
    from stdr_deploy.models.ppocr import charset_from_onnx
    from stdr_deploy.weights import resolve_weights

    source = artifact if artifact is not None and artifact.suffix == ".onnx" else resolve_weights(
        get_spec(model.family).default_weights, progress=False
    )
    return charset_from_onnx(source).encode("utf-8")


def _package_files(folder: Any, prefix: str = "") -> list[tuple[str, bytes]]:
    """Every file of a package folder except bytecode caches, as (relative path, bytes)."""
    found = []
    for entry in folder.iterdir():
        if entry.name == "__pycache__" or entry.name.endswith(".pyc"):
            continue
        if entry.is_dir():
            found += _package_files(entry, f"{prefix}{entry.name}/")
        else:
            found.append((prefix + entry.name, entry.read_bytes()))
    return found


# --- I/O half: compare, stage, swap ----------------------------------------------------


def render(
    plan: Plan,
    out: str | os.PathLike,
    artifacts: Mapping[str, Path],
    *,
    dry_run: bool = False,
    prune: bool = False,
) -> RenderResult:
    """Make `out` the repository `plan` describes, serving the model files in `artifacts`.

    `artifacts` maps Triton model names to model files (`.onnx`, or `.plan`/`.engine` for
    TensorRT); each is hard-linked into `<name>/1/` (copied across file systems) and keeps its
    file name, which the config names in `default_model_filename` when it is not the default.
    Model folders that stdr-deploy did not render (their config.pbtxt lacks our header) are
    kept, unless `prune`. Nothing is written when `dry_run` is set or when `out` already holds
    exactly this tree.
    """
    out = Path(out).absolute()
    files = repository_files(plan, artifacts)
    check_replaceable(out)
    existing = _existing_files(out)
    keep = set() if prune else foreign_models(out, {rel.split("/")[0] for rel in files})
    changes = [_change(rel, source, existing.get(rel)) for rel, source in files.items()]
    changes += [
        FileChange(rel, KEPT if rel.split("/")[0] in keep else REMOVED, None)
        for rel in sorted(set(existing) - set(files))
    ]
    result = RenderResult(
        out=out,
        dry_run=dry_run,
        files=tuple(changes),
        config_sha256={
            f.path.split("/")[0]: f.sha256 for f in changes if f.path.endswith("/config.pbtxt") and f.sha256
        },
    )
    if result.written:
        write_tree(files, out, sorted(keep))
    return result


def foreign_models(out: Path, rendered: set[str]) -> set[str]:
    """Model folders in `out` that this render does not write and whose config lacks our header."""
    if not out.is_dir():
        return set()
    found = set()
    for config in out.glob("*/config.pbtxt"):
        name = config.parent.name
        if name not in rendered and RENDERED_MARKER not in config.read_text(errors="replace"):
            found.add(name)
    return found


def check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that is not a model repository (`--out .` would wipe a project).

    A model repository holds only model folders (each with a config.pbtxt) and a README.md.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise UserInputError(f"{out} is a file, not a model repository folder", hint="pass another --out")
    foreign = sorted(
        entry.name
        for entry in out.iterdir()
        if not (entry.name == "README.md" or (entry.is_dir() and (entry / "config.pbtxt").is_file()))
    )
    if foreign:
        raise UserInputError(
            f"refusing to replace {out}: it is not a model repository (it holds {', '.join(foreign[:3])})",
            hint="render into a new or empty folder, or delete that one yourself",
        )


def _existing_files(out: Path) -> dict[str, Path]:
    """Files under `out` by relative path; bytecode caches the Python backend writes don't count."""
    if not out.is_dir():
        return {}
    found = {}
    for root, dirs, names in os.walk(out):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            path = Path(root, name)
            found[path.relative_to(out).as_posix()] = path
    return found


def _sha256(source: bytes | Path) -> str:
    return hashlib.sha256(source).hexdigest() if isinstance(source, bytes) else sha256_file(source)


def _change(rel: str, source: bytes | Path, current: Path | None) -> FileChange:
    digest = _sha256(source)
    if current is None:
        return FileChange(rel, ADDED, digest)
    if isinstance(source, Path) and current.exists() and os.path.samefile(source, current):
        return FileChange(rel, UNCHANGED, digest)
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    same = current.stat().st_size == size and sha256_file(current) == digest
    return FileChange(rel, UNCHANGED if same else CHANGED, digest)


def write_tree(files: Mapping[str, bytes | Path], out: Path, keep: list[str] = ()) -> None:
    """Write everything into `.<out>.staging-<pid>-XXXX` beside `out`, then swap it in.

    The model folders named in `keep` are carried over from `out` as they are.
    """
    staging = staging_dir(out)
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a server in a container must read it
        for name in keep:
            shutil.copytree(out / name, staging / name, symlinks=True, copy_function=_link_or_copy)
        for rel, source in files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                target.write_bytes(source)
            else:
                _link_or_copy(source, target)
        replace_dir_atomic(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    """A hard link costs no space or time; across file systems (or where links fail), copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
