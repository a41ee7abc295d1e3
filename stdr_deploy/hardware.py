"""What this host offers for inference: GPUs (NVML), CPU, memory, container limits, runtimes.

`probe_host()` does the reading; everything else here is pure. The result, `HostFacts`, is a
versioned JSON document (the "host file") that the planner turns into a deployment plan. Host
files of machines we cannot reach are written by hand from vendor figures and say so
(`source: "vendor-spec"`).

This module needs only the standard library (plus `pynvml`, `onnxruntime` and `tensorrt` when
present), so `python -m stdr_deploy.hardware` prints a host file on a bare GPU machine.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stdr_deploy.memory import MIB

FORMAT_VERSION = 1
SOURCES = ("probe", "vendor-spec")

# CPU flags that change which inference kernels run (ONNX Runtime, oneDNN).
INFERENCE_CPU_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)

# cgroup v1 reports "no limit" as a huge number near 2**63 rounded down to the page size.
_CGROUP_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class GpuFacts:
    index: int
    name: str
    memory_total_mib: int
    memory_free_mib: int
    compute_capability: tuple[int, int]
    mig_enabled: bool  # in MIG mode the whole-GPU figures are not what one process gets


@dataclass(frozen=True)
class CpuFacts:
    model_name: str
    physical_cores: int
    logical_cores: int
    allowed_cpus: int  # logical CPUs this process may run on (cpuset / affinity)
    features: tuple[str, ...]  # the INFERENCE_CPU_FLAGS present


@dataclass(frozen=True)
class RuntimeFacts:
    onnxruntime_version: str | None
    onnxruntime_providers: tuple[str, ...]
    tensorrt_version: str | None
    tritonserver: str | None  # path of the binary, on PATH or embedded (PyTriton)
    triton_backends: tuple[str, ...]  # backend folders next to that binary
    openvino_version: str | None = None  # the `openvino` distribution (the `openvino` extra)


@dataclass(frozen=True)
class HostFacts:
    source: str  # "probe" | "vendor-spec"
    machine: str  # e.g. "x86_64"
    system: str  # OS and kernel, e.g. "Linux-6.8.0-x86_64-with-glibc2.39"
    python: str
    cpu: CpuFacts
    memory_total_mib: int
    memory_available_mib: int
    cgroup_cpu_limit: float | None  # cores allowed by the CPU quota; None = no quota
    cgroup_memory_limit_mib: int | None  # None = no limit below the host's memory
    driver_version: str | None
    cuda_driver_version: str | None  # highest CUDA version the driver supports, e.g. "12.4"
    gpus: tuple[GpuFacts, ...]
    runtimes: RuntimeFacts
    notes: tuple[str, ...] = ()  # why a reading is missing, or where vendor figures come from
    taken_at: str | None = None  # UTC time of the reading (None for vendor-spec files)
    format_version: int = FORMAT_VERSION

    @property
    def usable_cores(self) -> int:
        """Physical cores this process can keep busy: the smallest of cores, cpuset and quota.

        A cpuset counts logical CPUs; on an SMT host two of them share one core, so it is
        scaled by physical/logical before comparing.
        """
        cpu = self.cpu
        limits = [cpu.physical_cores]
        if cpu.allowed_cpus < cpu.logical_cores:
            limits.append(cpu.allowed_cpus * cpu.physical_cores // max(cpu.logical_cores, 1))
        if self.cgroup_cpu_limit is not None:
            limits.append(math.floor(self.cgroup_cpu_limit))
        return max(1, min(limits))

    @property
    def usable_memory_mib(self) -> int:
        """Host memory a deployment may take now: available memory, capped by a cgroup limit."""
        if self.cgroup_memory_limit_mib is None:
            return self.memory_available_mib
        return min(self.memory_available_mib, self.cgroup_memory_limit_mib)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HostFacts":
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"host file format_version {data.get('format_version')!r} is not {FORMAT_VERSION}; "
                "probe the host again with `stdr-deploy probe --json`"
            )
        if data.get("source") not in SOURCES:
            raise ValueError(f"host file source must be one of {SOURCES}, got {data.get('source')!r}")
        _check_host(data)
        runtimes = data["runtimes"]
        return cls(
            source=data["source"],
            machine=data["machine"],
            system=data["system"],
            python=data["python"],
            cpu=CpuFacts(**{**data["cpu"], "features": tuple(data["cpu"]["features"])}),
            memory_total_mib=int(data["memory_total_mib"]),
            memory_available_mib=int(data["memory_available_mib"]),
            cgroup_cpu_limit=data.get("cgroup_cpu_limit"),
            cgroup_memory_limit_mib=data.get("cgroup_memory_limit_mib"),
            driver_version=data.get("driver_version"),
            cuda_driver_version=data.get("cuda_driver_version"),
            gpus=tuple(
                GpuFacts(**{**gpu, "compute_capability": tuple(gpu["compute_capability"])}) for gpu in data["gpus"]
            ),
            runtimes=RuntimeFacts(
                onnxruntime_version=runtimes.get("onnxruntime_version"),
                onnxruntime_providers=tuple(runtimes.get("onnxruntime_providers", ())),
                tensorrt_version=runtimes.get("tensorrt_version"),
                tritonserver=runtimes.get("tritonserver"),
                triton_backends=tuple(runtimes.get("triton_backends", ())),
                openvino_version=runtimes.get("openvino_version"),
            ),
            notes=tuple(data.get("notes", ())),
            taken_at=data.get("taken_at"),
        )


def _at_least(field_name: str, value: Any, low: float, number: type = int) -> None:
    """ValueError naming `field_name` unless `value` is a number (an integer for int) >= low."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or (number is int and value != int(value)):
        raise ValueError(f"host field {field_name} must be {'an integer' if number is int else 'a number'}, got {value!r}")
    if value < low:
        raise ValueError(f"host field {field_name} is {value}, must be at least {low}")


