"""Host facts (+ optional profile) -> deployment plan. Pure: no I/O, every decision explained.

`make_plan` picks the variant and device, sizes the detector canvas and TensorRT profiles,
the recognizer batch, workspaces, instances and threads, then checks a memory budget model
against the device's free memory and shrinks the plan in a fixed order until it fits. Each
choice is written to `Plan.reasons` in plain words, so `stdr-deploy plan` can show why.

Memory model (bytes, per model instance; see the constants below for where numbers come from):
  GPU, TensorRT:     CUDA context + weights + activations at the max shape + builder workspace
  GPU, ONNX Runtime: CUDA context + weights + 2 x activations at the max shape + cuDNN/cuBLAS allowance
  CPU, ONNX Runtime: process + weights x 2.5 (initializers and pre-packed copies) + activations
plus, on CPU, the server process and the pipeline instances (which hold the decoded image).
The budget is the free memory (GPU: the smallest free memory of the GPUs used; CPU: the
usable host memory) less a 10 % safety margin. When the estimate exceeds it, the plan shrinks
in this order, stopping at the first configuration that fits: detector instances down to 1,
recognizer instances down to 1, recognizer max batch halved down to 1, detector canvas in
256 px steps down to 640. A GPU plan that still does not fit falls back to the CPU (unless a
variant was forced); a CPU plan that does not fit raises HostUnsupported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

from stdr_deploy.errors import HostUnsupported, UserInputError
from stdr_deploy.hardware import GpuFacts, HostFacts
from stdr_deploy.plan_schema import (
    DETECTOR_PRECISIONS,
    VARIANTS,
    DynamicBatching,
    ModelPlan,
    PipelinePlan,
    Plan,
    ShapeProfile,
)
from stdr_deploy.profiles import Profile, ProfileSettings

MIB = 1 << 20


@dataclass(frozen=True)
class ModelFacts:
    """What the planner must know of a model family (kept here so planning needs no torch).

    `params` counts every float value of the weights (as `stdr_deploy.models` specs do).
    `activation_bytes` is the fp32 activation memory per unit of input: per input pixel for
    the detector and CRNN (whose width varies), per crop for PARSeq (fixed 3x32x128 input).
    Measured as the peak RSS growth of one ONNX Runtime 1.32 CPU run (arena on, one thread;
    VmHWM after the run minus VmRSS before it, with the high-water mark reset), on networks
    with the families' exact layer shapes and random weights, taking the largest value per
    unit seen: CRAFT 513 B/px at 1024x1024, 733 at 1536x1536, 794 at 2560x2048 (the arena
    grows in powers of two; without the arena it is exactly 512 B/px at every size); CRNN
    228-238 B/px at batch 16-64, width 256-1024; PARSeq 2.64 MB and PARSeq-tiny 1.39 MB per
    crop at batch 64. TensorRT reuses buffers at least as well, so the same numbers, scaled
    by the bytes of the precision, bound it too.
    """

    family: str
    triton_name: str
    role: str
    input_name: str
    params: int
    activation_bytes: float


MODELS = {
    "craft": ModelFacts("craft", "craft", "detector", "input", 20_780_770, 800.0),
    "crnn-en": ModelFacts("crnn-en", "crnn_en", "recognizer", "input", 3_782_369, 240.0),
    "parseq": ModelFacts("parseq", "parseq", "recognizer", "input", 23_832_671, 2.75 * MIB),
    "parseq-tiny": ModelFacts("parseq-tiny", "parseq", "recognizer", "input", 6_018_143, 1.45 * MIB),
    # PP-OCRv4 (ONNX-native), measured the same way on the official files: rec 339-354 B per
    # input pixel (HxW, batch 16-8, width 320-2048), det 152-160 B/px at 1024x1024 and 1600x2016
    "ppocr": ModelFacts("ppocr", "ppocr_rec", "recognizer", "input", 2_690_352, 360.0),
    "ppocr-det": ModelFacts("ppocr-det", "ppocr_det", "detector", "input", 1_171_841, 160.0),
}
RECOGNIZERS = ("crnn-en", "parseq", "parseq-tiny", "ppocr")

# Shapes. Detector inputs are padded to multiples of 32 (EasyOCR's resize), so the largest
# input of a canvas C is round_up(C, 32) on the long side; the smallest is 32 x 32.
SIZE_MULTIPLE = 32
DETECTOR_MIN_SIDE = 32
DEFAULT_CANVAS = 2560  # EasyOCR's canvas_size: the accuracy baseline uses it
DEFAULT_DETECTOR_OPT_SIDE = 736  # the blog's images average ~720 px: padded, 736
MIN_CANVAS = 640
CANVAS_STEP = 256
# CRNN takes [N, 1, 64, W]; W = ceil(w/h) * 64 per crop (EasyOCR). 1024 covers words up to
# 16:1; the pipeline resizes wider crops down to it.
CRNN_HEIGHT = 64
CRNN_MIN_WIDTH = 64
CRNN_OPT_WIDTH = 256
CRNN_MAX_WIDTH = 1024
PARSEQ_SHAPE = (3, 32, 128)
PPOCR_HEIGHT = 48
PPOCR_MIN_WIDTH = 320  # RapidOCR's narrowest recognizer input
PPOCR_OPT_WIDTH = 640
PPOCR_MAX_WIDTH = 2048  # ocr.ppocr.REC_MAX_WIDTH: text lines reach 40:1

# Memory constants (bytes).
SAFETY_MARGIN = 0.10
CUDA_CONTEXT_BYTES = 512 * MIB  # per process: each model instance is its own process on the
# embedded tritonserver (Python-backend stubs), so every instance is counted with one
ORT_CUDA_EXTRA_BYTES = 1024 * MIB  # cuDNN/cuBLAS handles and conv workspace (max workspace on)
# The CUDA EP holds about twice the activation memory the CPU measurements give: served on the
# H100 (4 CRAFT + 2 CRNN instances, traffic up to 2560x2048) nvidia-smi peaked at 39.8 GB where
# the CPU-derived estimate said 31.5 GB, i.e. ~1650 B/px per CRAFT instance against 800.
ORT_CUDA_ACTIVATION_FACTOR = 2.0
ORT_CPU_PROCESS_BYTES = 128 * MIB  # Python + onnxruntime, measured 90-110 MB
ORT_CPU_WEIGHT_COPIES = 2.5  # initializers + pre-packed conv weights: measured 2.2-2.6x
SERVER_BYTES = 256 * MIB  # tritonserver itself
PIPELINE_PROCESS_BYTES = 192 * MIB  # Python + numpy + OpenCV stub of the orchestrator
PIPELINE_BYTES_PER_IMAGE_PIXEL = 3  # the decoded uint8 RGB request
PIPELINE_BYTES_PER_CANVAS_PIXEL = 16  # float32 detector input (12) + score maps (quarter size)

# Defaults when no profile says otherwise.
GPU_DEFAULTS = ProfileSettings(
    canvas_size=DEFAULT_CANVAS,
    detector_opt_side=DEFAULT_DETECTOR_OPT_SIDE,
    detector_precision="fp32",
    recognizer_precision="fp16",
    recognizer_batch=(1, 16, 64),
    detector_workspace_mib=2048,
    recognizer_workspace_mib=1024,
    detector_instances=2,
    recognizer_instances=2,
)
CPU_DEFAULTS = ProfileSettings(
    canvas_size=DEFAULT_CANVAS,
    detector_opt_side=DEFAULT_DETECTOR_OPT_SIDE,
    detector_precision="fp32",
    recognizer_precision="fp32",
    recognizer_batch=(1, 4, 16),
    detector_workspace_mib=0,
    recognizer_workspace_mib=0,
    detector_instances=None,  # from the core count, see _cpu_instances
    recognizer_instances=None,
)
CPU_THREADS_PER_INSTANCE = 8  # ORT's conv kernels scale to about this; more cores -> more instances
MAX_CPU_INSTANCES = 8
GPU_QUEUE_DELAY_US = 100
MAX_IMAGE_PIXELS = 50_000_000
THRESHOLDS = {"text_threshold": 0.7, "link_threshold": 0.4, "low_text": 0.4}  # EasyOCR's defaults
MAG_RATIO = 1.0


@dataclass(frozen=True)
class Target:
    """Where the models run: variant, device and the GPUs used (all alike)."""

    variant: str
    device: str
    gpus: tuple[GpuFacts, ...] = ()

    @property
    def backend(self) -> str:
        return "tensorrt" if self.variant == "tensorrt_plan" else "onnxruntime"


@dataclass(frozen=True)
class Knobs:
    """The settings the memory fit may shrink, in the order it shrinks them."""

    detector_instances: int
    recognizer_instances: int
    recognizer_batch: int
    canvas: int


def round_up(value: int, multiple: int = SIZE_MULTIPLE) -> int:
    return -(-value // multiple) * multiple


def detector_max_side(canvas: int) -> int:
    """Largest padded side a canvas can produce: the detector profile's max must cover it."""
    return round_up(canvas)


