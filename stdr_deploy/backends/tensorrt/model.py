"""Triton Python-based backend named `tensorrt`: runs `platform: "tensorrt_plan"` models.

The tritonserver shipped in `nvidia-pytriton` has only the Python backend. Triton maps the
platform `tensorrt_plan` to the backend name `tensorrt`; when that backend folder holds this
`model.py`, Triton runs it in a Python stub per model instance. The rendered config.pbtxt and
the engine file (`<model>/1/model.plan`, or `default_model_filename`) are the very files the
native TensorRT backend of the NGC container serves.

Per instance: one engine and execution context on the instance's GPU. Per `execute` call:
requests whose inputs agree past the batch axis are concatenated (up to the engine's max
batch), then for each run: `set_input_shape`, outputs allocated at the shapes TensorRT infers,
`set_tensor_address` for every tensor, `execute_async_v3` on a private CUDA stream, sync.
Outputs go back in the config's data types, on the CPU. A request that fails gets its own
error response; the others are answered.

Plain Python on purpose: it runs inside the stub with the server's interpreter and must not
import the stdr_deploy package. `tensorrt` and `torch` (CUDA buffers, DLPack) are imported in
`initialize`, so a server without them fails to load the model with a clear message.
Tensors cross the stub boundary as torch tensors through DLPack. Request batching and retry
come from `stdr_batching`, which `server.backend_directory()` copies beside this file (shared
with the `onnxruntime` backend).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

# The stub puts this folder on sys.path too, but last; first makes sure our copy is imported.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stdr_batching import input_limits, InvalidInput, model_file, run_requests, triton_error  # noqa: E402
from stub_malloc import model_malloc  # noqa: E402

DEFAULT_MODEL_FILENAME = "model.plan"
INSTALL_HINT = "install TensorRT 10 or 11 and torch with CUDA in the server's Python (pip install 'stdr-deploy[tensorrt]')"

# Triton config data types and TensorRT DataType names -> torch dtype attribute names.
TRITON_DTYPES = {
    "TYPE_FP32": "float32",
    "TYPE_FP16": "float16",
    "TYPE_BF16": "bfloat16",
    "TYPE_INT64": "int64",
    "TYPE_INT32": "int32",
    "TYPE_INT8": "int8",
    "TYPE_UINT8": "uint8",
    "TYPE_BOOL": "bool",
}
TENSORRT_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT64": "int64",
    "INT32": "int32",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}


# --- pure helpers (tested without Triton, TensorRT or a GPU) ----------------------------------


def io_types(config: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(input name -> torch dtype name, output name -> torch dtype name) from the model config."""

    def table(section: str) -> dict[str, str]:
        types = {}
        for tensor in config.get(section, []):
            if tensor.get("reshape"):
                raise ValueError(f"'reshape' on {tensor['name']!r} is not supported by this backend")
            if tensor["data_type"] not in TRITON_DTYPES:
                raise ValueError(f"{tensor['name']!r}: data type {tensor['data_type']} is not supported")
            types[tensor["name"]] = TRITON_DTYPES[tensor["data_type"]]
        return types

    return table("input"), table("output")


def missing_in_engine(config_names: list[str], engine_names: list[str]) -> list[str]:
    """Config tensors the engine lacks (the engine may have more outputs than are served)."""
    return [name for name in config_names if name not in engine_names]


# --- the model --------------------------------------------------------------------------------


