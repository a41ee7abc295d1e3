"""Host facts (+ optional profile) -> deployment plan. Pure: no I/O, every decision explained.

`make_plan` picks the variant and device, the precisions (GPU: fp16; CPU: an int8 detector where
the CPU has int8 dot-product units), the detector canvas (CPU: from a latency budget at the
host's detector speed), TensorRT profiles, the recognizer batch, workspaces, instances and
threads, then fits the plan's memory into a budget. Each choice is written to `Plan.reasons`
in plain words, so `stdr-deploy plan` can show why.

Memory: each model instance is a process whose peak at the max shape comes from measurements
(`stdr_deploy.memory`, data in `memory_data/`); the server and pipeline instances are added on
the host. The budget is total memory (or the cgroup limit; on a GPU plan, each GPU's total
memory, and host RAM too) less MEMORY_RESERVE_BYTES, so a host always gets the same plan. When
the estimate exceeds it, the plan shrinks one step at a time, each time taking the step with
the least stated cost (throughput or words read) per byte saved (`shrink_options`); a step that
saves nothing is never taken. A GPU plan that still does not fit falls back to the CPU (unless a
variant was forced); a CPU plan that does not fit raises HostUnsupported.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable

from stdr_deploy import memory
from stdr_deploy.cpu_speed import INT8_XEON_IMG01_S, CpuSpeed, cpu_speed
from stdr_deploy.errors import HostUnsupported, UserInputError
from stdr_deploy.hardware import GpuFacts, HostFacts
from stdr_deploy.plan_schema import (
    MAX_CANVAS,
    ONNX_PRECISIONS,
    PRECISIONS,
    VARIANTS,
    DynamicBatching,
    ModelPlan,
    PipelinePlan,
    Plan,
    ShapeProfile,
)
from stdr_deploy.ocr.ppocr import REC_HEIGHT as PPOCR_HEIGHT, REC_WIDTHS as PPOCR_WIDTHS
from stdr_deploy.ocr.recognizers import CRNN_WIDTHS, RECOGNIZER_NAMES
from stdr_deploy.profiles import Profile, ProfileSettings

MIB = memory.MIB


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
PPOCR_MIN_WIDTH, PPOCR_OPT_WIDTH, PPOCR_MAX_WIDTH = PPOCR_WIDTHS[0], PPOCR_WIDTHS[1], PPOCR_WIDTHS[-1]

# Memory constants (bytes). Model instances come from the measured data (stdr_deploy.memory);
# these cover what is not a model session, and the hosts with no measurement yet.
MEMORY_RESERVE_BYTES = 1024 * MIB  # kept free of the plan on every host and GPU: the OS and its
# page cache (model files are read while sessions load), the client, the driver's own reservation
# on a GPU (~0.5 GiB on the H100 at idle) and a display. Taken from total memory (or the cgroup
# limit), never from momentary free memory, so the same host always gets the same plan.
SERVER_BYTES = 320 * MIB  # tritonserver serving a CPU plan, smoke's max-shape calls over HTTP and
# gRPC: VmHWM 267 MiB (benchmarks/results/cpu-xeon-2c-openvino/bf16/deploy/)
# A request's image is held in the server and in the pipeline stub, 2.5-3 copies of its RGB pixels
# in each (the request message, the tensor handed on, the array made of it), and the server keeps
# that memory. Measured with the 2-core Xeon's plan (OpenVINO) serving the four benchmark images
# and then a 50 MP image sent in the request, as a remote client sends it: tritonserver's VmHWM
# 165-171 -> 551-613 MiB (717-732 after smoke's max-shape calls), the pipeline's 561-562 MiB (655
# with the image sent beside the max-shape calls, as smoke now does); in the 4 GB host test (ONNX
# Runtime) 142 -> 447 MiB and 454 MiB.
SERVER_IMAGE_BYTES_PER_PIXEL = 10  # per request in flight (7.7-9.4 measured)
PIPELINE_IMAGE_BYTES_PER_PIXEL = 10  # per pipeline instance (7.2-9.6 measured)
GPU_SERVER_BYTES = 1700 * MIB  # tritonserver serving a GPU plan maps the CUDA libraries: VmHWM
# 1623-1666 MiB on the H200 (benchmarks/results/h200-fp16-served/, smoke memory of three deployments);
# more where its served deployments with the plan's recognizer held more (memory.served_server)
GPU_SERVER_DEVICE_BYTES = 600 * MIB  # and holds GPU memory of its own on each GPU (CUDA context,
# memory pools): 520-584 MiB by NVML per process, H200 (h200-fp16-served/warmed-at-load/)
GPU_DRIVER_BYTES = 656 * MIB  # what NVML counts as used on a GPU beyond every process's memory
# (the driver's own): 648 MiB on the H200 in each of seven deployments (h200-fp16-served/)
# Served on the H200 (16 cores, 2 fp16 CRAFT instances, benchmarks/results/h200-fp16-served/
# pipeline-instances/, one run): 4 / 8 / 12 / 16 pipeline instances gave 35.7 / 42.4 / 45.6 /
# 42.7 req/s at concurrency 32, the GPU busy 68 % -> 76 %: 6 per detector instance.
PIPELINES_PER_GPU_DETECTOR = 6
# One orchestrator stub (Python, numpy, OpenCV, its BLS calls) before its image and score maps,
# by device: on the CPU ~150 MiB (562 MiB with a 50 MP image, less that image's copies); a GPU
# plan's pipelines hold more: 209-306 MiB each, score maps included, in the H200 deployments on
# file, whose smoke sent only its small image (tests/test_memory.py holds the plans to them).
PIPELINE_PROCESS_BYTES = {"cpu": 192 * MIB, "gpu": 256 * MIB}
PIPELINE_BYTES_PER_CANVAS_PIXEL = 3 + 4  # uint8 CRAFT input (3) + float32 score maps (2 at quarter size)
# Used only where memory_data has no measurement (say TensorRT, or the CUDA EP before
# `benchmarks/measure_memory.py --providers CUDAExecutionProvider` ran); the plan says so.
CUDA_CONTEXT_BYTES = 512 * MIB  # per process (each model instance is its own stub process)
ORT_CUDA_EXTRA_BYTES = 1024 * MIB  # cuDNN/cuBLAS handles and conv workspace (max workspace on)
ORT_CUDA_ACTIVATION_FACTOR = 2.0  # the CUDA EP's arena over the CPU-measured activations
CUDA_PROCESS_HOST_BYTES = 1536 * MIB  # host RAM of one CUDA stub process (CUDA libraries mapped)
ORT_CPU_PROCESS_BYTES = 128 * MIB  # Python + onnxruntime
ORT_CPU_WEIGHT_COPIES = 2.5  # initializers + pre-packed conv weights

# Host-derived CPU settings (issue 16). The detector's speed per CPU class: stdr_deploy.cpu_speed
# (pixels per second per core: ORT's conv kernels scale with cores up to ~8).
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot-product units
# int8 CRAFT read 542 of 600 words of scenes_A and the synthetic sets against 545 in fp32 (the
# 2-core AMX Xeon, benchmarks/results/cpu-xeon-2c-int8/). Help text and plan reasons quote these.
INT8_WORDS_READ = {"fp32": 545, "int8": 542}
INT8_WORDS_LOST = f"~{1 - INT8_WORDS_READ['int8'] / INT8_WORDS_READ['fp32']:.1%} fewer words read"
# int8 over fp32 on a CPU with AVX2 but no int8 dot-product units: 2-core AMD EPYC (AVX2 only,
# shared and busy), CRAFT at 1280x1024, three alternating pairs: int8 took 37.7/26.9/33.3 s and
# fp32 40.3/54.9/599 s; int8 was faster in every pair (1.07x to 2.0x, median ratio 1.65x), so
# AVX2 CPUs default to int8 too, counted at this median. Re-measure on a quiet host.
AVX2_INT8_SPEEDUP = 1.65
# CPU models on OpenVINO 2026.4's CPU plugin: which ones and how much faster, per CPU class, in
# stdr_deploy.cpu_speed. The int8 CRAFT (its int8-openvino graph) read 247 of 276 words over every
# check set against 246 on ONNX Runtime (the 2-core AMX Xeon, benchmarks/results/cpu-xeon-2c-openvino/).
OPENVINO_WORDS_READ = {"openvino": 247, "onnxruntime": 246}
CPU_BACKENDS = ("onnxruntime", "openvino")
OPENVINO_INSTALL_TIP = "with OpenVINO installed (pip install 'stdr-deploy[openvino]')"  # `auto` shows this reason
# OpenVINO computes float layers in bf16 on CPUs with bf16 units when asked (its own default
# there): for the models CpuSpeed.openvino_bf16 lists. On the 2-core AMX Xeon
# (benchmarks/results/cpu-xeon-2c-openvino/bf16/) the int8 CRAFT's float layers (its U-net's
# concatenations, upsampling and head) in bf16 read 252 words over the check sets at canvas 1408
# against 251, no set lower (served: 252 against 247 for the plan at canvas 1600 in f32). The
# ppocr recognizer in bf16 read 2 words fewer on phrases-202 and 1 on scenes-101: it stays f32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# The CPU canvas: the largest whose detector time for a 4:5 image stays within the budget at the
# speed of the runtime and precision that serve it, never below the accuracy floor nor above
# EasyOCR's 2560. The budget is what keeps a served request at or under RapidOCR's time on the
# same host (issue 16's peer): RapidOCR read img03 (1600x1200) in 0.59 s on the 2-core Xeon, and
# our recognizer and pipeline add ~0.1 s to the detector there.
LATENCY_BUDGET_S = 0.4
SLOW_DETECTOR = "detector latency"  # the reason that opens with it is a row of `auto`'s summary
CANVAS_ASPECT = 0.8  # the canvas is the long side; photos are ~4:5 (img01 is 2560x2048)
# Latency never pushes the canvas below this: every check set reads at least as many words at
# 1408 as at 1600 (ONNX Runtime, OpenVINO f32 and bf16), and 1600 as many as 2560 on scenes_A;
# scenes_A first loses words at 1280 (85 -> 82; benchmarks/results/cpu-xeon-2c-openvino/, canvas
# sweep). Only memory may push it lower, at the cost stated in CANVAS_COST.
ACCURACY_FLOOR_CANVAS = 1408
CANVAS_ACCURACY_WORDS = (
    "every check set reads at least as many words at 1408 as at 1600, and scenes_A as many at 1600 as at "
    f"EasyOCR's {DEFAULT_CANVAS}; at 1280 scenes_A reads 82 of its 85 (OpenVINO)"
)

# What each shrink step costs, as the fraction of throughput or of words read it may lose
# (both count alike). The planner takes the step with the least cost per byte saved first.
INSTANCE_COST = 0.5  # one instance of n: the others keep the device busy, so at most half of its
# 1/n share of concurrent throughput is lost (a guess, stated: not measured per host)
RECOGNIZER_TIME_SHARE = 0.3  # recognizer share of a request's model time (CPU bench, scenes_A)
BATCH_HALVING_COST = 0.05  # more recognizer calls on crowded images (a guess, stated)
# Words read lost per 256 px canvas step, by the canvas the step ends at: none from 2560 down to
# the accuracy floor (counted 1 %); 85 -> 82 on scenes_A from 1408 to 1280; below 1280 small text
# falls under CRAFT's reliable size fast (not measured: counted three times as dear).
CANVAS_COST = ((ACCURACY_FLOOR_CANVAS, 0.01), (1280, 0.04), (0, 0.12))
INT8_ACCURACY_COST = 0.006  # int8 CRAFT: 1 - 542/545 words read (INT8_WORDS_READ), rounded up

# Defaults when no profile says otherwise.
GPU_DEFAULTS = ProfileSettings(
    canvas_size=DEFAULT_CANVAS,
    detector_opt_side=DEFAULT_DETECTOR_OPT_SIDE,
    detector_precision="fp16",
    recognizer_precision="fp16",
    recognizer_batch=(1, 16, 64),
    detector_workspace_mib=2048,
    recognizer_workspace_mib=1024,
    detector_instances=2,
    recognizer_instances=2,
)
CPU_DEFAULTS = ProfileSettings(
    canvas_size=None,  # from the host's speed, see latency_canvas
    detector_opt_side=DEFAULT_DETECTOR_OPT_SIDE,
    detector_precision=None,  # from the host's int8 units, see choose_precisions
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
# ONNX Runtime's CUDA EP re-plans every convolution whenever a session's input shape changes:
# CRAFT cycling the four benchmark images' shapes took 45-80 ms a call against 2-38 ms at a
# fixed shape, CRNN 14 ms against ~3 (benchmarks/results/h200-fp16-served/, shape churn). GPU plans
# on ONNX Runtime therefore pad the detector input to multiples of one of these, and keep one
# session per input shape in each instance (batches padded to powers of two). The finer grid is
# preferred: less padding is less detector work. Served on an H200 (fp16 CRAFT + ppocr, A / B / A
# on one machine, benchmarks/results/h200-fp16-served/detector-pad/): 320 against 640 served
# 1.09x the requests at 16 in flight and 1.10x at 32, img01 p50 111 against 119-141 ms at 1, the
# same words on every check set. Its 64 shapes (16 at 640) hold about twice CRAFT's GPU memory,
# so a plan takes it only where it fits without shrinking anything else (`_fit_free`).
GPU_DETECTOR_PADS = (320, 640)
# At pad 320 the H200 was GPU-bound with two CRAFT instances (busy 86-88 %); with a third (and 16
# `pipeline` instances) the same deployment served 79.1 / 80.1 req/s at 16 / 32 in flight against
# 72.7 / 73.7, busy 94 % (one machine, benchmarks/results/h200-fp16-served/detector-pad/verify/).
# A plan no profile sizes takes it where it fits without shrinking anything (`_fit_free`).
GPU_FREE_DETECTOR_INSTANCES = 3
# Why GPU plans default to fp16: measured (export reports; benchmarks/results/h200-fp16-served/).
FP16_PARITY = (
    "accuracy parity: the fp16 graphs stay within 2 % of fp32 (max |difference| over max(|fp32|, 1); CRNN 0.8 %, "
    "ppocr 1.2 %), and served on an H200 the fp16 pipeline read every check set as fp32 did or better (ppocr "
    "fp16 against fp32: 246 against 244 of 276 words, scenes_A 84 and 84 of 87; benchmarks/results/"
    "h200-fp16-served/ppocr-fp16/)"
)
# Words read over every check set (scenes_A, scenes-101, phrases-202, tilt-303, real_A: 276),
# CRAFT fp32, only the recognizer changed (benchmarks/results/accuracy-sets/recognizers/).
WORDS_READ = {"crnn-en": 234, "ppocr": 247}
REAL_A_WORDS_READ = {"crnn-en": 5, "ppocr": 9}  # of those, real_A's 21 real photographed words
# The recognizer a plan gets unless one is asked for. CPU: ppocr reads the most words over the
# check sets (one fewer on scenes-101), at crnn-en's served latency (2-core EPYC, same session, concurrency 1: p50 2030 vs
# 2200 ms; scenes_A 85 vs 81/87, real_A 9 vs 5/21; benchmarks/results/cpu-epyc-2c-recognizers/).
# GPU: ppocr too. Served on an H200 with every fixed shape made and run at load (same session,
# fp16 CRAFT): 41.4 against 39.7 req/s at concurrency 16, scenes_A 84 against 80/87, real_A 9
# against 5/21, and a deployment of 35.3 against 32.0 GB of GPU memory, each within its plan's
# estimate (benchmarks/results/h200-fp16-served/warmed-at-load/). In fp16 (another session, same
# machine, fp32 after): 41.8 against 39.1 req/s at concurrency 16 and 246 against 244 words over
# the check sets (h200-fp16-served/ppocr-fp16/). Its TensorRT engine builds for the A5000 but is
# not timed (benchmarks/results/trt-rtx-check-ppocr/).
DEFAULT_RECOGNIZER = {"cpu": "ppocr", "gpu": "ppocr"}
TORCH_RECOGNIZER = "crnn-en"  # where a torch model is needed (`--runtime torch`): ppocr is ONNX only
MAX_IMAGE_PIXELS = 50_000_000  # the largest request a plan accepts, unless memory is short:
MIN_IMAGE_PIXELS = 4_000_000  # then halved down to this: still above what the detector reads of an
# image at EasyOCR's canvas (2560 x 1536), though the recognizer's crops of larger photos are sharper
IMAGE_HALVING_COST = 0.02  # requests above the limit are refused: clients must scale them down (a guess)
THRESHOLDS = {"text_threshold": 0.7, "link_threshold": 0.4, "low_text": 0.4}  # EasyOCR's defaults
MAG_RATIO = 1.0


@dataclass(frozen=True)
class Target:
    """Where the models run: variant, device and the GPUs used (all alike)."""

    variant: str
    device: str
    gpus: tuple[GpuFacts, ...] = ()
    openvino: bool = False  # CPU models OpenVINO runs faster go there (`choose_cpu_backend`)
    bf16: bool = False  # the CPU has bf16 units (BF16_CPU_FLAGS)
    speed: CpuSpeed | None = None  # the host's CPU class (`cpu_speed`), set for CPU targets by choose_target

    @property
    def backend(self) -> str:
        return "tensorrt" if self.variant == "tensorrt_plan" else "onnxruntime"

    def backend_for(self, family: str, precision: str) -> str:
        """The model's backend: OpenVINO for the CPU models it was measured to run faster."""
        if self.openvino and self.device == "cpu" and (family, precision) in self.speed.openvino:
            return "openvino"
        return self.backend

    def float_precision_for(self, family: str, precision: str) -> str:
        """OpenVINO's precision for the model's float layers: bf16 where measured to keep the words."""
        on_openvino = self.backend_for(family, precision) == "openvino"  # a CPU target: its speed is set
        return "bf16" if on_openvino and self.bf16 and (family, precision) in self.speed.openvino_bf16 else "f32"

    def speedup(self, family: str, precision: str) -> float:
        """How much faster than ONNX Runtime the model runs where this target serves it (CPU tables)."""
        if self.backend_for(family, precision) != "openvino":
            return 1.0
        faster = self.speed.openvino[(family, precision)]
        if self.float_precision_for(family, precision) == "bf16":
            faster *= self.speed.openvino_bf16[(family, precision)]
        return faster


