"""Triton Python-based backend named `onnxruntime`: runs `platform: "onnxruntime_onnx"` models.

The tritonserver shipped in `nvidia-pytriton` has only the Python backend. Triton maps the
platform `onnxruntime_onnx` to the backend name `onnxruntime`; when the backend folder holds a
`model.py` instead of `libtriton_onnxruntime.so`, Triton runs this file in a Python stub for
every model instance. So the same, unmodified config.pbtxt serves here and in the NGC container.

It reads the parameters of the real Triton ONNX Runtime backend (same names, same meanings):
`intra_op_thread_count`, `inter_op_thread_count`, `execution_mode`, `enable_mem_arena`,
`enable_mem_pattern`, `memory.enable_memory_arena_shrinkage`,
`session.use_device_allocator_for_initializers`, the CUDA options `cudnn_conv_algo_search`,
`gpu_mem_limit`, `arena_extend_strategy`, `do_copy_in_default_stream`, the graph level in
`optimization { graph { level } }` and the `cuda` / `tensorrt` / `openvino` execution
accelerators.

Two parameters are ours, and the real backend ignores them:
- `sessions_per_shape` = N keeps up to N sessions per instance, one per input shape (batches
  padded up to a power of two, at most max_batch_size), because ONNX Runtime's CUDA EP re-plans
  every convolution whenever a session's input shape changes. On a GPU the sessions draw from one
  shared CUDA arena, so activations are held once per instance.
- `warm_shapes` = "1x3x48x320 2x3x48x320 ..." (the plan's fixed shapes): each is made into a
  session and run once on zeros at load, largest first, so the memory they hold is there before
  the model reports ready, and no request pays a session's first run (~1 s).

Plain Python on purpose: it runs inside the stub with the server's interpreter and must not
import the stdr_deploy package. Request batching and retry come from `stdr_batching`, which
`server.backend_directory()` copies beside this file (shared with the `tensorrt` backend).

Tensors cross the stub boundary as `as_numpy()` / `Tensor(name, ndarray)`: the stubs of
nvidia-pytriton were built for NumPy 1, which the project pins (numpy<2); the pipeline model
fails its load when the server's NumPy does not match the stub.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# The stub puts this folder on sys.path too, but last; first makes sure our copy is imported.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stdr_batching import (  # noqa: E402
    array_feed, array_response, input_limits, model_config, model_file, run_requests,
)
from stub_malloc import model_malloc  # noqa: E402

DEFAULT_MODEL_FILENAME = "model.onnx"

# optimization { graph { level } }: Triton's values; absent or 0 keeps ORT's default (all).
GRAPH_LEVELS = {
    -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}

# Deprecated top-level CUDA parameters of the Triton ORT backend -> CUDA EP option values.
CUDNN_CONV_ALGO_SEARCH = {"0": "EXHAUSTIVE", "1": "HEURISTIC", "2": "DEFAULT"}
ARENA_EXTEND_STRATEGY = {"0": "kNextPowerOfTwo", "1": "kSameAsRequested"}

# Triton accelerator name -> ORT execution provider.
ACCELERATORS = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}


def string_parameters(config: dict) -> dict[str, str]:
    """`parameters { key: K value: { string_value: V } }` as a plain dict."""
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


def as_bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "on", "yes")


def session_options(config: dict) -> ort.SessionOptions:
    params = string_parameters(config)
    options = ort.SessionOptions()
    if "intra_op_thread_count" in params:
        options.intra_op_num_threads = int(params["intra_op_thread_count"])
    if "inter_op_thread_count" in params:
        options.inter_op_num_threads = int(params["inter_op_thread_count"])
    if params.get("execution_mode") == "1":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    if "enable_mem_arena" in params:
        options.enable_cpu_mem_arena = as_bool(params["enable_mem_arena"])
    if "enable_mem_pattern" in params:
        options.enable_mem_pattern = as_bool(params["enable_mem_pattern"])
    key = "session.use_device_allocator_for_initializers"
    if key in params:
        options.add_session_config_entry(key, params[key])
    level = int(config.get("optimization", {}).get("graph", {}).get("level", 0))
    if level in GRAPH_LEVELS:
        options.graph_optimization_level = GRAPH_LEVELS[level]
    return options


def run_options(config: dict) -> ort.RunOptions:
    options = ort.RunOptions()
    key = "memory.enable_memory_arena_shrinkage"
    params = string_parameters(config)
    if key in params:
        options.add_run_config_entry(key, params[key])
    return options


def cuda_options(config: dict, device_id: int) -> dict[str, str]:
    params = string_parameters(config)
    options = {"device_id": str(device_id)}
    if "cudnn_conv_algo_search" in params:
        options["cudnn_conv_algo_search"] = CUDNN_CONV_ALGO_SEARCH[params["cudnn_conv_algo_search"]]
    if "arena_extend_strategy" in params:
        options["arena_extend_strategy"] = ARENA_EXTEND_STRATEGY[params["arena_extend_strategy"]]
    for key in ("gpu_mem_limit", "do_copy_in_default_stream"):
        if key in params:
            options[key] = params[key]
    return options


def tensorrt_options(parameters: dict[str, str], device_id: int) -> dict[str, str]:
    """Triton's TensorRT-accelerator keys -> ORT TensorRT EP options (most names are equal)."""
    options = {"device_id": str(device_id)}
    for key, value in parameters.items():
        if key == "precision_mode":
            options["trt_fp16_enable"] = str(value.upper() == "FP16")
            options["trt_int8_enable"] = str(value.upper() == "INT8")
        elif key == "max_workspace_size_bytes":
            options["trt_max_workspace_size"] = value
        elif key.startswith("trt_"):
            options[key] = value
        else:
            options[f"trt_{key}"] = value
    return options


