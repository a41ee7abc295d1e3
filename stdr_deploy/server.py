"""Start and stop a real tritonserver on a model repository, and know when it is ready.

The default server is the `tritonserver` shipped in the PyPI package `nvidia-pytriton`, which
holds only Triton's Python backend. Our Python-based backends `onnxruntime` and `tensorrt`
(`stdr_deploy/backends/<name>/model.py`) stand in for the native ones, so the rendered
`platform: "onnxruntime_onnx"` / `"tensorrt_plan"` configs load unmodified. `backend_directory()`
assembles that folder; `TritonServer` runs the binary against it in its own process group so
that stopping it never leaves a `triton_python_backend_stub` behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stdr_deploy.errors import MissingDependency, ServerError, UserInputError
from stdr_deploy.workspace import cache_dir

PYTRITON = "nvidia-pytriton"
# The Triton core the rendered configs are checked against: the tritonserver of nvidia-pytriton
# 0.7 (pyproject requires >=0.7.0; tests/test_server.py asks the running binary).
TRITON_VERSION = "2.51"
# NGC's container of that core. Triton's release notes pair container 24.02 with core 2.43 and
# 24.03 with 2.44, one minor version a month: 2.51 is 24.10.
NGC_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
STUB = "triton_python_backend_stub"
PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
OUR_BACKENDS = Path(__file__).resolve().parent / "backends"
STUB_MALLOC = OUR_BACKENDS / "stub_malloc.py"  # render places it beside the pipeline's model.py too
BACKENDS_SHARED = (OUR_BACKENDS / "stdr_batching.py", STUB_MALLOC)  # copied beside each backend's model.py
SHM_DIR = Path("/dev/shm")
EXIT_TIMEOUT_S = 5  # tritonserver's own grace for in-flight requests on SIGTERM
STOP_GRACE_S = 20.0  # then we SIGKILL the whole process group
PORT_RACE_RETRIES = 2
REAP_WAIT_S = 5.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
READY_TIMEOUT_S = 120.0  # model loading, before the warm-up below
# GPU plans on ONNX Runtime make and run a session per fixed shape at load (`warm_shapes`): ~2 s
# each on the H200 (ppocr's 28 in 52-75 s, benchmarks/results/h200-fp16-served/warmed-at-load/),
# allowed 3x for slower GPUs and CPUs. Instances load side by side, so the longest list counts.
WARM_S_PER_SHAPE = 6.0
# Our config parameter that lists those shapes ("1x3x48x320 2x3x48x320 ..."): render writes it,
# backends/onnxruntime/model.py (which cannot import this package) reads it under the same name.
WARM_SHAPES = "warm_shapes"
_WARM_SHAPES = re.compile(r'key:\s*"' + WARM_SHAPES + r'"\s*value:\s*\{\s*string_value:\s*"([^"]*)"')
# Triton 2.51 (nvidia-pytriton 0.7.0) sizes the buffer of an HTTP JSON request from its declared
# shape before it reads a value: `"shape": [1, 100000, 100000, 3], "data": [1]` (about 100 bytes)
# asks for 30 GB and aborts the server with std::bad_alloc. gRPC and binary HTTP bodies compare
# the data size with the shape first, and 2.51 has no HTTP input size limit. So by default HTTP
# inference demands this header with a random value given to no client: such requests get 403,
# while health, metadata, the repository API and metrics stay on HTTP. Inference goes over gRPC.
HTTP_INFERENCE_HEADER = "stdr-http-inference"

_LOAD_FAILURE = re.compile(r"failed to load '(?P<model>[^']+)' version (?P<version>\d+): (?P<reason>.*)")
_LOAD_EVENT = re.compile(r"(loading: \S+|successfully loaded '[^']+'|failed to load '[^']+'.*)")
_PORT_IN_USE = re.compile(r"already in use|address in use|failed to add .*port", re.IGNORECASE)


@dataclass(frozen=True)
class EmbeddedTriton:
    """Where the files of the tritonserver inside `nvidia-pytriton` live."""

    version: str  # of the nvidia-pytriton package
    binary: Path
    python_backend: Path  # folder holding libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # the Python backend stub built for this interpreter's Python version
    libs: Path  # shared libraries the binary, the backend and the stub link against


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int


@dataclass(frozen=True)
class ModelState:
    """One row of Triton's repository index."""

    name: str
    version: str
    state: str  # READY | LOADING | UNAVAILABLE | ...
    reason: str = ""


