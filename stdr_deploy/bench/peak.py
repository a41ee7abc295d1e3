"""Peak FLOP/s of the CPU or GPU, so measured throughput can be read as a fraction of the limit.

CPU: physical cores x max clock x FLOP per cycle per core, where FLOP per cycle is what the
widest FMA unit does in float32 (AVX-512: 2 FMA units x 16 lanes x 2 = 64; AVX2: 2 x 8 x 2 =
32; SSE: 2 x 4 = 8), assuming two FMA ports as on current server cores. GPU: SMs x FP32 lanes
per SM x 2 x max SM clock for float32 (no tensor cores), plus the datasheet's dense FP16
tensor-core peak for the cards we know. Each figure says where its inputs came from, because
in a VM the clock is often only the nominal one.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# FP32 CUDA cores per SM by compute capability (NVIDIA CUDA programming guide, arithmetic throughput table)
FP32_LANES_PER_SM = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128, (10, 0): 128, (12, 0): 128}
# Dense FP16 tensor-core TFLOP/s from the datasheets, by a substring of the NVML/torch name
FP16_TENSOR_TFLOPS = {"H200": 989.4, "H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "A100": 312.0}


@dataclass(frozen=True)
class Peak:
    """One device's peak: `fp32_gflops` always, `fp16_tensor_gflops` when known."""

    device: str
    fp32_gflops: float
    fp16_tensor_gflops: float | None
    how: str  # the formula with its numbers
    source: str  # where cores and clock came from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def for_precision(self, precision: str) -> float:
        """The ceiling for a run in `precision`: "fp32", "tf32" (fp32 data on the tensor cores, at
        half the dense FP16 rate on Ampere and Hopper) or "fp16"."""
        if precision == "fp16" and self.fp16_tensor_gflops:
            return self.fp16_tensor_gflops
        if precision == "tf32" and self.fp16_tensor_gflops:
            return self.fp16_tensor_gflops / 2
        return self.fp32_gflops


def flop_per_cycle(flags: set[str]) -> int:
    if "avx512f" in flags:
        return 64
    if "avx2" in flags and "fma" in flags:
        return 32
    return 8


def cpu_peak(cpuinfo: str, max_freq_khz: int | None = None) -> Peak:
    """Peak float32 GFLOP/s from /proc/cpuinfo text and, if known, sysfs cpuinfo_max_freq."""
    blocks = [b for b in cpuinfo.strip().split("\n\n") if b.strip()]
    fields = [dict(_pair(line) for line in block.splitlines() if ":" in line) for block in blocks]
    cores = {(f.get("physical id", "0"), f.get("core id", f.get("processor"))) for f in fields}
    physical = len(cores) or len(fields)
    flags = set(fields[0].get("flags", "").split()) if fields else set()
    model = fields[0].get("model name", "unknown CPU") if fields else "unknown CPU"
    if max_freq_khz:
        ghz, clock_src = max_freq_khz / 1e6, "sysfs cpuinfo_max_freq"
    elif match := re.search(r"@\s*([\d.]+)\s*GHz", model):
        ghz, clock_src = float(match.group(1)), "the model name's nominal clock"
    else:
        mhz = max((float(f["cpu MHz"]) for f in fields if "cpu MHz" in f), default=0.0)
        ghz, clock_src = mhz / 1000.0, "/proc/cpuinfo 'cpu MHz' (the current clock; turbo not visible)"
    per_cycle = flop_per_cycle(flags)
    return Peak(
        device=f"{model} ({physical} cores)",
        fp32_gflops=physical * ghz * per_cycle,
        fp16_tensor_gflops=None,
        how=f"{physical} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle",
        source=f"cores from /proc/cpuinfo (physical id, core id); clock from {clock_src}",
    )


def read_cpu_peak() -> Peak:
    """This machine's CPU peak (Linux)."""
    text = Path("/proc/cpuinfo").read_text()
    sysfs = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    khz = int(sysfs.read_text()) if sysfs.is_file() else None
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    peak = cpu_peak(text, khz)
    return peak if allowed is None else _note(peak, f"; {allowed} logical CPUs usable by this process")


def gpu_peak(name: str, multiprocessors: int, capability: tuple[int, int], max_sm_clock_mhz: float) -> Peak:
    lanes = FP32_LANES_PER_SM.get(tuple(capability), 128)
    tensor = next((v for k, v in FP16_TENSOR_TFLOPS.items() if k in name), None)
    return Peak(
        device=name,
        fp32_gflops=multiprocessors * lanes * 2 * max_sm_clock_mhz / 1000.0,
        fp16_tensor_gflops=tensor * 1000.0 if tensor else None,
        how=f"{multiprocessors} SMs x {lanes} FP32 lanes x 2 x {max_sm_clock_mhz:.0f} MHz",
        source="SMs and capability from torch.cuda; max SM clock from NVML; FP16 tensor peak from the datasheet table",
    )


def read_gpu_peak(index: int = 0) -> Peak | None:
    """Peak of CUDA device `index` through torch and NVML; None without a CUDA device."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(index)
    clock = _nvml_max_sm_clock(index) or getattr(props, "clock_rate", 0) / 1000.0  # torch reports kHz
    return gpu_peak(props.name, props.multi_processor_count, (props.major, props.minor), clock)


def _nvml_max_sm_clock(index: int) -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return float(pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM))
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML missing or refusing: fall back to torch's clock
        return None


def _pair(line: str) -> tuple[str, str]:
    key, _, value = line.partition(":")
    return key.strip(), value.strip()


def _note(peak: Peak, extra: str) -> Peak:
    return Peak(peak.device, peak.fp32_gflops, peak.fp16_tensor_gflops, peak.how, peak.source + extra)