def accelerators(config: dict, kind: str) -> list[dict]:
    section = config.get("optimization", {}).get("execution_accelerators", {})
    key = "gpu_execution_accelerator" if kind == "GPU" else "cpu_execution_accelerator"
    return section.get(key, [])


def providers(config: dict, kind: str, device_id: int, available: list[str]) -> tuple[list, list[str]]:
    """Execution providers (with options) for this instance, and log lines for what fell back.

    KIND_GPU runs on the CUDA EP of the instance's device, after any configured accelerator;
    KIND_CPU runs on the CPU EP. A missing provider falls back with a log line, never silently.
    """
    chosen: list = []
    notes: list[str] = []
    base = dict(cuda_options(config, device_id)) if kind == "GPU" else {}
    for accelerator in accelerators(config, kind):
        name = accelerator.get("name", "")
        params = dict(accelerator.get("parameters", {}))
        if name not in ACCELERATORS:
            raise ValueError(f"unknown execution accelerator {name!r} (known: {sorted(ACCELERATORS)})")
        provider = ACCELERATORS[name]
        if provider not in available:
            notes.append(f"execution accelerator {name!r} needs {provider}, which this onnxruntime lacks")
        elif name == "cuda":
            base.update(params)
        elif name == "tensorrt":
            chosen.append((provider, tensorrt_options(params, device_id)))
        else:
            chosen.append((provider, params))
    if kind == "GPU":
        if "CUDAExecutionProvider" in available:
            chosen.append(("CUDAExecutionProvider", base))
        else:
            notes.append(
                "instance kind GPU but onnxruntime has no CUDAExecutionProvider "
                "(install onnxruntime-gpu); running on CPU"
            )
    chosen.append(("CPUExecutionProvider", {}))
    return chosen, notes


def padded_batch(feed: dict[str, np.ndarray], rows: int, max_batch_size: int) -> dict[str, np.ndarray]:
    """Inputs with zero rows appended up to the next power of two (at most max_batch_size)."""
    target = min(1 << (rows - 1).bit_length(), max_batch_size)
    if target <= rows:
        return feed
    return {
        name: np.concatenate([array, np.zeros((target - rows, *array.shape[1:]), array.dtype)])
        for name, array in feed.items()
    }


def share_cuda_arena(options: ort.SessionOptions, chosen: list, device_id: int, name: str) -> None:
    """Let every session of this instance allocate from one CUDA arena registered with ORT's
    environment, so per-shape sessions hold activation memory once, not once each."""
    cuda = dict(chosen).get("CUDAExecutionProvider")
    if cuda is None:
        return
    strategy = {"kNextPowerOfTwo": 0, "kSameAsRequested": 1}.get(cuda.get("arena_extend_strategy", ""), 0)
    try:
        memory = ort.OrtMemoryInfo("Cuda", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, device_id, ort.OrtMemType.DEFAULT)
        arena = ort.OrtArenaCfg({"arena_extend_strategy": strategy})
        ort.create_and_register_allocator_v2("CUDAExecutionProvider", memory, {"device_id": str(device_id)}, arena)
    except Exception as exc:  # noqa: BLE001 - an ORT without it still serves, with one arena per session
        log_warning(f"{name}: no shared CUDA arena ({exc}); each per-shape session keeps its own")
        return
    options.add_session_config_entry("session.use_env_allocators", "1")


def warm_shapes(config: dict) -> list[tuple[int, ...]]:
    """The `warm_shapes` parameter, largest first (the shared arena then grows once)."""
    text = string_parameters(config).get("warm_shapes", "")
    shapes = [tuple(int(n) for n in word.split("x")) for word in text.split()]
    return sorted(shapes, key=lambda shape: (int(np.prod(shape)), shape), reverse=True)