def embedded_triton(python: tuple[int, int] = sys.version_info[:2]) -> EmbeddedTriton:
    """Locate the tritonserver of `nvidia-pytriton` without importing pytriton (which is slow)."""
    hint = f"pip install {PYTRITON}  (or run the NGC Triton container: see docs/serving.md)"
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise MissingDependency(f"{PYTRITON} is not installed: it provides the embedded tritonserver", hint=hint)
    package = Path(spec.origin).parent
    root = package / "tritonserver"
    found = EmbeddedTriton(
        version=importlib.metadata.version(PYTRITON),
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / f"{python[0]}.{python[1]}" / STUB,
        libs=package.parent / "nvidia_pytriton.libs",
    )
    if not found.stub.is_file():
        versions = sorted(p.name for p in (root / "python_backend_stubs").glob("*") if p.is_dir())
        raise MissingDependency(
            f"{PYTRITON} {found.version} has no Python backend stub for Python {python[0]}.{python[1]} "
            f"(it has {', '.join(versions) or 'none'})",
            hint="run stdr-deploy with one of those Python versions, or serve with the NGC Triton container",
        )
    needed = [found.binary, found.libs, *(found.python_backend / name for name in PYTHON_BACKEND_FILES)]
    missing = [path for path in needed if not path.exists()]
    if missing:
        raise MissingDependency(f"{PYTRITON} {found.version} is incomplete: missing {missing[0]}", hint=hint)
    return found


def our_backends() -> dict[str, Path]:
    """Backend name -> its model.py, for every backend folder shipped in this package."""
    return {path.parent.name: path for path in sorted(OUR_BACKENDS.glob("*/model.py"))}


def backend_directory(cache: Path | None = None) -> Path:
    """A `--backend-directory` holding the Python backend (with our stub) and our backends.

    Content-addressed by the pytriton version, the Python version and our backends' files, so it
    is built once, never modified afterwards, and a concurrent build simply loses the rename.
    Each backend folder gets a copy of the modules they share (`BACKENDS_SHARED`) beside its model.py.
    """
    triton = embedded_triton()
    backends = our_backends()
    digest = hashlib.sha256(f"{triton.version}|{triton.stub}".encode())
    for shared in BACKENDS_SHARED:
        digest.update(shared.read_bytes())
    for name, path in backends.items():
        digest.update(name.encode() + b"\0" + path.read_bytes())
    parent = Path(cache or cache_dir()) / "triton-backends"
    target = parent / digest.hexdigest()[:16]
    if target.is_dir():
        return target
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    try:
        python_dir = staging / "python"
        python_dir.mkdir()
        for name in PYTHON_BACKEND_FILES:
            shutil.copy2(triton.python_backend / name, python_dir / name)
        shutil.copy2(triton.stub, python_dir / STUB)
        (python_dir / STUB).chmod(0o755)
        for name, model in backends.items():
            (staging / name).mkdir()
            shutil.copy2(model, staging / name / "model.py")
            for shared in BACKENDS_SHARED:
                shutil.copy2(shared, staging / name / shared.name)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# glibc malloc in tritonserver: blocks of 4 MiB and more are mapped and unmapped on their own, so
# an outlier upload (a 300 MB refused image) is given back instead of staying in the heap, where
# the default dynamic threshold (which rises to 32 MiB after the first large free) left ~200 MiB
# for good (benchmarks/results/memory-after-outlier/). The backend stubs inherit the variable;
# our model backends and the pipeline model then set STDR_MODEL_MALLOC's values with mallopt
# (stub_malloc.model_malloc): 32 MiB and a 64 MiB trim threshold, glibc's own settled values, as
# re-mapping every 4 MiB array per request cost the runtimes ~25 % on small images and the
# pipeline ~30 % of its CPU time.
SERVER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(4 << 20), "STDR_MODEL_MALLOC": f"{32 << 20}:{64 << 20}"}


