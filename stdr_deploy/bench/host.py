"""What a result was measured on: CPU, GPUs, load, library versions, and the results folder name.

Read directly (/proc, torch, importlib.metadata) with no dependency on the deployment's host
probe, so `benchmarks/gpu_bench.py` can describe a bare GPU machine the same way.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

from stdr_deploy.bench.peak import read_cpu_peak, read_gpu_peak
from stdr_deploy.bench.report import host_slug

PACKAGES = ("stdr-deploy", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "opencv-python-headless", "tritonclient", "nvidia-pytriton", "tensorrt", "easyocr")


def host_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    blocks = [dict(_pair(l) for l in b.splitlines() if ":" in l) for b in cpuinfo.strip().split("\n\n") if b.strip()]
    model = blocks[0].get("model name", platform.processor() or "unknown CPU") if blocks else platform.processor()
    cores = len({(b.get("physical id", "0"), b.get("core id", b.get("processor"))) for b in blocks}) or (os.cpu_count() or 1)
    gpus = _gpus()
    return {
        "slug": host_slug(model, cores, gpus),
        "cpu_model": model,
        "cores": cores,
        "logical_cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpus": gpus,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def peaks() -> dict[str, Any]:
    gpu = read_gpu_peak()
    return {"cpu": read_cpu_peak(), **({"gpu": gpu} if gpu else {})}


def load_average() -> list[float]:
    return list(os.getloadavg())


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _gpus() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append(
            {
                "index": i,
                "name": props.name,
                "memory_total": props.total_memory,
                "multiprocessors": props.multi_processor_count,
                "capability": [props.major, props.minor],
            }
        )
    return out


def _pair(line: str) -> tuple[str, str]:
    key, _, value = line.partition(":")
    return key.strip(), value.strip()