def _check_host(data: dict[str, Any]) -> None:
    """Refuse readings no machine has (no memory, no cores), so no plan is made from them."""
    cpu = data["cpu"]
    for name in ("physical_cores", "logical_cores", "allowed_cpus"):
        _at_least(f"cpu.{name}", cpu[name], 1)
    _at_least("memory_total_mib", data["memory_total_mib"], 1)
    _at_least("memory_available_mib", data["memory_available_mib"], 0)
    if data.get("cgroup_cpu_limit") is not None:
        _at_least("cgroup_cpu_limit", data["cgroup_cpu_limit"], 0.01, float)
    if data.get("cgroup_memory_limit_mib") is not None:
        _at_least("cgroup_memory_limit_mib", data["cgroup_memory_limit_mib"], 1)
    for position, gpu in enumerate(data["gpus"]):
        _at_least(f"gpus[{position}].index", gpu["index"], 0)
        _at_least(f"gpus[{position}].memory_total_mib", gpu["memory_total_mib"], 1)
        _at_least(f"gpus[{position}].memory_free_mib", gpu["memory_free_mib"], 0)
        if gpu["memory_free_mib"] > gpu["memory_total_mib"]:
            raise ValueError(f"host field gpus[{position}].memory_free_mib ({gpu['memory_free_mib']}) "
                             f"exceeds memory_total_mib ({gpu['memory_total_mib']})")