def log_warning(message: str) -> None:
    pb_utils.Logger.log_warn(message)


def log_info(message: str) -> None:
    pb_utils.Logger.log_info(message)


class TritonPythonModel:
    """One ONNX Runtime session per Triton model instance."""

    def initialize(self, args: dict) -> None:
        model_malloc()  # before the runtime allocates: see stub_malloc.model_malloc
        self.name, config = model_config(args, pb_utils)
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.inputs = [tensor["name"] for tensor in config.get("input", [])]
        self.optional = {tensor["name"] for tensor in config.get("input", []) if tensor.get("optional")}
        self.outputs = {
            tensor["name"]: pb_utils.triton_string_to_numpy(tensor["data_type"])
            for tensor in config.get("output", [])
        }
        kind = args.get("model_instance_kind", "CPU")
        device_id = int(args.get("model_instance_device_id", "0"))
        chosen, notes = providers(config, kind, device_id, ort.get_available_providers())
        for note in notes:
            log_warning(f"{self.name}: {note}")
        path = model_file(args, config, DEFAULT_MODEL_FILENAME)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{self.name}: model file not found: {path}")
        options = session_options(config)
        self.shape_limit = int(string_parameters(config).get("sessions_per_shape", "0") or 0)
        if self.shape_limit and kind == "GPU":
            share_cuda_arena(options, chosen, device_id, self.name)
        self.new_session = lambda: ort.InferenceSession(path, sess_options=options, providers=chosen)
        self.session = self.new_session()
        self.sessions: OrderedDict = OrderedDict()  # input shapes -> session, least recently used first
        self.run_options = run_options(config)
        self.limits = input_limits(string_parameters(config))
        running = self.session.get_providers()
        log_info(f"{self.name}: {path} on {', '.join(running)} ({kind} {device_id})")
        if kind == "GPU" and "CUDAExecutionProvider" in dict(chosen) and "CUDAExecutionProvider" not in running:
            # ORT falls back to the CPU when the CUDA libraries do not load: say so loudly
            log_warning(f"{self.name}: the CUDA execution provider did not start (CUDA/cuDNN libraries "
                        "not found?); this GPU instance runs on the CPU")
        missing = [name for name in self.outputs if name not in {o.name for o in self.session.get_outputs()}]
        if missing:
            raise pb_utils.TritonModelException(f"{self.name}: the ONNX model has no outputs named {missing}")
        self.warm(config)

    def warm(self, config: dict) -> None:
        """Run every `warm_shapes` shape once on zeros, through the sessions requests will use."""
        shapes = warm_shapes(config)
        if not shapes:
            return
        if len(self.inputs) != 1 or not self.shape_limit:
            raise pb_utils.TritonModelException(
                f"{self.name}: warm_shapes needs one input and sessions_per_shape (got inputs {self.inputs})")
        dtype = pb_utils.triton_string_to_numpy(config["input"][0]["data_type"])
        for shape in shapes:
            self.run({self.inputs[0]: np.zeros(shape, dtype)})
        log_info(f"{self.name}: {len(shapes)} input shapes warmed at load")

    def execute(self, requests: list) -> list:
        feeds = [array_feed(request, self.inputs, self.optional, self.name, pb_utils) for request in requests]
        outcomes = run_requests(feeds, self.max_batch_size, self.run, np.concatenate, self.name, self.limits)
        return [array_response(outcome, pb_utils, np.ascontiguousarray) for outcome in outcomes]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self.outputs)
        if not self.shape_limit:
            arrays = self.session.run(names, feed, self.run_options)
            return {name: array.astype(self.outputs[name], copy=False) for name, array in zip(names, arrays)}
        rows = next(iter(feed.values())).shape[0] if self.max_batch_size > 0 and feed else 0
        if rows:
            feed = padded_batch(feed, rows, self.max_batch_size)
        arrays = self.session_for(feed).run(names, feed, self.run_options)
        return {
            name: (array[:rows] if rows else array).astype(self.outputs[name], copy=False)
            for name, array in zip(names, arrays)
        }

    def session_for(self, feed: dict[str, np.ndarray]) -> ort.InferenceSession:
        """The session kept for these input shapes: made on first sight, the least recently used
        one dropped past `sessions_per_shape` (the first one made at load is used first)."""
        key = tuple(sorted((name, array.shape) for name, array in feed.items()))
        session = self.sessions.get(key)
        if session is not None:
            self.sessions.move_to_end(key)
            return session
        if not self.sessions:
            session = self.session
        else:
            if len(self.sessions) >= self.shape_limit:
                self.sessions.popitem(last=False)
            session = self.new_session()
        log_info(f"{self.name}: session {len(self.sessions) + 1} of at most {self.shape_limit}, for shapes {dict(key)}")
        self.sessions[key] = session
        return session