class TritonPythonModel:
    """One TensorRT engine and execution context per Triton model instance."""

    def initialize(self, args: dict) -> None:
        model_malloc()  # before the runtime allocates: see stub_malloc.model_malloc
        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        try:
            self.input_types, self.output_types = io_types(config)
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"{self.name}: {exc}") from None
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.limits = input_limits({k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()})
        try:
            import tensorrt as trt
            import torch
        except ImportError as exc:
            raise pb_utils.TritonModelException(f"{self.name}: {exc}; {INSTALL_HINT}") from None
        if args.get("model_instance_kind", "GPU") != "GPU" or not torch.cuda.is_available():
            raise pb_utils.TritonModelException(f"{self.name}: TensorRT engines run on a GPU (instance kind KIND_GPU)")
        self.torch = torch
        self.device = torch.device("cuda", int(args.get("model_instance_device_id", "0")))
        path = model_file(args, config, DEFAULT_MODEL_FILENAME)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{self.name}: engine file not found: {path}")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with torch.cuda.device(self.device):
            with open(path, "rb") as fh:
                self.engine = self.runtime.deserialize_cuda_engine(fh.read())
            if self.engine is None:
                raise pb_utils.TritonModelException(
                    f"{self.name}: {path} does not load with TensorRT {trt.__version__} (built for another "
                    "GPU or TensorRT version, or corrupt); rebuild it with `stdr-deploy build`"
                )
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.engine_inputs = inputs
        self.engine_outputs = [n for n in names if n not in inputs]
        missing = missing_in_engine(list(self.input_types), inputs) + missing_in_engine(
            list(self.output_types), self.engine_outputs
        )
        if missing or set(inputs) != set(self.input_types):
            raise pb_utils.TritonModelException(
                f"{self.name}: config and engine disagree: engine inputs {inputs}, outputs {self.engine_outputs}; "
                f"config inputs {list(self.input_types)}, outputs {list(self.output_types)}"
            )
        self.engine_types = {n: getattr(torch, TENSORRT_DTYPES[self.engine.get_tensor_dtype(n).name]) for n in names}
        first = inputs[0]
        self.engine_max_batch = (
            int(self.engine.get_tensor_profile_shape(first, 0)[2][0]) if self.max_batch_size > 0 else 0
        )

    def execute(self, requests: list) -> list:
        feeds = [self.request_feed(request) for request in requests]
        max_batch = min(self.max_batch_size, self.engine_max_batch)
        outcomes = run_requests(feeds, max_batch, self.run, self.torch.cat, self.name, self.limits)
        return [self.response(request, outcome) for request, outcome in zip(requests, outcomes)]

    def request_feed(self, request):
        """{input name: CPU torch tensor}, or the exception that makes this request fail."""
        feed = {}
        for name in self.input_types:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                return InvalidInput(f"{self.name}: missing input {name!r}")
            feed[name] = self.torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
        return feed

    def run(self, feed: dict) -> dict:
        """One engine run: CPU tensors in, CPU tensors (config dtypes) out."""
        torch = self.torch
        context = self.context
        buffers = {}
        with torch.cuda.device(self.device):
            for name in self.engine_inputs:
                tensor = feed[name].to(self.device, self.engine_types[name]).contiguous()
                if not context.set_input_shape(name, tuple(tensor.shape)):
                    low, _, high = self.engine.get_tensor_profile_shape(name, 0)
                    raise ValueError(
                        f"input {name!r} shape {list(tensor.shape)} is outside the engine's profile "
                        f"{list(low)} .. {list(high)}"
                    )
                buffers[name] = tensor
            for name in self.engine_outputs:
                shape = tuple(context.get_tensor_shape(name))
                buffers[name] = torch.empty(shape, dtype=self.engine_types[name], device=self.device)
            for name, tensor in buffers.items():
                context.set_tensor_address(name, tensor.data_ptr())
            self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the input copies
            if not context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the server log)")
            self.stream.synchronize()
        return {
            name: buffers[name].to("cpu", getattr(torch, dtype)) for name, dtype in self.output_types.items()
        }

    def response(self, request, outcome):
        if isinstance(outcome, Exception):
            return pb_utils.InferenceResponse(error=triton_error(outcome, pb_utils))
        wanted = set(request.requested_output_names()) or set(outcome)
        tensors = [
            pb_utils.Tensor.from_dlpack(name, self.torch.utils.dlpack.to_dlpack(tensor.contiguous()))
            for name, tensor in outcome.items()
            if name in wanted
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)