def load_host(path: str | os.PathLike) -> HostFacts:
    """Read a host file, turning any malformation into a UserInputError that names the file."""
    from stdr_deploy.errors import UserInputError

    try:
        return HostFacts.from_dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise UserInputError(
            f"host file {path} does not exist", hint="write one with `stdr-deploy probe --json --out FILE`"
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise UserInputError(f"host file {path} is not a valid host file: {exc}") from exc


# --- pure parsers of the text the kernel gives us -------------------------------------------


def parse_cpuinfo(text: str) -> tuple[str, int, tuple[str, ...]]:
    """(model name, physical cores, inference flags) from /proc/cpuinfo.

    Physical cores are the distinct (physical id, core id) pairs; hosts that list neither
    (many ARM and some VMs) return 0 and the caller falls back to the logical count.
    """
    model, flags, cores = "", set(), set()
    physical_id = core_id = None
    for line in text.splitlines() + [""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if not key:
            if core_id is not None:
                cores.add((physical_id, core_id))
            physical_id = core_id = None
        elif key == "model name" and not model:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
    return model, len(cores), tuple(f for f in INFERENCE_CPU_FLAGS if f in flags)


def parse_meminfo(text: str) -> tuple[int, int]:
    """(total, available) MiB from /proc/meminfo."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if rest.strip():
            values[key] = int(rest.split()[0]) * 1024 // MIB  # kB -> MiB
    return values["MemTotal"], values.get("MemAvailable", values.get("MemFree", 0))


def parse_cgroup_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max` ("max 100000" or "200000 100000") -> cores, None when unlimited."""
    quota, _, period = text.strip().partition(" ")
    if quota == "max" or not period:
        return None
    return int(quota) / int(period)


def parse_cgroup_v1_quota(quota_text: str, period_text: str) -> float | None:
    quota = int(quota_text.strip())
    return None if quota <= 0 else quota / int(period_text.strip())


def parse_cgroup_memory(text: str) -> int | None:
    """`memory.max` (v2) or `memory.limit_in_bytes` (v1) -> MiB, None when unlimited."""
    value = text.strip()
    if value == "max" or int(value) >= _CGROUP_UNLIMITED:
        return None
    return int(value) // MIB


def cuda_version_string(version: int) -> str:
    """NVML's integer CUDA driver version (12040) -> "12.4"."""
    return f"{version // 1000}.{version % 1000 // 10}"


# --- I/O: each reader returns facts plus notes explaining what it could not read -------------


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _cgroup_files(controller: str, name: str) -> list[Path]:
    """Candidate files for one cgroup setting: our own cgroup first, then the mount root.

    Inside a container the cgroup namespace usually makes our cgroup the root, so the
    plain mount path is the one that exists.
    """
    candidates = []
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        _, controllers, rel = line.split(":", 2)
        if (controller == "" and controllers == "") or controller in controllers.split(","):
            base = Path("/sys/fs/cgroup") / (controller or "")
            candidates.append(base / rel.lstrip("/") / name)
            candidates.append(base / name)
    return [path for path in candidates if path.is_file()]


def read_cgroup_limits() -> tuple[float | None, int | None]:
    """(CPU quota in cores, memory limit in MiB) of this process's cgroup, v2 or v1."""
    cpu = memory = None
    if paths := _cgroup_files("", "cpu.max"):
        cpu = parse_cgroup_cpu_max(paths[0].read_text())
    elif (quota := _cgroup_files("cpu", "cpu.cfs_quota_us")) and (period := _cgroup_files("cpu", "cpu.cfs_period_us")):
        cpu = parse_cgroup_v1_quota(quota[0].read_text(), period[0].read_text())
    if paths := _cgroup_files("", "memory.max"):
        memory = parse_cgroup_memory(paths[0].read_text())
    elif paths := _cgroup_files("memory", "memory.limit_in_bytes"):
        memory = parse_cgroup_memory(paths[0].read_text())
    return cpu, memory


def read_cpu() -> CpuFacts:
    logical = os.cpu_count() or 1
    model, physical, features = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = logical
    return CpuFacts(
        model_name=model or platform.processor() or platform.machine(),
        physical_cores=physical or logical,
        logical_cores=logical,
        allowed_cpus=allowed,
        features=features,
    )


def read_gpus() -> tuple[tuple[GpuFacts, ...], str | None, str | None, list[str]]:
    """(GPUs, driver version, CUDA driver version, notes) through NVML.

    No pynvml, no driver or no GPU all give an empty list and a note, never an error:
    a CPU-only host is a valid deployment target.
    """
    try:
        import pynvml
    except ImportError:
        return (), None, None, ["pynvml not installed (pip install nvidia-ml-py): GPUs not probed"]
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return (), None, None, [f"NVML unavailable ({exc}): no NVIDIA driver, so no GPU is used"]
    notes: list[str] = []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = cuda_version_string(pynvml.nvmlSystemGetCudaDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                mig = pynvml.nvmlDeviceGetMigMode(handle)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
            except pynvml.NVMLError:  # NOT_SUPPORTED on GPUs without MIG
                mig = False
            gpus.append(
                GpuFacts(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_total_mib=memory.total // MIB,
                    memory_free_mib=memory.free // MIB,
                    compute_capability=tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle)),
                    mig_enabled=mig,
                )
            )
        return tuple(gpus), driver, cuda, notes
    except pynvml.NVMLError as exc:
        return (), None, None, [f"NVML query failed ({exc}): GPUs not probed"]
    finally:
        pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_runtimes() -> tuple[RuntimeFacts, list[str]]:
    notes = []
    ort_version, providers = None, ()
    if importlib.util.find_spec("onnxruntime"):
        try:
            import onnxruntime

            ort_version, providers = onnxruntime.__version__, tuple(onnxruntime.get_available_providers())
        except Exception as exc:  # a broken install must not stop the probe
            notes.append(f"onnxruntime present but failed to import: {exc}")
    trt_version = None
    if importlib.util.find_spec("tensorrt"):
        try:
            trt_version = importlib.import_module("tensorrt").__version__
        except Exception as exc:  # e.g. missing libnvinfer
            notes.append(f"tensorrt present but failed to import: {exc}")
    server = find_tritonserver()
    backends = ()
    if server:
        backend_dir = Path(server).resolve().parent.parent / "backends"
        if backend_dir.is_dir():
            backends = tuple(sorted(p.name for p in backend_dir.iterdir() if p.is_dir()))
    openvino_version = None
    if importlib.util.find_spec("openvino"):  # its version from the metadata: importing it takes ~1 s
        try:
            openvino_version = importlib.metadata.version("openvino")
        except importlib.metadata.PackageNotFoundError:
            notes.append("an `openvino` module is importable but no openvino distribution is installed")
    return RuntimeFacts(ort_version, providers, trt_version, server, backends, openvino_version), notes


def find_tritonserver() -> str | None:
    """The tritonserver binary: on PATH, in the NGC image's /opt, or embedded in PyTriton."""
    if found := shutil.which("tritonserver"):
        return found
    candidates = [Path("/opt/tritonserver/bin/tritonserver")]
    if spec := importlib.util.find_spec("pytriton"):
        if spec.submodule_search_locations:
            root = Path(next(iter(spec.submodule_search_locations)))
            candidates.append(root / "tritonserver" / "bin" / "tritonserver")
    return next((str(p) for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def probe_host() -> HostFacts:
    """Read this machine. Missing pieces become notes, not errors."""
    total, available = parse_meminfo(_read("/proc/meminfo") or "MemTotal: 0 kB\n")
    cpu_limit, memory_limit = read_cgroup_limits()
    if memory_limit is not None and memory_limit >= total:
        memory_limit = None
    gpus, driver, cuda, gpu_notes = read_gpus()
    runtimes, runtime_notes = read_runtimes()
    return HostFacts(
        source="probe",
        machine=platform.machine(),
        system=platform.platform(),
        python=platform.python_version(),
        cpu=read_cpu(),
        memory_total_mib=total,
        memory_available_mib=available,
        cgroup_cpu_limit=cpu_limit,
        cgroup_memory_limit_mib=memory_limit,
        driver_version=driver,
        cuda_driver_version=cuda,
        gpus=gpus,
        runtimes=runtimes,
        notes=tuple(gpu_notes + runtime_notes),
        taken_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def main() -> None:
    json.dump(probe_host().to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
