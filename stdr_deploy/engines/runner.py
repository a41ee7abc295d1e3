"""Run a serialized TensorRT engine from Python (the accuracy check, the benchmarks): Polygraphy's TrtRunner.

Needs full TensorRT and a CUDA GPU at run time; nothing here runs in this project's CI.
The engine runs on the current CUDA device: `device` is made current before it is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from stdr_deploy.engines.adapter import Builder
from stdr_deploy.errors import MissingDependency, ValidationError


class TrtRunner:
    """`infer(feeds) -> outputs` over one engine file, on one GPU; use as a context manager."""

    def __init__(self, engine_path: str | Path, *, device: int = 0):
        import torch

        if not torch.cuda.is_available():
            raise MissingDependency("running a TensorRT engine needs a CUDA GPU visible to torch")
        builder = Builder.tensorrt()
        torch.cuda.set_device(device)
        engine = Path(engine_path).read_bytes()
        if not builder.loads(engine):
            raise ValidationError(
                f"{engine_path} does not load with TensorRT {builder.version}: stale or corrupt",
                hint="rebuild it with `stdr-deploy build`",
            )
        self.runner = builder.backend.TrtRunner(builder.backend.EngineFromBytes(engine))
        self.runner.activate()

    def __enter__(self) -> "TrtRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.runner.is_active:
            self.runner.deactivate()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(self.runner.infer(dict(feeds)))
