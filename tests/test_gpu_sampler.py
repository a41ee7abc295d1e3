"""The bench's GPU sampler: silent without a GPU, correct aggregation with one.

This machine has no NVIDIA driver, so the real NVML fails to initialise: that path is tested
for real. The aggregation needs readings from a GPU at run time, so it is fed by `_SteppedNvml`,
a minimal stand-in for the five pynvml calls the sampler makes (the one fake in this file).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from stdr_deploy.bench.gpu_sampler import GpuSampler


def test_without_a_driver_the_sampler_records_nothing_and_says_why():
    with GpuSampler(period_s=0.01) as sampler:
        time.sleep(0.05)
    assert sampler.levels() == []
    assert sampler.note and sampler.note.startswith("GPU not sampled")


class _SteppedNvml:
    """Stand-in for pynvml on a host with one GPU whose utilisation steps 0, 50, 100, 100, ..."""

    def __init__(self):
        self.readings = iter([0, 50, 100])
        self.shut_down = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut_down = True

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return b"Stand-in GPU"

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=next(self.readings, 100))

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=(1000 + 10 * len(str(handle))) << 20)


def test_levels_report_mean_and_peak_of_every_reading():
    nvml = _SteppedNvml()
    with GpuSampler(period_s=0.005, nvml=nvml) as sampler:
        time.sleep(0.1)
    (level,) = sampler.levels()
    assert nvml.shut_down
    assert level.name == "Stand-in GPU" and level.samples >= 4
    # readings were 0, 50, then 100 for every later sample
    expected_mean = (0 + 50 + 100 * (level.samples - 2)) / level.samples
    assert abs(level.utilization_mean_pct - round(expected_mean, 1)) < 1e-9
    assert level.utilization_max_pct == 100.0
    assert level.memory_used_max_mib == 1010


def test_smoke_sums_each_process_gpu_memory_over_the_plan_gpus(monkeypatch):
    """smoke.gpu_memory: NVML's per-process figures on each GPU of the plan, summed per pid; a
    process NVML cannot account (usedGpuMemory None, some containers) is left out; and the GPUs'
    whole used memory beside them. The readings come from a stand-in for the five pynvml calls
    it makes (no GPU here)."""
    import sys

    from stdr_deploy.smoke import gpu_memory

    processes = {0: [SimpleNamespace(pid=10, usedGpuMemory=300), SimpleNamespace(pid=11, usedGpuMemory=None)],
                 1: [SimpleNamespace(pid=10, usedGpuMemory=200), SimpleNamespace(pid=12, usedGpuMemory=50)],
                 2: [SimpleNamespace(pid=13, usedGpuMemory=999)]}
    stand_in = SimpleNamespace(nvmlInit=lambda: None, nvmlShutdown=lambda: None,
                               nvmlDeviceGetHandleByIndex=lambda index: index,
                               nvmlDeviceGetMemoryInfo=lambda handle: SimpleNamespace(used=1000 * (handle + 1)),
                               nvmlDeviceGetComputeRunningProcesses=lambda handle: processes[handle])
    monkeypatch.setitem(sys.modules, "pynvml", stand_in)
    total, by_process = gpu_memory((0, 1))
    assert by_process == {10: 500, 12: 50}
    assert total == 3000  # GPUs 0 and 1 only
