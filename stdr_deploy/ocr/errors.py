"""Errors of the OCR pipeline.

The package is also copied into the Triton model repository, where `stdr_deploy.errors` does not
exist; so it has its own small types, and the CLI turns them into `UserInputError`s.
"""

from __future__ import annotations


class OcrError(Exception):
    """Base class of everything this package raises on purpose."""


class ImageReadError(OcrError):
    """A file could not be read as an image; the message names the file."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


class BadImageError(OcrError):
    """An in-memory array is not an image the pipeline accepts (shape, dtype or size)."""