def tensorrt_min_compute_capability(version: str) -> tuple[int, int]:
    """TensorRT 10.5 removed Volta (7.0); earlier 10.x releases still build for it."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return (7, 0) if (major, minor) < (10, 5) else (7, 5)


# --- variant and device -------------------------------------------------------------------


def usable_gpus(host: HostFacts, reasons: list[str]) -> tuple[GpuFacts, ...]:
    """GPUs a plan may use: not in MIG mode, and all the same model and size as the first."""
    gpus = [g for g in host.gpus if not g.mig_enabled]
    if len(gpus) < len(host.gpus):
        reasons.append(
            f"{len(host.gpus) - len(gpus)} GPU(s) in MIG mode skipped: "
            "a MIG slice's memory is not what NVML reports for the card"
        )
    if not gpus:
        return ()
    first = gpus[0]
    alike = tuple(g for g in gpus if g.name == first.name and g.memory_total_mib == first.memory_total_mib)
    if len(alike) < len(gpus):
        reasons.append(
            f"using the {len(alike)} GPU(s) like GPU {first.index} ({first.name}); other models are left out"
        )
    return alike


def choose_target(host: HostFacts, variant: str | None, reasons: list[str]) -> Target:
    if variant not in (None, *VARIANTS):
        raise UserInputError(f"unknown variant {variant!r}", hint=f"variants: {', '.join(VARIANTS)}")
    gpus = usable_gpus(host, reasons)
    runtimes = host.runtimes
    trt_problem = _tensorrt_problem(host, gpus)
    cuda_ep = bool(gpus) and "CUDAExecutionProvider" in runtimes.onnxruntime_providers
    if runtimes.onnxruntime_version is None and trt_problem:
        reasons.append("onnxruntime was not found where the host was probed: install this package's dependencies there")

    if variant == "tensorrt_plan" or (variant is None and not trt_problem):
        if trt_problem:
            raise HostUnsupported(
                f"the tensorrt_plan variant cannot run on this host: {trt_problem}",
                hint="use --variant onnxruntime, or on a GPU host: pip install 'stdr-deploy[tensorrt]'",
            )
        why = "requested" if variant else "TensorRT is importable and the GPU supports it"
        reasons.append(f"variant tensorrt_plan on {_gpu_words(gpus)}: {why}")
        return Target("tensorrt_plan", "gpu", gpus)
    if cuda_ep:
        why = (
            "requested" if variant else f"no TensorRT ({trt_problem}) but ONNX Runtime has the CUDA execution provider"
        )
        reasons.append(f"variant onnxruntime on {_gpu_words(gpus)} (CUDA EP): {why}")
        return Target("onnxruntime", "gpu", gpus)
    if gpus:
        missing = "requested, and ONNX Runtime" if variant else f"no TensorRT ({trt_problem}) and ONNX Runtime"
        reasons.append(
            f"variant onnxruntime on the CPU: {missing} lacks the CUDA execution provider "
            "(install the gpu extra, onnxruntime-gpu, to use the GPU)"
        )
    else:
        reasons.append("variant onnxruntime on the CPU: " + ("requested and " if variant else "") + "no usable GPU")
    return Target("onnxruntime", "cpu")


def _tensorrt_problem(host: HostFacts, gpus: tuple[GpuFacts, ...]) -> str | None:
    version = host.runtimes.tensorrt_version
    if not gpus:
        return "no usable NVIDIA GPU"
    if version is None:
        return "TensorRT is not importable"
    need = tensorrt_min_compute_capability(version)
    if gpus[0].compute_capability < need:
        cc = ".".join(map(str, gpus[0].compute_capability))
        return f"TensorRT {version} needs compute capability {need[0]}.{need[1]}+, the GPU has {cc}"
    return None


def _gpu_words(gpus: tuple[GpuFacts, ...]) -> str:
    indices = ", ".join(str(g.index) for g in gpus)
    return f"{gpus[0].name} (GPU {indices})"


# --- settings: defaults, then the profile ---------------------------------------------------


def merged_settings(target: Target, profile: Profile | None, host: HostFacts, reasons: list[str]) -> ProfileSettings:
    defaults = GPU_DEFAULTS if target.device == "gpu" else CPU_DEFAULTS
    if profile is None:
        reasons.append("no profile matches this host: settings come from its figures alone")
        return defaults
    if profile.device != target.device:
        reasons.append(
            f"profile {profile.name} is for {profile.device} deployments but this plan runs on the "
            f"{target.device}: its settings are not used"
        )
        return defaults
    how = "matches this host" if profile.matches(host) else "was requested (it does not match this host)"
    reasons.append(f"profile {profile.name} {how}: its settings are the starting point")
    given = {
        f.name: v for f in dataclasses.fields(ProfileSettings) if (v := getattr(profile.settings, f.name)) is not None
    }
    return dataclasses.replace(defaults, **given)


def _cpu_instances(cores: int) -> int:
    return max(1, min(MAX_CPU_INSTANCES, cores // CPU_THREADS_PER_INSTANCE))


def initial_knobs(target: Target, settings: ProfileSettings, host: HostFacts) -> Knobs:
    """The preferred settings; CPU instances default to one per 8 usable cores."""
    det, rec = settings.detector_instances, settings.recognizer_instances
    if target.device == "cpu":
        cores = host.usable_cores
        det = min(det or _cpu_instances(cores), cores)
        rec = min(rec or _cpu_instances(cores), cores)
    return Knobs(det, rec, settings.recognizer_batch[2], settings.canvas_size)


# --- memory ---------------------------------------------------------------------------------


def bytes_per_value(precision: str) -> int:
    return 2 if precision == "fp16" else 4


def activation_bytes(model: ModelFacts, max_shape: tuple[int, ...], precision: str) -> int:
    """Activation memory at one full input shape (batch included)."""
    batch = max_shape[0]
    if model.family.startswith("parseq"):
        units = batch
    else:
        units = batch * max_shape[-2] * max_shape[-1]
    return int(units * model.activation_bytes * bytes_per_value(precision) / 4)


def instance_bytes(
    target: Target, model: ModelFacts, max_shape: tuple[int, ...], precision: str, workspace: int
) -> int:
    """Memory one instance of a model takes on its device at the given max shape."""
    weights = model.params * bytes_per_value(precision)
    activations = activation_bytes(model, max_shape, precision)
    if target.device == "cpu":
        return ORT_CPU_PROCESS_BYTES + int(weights * ORT_CPU_WEIGHT_COPIES) + activations
    if target.backend == "tensorrt":
        return CUDA_CONTEXT_BYTES + weights + activations + workspace
    return CUDA_CONTEXT_BYTES + weights + int(activations * ORT_CUDA_ACTIVATION_FACTOR) + ORT_CUDA_EXTRA_BYTES


def pipeline_bytes(canvas: int, max_image_pixels: int) -> int:
    side = detector_max_side(canvas)
    return (
        PIPELINE_PROCESS_BYTES
        + PIPELINE_BYTES_PER_IMAGE_PIXEL * max_image_pixels
        + PIPELINE_BYTES_PER_CANVAS_PIXEL * side * side
    )


def pipeline_instances(target: Target, knobs: Knobs, host: HostFacts) -> int:
    """CPU: one request in flight per detector instance. GPU: two per detector instance and
    GPU (one pre/post-processing while the other waits on the GPU), at most one per core."""
    if target.device == "cpu":
        return knobs.detector_instances
    return max(1, min(host.usable_cores, 2 * knobs.detector_instances * len(target.gpus)))


@dataclass(frozen=True)
class Sizing:
    """Everything the memory fit decides, with the estimate that goes with it."""

    knobs: Knobs
    detector_max: tuple[int, ...]
    recognizer_max: tuple[int, ...]
    detector_bytes: int  # all instances (per GPU on a GPU plan)
    recognizer_bytes: int
    fixed_bytes: int  # server and pipeline on CPU; 0 on GPU

    @property
    def total(self) -> int:
        return self.detector_bytes + self.recognizer_bytes + self.fixed_bytes


def size(target: Target, knobs: Knobs, settings: ProfileSettings, recognizer: ModelFacts, host: HostFacts) -> Sizing:
    side = detector_max_side(knobs.canvas)
    det_max = (1, 3, side, side)
    rec_max = recognizer_max_shape(recognizer, knobs.recognizer_batch)
    det_precision, rec_precision = precisions(target, settings)
    det = instance_bytes(target, MODELS["craft"], det_max, det_precision, settings.detector_workspace_mib * MIB)
    rec = instance_bytes(target, recognizer, rec_max, rec_precision, settings.recognizer_workspace_mib * MIB)
    fixed = 0
    if target.device == "cpu":
        fixed = SERVER_BYTES + pipeline_instances(target, knobs, host) * pipeline_bytes(knobs.canvas, MAX_IMAGE_PIXELS)
    return Sizing(knobs, det_max, rec_max, det * knobs.detector_instances, rec * knobs.recognizer_instances, fixed)


def recognizer_max_shape(recognizer: ModelFacts, batch: int) -> tuple[int, ...]:
    if recognizer.family == "crnn-en":
        return (batch, 1, CRNN_HEIGHT, CRNN_MAX_WIDTH)
    if recognizer.family == "ppocr":
        return (batch, 3, PPOCR_HEIGHT, PPOCR_MAX_WIDTH)
    return (batch, *PARSEQ_SHAPE)


def precisions(target: Target, settings: ProfileSettings) -> tuple[str, str]:
    if target.backend == "onnxruntime":
        return "fp32", "fp32"
    return settings.detector_precision, settings.recognizer_precision


def shrink_steps(knobs: Knobs) -> Iterator[Knobs]:
    """The fixed path the fit walks, from the preferred settings down to the smallest plan."""
    yield knobs
    while knobs.detector_instances > 1:
        knobs = dataclasses.replace(knobs, detector_instances=knobs.detector_instances - 1)
        yield knobs
    while knobs.recognizer_instances > 1:
        knobs = dataclasses.replace(knobs, recognizer_instances=knobs.recognizer_instances - 1)
        yield knobs
    while knobs.recognizer_batch > 1:
        knobs = dataclasses.replace(knobs, recognizer_batch=knobs.recognizer_batch // 2)
        yield knobs
    while knobs.canvas > MIN_CANVAS:
        knobs = dataclasses.replace(knobs, canvas=max(MIN_CANVAS, knobs.canvas - CANVAS_STEP))
        yield knobs


def describe_shrink(before: Knobs, after: Knobs) -> str:
    names = {
        "detector_instances": "detector instances",
        "recognizer_instances": "recognizer instances",
        "recognizer_batch": "recognizer max batch",
        "canvas": "canvas",
    }
    return ", ".join(
        f"{words} {getattr(before, key)} -> {getattr(after, key)}"
        for key, words in names.items()
        if getattr(before, key) != getattr(after, key)
    )


def memory_budget(target: Target, host: HostFacts) -> tuple[int, str]:
    if target.device == "gpu":
        free = min(g.memory_free_mib for g in target.gpus)
        where = f"free memory of each GPU used ({free} MiB)"
    else:
        free = host.usable_memory_mib
        where = f"usable host memory ({free} MiB" + (", cgroup limit applied)" if host.cgroup_memory_limit_mib else ")")
    return int(free * MIB * (1 - SAFETY_MARGIN)), f"{where} less a {SAFETY_MARGIN:.0%} safety margin"


def fit(
    target: Target, knobs: Knobs, settings: ProfileSettings, recognizer: ModelFacts, host: HostFacts, budget: int
) -> Sizing | None:
    """Walk the shrink path; the first sizing within budget wins. None when even the last misses."""
    for step in shrink_steps(knobs):
        sizing = size(target, step, settings, recognizer, host)
        if sizing.total <= budget:
            return sizing
    return None


# --- the plan -------------------------------------------------------------------------------


def make_plan(
    host: HostFacts,
    profile: Profile | None = None,
    *,
    recognizer: str = "crnn-en",
    variant: str | None = None,
    detector_precision: str = "fp32",
) -> Plan:
    """Plan a deployment for `host`. `profile` None plans from the host's figures alone
    (`profiles.resolve_profile` picks the matching one); `variant` forces one.
    `detector_precision` "int8" asks for the quantized detector: CPU plans only."""
    if recognizer not in RECOGNIZERS:
        raise UserInputError(f"unknown recognizer {recognizer!r}", hint=f"recognizers: {', '.join(RECOGNIZERS)}")
    if detector_precision not in DETECTOR_PRECISIONS:
        raise UserInputError(
            f"unknown detector precision {detector_precision!r}", hint=f"use one of {', '.join(DETECTOR_PRECISIONS)}"
        )
    reasons: list[str] = []
    target = choose_target(host, variant, reasons)
    if detector_precision == "int8" and target.device != "cpu":
        raise UserInputError(
            f"the int8 detector runs on ONNX Runtime's CPU provider only, and this plan is {target.variant} "
            "on the GPU",
            hint="drop --detector-precision int8 on GPU hosts (their plans run fp32/fp16)",
        )
    try:
        return _plan_on(target, host, profile, MODELS[recognizer], reasons, detector_precision)
    except HostUnsupported:
        if target.device == "cpu" or variant is not None:
            raise
    reasons.append("even the smallest GPU plan exceeds the GPU's free memory: falling back to the CPU")
    return _plan_on(Target("onnxruntime", "cpu"), host, profile, MODELS[recognizer], reasons)


def _plan_on(
    target: Target,
    host: HostFacts,
    profile: Profile | None,
    recognizer: ModelFacts,
    reasons: list[str],
    detector_precision: str = "fp32",
) -> Plan:
    reasons = list(reasons)
    settings = merged_settings(target, profile, host, reasons)
    budget, budget_words = memory_budget(target, host)
    preferred = initial_knobs(target, settings, host)
    sizing = fit(target, preferred, settings, recognizer, host, budget)
    if sizing is None:
        need = size(target, Knobs(1, 1, 1, MIN_CANVAS), settings, recognizer, host).total
        raise HostUnsupported(
            f"not enough memory on the {target.device}: the budget is {budget // MIB} MiB ({budget_words}) "
            f"but even the smallest plan needs about {need // MIB} MiB",
            hint="free memory on the host, or plan for another host with --host FILE",
        )
    knobs = sizing.knobs
    reasons.append(f"memory budget {budget // MIB} MiB: {budget_words}")
    if knobs != preferred:
        reasons.append(
            "the preferred plan exceeded the budget, so it shrank in the documented order "
            f"(instances, recognizer max batch, detector max shape): {describe_shrink(preferred, knobs)}"
        )
    reasons.append(
        f"memory estimate {sizing.total // MIB} MiB"
        + (" per GPU" if target.device == "gpu" else "")
        + f": detector {sizing.detector_bytes // MIB} MiB, recognizer {sizing.recognizer_bytes // MIB} MiB"
        + (f", server and pipeline {sizing.fixed_bytes // MIB} MiB" if sizing.fixed_bytes else "")
    )
    reasons.append(_instances_words(target, knobs, host))
    if knobs.canvas < DEFAULT_CANVAS:
        reasons.append(
            f"canvas {knobs.canvas} is below EasyOCR's {DEFAULT_CANVAS}: images larger than it are scaled down"
        )
    return Plan(
        variant=target.variant,
        device=target.device,
        detector=_detector_plan(target, settings, knobs, sizing, host, reasons, detector_precision),
        recognizer=_recognizer_plan(target, settings, knobs, sizing, recognizer, host, reasons),
        pipeline=_pipeline_plan(target, knobs, host, reasons),
        memory_budget_bytes=budget,
        memory_estimate_bytes=sizing.total,
        host=host_summary(host),
        profile_name=profile.name if profile is not None and profile.device == target.device else None,
        reasons=tuple(reasons),
    )


def _instances_words(target: Target, knobs: Knobs, host: HostFacts) -> str:
    det, rec = knobs.detector_instances, knobs.recognizer_instances
    if target.device == "gpu":
        where = "on each GPU used" if len(target.gpus) > 1 else "on the GPU"
        return f"{det} detector and {rec} recognizer instance(s) {where}"
    cores = host.usable_cores
    return (
        f"{cores} usable core(s): {det} detector instance(s) x {cores // det} thread(s) and {rec} recognizer "
        f"instance(s) x {cores // rec} thread(s), so threads x instances <= cores for each model; the detector "
        f"and recognizer of one request run one after the other, so each may use every core "
        f"(instances are added per {CPU_THREADS_PER_INSTANCE} cores, where ONNX Runtime's scaling flattens)"
    )


def _threads(target: Target, host: HostFacts, instances: int) -> tuple[int, int]:
    if target.backend == "tensorrt":
        return 0, 0
    if target.device == "gpu":
        return 1, 1  # CUDA EP: kernels run on the GPU; one CPU thread launches them
    return max(1, host.usable_cores // instances), 1


def _instance_kind(target: Target) -> tuple[str, tuple[int, ...]]:
    if target.device == "gpu":
        return "KIND_GPU", tuple(g.index for g in target.gpus)
    return "KIND_CPU", ()


def _detector_plan(
    target: Target,
    settings: ProfileSettings,
    knobs: Knobs,
    sizing: Sizing,
    host: HostFacts,
    reasons: list[str],
    requested_precision: str = "fp32",
) -> ModelPlan:
    facts = MODELS["craft"]
    side = sizing.detector_max[-1]
    requested_opt = settings.detector_opt_side
    opt = min(max(DETECTOR_MIN_SIDE, round(requested_opt / SIZE_MULTIPLE) * SIZE_MULTIPLE), side)
    reasons.append(
        f"detector canvas {knobs.canvas}: inputs are padded to multiples of {SIZE_MULTIPLE}, so the profile is "
        f"min 1x3x{DETECTOR_MIN_SIDE}x{DETECTOR_MIN_SIDE}, opt 1x3x{opt}x{opt}"
        + (f" ({requested_opt} rounded to {SIZE_MULTIPLE})" if opt != requested_opt else "")
        + f", max 1x3x{side}x{side} (covers the canvas rounded up to {SIZE_MULTIPLE})"
    )
    det_precision, _ = precisions(target, settings)
    if target.backend == "tensorrt":
        reasons.append(f"detector TensorRT {det_precision}, workspace {settings.detector_workspace_mib} MiB")
    if requested_precision == "int8":
        det_precision = "int8"
        reasons.append(
            "detector int8 (requested): static QDQ quantization runs CRAFT 2.5-4x faster on CPUs with int8 units "
            "(VNNI/AMX) for ~0.6 % fewer words read correctly; the memory estimate stays the fp32 one (conservative)"
        )
    kind, gpus = _instance_kind(target)
    intra, inter = _threads(target, host, knobs.detector_instances)
    return ModelPlan(
        triton_name=facts.triton_name,
        family=facts.family,
        role="detector",
        backend=target.backend,
        precision=det_precision,
        max_batch_size=1,
        profile={
            facts.input_name: ShapeProfile(
                (1, 3, DETECTOR_MIN_SIDE, DETECTOR_MIN_SIDE), (1, 3, opt, opt), sizing.detector_max
            )
        },
        instance_count=knobs.detector_instances,
        instance_kind=kind,
        gpus=gpus,
        intra_op_threads=intra,
        inter_op_threads=inter,
        workspace_bytes=settings.detector_workspace_mib * MIB if target.backend == "tensorrt" else 0,
        dynamic_batching=None,
        memory_estimate_bytes=sizing.detector_bytes,
    )


def _recognizer_plan(
    target: Target,
    settings: ProfileSettings,
    knobs: Knobs,
    sizing: Sizing,
    facts: ModelFacts,
    host: HostFacts,
    reasons: list[str],
) -> ModelPlan:
    batch = knobs.recognizer_batch
    opt_batch = min(settings.recognizer_batch[1], batch)
    if facts.family == "crnn-en":
        shapes = ShapeProfile(
            (1, 1, CRNN_HEIGHT, CRNN_MIN_WIDTH),
            (opt_batch, 1, CRNN_HEIGHT, CRNN_OPT_WIDTH),
            sizing.recognizer_max,
        )
        width_words = (
            f", width {CRNN_MIN_WIDTH}/{CRNN_OPT_WIDTH}/{CRNN_MAX_WIDTH} "
            f"(crops wider than {CRNN_MAX_WIDTH // CRNN_HEIGHT}:1 are resized to {CRNN_MAX_WIDTH})"
        )
    elif facts.family == "ppocr":
        shapes = ShapeProfile(
            (1, 3, PPOCR_HEIGHT, PPOCR_MIN_WIDTH), (opt_batch, 3, PPOCR_HEIGHT, PPOCR_OPT_WIDTH), sizing.recognizer_max
        )
        width_words = f", width {PPOCR_MIN_WIDTH}/{PPOCR_OPT_WIDTH}/{PPOCR_MAX_WIDTH} in buckets of 64"
    else:
        shapes = ShapeProfile((1, *PARSEQ_SHAPE), (opt_batch, *PARSEQ_SHAPE), sizing.recognizer_max)
        width_words = ""
    preferred = tuple(sorted({opt_batch, batch}))
    delay = GPU_QUEUE_DELAY_US if target.device == "gpu" else 0
    reasons.append(
        f"recognizer {facts.family}: batch 1/{opt_batch}/{batch}{width_words}; dynamic batching prefers "
        f"{', '.join(map(str, preferred))} with a {delay} us queue delay"
        + (" (on the CPU a wait buys no speed)" if delay == 0 else "")
    )
    _, rec_precision = precisions(target, settings)
    if target.backend == "tensorrt":
        reasons.append(f"recognizer TensorRT {rec_precision}, workspace {settings.recognizer_workspace_mib} MiB")
    else:
        reasons.append("ONNX Runtime runs the recognizer in fp32")
    kind, gpus = _instance_kind(target)
    intra, inter = _threads(target, host, knobs.recognizer_instances)
    return ModelPlan(
        triton_name=facts.triton_name,
        family=facts.family,
        role="recognizer",
        backend=target.backend,
        precision=rec_precision,
        max_batch_size=batch,
        profile={facts.input_name: shapes},
        instance_count=knobs.recognizer_instances,
        instance_kind=kind,
        gpus=gpus,
        intra_op_threads=intra,
        inter_op_threads=inter,
        workspace_bytes=settings.recognizer_workspace_mib * MIB if target.backend == "tensorrt" else 0,
        dynamic_batching=DynamicBatching(preferred, delay),
        memory_estimate_bytes=sizing.recognizer_bytes,
    )


def _pipeline_plan(target: Target, knobs: Knobs, host: HostFacts, reasons: list[str]) -> PipelinePlan:
    count = pipeline_instances(target, knobs, host)
    reasons.append(
        f"pipeline: {count} KIND_CPU instance(s) (pre/post-processing is numpy/OpenCV on the CPU"
        + (
            "; two requests in flight per detector instance and GPU, at most one per core)"
            if target.device == "gpu"
            else "; one request in flight per detector instance)"
        )
        + f"; images above {MAX_IMAGE_PIXELS // 1_000_000} M pixels are refused"
    )
    return PipelinePlan(
        instance_count=count,
        instance_kind="KIND_CPU",
        canvas_size=knobs.canvas,
        mag_ratio=MAG_RATIO,
        max_image_pixels=MAX_IMAGE_PIXELS,
        recognizer_batch=knobs.recognizer_batch,
        **THRESHOLDS,
    )


def host_summary(host: HostFacts) -> dict:
    """The few host facts worth carrying in plan.json (the full reading stays in host.json)."""
    return {
        "source": host.source,
        "cpu": host.cpu.model_name,
        "usable_cores": host.usable_cores,
        "usable_memory_mib": host.usable_memory_mib,
        "gpus": [
            {
                "index": g.index,
                "name": g.name,
                "memory_total_mib": g.memory_total_mib,
                "memory_free_mib": g.memory_free_mib,
            }
            for g in host.gpus
        ],
        "tensorrt": host.runtimes.tensorrt_version,
        "onnxruntime": host.runtimes.onnxruntime_version,
        "onnxruntime_providers": list(host.runtimes.onnxruntime_providers),
    }
