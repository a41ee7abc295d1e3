"""Run a serialized TensorRT engine from Python: the accuracy check and the benchmarks use this.

Buffers are torch CUDA tensors (torch is already a dependency, so no pycuda or cuda-python);
each call sets the input shapes, allocates outputs at the shapes TensorRT infers from them,
binds every tensor address and runs `execute_async_v3` on a private stream.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

import numpy as np

from stdr_deploy.engines.adapter import import_tensorrt, make_logger
from stdr_deploy.errors import MissingDependency, UserInputError, ValidationError

# TensorRT DataType member name -> numpy (and torch) dtype name.
NUMPY_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT32": "int32",
    "INT64": "int64",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}


class TrtRunner:
    """`infer(feeds) -> outputs` over one engine file, on one GPU; use as a context manager."""

    def __init__(self, engine_path: str | Path, *, device: int = 0, trt: ModuleType | None = None):
        self.trt = trt or import_tensorrt()
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - torch is a core dependency
            raise MissingDependency(f"torch is needed to run TensorRT engines ({exc})") from exc
        if not torch.cuda.is_available():
            raise MissingDependency("running a TensorRT engine needs a CUDA GPU visible to torch")
        self.torch = torch
        self.device = torch.device("cuda", device)
        self._logger = make_logger(self.trt)
        self._runtime = self.trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
            if self.engine is None:
                raise ValidationError(
                    f"{engine_path} does not load with TensorRT {self.trt.__version__}: stale or corrupt",
                    hint="rebuild it with `stdr-deploy build`",
                )
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])

    def __enter__(self) -> "TrtRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.context = None
        self.engine = None

    def _torch_dtype(self, name: str) -> Any:
        dtype = self.engine.get_tensor_dtype(name).name
        if dtype not in NUMPY_DTYPES:
            raise ValidationError(f"engine tensor {name!r} has type {dtype}, which this runner does not handle")
        return getattr(self.torch, NUMPY_DTYPES[dtype])

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.input_names) - set(feeds)
        if missing:
            raise UserInputError(f"missing engine inputs: {sorted(missing)}")
        torch = self.torch
        buffers = {}
        with torch.cuda.device(self.device):
            for name in self.input_names:
                array = np.ascontiguousarray(feeds[name])
                tensor = torch.from_numpy(array).to(self.device, self._torch_dtype(name))
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise UserInputError(f"input {name!r} shape {list(tensor.shape)} is outside the engine's profile")
                buffers[name] = tensor
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                buffers[name] = torch.empty(shape, dtype=self._torch_dtype(name), device=self.device)
            for name, tensor in buffers.items():
                self.context.set_tensor_address(name, tensor.data_ptr())
            # Inputs were copied on the default stream; make the private stream wait for them.
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ValidationError("TensorRT execute_async_v3 failed:\n" + "\n".join(self._logger.messages[-5:]))
            self.stream.synchronize()
        return {name: buffers[name].cpu().numpy() for name in self.output_names}
