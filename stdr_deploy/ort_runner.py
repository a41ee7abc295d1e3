"""An ONNX file in an ONNX Runtime session behind `infer(feeds) -> outputs`, the runner interface
`OcrPipeline` drives. Low in the stack so the export checks (int8 validation) can run pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stdr_deploy.errors import MissingDependency


class OrtRunner:
    """An ONNX file in an ONNX Runtime session; `providers` default to the CPU provider."""

    def __init__(self, onnx_path: str | Path, providers: list[Any] | None = None, intra_op_threads: int = 0,
                 disabled_optimizers: tuple[str, ...] = ()):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependency(
                "onnxruntime is not installed", hint="pip install onnxruntime (or onnxruntime-gpu)"
            ) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=providers or ["CPUExecutionProvider"],
            disabled_optimizers=list(disabled_optimizers),
        )
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feeds)))


def random_session_input(session: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random value for `session`'s first input: uint8 pixels where it takes them (CRAFT), else
    standard-normal floats of its float type. For measurements, where only shape and type matter."""
    kind = session.get_inputs()[0].type
    if kind == "tensor(uint8)":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(shape, dtype=np.float32).astype(np.float16 if kind == "tensor(float16)" else np.float32)