def server_environment(triton: EmbeddedTriton, base: dict[str, str]) -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH so the stub embeds *this* interpreter with *its* packages, and
    SERVER_MALLOC unless the caller tunes malloc itself (any MALLOC_* or GLIBC_TUNABLES).

    The stub runs `python3` found on PATH as its program, which makes the embedded interpreter
    pick up this virtual environment's site-packages; it links libpython, which we take from
    this interpreter's LIBDIR when there is one there (else the system's of the same version).
    """
    env = dict(base)
    if not any(key.startswith("MALLOC_") or key == "GLIBC_TUNABLES" for key in base):
        env.update(SERVER_MALLOC)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", os.defpath)])
    libdirs = [str(triton.libs)]
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and (Path(libdir) / soname).is_file():
        libdirs.insert(0, libdir)
    if base.get("LD_LIBRARY_PATH"):
        libdirs.append(base["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libdirs)
    return env


def server_command(
    binary: Path,
    repo: Path,
    host: str,
    ports: Ports,
    shm_prefix: str,
    backends: Path | None,
    http_inference_key: str | None = None,
) -> list[str]:
    """The tritonserver command line; `http_inference_key` None leaves HTTP inference open."""
    command = [
        str(binary),
        f"--model-repository={repo}",
        f"--http-address={host}",
        f"--http-port={ports.http}",
        f"--grpc-address={host}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={host}",
        f"--metrics-port={ports.metrics}",
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        # Every model loads at startup, and the repository API may unload and load one again:
        # the supervisor (stdr_deploy/supervise.py) reloads a model whose stub died that way.
        "--model-control-mode=explicit",
        "--load-model=*",
        # Triton keeps up to this many gRPC request objects for reuse, each with the capacity of
        # the largest request it held: one outlier upload would stay resident for good.
        "--grpc-infer-allocation-pool-size=0",
        # Our own shm names: several servers never collide, and a killed one can be cleaned up.
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
    ]
    if http_inference_key is not None:
        command.append(f"--http-restricted-api=inference:{HTTP_INFERENCE_HEADER}={http_inference_key}")
    if backends is not None:
        # Our Python-based backends: none defines auto_complete_config, so Triton's auto-complete
        # pass would only start one more stub per model (about half of the load time here).
        command += [f"--backend-directory={backends}", "--disable-auto-complete-config"]
    return command


def load_allowance(repo: Path) -> float:
    """Seconds to wait for the repository's models to load: READY_TIMEOUT_S, plus WARM_S_PER_SHAPE
    for each shape of the longest `warm_shapes` list in its configs."""
    shapes = [len(m.group(1).split()) for config in Path(repo).glob("*/config.pbtxt")
              for m in _WARM_SHAPES.finditer(config.read_text(errors="replace"))]
    return READY_TIMEOUT_S + WARM_S_PER_SHAPE * max(shapes, default=0)


def free_ports(host: str, count: int) -> list[int]:
    """Ports nobody listens on now: bind `count` sockets to port 0 at once, so they differ."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(_family(host), socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR ignores TIME_WAIT leftovers; Linux still refuses a port someone listens on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _family(host: str) -> int:
    return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]


def client_host(host: str) -> str:
    """The address a client on this machine dials for a server bound to `host`."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def load_failures(log: str) -> dict[str, str]:
    """Model name -> why it failed to load, from a Triton log."""
    return {m["model"]: m["reason"].strip() for m in _LOAD_FAILURE.finditer(log)}


def load_event(line: str) -> str | None:
    """A short status for a log line about model loading, or None for other lines."""
    match = _LOAD_EVENT.search(line)
    return match.group(1) if match else None


def live_group_members(pgid: int) -> list[int]:
    """Processes of process group `pgid` that have not died yet (zombies do not count)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def _stop_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has Linux send the server SIGTERM when the process that started it dies.

    `atexit` stops servers when Python exits normally; this covers a parent that is killed
    (SIGKILL, the OOM killer), which would otherwise leave tritonserver running with its ports
    and shared memory. Strictly, Linux watches the *thread* that started the server: start
    servers from a thread that lives as long as they should. prctl is looked up here, in the
    parent, so the forked child only makes the call; None off Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request was made
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


