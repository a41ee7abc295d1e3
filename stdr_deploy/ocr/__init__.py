"""The OCR pipeline itself: image in, words out, for any runtime behind a small Runner interface.

Self-contained on purpose: only the standard library, numpy, OpenCV and Pillow, and relative
imports, because `stdr-deploy render` copies this package into the Triton model repository
(as `stdr_ocr`), where the pipeline model imports it.
"""

from .errors import BadImageError, ImageReadError, OcrError
from .image_io import read_image
from .pipeline import OcrPipeline, Runner, Word
from .settings import PipelineSettings

__all__ = [
    "BadImageError",
    "ImageReadError",
    "OcrError",
    "OcrPipeline",
    "PipelineSettings",
    "Runner",
    "Word",
    "read_image",
]
