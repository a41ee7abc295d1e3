"""Soak: hold the pipeline under load for a while and watch for errors, latency drift and leaks.

The load is the load generator's closed loop, bounded by time and by a request count, against
a loopback server only (a soak is a local health check, never traffic sent to someone else's
server). Every window the server's resident memory is read from /proc: the tritonserver
process plus all its descendants (the Python backend stubs, one per model instance), so a leak
in a backend shows up even though it lives in a child process.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from stdr_deploy.bench.load import Request, Sample, drive
from stdr_deploy.bench.stats import LatencyStats
from stdr_deploy.errors import UserInputError
from stdr_deploy.triton_client import Endpoint, connect, infer

PROC = Path("/proc")


@dataclass(frozen=True)
class SoakWindow:
    start_s: float
    requests: int
    errors: int
    latency: LatencyStats | None
    rss_mib: float | None  # server + descendants at the window's end

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "requests": self.requests,
            "errors": self.errors,
            "latency": self.latency.to_dict() if self.latency else None,
            "rss_mib": self.rss_mib,
        }


@dataclass(frozen=True)
class SoakResult:
    url: str
    seconds: float
    concurrency: int
    requests: int
    errors: int
    error_samples: tuple[str, ...]
    windows: tuple[SoakWindow, ...]
    server_pid: int | None
    rss_note: str

    @property
    def latency_drift(self) -> float | None:
        """p50 of the last window over p50 of the first (1.0 = no drift)."""
        timed = [w for w in self.windows if w.latency]
        return timed[-1].latency.p50_ms / timed[0].latency.p50_ms if len(timed) >= 2 else None

    @property
    def rss_growth_mib(self) -> float | None:
        """RSS at the end minus RSS at the end of the first window, so the memory taken while the
        clients ramp up to full concurrency (arenas for N requests in flight) is not counted."""
        rss = [w.rss_mib for w in self.windows if w.rss_mib is not None]
        return rss[-1] - rss[0] if len(rss) >= 2 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "seconds": self.seconds,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "error_samples": list(self.error_samples),
            "latency_drift": self.latency_drift,
            "rss_growth_mib": self.rss_growth_mib,
            "server_pid": self.server_pid,
            "rss_note": self.rss_note,
            "windows": [w.to_dict() for w in self.windows],
        }


def run_soak(
    url: str,
    requests: Sequence[Request],
    *,
    seconds: float,
    concurrency: int,
    model: str = "pipeline",
    max_requests: int | None = None,
    server_pid: int | None = None,
    windows: int = 10,
    warmup: int = 1,
    timeout_s: float = 600.0,
    progress: Callable[[str], None] | None = None,
) -> SoakResult:
    """Run the closed loop for `seconds` (or `max_requests`), sampling RSS `windows` times.

    `warmup` unrecorded passes over the requests come first, so the memory every server grabs
    on its first calls (arenas, caches) is not mistaken for growth.
    """
    endpoint = Endpoint.parse(url)
    require_loopback(endpoint)
    client = connect(endpoint, timeout_s)
    for _ in range(warmup):
        for request in requests:
            infer(client, endpoint, model, dict(request.feeds), list(request.outputs))
    window_s = seconds / max(windows, 1)
    lock = threading.Lock()
    finished: list[Sample] = []
    rss: list[tuple[float, float | None]] = []
    done = threading.Event()

    def sample_rss() -> None:
        started = time.perf_counter()
        rss.append((0.0, tree_rss_mib(server_pid) if server_pid else None))
        while not done.wait(window_s):
            elapsed = time.perf_counter() - started
            rss.append((elapsed, tree_rss_mib(server_pid) if server_pid else None))
            if progress:
                with lock:
                    n = len(finished)
                progress(f"soak {elapsed:.0f}/{seconds:.0f} s, {n} requests")

    def record(sample: Sample) -> None:
        with lock:
            finished.append(sample)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    started = time.perf_counter()
    samples = drive(endpoint, model, requests, concurrency, seconds, max_requests, timeout_s, on_sample=record)
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    rss.append((elapsed, tree_rss_mib(server_pid) if server_pid else None))
    errors = [s for s in samples if s.error]
    return SoakResult(
        url=endpoint.url,
        seconds=elapsed,
        concurrency=concurrency,
        requests=len(samples),
        errors=len(errors),
        error_samples=tuple(dict.fromkeys(s.error for s in errors if s.error))[:5],
        windows=tuple(split_windows(samples, rss, window_s)),
        server_pid=server_pid,
        rss_note="VmRSS of the server and its descendants, from /proc/<pid>/status"
        if server_pid
        else "no server pid known (pass --server-pid): memory not sampled",
    )


def split_windows(samples: Sequence[Sample], rss: Sequence[tuple[float, float | None]], window_s: float) -> list[SoakWindow]:
    """Bucket finished requests by start time; each window takes the RSS read nearest its end.

    The sampler wakes a moment after each window's bound, so "nearest", not "at or before":
    otherwise every row would show the reading of the window before it.
    """
    count = max(1, round((rss[-1][0] if rss else 0.0) / window_s)) if window_s > 0 else 1
    out = []
    for k in range(count):
        lo, hi = k * window_s, (k + 1) * window_s
        inside = [s for s in samples if lo <= s.started < hi or (k == count - 1 and s.started >= hi)]
        ok = [s.seconds for s in inside if s.error is None]
        nearest = min(rss, key=lambda reading: abs(reading[0] - hi), default=(hi, None))
        out.append(
            SoakWindow(
                start_s=lo,
                requests=len(inside),
                errors=sum(1 for s in inside if s.error),
                latency=LatencyStats.from_seconds(ok) if ok else None,
                rss_mib=nearest[1],
            )
        )
    return out


def require_loopback(endpoint: Endpoint) -> None:
    host = endpoint.address.rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UserInputError(
            f"a soak only runs against a server on this machine, not {endpoint.address}",
            hint="use --url grpc://127.0.0.1:PORT, or leave --url out to start one",
        )


def tree_rss_mib(pid: int) -> float | None:
    """VmRSS of `pid` plus all its descendants, in MiB; None once the process is gone."""
    own = _vm_rss_kib(pid)
    if own is None:
        return None
    return (own + sum(_vm_rss_kib(child) or 0 for child in descendants(pid))) / 1024.0


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from the parent ids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: the fields after the last ')' are fixed
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def find_server_pid(name: str = "tritonserver") -> int | None:
    """The pid of the only running process called `name`, or None if none or several."""
    pids = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids[0] if len(pids) == 1 else None


def _vm_rss_kib(pid: int) -> int | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return 0  # kernel threads and zombies have no VmRSS line