class TritonServer:
    """A tritonserver process serving `repo`; use as a context manager (starts and waits ready).

    `binary=None` runs the embedded server with our Python-based backends. Any other binary
    (e.g. /opt/tritonserver/bin/tritonserver in the NGC container) runs with its own backends.
    Inference is served over gRPC only unless `http_inference` (see HTTP_INFERENCE_HEADER).
    """

    def __init__(
        self,
        repo: Path,
        *,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_path: Path | None = None,
        binary: Path | None = None,
        ready_timeout: float | None = None,
        http_inference: bool = False,
    ):
        self.repo = Path(repo).resolve()
        self.host = host
        self.requested = (http_port, grpc_port, metrics_port)
        self.log_path = Path(log_path) if log_path else None
        self.binary = Path(binary) if binary else None
        self.ready_timeout = ready_timeout if ready_timeout is not None else load_allowance(self.repo)
        self.http_inference = http_inference
        self.ports: Ports | None = None
        self.shm_prefix = f"stdr_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self._process: subprocess.Popen | None = None
        self._launcher: tuple[Path, Path | None] | None = None  # binary, backend directory
        self._env: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> "TritonServer":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "TritonServer":
        """Launch the server (not yet ready: see `wait_ready`). Ports asked for must be free."""
        if self.is_running():
            raise ServerError(f"this tritonserver is already running (pid {self.pid})")
        if not self.repo.is_dir():
            raise ServerError(f"model repository not found: {self.repo}", hint="run `stdr-deploy render` first")
        try:
            free_ports(self.host, 1)
        except OSError as exc:
            raise UserInputError(
                f"cannot listen on {self.host!r}: {exc.strerror or exc}",
                hint="use an address of this machine: 127.0.0.1 (the default), or 0.0.0.0 for all interfaces",
            ) from exc
        for flag, port in zip(("--http-port", "--grpc-port", "--metrics-port"), self.requested):
            if port is not None and port_in_use(self.host, port):
                raise ServerError(
                    f"port {port} on {self.host} ({flag}) is already in use",
                    hint="pick another port, leave the option out to get a free one, "
                    "or point --url at the server already listening there",
                )
        if self.binary is None:
            triton = embedded_triton()
            binary, backends = triton.binary, backend_directory()
            self._env = server_environment(triton, dict(os.environ))
        else:
            binary, backends, self._env = self.binary, None, dict(os.environ)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._launcher = (binary, backends)
        self._launch(mode="w")
        return self

    def restart(self) -> "TritonServer":
        """Stop the server if it still runs (and what is left of it), then launch it again on the same
        ports, so clients keep their URLs; the log goes on in the same file. Not yet ready: see
        `wait_ready`."""
        if self._process is None or self.ports is None:
            raise ServerError("the server has not been started")
        self.stop()
        self.requested = (self.ports.http, self.ports.grpc, self.ports.metrics)
        self._launch(mode="a")
        return self

    def _launch(self, mode: str) -> None:
        """Run the binary on fresh free ports for those not asked for; log to `log_path`."""
        free = iter(free_ports(self.host, sum(port is None for port in self.requested)))
        self.ports = Ports(*(port if port is not None else next(free) for port in self.requested))
        binary, backends = self._launcher
        key = None if self.http_inference else secrets.token_hex(16)
        command = server_command(binary, self.repo, self.host, self.ports, self.shm_prefix, backends, key)
        with open(self.log_path, mode) as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,  # own process group: stubs included, Ctrl-C not forwarded
                preexec_fn=_stop_with_parent(),
            )
        _RUNNING.add(self)

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the server, wait, then SIGKILL its whole process group; returns its exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._reap(process)
        _RUNNING.discard(self)
        return process.returncode

    def _reap(self, process: subprocess.Popen) -> None:
        """Kill what is left of the server's process group (stubs of a killed server, a hung
        server) and remove the shared memory a killed server leaves behind."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + REAP_WAIT_S
        while live_group_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # SIGKILL is delivered at once, but dying takes a moment
        for leftover in SHM_DIR.glob(f"{self.shm_prefix}*"):
            leftover.unlink(missing_ok=True)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended (negative: killed by that signal), else None."""
        return self._process.poll() if self._process else None

    def exit_reason(self, wait_s: float = 0.0) -> str | None:
        """How the server ended while serving, or None while it runs (after waiting up to `wait_s`
        for it to end: a probe that just failed may have seen it dying)."""
        if wait_s and self._process:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(wait_s)
        returncode = self.returncode
        if returncode is None:
            return None
        return f"tritonserver (pid {self.pid}) {describe_exit(returncode)} while serving"

    # -- where it listens ------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _url(self, scheme: str, endpoint: str) -> str:
        if self.ports is None:
            raise ServerError("the server has not been started")
        return f"{scheme}://{client_host(self.host)}:{getattr(self.ports, endpoint)}"

    @property
    def http_url(self) -> str:
        return self._url("http", "http")

    @property
    def grpc_url(self) -> str:
        """`grpc://host:port`, as the stdr-deploy `--url` options take it."""
        return self._url("grpc", "grpc")

    @property
    def metrics_url(self) -> str:
        return self._url("http", "metrics") + "/metrics"

    # -- readiness -------------------------------------------------------------------------

    def models(self) -> list[ModelState]:
        """The repository index as the server reports it now."""
        rows = self._request("POST", "/v2/repository/index", b"{}")
        return [
            ModelState(row["name"], str(row.get("version", "")), row.get("state", ""), row.get("reason", ""))
            for row in json.loads(rows)
        ]

    def wait_ready(
        self, timeout: float | None = None, progress: Callable[[str], None] | None = None
    ) -> list[ModelState]:
        """Block until the server and every model of the repository are ready.

        Raises ServerError with the reason (e.g. which model failed to load and why, from the
        log) when the process dies, a model is UNAVAILABLE, or `timeout` (default: the
        constructor's `ready_timeout`) passes. `progress` receives short model-loading events
        from the log as they happen.
        """
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        seen = 0
        retries = PORT_RACE_RETRIES
        while True:
            if progress:
                seen = self._stream_events(seen, progress)
            if self._process is None:
                raise ServerError("the server has not been started")
            returncode = self._process.poll()
            if returncode is not None:
                if retries and None in self.requested and _PORT_IN_USE.search(self.log_tail(20)):
                    retries -= 1  # another process took a port we probed as free: take new ones
                    self._reap(self._process)
                    self._launch(mode="a")
                    continue
                raise self.failure(f"tritonserver {describe_exit(returncode)} before it was ready")
            states = self._index()
            if states is not None:
                failed = [s for s in states if s.state == "UNAVAILABLE"]
                if failed:
                    raise self.failure(f"model {failed[0].name!r} is unavailable: {failed[0].reason}")
                if all(s.state == "READY" for s in states) and self._answers("/v2/health/ready"):
                    if progress:
                        self._stream_events(seen, progress)
                    return states
            if time.monotonic() > deadline:
                raise self.failure(f"tritonserver was not ready after {timeout:.0f} s")
            time.sleep(0.2)

    def load_model(self, name: str) -> None:
        """(Re)load one model through the repository API; returns once it is loaded."""
        self._repository_call(name, "load")

    def unload_model(self, name: str) -> None:
        """Start unloading one model: Triton answers at once and reports the model not ready."""
        self._repository_call(name, "unload")

    def _repository_call(self, name: str, action: str) -> None:
        try:
            self._request("POST", f"/v2/repository/models/{name}/{action}", b"{}", timeout=self.ready_timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail)["error"]
            raise ServerError(f"tritonserver could not {action} model {name!r}: {detail}") from exc
        except OSError as exc:
            raise ServerError(f"tritonserver did not answer the {action} of model {name!r}: {exc}") from exc

    def _index(self) -> list[ModelState] | None:
        """The repository index, or None while the HTTP endpoint is not up yet."""
        try:
            return self.models()
        except (OSError, ValueError):  # URLError is an OSError; ValueError: not JSON yet
            return None

    def _answers(self, path: str) -> bool:
        try:
            self._request("GET", path)
        except OSError:
            return False
        return True

    def _request(self, method: str, path: str, body: bytes | None = None, timeout: float = 5.0) -> bytes:
        request = urllib.request.Request(self.http_url + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def _stream_events(self, seen: int, progress: Callable[[str], None]) -> int:
        lines = self._log_lines()
        for line in lines[seen:]:
            event = load_event(line)
            if event:
                progress(event)
        return len(lines)

    # -- logs ------------------------------------------------------------------------------

    def _log_lines(self) -> list[str]:
        if self.log_path is None or not self.log_path.is_file():
            return []
        return self.log_path.read_text(errors="replace").splitlines()

    def log_tail(self, lines: int = 15) -> str:
        """The last log lines that say something: Triton's ASCII tables and blank lines left out."""
        return "\n".join([line for line in self._log_lines() if _says_something(line)][-lines:])

    def failure(self, what: str, kind: type[ServerError] = ServerError) -> ServerError:
        """An error of `kind` saying `what`, why models failed to load, and the end of the log."""
        log = "\n".join(self._log_lines())
        reasons = "".join(f"\n  model {name!r} failed to load: {why}" for name, why in load_failures(log).items())
        return kind(
            f"{what}{reasons}\n--- last lines of {self.log_path} ---\n{self.log_tail()}",
            hint=f"the full server log is {self.log_path}",
        )


def _says_something(line: str) -> bool:
    return bool(line.strip()) and not line.startswith(("|", "+-"))


_RUNNING: set[TritonServer] = set()


@atexit.register
def _stop_all() -> None:
    """A server must not outlive the Python process that started it."""
    for server in list(_RUNNING):
        server.stop()
