"""GPU utilisation and memory while a load level runs, read through NVML in a background thread.

Issue 15 judges the served pipeline by how busy it keeps the GPU, so each load level records
the GPU's mean utilisation (NVML's "percent of time a kernel was running" over its last sample
period) and the peak memory in use, per GPU. Without NVML (a CPU host) the sampler records
nothing and says so; it never fails a benchmark.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

SAMPLE_PERIOD_S = 0.1  # NVML refreshes utilisation every 1/6 s to 1 s depending on the GPU


@dataclass(frozen=True)
class GpuLevel:
    """One GPU over one load level."""

    index: int
    name: str
    samples: int
    utilization_mean_pct: float
    utilization_max_pct: float
    memory_used_max_mib: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class GpuSampler:
    """`with GpuSampler() as sampler: ...` then `sampler.levels()`; empty where NVML is missing."""

    def __init__(self, period_s: float = SAMPLE_PERIOD_S, nvml: Any = None):
        self.period_s = period_s
        self._nvml = nvml
        self._handles: list[tuple[int, str, Any]] = []
        self._util: dict[int, list[int]] = {}
        self._memory: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.note: str | None = None

    def __enter__(self) -> "GpuSampler":
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            self._nvml.nvmlInit()
            for index in range(self._nvml.nvmlDeviceGetCount()):
                handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
                name = self._nvml.nvmlDeviceGetName(handle)
                self._handles.append((index, name.decode() if isinstance(name, bytes) else name, handle))
        except Exception as exc:  # noqa: BLE001 - no NVML, no driver, no GPU: nothing to sample
            self.note = f"GPU not sampled: {exc or type(exc).__name__}"
            self._handles = []
            return self
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period_s)

    def _sample(self) -> None:
        for index, _, handle in self._handles:
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                used = self._nvml.nvmlDeviceGetMemoryInfo(handle).used // (1 << 20)
            except Exception:  # noqa: BLE001 - one failed reading is skipped, not fatal
                continue
            self._util.setdefault(index, []).append(int(util))
            self._memory[index] = max(self._memory.get(index, 0), int(used))

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass

    def levels(self) -> list[GpuLevel]:
        rows = []
        for index, name, _ in self._handles:
            util = self._util.get(index, [])
            if not util:
                continue
            rows.append(
                GpuLevel(index, name, len(util), round(sum(util) / len(util), 1), float(max(util)), self._memory.get(index, 0))
            )
        return rows
