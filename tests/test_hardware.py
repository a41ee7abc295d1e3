"""The host probe: parsers of kernel text, this machine's reading, and the recorded host files."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest

from stdr_deploy.errors import UserInputError
from stdr_deploy.hardware import (
    FORMAT_VERSION,
    SOURCES,
    HostFacts,
    cuda_version_string,
    load_host,
    parse_cgroup_cpu_max,
    parse_cgroup_memory,
    parse_cgroup_v1_quota,
    parse_cpuinfo,
    parse_meminfo,
    probe_host,
)

HOSTS = Path(__file__).resolve().parent / "hosts"
HOST_FILES = sorted(HOSTS.glob("*.json"))

# Two logical CPUs of one SMT core, then a second core: 4 logical, 2 physical.
CPUINFO_SMT = "".join(
    f"processor\t: {i}\nmodel name\t: Example CPU\nflags\t\t: fpu avx2 avx512f amx_tile\n"
    f"physical id\t: 0\ncore id\t\t: {i // 2}\n\n"
    for i in range(4)
)


def test_parse_cpuinfo_counts_cores_not_threads():
    assert parse_cpuinfo(CPUINFO_SMT) == ("Example CPU", 2, ("avx2", "avx512f", "amx_tile"))


def test_parse_cpuinfo_of_this_machine_agrees_with_the_os():
    model, physical, features = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    assert isinstance(model, str) and physical <= os.cpu_count()  # 0 where cpuinfo lists no core ids
    assert set(features) <= set(Path("/proc/cpuinfo").read_text().split())


def test_parse_meminfo():
    text = "MemTotal:       24731708 kB\nMemFree:        21982004 kB\nMemAvailable:   24347860 kB\n"
    assert parse_meminfo(text) == (24152, 23777)


@pytest.mark.parametrize("text, cores", [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5)])
def test_parse_cgroup_v2_cpu_max(text, cores):
    assert parse_cgroup_cpu_max(text) == cores


def test_parse_cgroup_v1_quota():
    assert parse_cgroup_v1_quota("-1\n", "100000\n") is None
    assert parse_cgroup_v1_quota("400000\n", "100000\n") == 4.0


@pytest.mark.parametrize("text, mib", [("max\n", None), ("9223372036854771712\n", None), ("2147483648\n", 2048)])
def test_parse_cgroup_memory(text, mib):
    assert parse_cgroup_memory(text) == mib


def test_cuda_version_string():
    assert cuda_version_string(12040) == "12.4"
    assert cuda_version_string(13000) == "13.0"


@pytest.fixture(scope="module")
def this_host() -> HostFacts:
    return probe_host()


def test_probe_reads_this_machine(this_host):
    assert this_host.source == "probe" and this_host.format_version == FORMAT_VERSION
    assert this_host.cpu.logical_cores == os.cpu_count()
    assert 1 <= this_host.usable_cores <= this_host.cpu.physical_cores
    assert 0 < this_host.memory_available_mib <= this_host.memory_total_mib
    assert this_host.runtimes.onnxruntime_version == onnxruntime.__version__
    assert tuple(onnxruntime.get_available_providers()) == this_host.runtimes.onnxruntime_providers
    if not this_host.gpus:  # no driver here: an empty list and a note saying why, not an error
        assert this_host.driver_version is None and any("NVML" in n or "pynvml" in n for n in this_host.notes)


def test_probe_round_trips_through_json(this_host):
    data = json.loads(json.dumps(this_host.to_dict()))
    assert HostFacts.from_dict(data) == this_host
    assert data == this_host.to_dict()


def test_module_prints_a_host_file_without_the_cli_stack():
    """`python -m stdr_deploy.hardware` must run where click, rich and yaml are not installed."""
    code = (
        "import runpy, sys, io, contextlib\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    runpy.run_module('stdr_deploy.hardware', run_name='__main__')\n"
        "print(sorted(m for m in ('click', 'rich', 'yaml', 'torch', 'jinja2') if m in sys.modules))\n"
        "print(out.getvalue())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, _, document = done.stdout.partition("\n")
    assert loaded == "[]"
    assert HostFacts.from_dict(json.loads(document)).source == "probe"


def test_usable_cores_honours_quota_and_cpuset(this_host):
    smt = dataclasses.replace(
        this_host, cpu=dataclasses.replace(this_host.cpu, physical_cores=32, logical_cores=64, allowed_cpus=64)
    )
    assert smt.usable_cores == 32
    assert dataclasses.replace(smt, cgroup_cpu_limit=4.5).usable_cores == 4
    assert dataclasses.replace(smt, cpu=dataclasses.replace(smt.cpu, allowed_cpus=8)).usable_cores == 4
    assert dataclasses.replace(smt, cgroup_cpu_limit=0.5).usable_cores == 1


def test_usable_memory_honours_cgroup_limit(this_host):
    limited = dataclasses.replace(this_host, cgroup_memory_limit_mib=1024)
    assert limited.usable_memory_mib == min(1024, this_host.memory_available_mib)


def test_recorded_host_files_are_present():
    names = {f.name for f in HOST_FILES}
    assert "cpu-xeon-2core.json" in names and "h100-80g-hbm3.json" in names
    assert sum(name.endswith(".vendor.json") for name in names) >= 4


@pytest.mark.parametrize("path", HOST_FILES, ids=lambda p: p.stem)
def test_host_file_loads_and_round_trips(path):
    data = json.loads(path.read_text())
    host = load_host(path)
    assert host.to_dict() == data  # nothing lost or added
    assert host.source in SOURCES
    if host.source == "vendor-spec":
        assert path.name.endswith(".vendor.json")
        assert host.taken_at is None and any("vendor-spec" in note for note in host.notes)
    else:
        assert host.taken_at and not path.name.endswith(".vendor.json")
    for gpu in host.gpus:
        assert 0 < gpu.memory_free_mib <= gpu.memory_total_mib
        assert gpu.compute_capability >= (7, 0)


def test_h100_reading_is_what_nvml_reported():
    host = load_host(HOSTS / "h100-80g-hbm3.json")
    (gpu,) = host.gpus
    assert (gpu.name, gpu.memory_total_mib, gpu.compute_capability) == ("NVIDIA H100 80GB HBM3", 81559, (9, 0))
    assert host.driver_version == "580.159.04" and host.cuda_driver_version == "13.0"


def test_load_host_errors_name_the_file(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_host(tmp_path / "missing.json")
    stale = tmp_path / "old.json"
    stale.write_text(json.dumps({**json.loads(HOST_FILES[0].read_text()), "format_version": 0}))
    with pytest.raises(UserInputError, match="old.json.*format_version"):
        load_host(stale)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"format_version": FORMAT_VERSION, "source": "probe"}))
    with pytest.raises(UserInputError, match="broken.json"):
        load_host(broken)