@dataclass(frozen=True)
class Knobs:
    """The settings the memory fit may change (each shrink step changes one)."""

    detector_instances: int
    recognizer_instances: int
    recognizer_batch: int
    canvas: int
    detector_precision: str
    recognizer_precision: str
    detector_pad: int = SIZE_MULTIPLE  # detector input sides are padded to multiples of this
    max_image_pixels: int = MAX_IMAGE_PIXELS  # larger requests are refused (each one in flight is held)


@dataclass(frozen=True)
class Requested:
    """What the caller fixed (CLI overrides); None leaves the choice to the host. The fit never
    changes a fixed canvas or precision."""

    detector_precision: str | None = None
    recognizer_precision: str | None = None
    canvas: int | None = None


def round_up(value: int, multiple: int = SIZE_MULTIPLE) -> int:
    return -(-value // multiple) * multiple


def fixes_shapes(target: Target) -> bool:
    """ONNX Runtime on the GPU: inputs padded to a few fixed shapes, one session each."""
    return target.device == "gpu" and target.backend == "onnxruntime"


def fixed_shapes(
    target: Target, family: str, max_shape: tuple[int, ...], detector_pad: int | None = None
) -> tuple[tuple[int, ...], ...]:
    """The input shapes an ONNX Runtime GPU instance can see, one session each; () elsewhere.
    Batches are padded to powers of two (at most the max batch), detector sides to multiples of
    `detector_pad` (one of GPU_DETECTOR_PADS, None: the coarsest; at most the max side), recognizer
    widths to their buckets."""
    if not fixes_shapes(target):
        return ()
    batch = max_shape[0]
    batches = sorted({min(1 << k, batch) for k in range(batch.bit_length())})
    if family == "craft":
        height, width = max_shape[-2:]
        pad = detector_pad or GPU_DETECTOR_PADS[-1]
        sides = lambda cap: sorted({min(k * pad, cap) for k in range(1, -(-cap // pad) + 1)})
        return tuple((1, max_shape[1], h, w) for h in sides(height) for w in sides(width))
    widths = {"crnn-en": CRNN_WIDTHS, "ppocr": PPOCR_WIDTHS}.get(family)
    if widths is not None:
        return tuple((b, *max_shape[1:-1], w) for b in batches for w in widths if w <= max_shape[-1])
    return tuple((b, *max_shape[1:]) for b in batches) if family.startswith("parseq") else ()


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


def choose_cpu_backend(host: HostFacts, requested: str | None) -> bool:
    """Whether CPU models go to OpenVINO where it runs them faster: where it is installed, unless asked not to."""
    if requested not in (None, *CPU_BACKENDS):
        raise UserInputError(f"unknown CPU backend {requested!r}", hint=f"use one of {', '.join(CPU_BACKENDS)}")
    if requested == "openvino" and host.runtimes.openvino_version is None:
        raise UserInputError(
            "--cpu-backend openvino, but OpenVINO was not found where the host was probed",
            hint="pip install 'stdr-deploy[openvino]' (then probe again), or drop --cpu-backend",
        )
    return requested == "openvino" or (requested is None and host.runtimes.openvino_version is not None)


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
    return Target("onnxruntime", "cpu", speed=cpu_speed(host.cpu.features))


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


# --- settings: defaults, then the profile, then the host ------------------------------------


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


def has_int8_units(host: HostFacts) -> bool:
    return any(flag in host.cpu.features for flag in INT8_CPU_FLAGS)


def has_bf16_units(host: HostFacts) -> bool:
    return any(flag in host.cpu.features for flag in BF16_CPU_FLAGS)


def choose_precisions(
    target: Target, settings: ProfileSettings, host: HostFacts, requested: Requested, reasons: list[str],
    recognizer: str,
) -> tuple[str, str]:
    """(detector, recognizer) precision: GPU fp16 where the family has an fp16 graph, CPU int8
    detector where int8 units exist."""
    det, rec = requested.detector_precision, requested.recognizer_precision
    if target.device == "gpu":
        if "int8" in (det, rec):
            raise UserInputError(
                f"int8 runs on ONNX Runtime's CPU provider only, and this plan is {target.variant} on the GPU",
                hint="drop the int8 precision on GPU hosts (their plans run fp16 or fp32)",
            )
        det, rec = det or settings.detector_precision, rec or settings.recognizer_precision
        available = ONNX_PRECISIONS.get(recognizer, ("fp32",))
        if rec not in available:
            if requested.recognizer_precision:
                raise UserInputError(f"{recognizer} has no {rec} graph",
                                     hint=f"use --recognizer-precision {' or '.join(available)}")
            rec = "fp32"
        chosen = [f"{role} {p}" + (" (requested)" if asked else "") for role, p, asked in (
            ("detector", det, requested.detector_precision), ("recognizer", rec, requested.recognizer_precision))]
        if rec != settings.recognizer_precision and not requested.recognizer_precision:
            chosen[-1] += f" ({recognizer} has no {settings.recognizer_precision} graph)"
        words = f"precision on the GPU: {' and '.join(chosen)}"
        if "fp16" in (det, rec):
            words += f": fp16 halves weights and activations and runs on the tensor cores; {FP16_PARITY}"
        reasons.append(words)
        return det, rec
    if "fp16" in (det, rec):
        raise UserInputError(
            "fp16 runs on the GPU only: ONNX Runtime's CPU provider has no fast fp16 kernels",
            hint="use fp32 or (detector) int8 on CPU plans",
        )
    if rec == "int8":
        raise UserInputError("int8 is available for the detector only", hint="use fp32 for the recognizer")
    rec = "fp32"
    units = [f for f in INT8_CPU_FLAGS if f in host.cpu.features]
    if det:
        reasons.append(f"detector {det} (requested); recognizer fp32")
    elif units:
        det = "int8"
        reasons.append(
            f"detector int8: the CPU has int8 dot-product units ({', '.join(units)}), where static QDQ CRAFT runs "
            f"{INT8_XEON_IMG01_S['fp32'] / INT8_XEON_IMG01_S['int8']:.1f}x faster than fp32 (2-core AMX Xeon, img01 "
            f"at 2560x2048: {INT8_XEON_IMG01_S['int8']} s against {INT8_XEON_IMG01_S['fp32']} s) for {INT8_WORDS_LOST} "
            "(scenes_A and the synthetic sets); recognizer fp32; --detector-precision fp32 overrides"
        )
    elif "avx2" in host.cpu.features:
        det = "int8"
        reasons.append(
            "detector int8: the CPU has AVX2 but no int8 dot-product units (VNNI/AMX); measured on such a CPU "
            f"(2-core AMD EPYC, busy), int8 CRAFT was faster than fp32 in every pair (1.07x to 2.0x, median "
            f"{AVX2_INT8_SPEEDUP}x) for {INT8_WORDS_LOST}; recognizer fp32; --detector-precision fp32 overrides"
        )
    else:
        det = "fp32"
        reasons.append(
            "detector fp32: the CPU has neither int8 dot-product units nor AVX2, where int8 is not measured "
            "(--detector-precision int8 overrides); recognizer fp32"
        )
    return det, rec


def detector_pixels_per_second(host: HostFacts, precision: str, target: Target) -> float:
    """Detector speed on this host: the ONNX Runtime rate per core measured on its CPU class (int8
    without int8 units at the AVX2 ratio), times the runtime the target serves CRAFT with."""
    rates = target.speed.craft_pixels_per_core_s
    rate = rates[precision]
    if precision == "int8" and not has_int8_units(host):
        rate = rates["fp32"] * AVX2_INT8_SPEEDUP
    return rate * min(host.usable_cores, CPU_THREADS_PER_INSTANCE) * target.speedup("craft", precision)


def detector_seconds(canvas: int, rate: float) -> float:
    """The detector's time for a 4:5 image whose long side is `canvas`, at `rate` pixels per second."""
    return canvas * canvas * CANVAS_ASPECT / rate


def latency_canvas(rate: float) -> int:
    """The largest canvas whose detector time stays within LATENCY_BUDGET_S at `rate` pixels per second."""
    side = int(math.sqrt(LATENCY_BUDGET_S * rate / CANVAS_ASPECT)) // SIZE_MULTIPLE * SIZE_MULTIPLE
    return max(ACCURACY_FLOOR_CANVAS, min(DEFAULT_CANVAS, side))


def choose_canvas(
    target: Target, settings: ProfileSettings, host: HostFacts, requested: Requested, det_precision: str,
    reasons: list[str],
) -> int:
    if requested.canvas is not None:
        reasons.append(f"canvas {requested.canvas} (requested)")
        return requested.canvas
    if settings.canvas_size is not None:
        return settings.canvas_size
    rate = detector_pixels_per_second(host, det_precision, target)
    canvas = latency_canvas(rate)
    runtime = target.backend_for("craft", det_precision)
    if runtime == "openvino":
        runtime = f"OpenVINO, float layers in {target.float_precision_for('craft', det_precision)}"
    reasons.append(
        f"canvas {canvas} from a {LATENCY_BUDGET_S} s detector latency budget (RapidOCR's time on the 2-core Xeon, "
        f"less our recognizer and pipeline) at ~{rate / 1e6:.2f} M pixels/s ({det_precision} on {runtime}, "
        f"{min(host.usable_cores, CPU_THREADS_PER_INSTANCE)} core(s), at the speed of {target.speed.machine}) "
        f"for a 4:5 image, within {ACCURACY_FLOOR_CANVAS}..{DEFAULT_CANVAS}; accuracy cost: {CANVAS_ACCURACY_WORDS}; "
        "larger images are scaled down to it; --canvas overrides"
    )
    # over the budget at the floor by more than the 32-pixel rounding of the budget's own canvas
    if detector_seconds(canvas - SIZE_MULTIPLE, rate) > LATENCY_BUDGET_S:
        reasons.append(
            f"{SLOW_DETECTOR}: even at the accuracy floor (canvas {canvas}) the detector needs "
            f"~{detector_seconds(canvas, rate):.2f} s per 4:5 image at this host's speed, over the {LATENCY_BUDGET_S} s "
            "budget, so large images may be read slower than by RapidOCR here; a smaller --canvas trades words for time"
        )
    return canvas


def initial_knobs(
    target: Target, settings: ProfileSettings, host: HostFacts, requested: Requested, reasons: list[str],
    recognizer: str,
) -> Knobs:
    """The preferred settings; CPU instances default to one per 8 usable cores."""
    det, rec = settings.detector_instances, settings.recognizer_instances
    if target.device == "cpu":
        cores = host.usable_cores
        det = min(det or _cpu_instances(cores), cores)
        rec = min(rec or _cpu_instances(cores), cores)
    det_precision, rec_precision = choose_precisions(target, settings, host, requested, reasons, recognizer)
    canvas = choose_canvas(target, settings, host, requested, det_precision, reasons)
    pad = GPU_DETECTOR_PADS[0] if fixes_shapes(target) else SIZE_MULTIPLE
    return Knobs(det, rec, settings.recognizer_batch[2], canvas, det_precision, rec_precision, pad, MAX_IMAGE_PIXELS)


# --- memory ---------------------------------------------------------------------------------


def bytes_per_value(precision: str) -> int:
    return {"fp16": 2, "int8": 1}.get(precision, 4)


def activation_bytes(model: ModelFacts, max_shape: tuple[int, ...], precision: str) -> int:
    """Activation memory at one full input shape (batch included): the unmeasured fallback."""
    batch = max_shape[0]
    units = batch if model.family.startswith("parseq") else batch * max_shape[-2] * max_shape[-1]
    return int(units * model.activation_bytes * min(bytes_per_value(precision), 4) / 4)


@dataclass(frozen=True)
class InstanceMemory:
    """One model instance: bytes on its device, bytes of host RAM, and where the numbers come from."""

    device_bytes: int
    host_bytes: int
    source: str


def _measured(device: str, facts: ModelFacts, precision: str, what: str,
              runtime: str = "onnxruntime") -> memory.Envelope | None:
    """The measurement for this precision, else the fp32 one (fp16 and int8 hold less)."""
    for p in dict.fromkeys((precision, "fp32")):
        if found := memory.envelope(device, facts.family, p, memory.ARENA_OFF, what, runtime):
            return found
    return None


def _planned_for(
    env: memory.Envelope, target: Target, facts: ModelFacts, precision: str, what: str
) -> Callable[[dict], int]:
    """What the envelopes give one instance of a served record (memory_data `served`) at its max
    shape, bare session and per-shape sessions: what it held beyond that is the served excess."""
    first = memory.first_session_excess("cuda", facts.family, precision) if what == "device" else 0
    return lambda record: env.bytes_at(record["elements"]) + first + session_bytes(
        target, facts, tuple(record["max_shape"]), precision, what, _record_pad(target, facts, record))[0]


def _same_pad(target: Target, facts: ModelFacts, detector_pad: int | None) -> Callable[[dict], bool] | None:
    """Served detector records count for plans of their own pad (None: the coarsest): the sessions
    of the two grids hold different memory beyond what the per-session measurements give."""
    if not (fixes_shapes(target) and facts.family == "craft"):
        return None
    pad = detector_pad or GPU_DETECTOR_PADS[-1]
    return lambda record: _record_pad(target, facts, record) == pad


def _record_pad(target: Target, facts: ModelFacts, record: dict) -> int | None:
    """The detector pad a served record was deployed with: the one that gives its number of shapes
    (None: none of GPU_DETECTOR_PADS does, or the target fixes no shapes)."""
    if not fixes_shapes(target):
        return None
    return _pad_giving(facts.family, tuple(record["max_shape"]), record.get("shape_sessions"), GPU_DETECTOR_PADS)


@functools.lru_cache(maxsize=None)
def _pad_giving(family: str, max_shape: tuple[int, ...], sessions: int | None, pads: tuple[int, ...]) -> int | None:
    """The first of `pads` whose fixed shapes number `sessions` (cached: the fit asks for every
    served record at every step)."""
    target = Target("onnxruntime", "gpu")
    return next((pad for pad in pads if len(fixed_shapes(target, family, max_shape, pad)) == sessions), None)


def _served_host(
    env: memory.Envelope, target: Target, facts: ModelFacts, precision: str, elements: int,
    detector_pad: int | None = None, runtime: str = "onnxruntime",
) -> tuple[int, str]:
    """Host bytes of one served instance: the bare session's envelope plus what served instances
    of the same family were measured to hold beyond the envelopes (the stub, buffers); on the CPU,
    for a family never served, what the others held (`_unserved_excess`)."""
    device = "cpu" if target.device == "cpu" else "cuda"
    excess = memory.served_excess(device, facts.family, precision, _planned_for(env, target, facts, precision, "host"),
                                  like=_same_pad(target, facts, detector_pad), runtime=runtime)
    if excess is None and device == "cpu":
        excess = _unserved_excess(target)
    if excess is None:
        return env.bytes_at(elements), ""
    return env.bytes_at(elements) + excess[0], f" {excess[1]}"


def _unserved_excess(target: Target) -> tuple[int, str] | None:
    """(bytes, source) for a family x precision never served on the CPU (on its runtime): the most
    any served one held above its envelope, spread included, on either CPU runtime (the stub and
    requests that overlap are not the runtime's). A bare figure alone fell short on first
    deployment (crnn-en, CRAFT fp32, parseq-tiny: benchmarks/results/cpu-xeon-2c-served-memory/)."""
    found = []
    for runtime in CPU_BACKENDS:
        for family, precision in memory.served_pairs("cpu", runtime):
            facts = MODELS[family]
            env = _measured("cpu", facts, precision, "host", runtime)
            if env is None:
                continue
            planned = _planned_for(env, target, facts, precision, "host")
            if excess := memory.served_excess("cpu", family, precision, planned, runtime=runtime):
                found.append((excess[0], family, precision, runtime))
    if not found:
        return None
    most, family, precision, runtime = max(found)
    return most, (f"+ {most >> 20} MiB, the most a served model held above its envelope ({family} {precision} "
                  f"on {runtime}; this one was never served)")


def instance_memory(
    target: Target, facts: ModelFacts, max_shape: tuple[int, ...], precision: str, workspace: int,
    detector_pad: int | None = None,
) -> InstanceMemory:
    """Memory one instance of a model takes at its max shape: measured where memory_data has it
    (on the CPU, on the runtime the model is served by)."""
    elements = memory.elements(max_shape)
    weights = facts.params * bytes_per_value(precision)
    activations = activation_bytes(facts, max_shape, precision)
    if target.device == "cpu":
        runtime = target.backend_for(facts.family, precision)
        if env := _measured("cpu", facts, precision, "host", runtime):
            used, source = _served_host(env, target, facts, precision, elements, runtime=runtime)
            return InstanceMemory(used, used, f"{env.source}{source}")
        used = ORT_CPU_PROCESS_BYTES + int(weights * ORT_CPU_WEIGHT_COPIES) + activations
        return InstanceMemory(used, used, f"{facts.family} {precision} not measured on the CPU: allowances")
    # the per-shape sessions beyond the first (ONNX Runtime on the GPU; see fixed_shapes)
    session_host, _ = session_bytes(target, facts, max_shape, precision, "host", detector_pad)
    session_device, session_source = session_bytes(target, facts, max_shape, precision, "device", detector_pad)
    sessions = f"; {session_source}" if session_source else ""
    host_env = _measured("cuda", facts, precision, "host")
    if host_env:
        host_bytes, host_source = _served_host(host_env, target, facts, precision, elements, detector_pad)
        host_bytes += session_host
    elif served := memory.served_peak("cuda", facts.family, precision):  # its sessions included
        host_bytes, host_source = max(served[0], CUDA_PROCESS_HOST_BYTES + weights + session_host), f"; host: {served[1]}"
    else:
        host_bytes, host_source = CUDA_PROCESS_HOST_BYTES + weights + session_host, ""
    if target.backend == "onnxruntime" and (env := _measured("cuda", facts, precision, "device")):
        planned = _planned_for(env, target, facts, precision, "device")
        excess, excess_source = memory.served_excess(
            "cuda", facts.family, precision, planned, "device", _same_pad(target, facts, detector_pad)) or (0, "")
        if first := memory.first_session_excess("cuda", facts.family, precision):
            excess_source = f"+ first session {first >> 20} MiB above the bare one {excess_source}".rstrip()
        device_bytes = env.bytes_at(elements) + first + session_device + excess
        return InstanceMemory(device_bytes, host_bytes, f"{env.source}{sessions} {excess_source}{host_source}")
    if target.backend == "tensorrt":
        used = CUDA_CONTEXT_BYTES + weights + activations + workspace
    else:
        used = CUDA_CONTEXT_BYTES + weights + int(activations * ORT_CUDA_ACTIVATION_FACTOR) + ORT_CUDA_EXTRA_BYTES
    return InstanceMemory(
        used + session_device, host_bytes,
        f"{facts.family} {precision} not measured on the GPU ({target.backend}): allowances{sessions}{host_source}",
    )


def session_bytes(
    target: Target, facts: ModelFacts, max_shape: tuple[int, ...], precision: str, what: str,
    detector_pad: int | None = None,
) -> tuple[int, str]:
    """(bytes, source): what the per-shape sessions beyond the first hold ("host" or "device"),
    measured per session by benchmarks/measure_sessions.py, and on the device the growth when the
    largest shape runs again after them; unmeasured, each holds a copy of the weights on the
    device. (0, "") where the plan fixes no shapes."""
    shapes = sorted(fixed_shapes(target, facts.family, max_shape, detector_pad), key=memory.elements)[:-1]  # the
    # largest is the instance's first session, which the bare envelope covers
    if not shapes:
        return 0, ""
    for p in dict.fromkeys((precision, "fp32", *PRECISIONS)):  # else another precision's, plus
        # the difference in each session's weights where this one's are larger
        if measured := memory.sessions_bytes("cuda", facts.family, p, [memory.elements(s) for s in shapes], what):
            wider = max(0, bytes_per_value(precision) - bytes_per_value(p)) * facts.params if what == "device" else 0
            held = measured[0] + wider * len(shapes)
            source = f"+ {len(shapes)} per-shape sessions ({measured[1]}{', weights widened' if wider else ''})"
            if what == "device" and (regrowth := memory.regrowth_per_element("cuda", facts.family, p)):
                held += math.ceil(regrowth[0] * memory.elements(max_shape))
                source += f" {regrowth[1]}"
            return held, source
    if what == "host":
        return 0, ""
    weights = len(shapes) * facts.params * bytes_per_value(precision)
    return weights, f"+ weights of {len(shapes)} per-shape sessions (what each holds is not measured)"


def pipeline_bytes(device: str, canvas: int, max_image_pixels: int) -> int:
    side = detector_max_side(canvas)
    return (
        PIPELINE_PROCESS_BYTES[device]
        + PIPELINE_IMAGE_BYTES_PER_PIXEL * max_image_pixels
        + PIPELINE_BYTES_PER_CANVAS_PIXEL * side * side
    )


def pipeline_instances(target: Target, knobs: Knobs, host: HostFacts) -> int:
    """CPU: one request in flight per detector instance. GPU: PIPELINES_PER_GPU_DETECTOR per
    detector instance and GPU (the orchestrator's CPU work is what bounds a GPU plan), at most
    one per core."""
    if target.device == "cpu":
        return knobs.detector_instances
    return max(1, min(host.usable_cores, PIPELINES_PER_GPU_DETECTOR * knobs.detector_instances * len(target.gpus)))


@dataclass(frozen=True)
class Sizing:
    """Everything the memory fit decides, with the estimate that goes with it."""

    knobs: Knobs
    detector_max: tuple[int, ...]
    recognizer_max: tuple[int, ...]
    detector_bytes: int  # all instances (per GPU on a GPU plan)
    recognizer_bytes: int
    fixed_bytes: int  # server and pipeline on CPU; the server's and the driver's GPU memory on GPU (per GPU)
    host_bytes: int  # host RAM of the whole deployment (the total, on a CPU plan)
    sources: tuple[str, ...]  # where the model figures come from

    @property
    def total(self) -> int:
        return self.detector_bytes + self.recognizer_bytes + self.fixed_bytes


def size(target: Target, knobs: Knobs, settings: ProfileSettings, recognizer: ModelFacts, host: HostFacts) -> Sizing:
    side = detector_max_side(knobs.canvas)
    det_max = (1, 3, side, side)
    rec_max = recognizer_max_shape(recognizer, knobs.recognizer_batch)
    det = instance_memory(
        target, MODELS["craft"], det_max, knobs.detector_precision, settings.detector_workspace_mib * MIB,
        knobs.detector_pad,
    )
    rec = instance_memory(
        target, recognizer, rec_max, knobs.recognizer_precision, settings.recognizer_workspace_mib * MIB
    )
    det_n, rec_n = knobs.detector_instances, knobs.recognizer_instances
    pipelines = pipeline_instances(target, knobs, host)
    server, server_source = server_host_bytes(target, recognizer, pipelines, knobs.max_image_pixels)
    around = server + pipelines * pipeline_bytes(target.device, knobs.canvas, knobs.max_image_pixels)
    if target.device == "cpu":
        fixed = around
        host_bytes = det.host_bytes * det_n + rec.host_bytes * rec_n + around
    else:
        fixed = GPU_SERVER_DEVICE_BYTES + GPU_DRIVER_BYTES
        host_bytes = (det.host_bytes * det_n + rec.host_bytes * rec_n) * len(target.gpus) + around
    return Sizing(
        knobs, det_max, rec_max, det.device_bytes * det_n, rec.device_bytes * rec_n, fixed, host_bytes,
        (det.source, rec.source, *server_source),
    )


def server_host_bytes(target: Target, recognizer: ModelFacts, pipelines: int, max_image_pixels: int,
                      ) -> tuple[int, tuple[str, ...]]:
    """(bytes, sources): tritonserver's own host RAM: what it held in smoke (on a GPU plan the
    CUDA libraries it maps or, where deployments with this recognizer were served, the most it
    held there), and the images of `pipelines` largest requests in flight."""
    images = pipelines * SERVER_IMAGE_BYTES_PER_PIXEL * max_image_pixels
    if target.device == "cpu":
        return SERVER_BYTES + images, ()
    served = memory.served_server("cuda", recognizer.family)
    base, sources = (max(GPU_SERVER_BYTES, served[0]), (served[1],)) if served else (GPU_SERVER_BYTES, ())
    return base + images, sources


def recognizer_max_shape(recognizer: ModelFacts, batch: int) -> tuple[int, ...]:
    if recognizer.family == "crnn-en":
        return (batch, 1, CRNN_HEIGHT, CRNN_MAX_WIDTH)
    if recognizer.family == "ppocr":
        return (batch, 3, PPOCR_HEIGHT, PPOCR_MAX_WIDTH)
    return (batch, *PARSEQ_SHAPE)


# --- budget and the fit ---------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    device: int  # bytes for the models on each GPU used (the host budget on a CPU plan)
    host: int  # bytes of host RAM
    words: str

    def over(self, sizing: Sizing) -> bool:
        return sizing.total > self.device or sizing.host_bytes > self.host

    def saving(self, before: Sizing, after: Sizing) -> int:
        """Bytes a step saves where `before` is over budget (device, host or both). Not capped at
        the overshoot, so the path the fit walks does not depend on the budget's size."""
        saved = 0
        if before.total > self.device:
            saved += before.total - after.total
        if before.host_bytes > self.host:
            saved += before.host_bytes - after.host_bytes
        return saved


def memory_budget(target: Target, host: HostFacts) -> Budget:
    """Total memory (or the cgroup limit) less MEMORY_RESERVE_BYTES: never momentary free memory."""
    total = host.memory_total_mib
    limited = host.cgroup_memory_limit_mib is not None and host.cgroup_memory_limit_mib < total
    total = min(total, host.cgroup_memory_limit_mib) if limited else total
    reserve = MEMORY_RESERVE_BYTES // MIB
    host_words = f"host memory {total} MiB ({'cgroup limit' if limited else 'total'}) less a {reserve} MiB reserve"
    host_budget = max(0, total * MIB - MEMORY_RESERVE_BYTES)
    if target.device == "cpu":
        return Budget(host_budget, host_budget, host_words)
    gpu_total = min(g.memory_total_mib for g in target.gpus)
    device_budget = max(0, gpu_total * MIB - MEMORY_RESERVE_BYTES)
    return Budget(
        device_budget, host_budget,
        f"GPU memory {gpu_total} MiB (total of each GPU used) less a {reserve} MiB reserve; {host_words}",
    )


def shrink_options(knobs: Knobs, target: Target, requested: Requested) -> list[tuple[Knobs, float, str]]:
    """Every single step from `knobs`, with its stated cost (fraction of throughput or words lost)."""
    options = []
    if (n := knobs.detector_instances) > 1:
        cost = INSTANCE_COST / n
        options.append((dataclasses.replace(knobs, detector_instances=n - 1), cost,
                        f"detector instances {n} -> {n - 1} (up to {cost:.0%} of concurrent throughput)"))
    if (n := knobs.recognizer_instances) > 1:
        cost = INSTANCE_COST * RECOGNIZER_TIME_SHARE / n
        options.append((dataclasses.replace(knobs, recognizer_instances=n - 1), cost,
                        f"recognizer instances {n} -> {n - 1} (the recognizer is ~{RECOGNIZER_TIME_SHARE:.0%} of "
                        f"the model time: up to {cost:.0%} of throughput)"))
    if (b := knobs.recognizer_batch) > 1:
        options.append((dataclasses.replace(knobs, recognizer_batch=b // 2), BATCH_HALVING_COST,
                        f"recognizer max batch {b} -> {b // 2} (more recognizer calls on crowded images)"))
    if requested.canvas is None and (c := knobs.canvas) > MIN_CANVAS:
        new = max(MIN_CANVAS, c - CANVAS_STEP)
        per_step = next(cost for floor, cost in CANVAS_COST if new >= floor)
        cost = per_step * (c - new) / CANVAS_STEP
        options.append((dataclasses.replace(knobs, canvas=new), cost,
                        f"canvas {c} -> {new} (~{cost:.0%} of words read on images larger than it)"))
    if (m := knobs.max_image_pixels) > MIN_IMAGE_PIXELS:
        new = max(MIN_IMAGE_PIXELS, m // 2)
        options.append((dataclasses.replace(knobs, max_image_pixels=new), IMAGE_HALVING_COST,
                        f"largest image {m / 1e6:g} -> {new / 1e6:g} M pixels (larger requests are refused: clients "
                        "scale them down first)"))
    if target.device == "cpu" and requested.detector_precision is None and knobs.detector_precision == "fp32":
        options.append((dataclasses.replace(knobs, detector_precision="int8"), INT8_ACCURACY_COST,
                        f"detector fp32 -> int8 (~{INT8_ACCURACY_COST:.1%} of words read)"))
    return options


@dataclass(frozen=True)
class Fit:
    sizing: Sizing
    steps: tuple[str, ...]  # the shrink steps taken, in order, with saving and cost


def fit(
    target: Target, knobs: Knobs, settings: ProfileSettings, recognizer: ModelFacts, host: HostFacts,
    budget: Budget, requested: Requested = Requested(),
) -> Fit | None:
    """Shrink greedily until the plan fits: each time the step of least cost per byte saved,
    among the steps that save anything. None when no step is left and it still does not fit."""
    sizing = size(target, knobs, settings, recognizer, host)
    steps: list[str] = []
    while budget.over(sizing):
        best = None
        for option, cost, words in shrink_options(sizing.knobs, target, requested):
            after = size(target, option, settings, recognizer, host)
            saving = budget.saving(sizing, after)
            if saving > 0 and (best is None or cost / saving < best[0]):
                best = (cost / saving, after, f"{words}, saves {saving // MIB} MiB")
        if best is None:
            return None
        sizing = best[1]
        steps.append(best[2])
    return Fit(sizing, tuple(steps))


def _fit_free(
    target: Target, knobs: Knobs, settings: ProfileSettings, recognizer: ModelFacts, host: HostFacts,
    budget: Budget, requested: Requested, profiled: bool,
) -> Fit | None:
    """`fit` with the GPU extras measured to pay, where they fit without a shrink step: the finer
    detector pad (only where a deployment at that pad and precision was measured served: its
    sessions hold more than the per-session measurements, taken at the coarsest grid, give) and,
    on a host no profile sizes, GPU_FREE_DETECTOR_INSTANCES detector instances at that pad. Else
    `fit` at the coarsest pad: each extra gains ~10 % throughput, less than any canvas or instance
    the greedy fit would give up to make room for it."""
    if not fixes_shapes(target):
        return fit(target, knobs, settings, recognizer, host, budget, requested)
    measured = {_record_pad(target, MODELS["craft"], record)
                for record in memory.served_records("cuda", "craft", knobs.detector_precision)}
    candidates = []
    if knobs.detector_pad in measured:
        if not profiled and knobs.detector_instances < GPU_FREE_DETECTOR_INSTANCES:
            candidates.append(dataclasses.replace(knobs, detector_instances=GPU_FREE_DETECTOR_INSTANCES))
        candidates.append(knobs)
    for candidate in candidates:  # each only as it is: a shrink step would cost more than it gains
        if not budget.over(sizing := size(target, candidate, settings, recognizer, host)):
            return Fit(sizing, ())
    return fit(target, dataclasses.replace(knobs, detector_pad=GPU_DETECTOR_PADS[-1]), settings, recognizer, host,
               budget, requested)


# --- the plan -------------------------------------------------------------------------------


def make_plan(
    host: HostFacts,
    profile: Profile | None = None,
    *,
    recognizer: str | None = None,
    variant: str | None = None,
    detector_precision: str | None = None,
    recognizer_precision: str | None = None,
    canvas: int | None = None,
    cpu_backend: str | None = None,
) -> Plan:
    """Plan a deployment for `host`. `profile` None plans from the host's figures alone
    (`profiles.resolve_profile` picks the matching one); `variant` forces one. The recognizer,
    precisions (None: the host decides, see `choose_recognizer` and `choose_precisions`),
    `canvas` and the CPU models' backend (`choose_cpu_backend`) fix those settings."""
    if recognizer is not None and recognizer not in RECOGNIZER_NAMES:
        raise UserInputError(f"unknown recognizer {recognizer!r}", hint=f"recognizers: {', '.join(RECOGNIZER_NAMES)}")
    for role, precision in (("detector", detector_precision), ("recognizer", recognizer_precision)):
        if precision not in (None, *PRECISIONS):
            raise UserInputError(
                f"unknown {role} precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}"
            )
    if canvas is not None and not MIN_CANVAS <= canvas <= MAX_CANVAS:
        raise UserInputError(f"canvas {canvas} is out of range", hint=f"use {MIN_CANVAS}..{MAX_CANVAS} pixels")
    requested = Requested(detector_precision, recognizer_precision, canvas)
    openvino, bf16 = choose_cpu_backend(host, cpu_backend), has_bf16_units(host)
    reasons: list[str] = []
    target = dataclasses.replace(choose_target(host, variant, reasons), openvino=openvino, bf16=bf16)
    chosen = list(reasons)  # the recognizer's reason belongs to this target only
    try:
        family = choose_recognizer(target, recognizer, chosen)
        return _plan_on(target, host, profile, MODELS[family], chosen, requested)
    except HostUnsupported:
        if target.device == "cpu" or variant is not None:
            raise
    reasons.append("even the smallest GPU plan exceeds the GPU's memory: falling back to the CPU")
    on_cpu = dataclasses.replace(requested, detector_precision=None, recognizer_precision=None)
    cpu = Target("onnxruntime", "cpu", openvino=openvino, bf16=bf16, speed=cpu_speed(host.cpu.features))
    family = choose_recognizer(cpu, recognizer, reasons)
    return _plan_on(cpu, host, profile, MODELS[family], reasons, on_cpu)


def choose_recognizer(target: Target, requested: str | None, reasons: list[str]) -> str:
    """The recognizer asked for, else DEFAULT_RECOGNIZER for the target's device (its comment says why)."""
    if requested:
        return requested
    family = DEFAULT_RECOGNIZER[target.device]
    other = next(name for name in WORDS_READ if name != family)
    if target.device == "cpu":
        reasons.append(
            f"recognizer {family} (the CPU default): it reads the most words over the check sets (counts below; "
            f"real photos: {REAL_A_WORDS_READ[family]} against {REAL_A_WORDS_READ[other]} of 21) at {other}'s served "
            "latency (benchmarks/results/cpu-epyc-2c-recognizers/); its ONNX file comes from the "
            "rapidocr_onnxruntime wheel (found installed, else downloaded once and sha256-checked); "
            f"--recognizer {other} needs no download"
        )
    else:
        reasons.append(
            f"recognizer {family} (the GPU default): it reads the most words over the check sets (counts below; "
            f"real photos: {REAL_A_WORDS_READ[family]} against {REAL_A_WORDS_READ[other]} of 21) and, served on an "
            f"H200 with every input shape warmed at load, answered 1.04x the requests of {other} at concurrency 16 "
            f"in fp32 (benchmarks/results/h200-fp16-served/warmed-at-load/) and 1.07x its own fp32 in fp16 "
            f"(h200-fp16-served/ppocr-fp16/); its ONNX file comes from the rapidocr_onnxruntime wheel (found "
            f"installed, else downloaded once and sha256-checked); --recognizer {other} needs no download"
        )
    return family


def _plan_on(
    target: Target,
    host: HostFacts,
    profile: Profile | None,
    recognizer: ModelFacts,
    reasons: list[str],
    requested: Requested = Requested(),
) -> Plan:
    reasons = list(reasons)
    settings = merged_settings(target, profile, host, reasons)
    budget = memory_budget(target, host)
    preferred = initial_knobs(target, settings, host, requested, reasons, recognizer.family)
    fitted = _fit_free(target, preferred, settings, recognizer, host, budget, requested, profile is not None)
    if fitted is None:
        smallest = Knobs(1, 1, 1, requested.canvas or MIN_CANVAS, preferred.detector_precision,
                         preferred.recognizer_precision, GPU_DETECTOR_PADS[-1] if fixes_shapes(target) else SIZE_MULTIPLE,
                         MIN_IMAGE_PIXELS)
        need = size(target, smallest, settings, recognizer, host)
        raise HostUnsupported(
            f"not enough memory on the {target.device}: the budget is {budget.device // MIB} MiB "
            f"(host {budget.host // MIB} MiB; {budget.words}) but even the smallest plan needs about "
            f"{need.total // MIB} MiB (host {need.host_bytes // MIB} MiB)",
            hint="plan for a host with more memory (--host FILE), or a smaller canvas",
        )
    sizing, knobs = fitted.sizing, fitted.sizing.knobs
    reasons.append(f"memory budget {budget.device // MIB} MiB: {budget.words}")
    if fitted.steps:
        reasons.append(
            "the preferred plan exceeded the budget, so it shrank, cheapest cost per byte saved first: "
            + "; ".join(fitted.steps)
        )
    reasons.append(
        f"memory estimate {sizing.total // MIB} MiB"
        + (" per GPU" if target.device == "gpu" else "")
        + f": detector {sizing.detector_bytes // MIB} MiB, recognizer {sizing.recognizer_bytes // MIB} MiB"
        + (f", {'server and driver' if target.device == 'gpu' else 'server and pipeline'} {sizing.fixed_bytes // MIB} MiB"
           if sizing.fixed_bytes else "")
        + (f"; host RAM {sizing.host_bytes // MIB} MiB of {budget.host // MIB}" if target.device == "gpu" else "")
        + f" (at the max shapes; from {'; '.join(dict.fromkeys(sizing.sources))})"
    )
    reasons.append(_instances_words(target, knobs, host))
    if target.device == "cpu" and (words := _cpu_backend_words(target, host, knobs, recognizer.family)):
        reasons.append(words)
    if knobs.detector_instances > preferred.detector_instances:
        reasons.append(
            f"{knobs.detector_instances} detector instances rather than {preferred.detector_instances}: the plan fits "
            f"memory without shrinking anything, and on an H200 at pad {GPU_DETECTOR_PADS[0]} a third CRAFT instance "
            "served 1.09x the requests at 16-32 in flight (the GPU busy 94 % against 86-88 %)"
        )
    if knobs.canvas < DEFAULT_CANVAS:
        reasons.append(
            f"canvas {knobs.canvas} is below EasyOCR's {DEFAULT_CANVAS}: images larger than it are scaled down"
        )
    return Plan(
        variant=target.variant,
        device=target.device,
        detector=_detector_plan(target, settings, knobs, sizing, host, reasons),
        recognizer=_recognizer_plan(target, settings, knobs, sizing, recognizer, host, reasons),
        pipeline=_pipeline_plan(target, knobs, host, reasons),
        memory_budget_bytes=budget.device,
        memory_estimate_bytes=sizing.total,
        host=host_summary(host),
        profile_name=profile.name if profile is not None and profile.device == target.device else None,
        reasons=tuple(reasons),
        host_memory_budget_bytes=budget.host,
        host_memory_estimate_bytes=sizing.host_bytes,
    )


def _cpu_backend_words(target: Target, host: HostFacts, knobs: Knobs, recognizer: str) -> str | None:
    """Which CPU models run on OpenVINO and why, or how installing it would speed them up."""
    speed = target.speed
    models = [(family, precision) for family, precision in
              (("craft", knobs.detector_precision), (recognizer, knobs.recognizer_precision))
              if (family, precision) in speed.openvino]
    if not models:
        return None
    names = " and ".join(f"{family} {precision} ({speed.openvino[(family, precision)]:.2f}x)" for family, precision in models)
    measured = (f"OpenVINO's CPU plugin ran {names} faster than ONNX Runtime on {speed.machine} (this CPU's class), "
                f"the int8 CRAFT from its int8-openvino graph (concatenations in float) reading "
                f"{OPENVINO_WORDS_READ['openvino']} of 276 words over the check sets against {OPENVINO_WORDS_READ['onnxruntime']}")
    if target.openvino:
        bf16 = [(f, p) for f, p in models if target.float_precision_for(f, p) == "bf16"]
        measured += "".join(
            f"; {family} {precision}'s float layers in bf16 (the CPU has bf16 units): "
            f"{speed.openvino_bf16[(family, precision)]:.2f}x faster again, no check set reading fewer words"
            for family, precision in bf16)
        return f"{', '.join(f for f, _ in models)} on OpenVINO {host.runtimes.openvino_version}: {measured}; --cpu-backend onnxruntime overrides"
    if host.runtimes.openvino_version is not None:
        return "every model on ONNX Runtime (--cpu-backend onnxruntime)"
    return f"every model on ONNX Runtime; {OPENVINO_INSTALL_TIP}: {measured}"


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
    shapes = fixed_shapes(target, facts.family, sizing.detector_max, knobs.detector_pad)
    sessions = len(shapes)
    if sessions:
        reasons.append(
            f"ONNX Runtime on the GPU: the pipeline pads detector inputs to multiples of {knobs.detector_pad} "
            f"({sessions} shapes at most) and each instance keeps one session per input shape, each made and run at "
            "load so its memory is held (and measured by smoke) from the start (recognizer batches padded to powers "
            "of two): the CUDA EP re-plans every convolution when a session's input "
            "shape changes, which cost CRAFT 45-80 ms a call against 2-38 ms at a fixed shape (measured on an H200); "
            "served there, small images ran 2.8-3x and the whole load 1.3x faster, at one word of scenes_A "
            "(81 -> 80: the wider border moves CRAFT's scores); "
            f"pad {GPU_DETECTOR_PADS[0]} where the plan fits memory without shrinking anything and a deployment "
            f"at that pad and precision was measured served, else {GPU_DETECTOR_PADS[-1]} (on an H200, 320 served "
            "1.09-1.10x the requests of 640 at 16-32 in flight and read the same words on every check set; its "
            "shapes hold about twice CRAFT's GPU memory)"
        )
    det_precision = knobs.detector_precision
    if target.backend == "tensorrt":
        reasons.append(f"detector TensorRT {det_precision}, workspace {settings.detector_workspace_mib} MiB")
    kind, gpus = _instance_kind(target)
    intra, inter = _threads(target, host, knobs.detector_instances)
    return ModelPlan(
        triton_name=facts.triton_name,
        family=facts.family,
        role="detector",
        backend=target.backend_for(facts.family, det_precision),
        precision=det_precision,
        float_precision=target.float_precision_for(facts.family, det_precision),
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
        memory_arena=target.device == "gpu",
        shape_sessions=sessions,
        fixed_shapes=shapes,
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
        width_words = f", width {PPOCR_MIN_WIDTH}/{PPOCR_OPT_WIDTH}/{PPOCR_MAX_WIDTH} in buckets {'/'.join(map(str, PPOCR_WIDTHS))}"
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
    if facts.family in WORDS_READ:
        others = ", ".join(f"{name} {words}" for name, words in WORDS_READ.items() if name != facts.family)
        reasons.append(
            f"recognizer {facts.family} reads {WORDS_READ[facts.family]} of the check sets' 276 words (CRAFT fp32; "
            f"{others}; benchmarks/results/accuracy-sets/recognizers/)"
        )
    rec_precision = knobs.recognizer_precision
    if target.backend == "tensorrt":
        reasons.append(f"recognizer TensorRT {rec_precision}, workspace {settings.recognizer_workspace_mib} MiB")
    kind, gpus = _instance_kind(target)
    intra, inter = _threads(target, host, knobs.recognizer_instances)
    rec_shapes = fixed_shapes(target, facts.family, sizing.recognizer_max)
    return ModelPlan(
        triton_name=facts.triton_name,
        family=facts.family,
        role="recognizer",
        backend=target.backend_for(facts.family, rec_precision),
        precision=rec_precision,
        float_precision=target.float_precision_for(facts.family, rec_precision),
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
        memory_arena=target.device == "gpu",
        shape_sessions=len(rec_shapes),
        fixed_shapes=rec_shapes,
    )


def _pipeline_plan(target: Target, knobs: Knobs, host: HostFacts, reasons: list[str]) -> PipelinePlan:
    count = pipeline_instances(target, knobs, host)
    reasons.append(
        f"pipeline: {count} KIND_CPU instance(s) (pre/post-processing is numpy/OpenCV on the CPU"
        + (
            f"; {PIPELINES_PER_GPU_DETECTOR} per detector instance and GPU, at most one per core: the orchestrator's "
            "CPU work bounds a GPU plan, and on an H200 12 instances served 1.28x the requests of 4)"
            if target.device == "gpu"
            else "; one request in flight per detector instance)"
        )
        + f"; images above {knobs.max_image_pixels / 1e6:g} M pixels are refused"
    )
    return PipelinePlan(
        instance_count=count,
        instance_kind="KIND_CPU",
        canvas_size=knobs.canvas,
        mag_ratio=MAG_RATIO,
        max_image_pixels=knobs.max_image_pixels,
        recognizer_batch=knobs.recognizer_batch,
        **THRESHOLDS,
        pad_to=knobs.detector_pad,
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
