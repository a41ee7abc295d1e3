"""Triton Python-based backend named `openvino`: runs `backend: "openvino"` models from ONNX files.

The tritonserver shipped in `nvidia-pytriton` has only the Python backend. A config with
`backend: "openvino"` makes Triton look for a backend folder of that name; when it holds this
`model.py`, Triton runs it in a Python stub per model instance. The rendered config.pbtxt (with
`default_model_filename: "model.onnx"`) and the ONNX file are what Triton's own OpenVINO backend
reads in the NGC container, and the parameters are OpenVINO's property names, which that backend
passes on the same way: `INFERENCE_NUM_THREADS`, `NUM_STREAMS`, `PERFORMANCE_HINT`,
`INFERENCE_PRECISION_HINT`.

Why: OpenVINO's CPU plugin runs the int8 CRAFT's convolutions on AMX where ONNX Runtime's run
on VNNI (2.2x faster on the 2-core Xeon), and the ppocr recognizer 2.6x faster. Per instance:
one compiled model with dynamic shapes and one infer request on the CPU. Request batching, limits and retry come from `stdr_batching`,
which `server.backend_directory()` copies beside this file.

Plain Python on purpose: it runs inside the stub with the server's interpreter and must not
import the stdr_deploy package. `openvino` is imported in `initialize`, so a server without it
fails to load the model with a message saying what to install.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub puts this folder on sys.path too, but last; first makes sure our copy is imported.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stdr_batching import (  # noqa: E402
    array_feed, array_response, input_limits, model_config, model_file, run_requests,
)
from stub_malloc import model_malloc  # noqa: E402

DEFAULT_MODEL_FILENAME = "model.xml"  # Triton's OpenVINO backend default; rendered configs name model.onnx
PROPERTIES = ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT")
INSTALL_HINT = "install OpenVINO in the server's Python (pip install 'stdr-deploy[openvino]')"


def compile_properties(parameters: dict[str, str]) -> dict[str, str]:
    """The OpenVINO properties among the config's string parameters (others are ours, or Triton's)."""
    return {key: value for key, value in parameters.items() if key in PROPERTIES and value != ""}


class TritonPythonModel:
    """One OpenVINO compiled model and infer request per Triton model instance (CPU)."""

    def initialize(self, args: dict) -> None:
        model_malloc()  # before the runtime allocates: see stub_malloc.model_malloc
        self.name, config = model_config(args, pb_utils)
        if args.get("model_instance_kind", "CPU") != "CPU":
            raise pb_utils.TritonModelException(f"{self.name}: this backend runs OpenVINO's CPU plugin (KIND_CPU)")
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        try:
            import openvino as ov
        except ImportError as exc:
            raise pb_utils.TritonModelException(f"{self.name}: {exc}; {INSTALL_HINT}") from None
        path = model_file(args, config, DEFAULT_MODEL_FILENAME)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{self.name}: model file not found: {path}")
        core = ov.Core()
        compiled = core.compile_model(core.read_model(path), "CPU", compile_properties(parameters))
        self.request = compiled.create_infer_request()
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.inputs = [tensor["name"] for tensor in config.get("input", [])]
        names = {port.get_any_name(): index for index, port in enumerate(compiled.outputs)}
        self.outputs = {
            tensor["name"]: pb_utils.triton_string_to_numpy(tensor["data_type"]) for tensor in config.get("output", [])
        }
        missing = [name for name in self.outputs if name not in names]
        model_inputs = {port.get_any_name() for port in compiled.inputs}
        if missing or set(self.inputs) != model_inputs:
            raise pb_utils.TritonModelException(
                f"{self.name}: config and model disagree: model inputs {sorted(model_inputs)}, outputs "
                f"{sorted(names)}; config inputs {self.inputs}, outputs {list(self.outputs)}")
        self.output_index = {name: names[name] for name in self.outputs}
        self.limits = input_limits(parameters)
        pb_utils.Logger.log_info(f"{self.name}: {path} on OpenVINO {ov.get_version()} CPU, {compile_properties(parameters)}")

    def execute(self, requests: list) -> list:
        feeds = [array_feed(request, self.inputs, set(), self.name, pb_utils) for request in requests]
        outcomes = run_requests(feeds, self.max_batch_size, self.run, np.concatenate, self.name, self.limits)
        return [array_response(outcome, pb_utils, np.ascontiguousarray) for outcome in outcomes]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference; the outputs are copied out of the request's buffers, which the next run reuses."""
        results = self.request.infer(feed)
        return {name: np.array(results[index], dtype=self.outputs[name]) for name, index in self.output_index.items()}
