"""Typed errors; each maps to one process exit code so scripts can tell failures apart."""

from __future__ import annotations


class StdrError(Exception):
    """Base class: a failure we understand and can explain without a traceback."""

    exit_code = 1
    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class UserInputError(StdrError):
    """Bad arguments, unknown names, unreadable or malformed input files."""

    exit_code = 2


class MissingDependency(StdrError):
    """An optional library or binary the requested step needs is not installed."""

    exit_code = 3


class HostUnsupported(StdrError):
    """The host cannot run what was asked (e.g. TensorRT variant without a GPU)."""

    exit_code = 4


class ValidationError(StdrError):
    """A produced artefact failed its check (export parity, engine accuracy)."""

    exit_code = 5


class WeightsError(StdrError):
    """Weights missing, corrupt, of the wrong model, or not downloadable."""

    exit_code = 6


class ServerError(StdrError):
    """The Triton server failed to start, died, or a model failed to load."""

    exit_code = 7


class CrashLoop(ServerError):
    """The supervisor restarted or reloaded too often in too short a time and gave up."""


class SmokeFailed(StdrError):
    """The deployed server answered, but a smoke check failed."""

    exit_code = 8


class ServerUnreachable(ServerError):
    """No server answers at the address: nothing else (images, models) can be blamed yet."""


# torch comes only with the `export` extra: the deployment core serves exported ONNX files.
EXPORT_EXTRA_HINT = "pip install 'stdr-deploy[export]' (or deploy from a directory made by `stdr-deploy package`)"


def require_torch():
    """The torch module, or MissingDependency (exit 3) saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependency(
            "this step needs PyTorch (exporting models, --runtime torch), which is not installed",
            hint=EXPORT_EXTRA_HINT,
        ) from exc
    return torch


# onnx (the graph library, 31 MB) is not in the core either: ONNX Runtime serves, reads the
# recognizer's metadata and checks artefacts without it. These extras bring it.
ONNX_EXTRA_HINTS = {
    "export": EXPORT_EXTRA_HINT,
    "tensorrt": "pip install 'stdr-deploy[tensorrt]' ('stdr-deploy[tensorrt-rtx]' for ahead-of-time builds; "
    "`build --dry-run` needs only `pip install onnx`)",
    "bench": "pip install 'stdr-deploy[bench]'",
}


def require_onnx(needed_for: str, extra: str):
    """The onnx module, or MissingDependency (exit 3) naming the extra that installs it."""
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependency(
            f"{needed_for} needs the onnx package, which is not installed", hint=ONNX_EXTRA_HINTS[extra]
        ) from exc
    return onnx
