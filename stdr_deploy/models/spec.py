"""What every model family declares: IO tensors, export settings, preprocessing constants.

One frozen `ModelSpec` per family (Optimum style): the exporter, validator, planner and
renderer read these facts instead of knowing about CRAFT or PARSeq themselves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from stdr_deploy.errors import UserInputError


@dataclass(frozen=True)
class TensorSpec:
    """One input or output; a `str` dim is a named dynamic axis, an `int` dim is fixed."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    def dynamic_axes(self) -> dict[int, str]:
        """Axis index -> name, the form `torch.onnx.export(dynamic_axes=...)` wants."""
        return {i: d for i, d in enumerate(self.dims) if isinstance(d, str)}


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """The declarative facts of one model family (one shared instance per family: treat as constant).

    `params` counts every float value in the weights (parameters plus BatchNorm running
    statistics), i.e. what the memory planner multiplies by the bytes per value.
    `example_hw` fills the named `height`/`width` dims of `example_input` when not given.
    `build` makes the bare architecture (random weights) from the family's options.
    `onnx_native` (families whose official artefact is ONNX, e.g. PP-OCR): our tensor name ->
    the upstream file's; their weights are that file and their export is check + simplify +
    parity against it, with the IO renamed to ours.
    """

    name: str
    role: str  # "detector" | "recognizer"
    triton_name: str
    default_weights: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    atol: float
    preprocess: dict[str, Any]
    charset: str | None
    num_classes: int | None
    params: int
    validation_shapes: tuple[tuple[int, ...], ...]
    example_hw: tuple[int, int]
    build: Callable[..., Any] = field(repr=False)
    optional_outputs: tuple[TensorSpec, ...] = ()
    onnx_native: dict[str, str] | None = None

    @property
    def input(self) -> TensorSpec:
        """The single network input (all families take one image tensor)."""
        return self.inputs[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts (everything but `build`), e.g. for status files and `--json` output."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "build"}
        for key in ("inputs", "outputs", "optional_outputs"):
            data[key] = [dataclasses.asdict(t) for t in data[key]]
        return data

    def dynamic_axes(self, with_optional: bool = False) -> dict[str, dict[int, str]]:
        tensors = self.inputs + self.outputs + (self.optional_outputs if with_optional else ())
        return {t.name: axes for t in tensors if (axes := t.dynamic_axes())}

    def input_shape(self, batch: int = 2, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        """Concrete input shape; fixed dims must not be overridden with other values."""
        wanted = {"batch": batch, "height": height or self.example_hw[0], "width": width or self.example_hw[1]}
        given = {"height": height, "width": width}
        shape = []
        for axis, dim in zip(("batch", "channels", "height", "width"), self.input.dims):
            if isinstance(dim, str):
                shape.append(int(wanted[dim]))
            elif given.get(axis) not in (None, dim):
                raise UserInputError(f"{self.name} has a fixed input {axis} of {dim}, not {given[axis]}")
            else:
                shape.append(dim)
        multiple = int(self.preprocess.get("size_multiple", 1))
        if any(s % multiple for s in shape[2:]):
            raise UserInputError(f"{self.name} input height and width must be multiples of {multiple}, got {shape}")
        return tuple(shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The concrete shape of the first output for an NCHW input shape: its named dims resolved
        (`steps` from the preprocess `output_stride` and `steps_offset`)."""
        batch, _, height, width = input_shape
        steps = width // int(self.preprocess.get("output_stride", 1)) + int(self.preprocess.get("steps_offset", 0))
        named = {
            "batch": batch,
            "height": height,
            "width": width,
            "half_height": height // 2,
            "half_width": width // 2,
            "steps": steps,
        }
        return tuple(dim if isinstance(dim, int) else named[dim] for dim in self.outputs[0].dims)

    def example_input(
        self, batch: int = 2, height: int | None = None, width: int | None = None, seed: int = 0
    ) -> np.ndarray:
        """Seeded input in the model's range and dtype (see `random_input`)."""
        return self.random_input(self.input_shape(batch, height, width), np.random.default_rng(seed))

    def random_input(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Uniform pixels of `shape`: uint8 as they are for a uint8 input (the graph normalises
        them), else float32 normalised as preprocessing does."""
        if self.input.dtype == "uint8":
            return rng.integers(0, 256, size=shape, dtype=np.uint8)
        pixels = rng.random(shape, dtype=np.float32)
        mean = np.asarray(self.preprocess["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.preprocess["std"], dtype=np.float32).reshape(1, -1, 1, 1)
        return ((pixels - mean) / std).astype(np.float32)

    def pixel_normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) per channel on the pixel scale, float32 formed from float64 (EasyOCR's steps)."""
        scale = float(self.preprocess["pixel_scale"])
        mean = (np.asarray(self.preprocess["mean"], dtype=np.float64) * scale).astype(np.float32)
        std = (np.asarray(self.preprocess["std"], dtype=np.float64) * scale).astype(np.float32)
        return mean, std
