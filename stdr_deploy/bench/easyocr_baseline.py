"""EasyOCR 1.7.2 side by side: the same two weight files, run by EasyOCR itself, in this process.

Benchmark-only (`pip install 'stdr-deploy[easyocr]'`); the product never imports it. EasyOCR
imports torchvision, whose PyPI wheel for this torch is a CUDA build whose C++ extension cannot
load beside a CPU-only torch (`operator torchvision::nms does not exist`). EasyOCR runs none of
torchvision's C++ ops, so declaring the two op schemas torchvision registers fake kernels for
(`nms`, `qnms`) before the import is enough for it to load.

`readtext` gets the image path, as in the recorded baseline (EasyOCR reads a path differently
from an array: libpng grayscale for the recognizer, and it treats arrays as BGR).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

from stdr_deploy.bench.stats import LatencyStats
from stdr_deploy.errors import MissingDependency

VERSION = "1.7.2"


def import_easyocr() -> ModuleType:
    """`easyocr`, made importable beside a CPU-only torch; MissingDependency when absent."""
    import importlib.util

    if importlib.util.find_spec("easyocr") is None:
        raise MissingDependency(
            "easyocr is not installed", hint=f"pip install 'stdr-deploy[easyocr]' (easyocr=={VERSION})"
        )
    import torch

    if torch.version.cuda is None and not _has_op("torchvision::nms"):  # CPU-only torch
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARIES.append(library)
    import easyocr

    return easyocr


def make_reader(threads: int | None = None) -> Any:
    """`Reader(['en'])` on the CPU with the offline weights (craft_mlt_25k + english_g2)."""
    import easyocr_en_models
    import torch

    easyocr = import_easyocr()
    if threads:
        torch.set_num_threads(threads)
    return easyocr.Reader(
        ["en"], gpu=False, model_storage_directory=easyocr_en_models.model_dir(), download_enabled=False, verbose=False
    )


def latency(reader: Any, images: Mapping[str, Path], warmup: int = 1, runs: int = 3) -> dict[str, LatencyStats]:
    """`readtext(path)` wall time per image: `warmup` untimed calls, then `runs` timed ones."""
    out = {}
    for label, path in images.items():
        for _ in range(warmup):
            reader.readtext(str(path))
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            reader.readtext(str(path))
            samples.append(time.perf_counter() - t0)
        out[label] = LatencyStats.from_seconds(samples)
    return out


def read_words(reader: Any, path: Path) -> list[tuple[str, list[list[float]]]]:
    """(text, polygon) per detected word, as EasyOCR's default `readtext` returns them."""
    return [(text, [[float(x), float(y)] for x, y in box]) for box, text, _ in reader.readtext(str(path))]


def versions() -> dict[str, str]:
    import torch

    easyocr = import_easyocr()
    return {"easyocr": getattr(easyocr, "__version__", VERSION), "torch": torch.__version__, "torch_threads": str(torch.get_num_threads())}


_LIBRARIES: list[Any] = []  # op-schema libraries must outlive the import that needs them


def _has_op(qualified: str) -> bool:
    import torch

    namespace, name = qualified.split("::")
    try:
        getattr(getattr(torch.ops, namespace), name)
        return True
    except (AttributeError, RuntimeError):
        return False
