"""Keep a served deployment answering: probe it, reload a model that stopped answering, restart a
server that died, and give up with a clear error when that keeps happening.

Triton's health endpoints cannot see a Python-backend stub that died: the model stays READY while
every request to it fails ("Stub process 'craft_0_0' is not healthy"), and the pipeline fails with
it through BLS. So the supervisor sends real requests: a small image with one word through the
pipeline, and each sub-model's smallest valid input. A model whose probe fails is unloaded at once,
which turns Triton's /v2/health/ready (strict readiness) to not-ready, and loaded again through the
repository API; a tritonserver that ended is started again on the same ports.

It also gives memory back after outliers and after killed clients: Triton's Python backend grows a model's shared-memory
pool to the largest tensor handed to it (an oversized image the pipeline then refuses included)
and never shrinks it. When the pool has grown past `POOL_SLACK` of what it held once the
deployment came up, the supervisor reloads the orchestrator in place (its files touched, so
Triton does reload it): Triton keeps serving on the old instance until the new one is ready, then
the old stub and its pool go. Requests see no error (measured with a 300 MB upload under load).
A client of this package that was killed leaves its input region registered, and Triton keeps it
mapped; after each passing probe round the supervisor unregisters and unlinks such regions
(`triton_client.release_orphaned_regions`).

`Supervisor` is the decision alone (what to do for which probe result, the backoff, the crash-loop
limit), with time passed in, so it is tested without a server; `watch` is the loop with the side
effects.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from stdr_deploy.errors import CrashLoop, ServerError, StdrError
from stdr_deploy.server import SHM_DIR

TICK_S = 0.5  # how often the loop looks at the server process between probes
POOL_SLACK = 1.2  # reload when the shared-memory pool exceeds this share of its first size ...
POOL_FLOOR_BYTES = 64 << 20  # ... plus this (small growth is not worth a reload)
POOL_COOLDOWN_S = 30.0  # at most one such reload per 30 s: big images in a row legitimately regrow it
PROBE_WORDS = ("STDR",)
PROBE_FONT_PX = 24
PROBE_WIDTH = 160  # the smoke image cropped to its first word: about 0.1 s through a CPU pipeline
ORCHESTRATOR_PARAMETER = "detector_model"  # only the orchestrator's config names its detector
DEFAULT_PAD_TO = 32

if TYPE_CHECKING:
    import numpy as np

# What `Supervisor.decide` asks for.
OK, RELOAD, RESTART, GIVE_UP = "ok", "reload", "restart", "give_up"


@dataclass(frozen=True)
class Policy:
    """How often to probe, and how many recoveries to try how fast before giving up."""

    interval_s: float = 10.0  # between probe rounds while every probe passes
    timeout_s: float = 60.0  # one probe request; a busy CPU server answers a big image slowly
    max_restarts: int = 5  # recoveries (reloads and restarts) within `window_s`; one more gives up
    window_s: float = 600.0
    backoff_s: float = 1.0  # wait before the first recovery in the window; doubles for each next
    backoff_max_s: float = 60.0

    def backoff(self, recent: int) -> float:
        """Seconds to wait before a recovery that follows `recent` others within the window."""
        return min(self.backoff_max_s, self.backoff_s * 2**recent)


@dataclass(frozen=True)
class Health:
    """What one round of checks found."""

    exited: str | None = None  # how the server process ended; None while it runs
    failures: Mapping[str, str] = field(default_factory=dict)  # model -> why its probe failed


@dataclass(frozen=True)
class Action:
    kind: str  # OK | RELOAD | RESTART | GIVE_UP
    reason: str = ""
    models: tuple[str, ...] = ()
    wait_s: float = 0.0
    attempt: int = 0  # this recovery's number within the window


class Supervisor:
    """Decides what to do after each round of checks; keeps the recent recoveries to bound them.

    A model that fails is reloaded; when a sub-model (detector, recognizer) fails, the pipeline's
    failure is its consequence, so only the sub-model is reloaded. A model that fails again after
    its reload, or a server process that ended, gets the server restarted. Each recovery waits
    `policy.backoff(n)` after `n` others in the window; one more than `policy.max_restarts` in the
    window gives up.
    """

    def __init__(self, policy: Policy, orchestrators: Iterable[str] = ()):
        self.policy = policy
        self.orchestrators = frozenset(orchestrators)
        self.recoveries: list[float] = []  # when each recovery within the window was decided
        self.reloaded: set[str] = set()  # reloaded since the last round where every probe passed
        self.state = "ready"  # ready | recovering | failed

    def decide(self, health: Health, now: float) -> Action:
        self.recoveries = [t for t in self.recoveries if t > now - self.policy.window_s]
        if health.exited is None and not health.failures:
            self.state = "ready"
            self.reloaded.clear()
            return Action(OK)
        models: tuple[str, ...] = ()
        if health.exited is not None:
            kind, reason = RESTART, health.exited
        else:
            failing = sorted(health.failures)
            models = tuple([m for m in failing if m not in self.orchestrators] or failing)
            reason = "; ".join(health.failures[m] for m in models)
            kind = RESTART if self.reloaded.intersection(models) else RELOAD
            if kind == RESTART:
                reason += " (again after reloading it)"
        recent = len(self.recoveries)
        if recent >= self.policy.max_restarts:
            self.state = "failed"
            return Action(GIVE_UP, reason, models)
        self.recoveries.append(now)
        self.state = "recovering"
        if kind == RESTART:
            self.reloaded.clear()
        else:
            self.reloaded.update(models)
        return Action(kind, reason, models, wait_s=self.policy.backoff(recent), attempt=recent + 1)


# -- probes: real requests, built from the repository's configs ------------------------------------


@dataclass(frozen=True)
class Probe:
    model: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    orchestrator: bool

    def answer(self, outputs: dict[str, np.ndarray]) -> Any:
        """What must stay the same across answers: the words read, or each output's shape."""
        import numpy as np

        if self.orchestrator:
            return tuple(t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in outputs["output"].reshape(-1))
        for name, array in outputs.items():
            if not np.isfinite(array).all():
                return f"non-finite values in {name!r}"
        return tuple((name, array.shape) for name, array in outputs.items())


def probe_image() -> np.ndarray:
    """A real image with one word, small enough that probing costs little."""
    import numpy as np

    from stdr_deploy.smoke_image import smoke_image

    return np.ascontiguousarray(smoke_image(PROBE_WORDS, PROBE_FONT_PX)[:, :PROBE_WIDTH])


def probe_shape(dims: Iterable[int], batched: bool, pad_to: int) -> tuple[int, ...]:
    """The smallest input the models accept: each dynamic axis as long as the longest fixed one
    (recognizers of fixed height get a square crop), and at least the orchestrator's padding."""
    dims = list(dims)
    side = max([pad_to, *(d for d in dims if d > 0)])
    shape = tuple(d if d > 0 else side for d in dims)
    return (1, *shape) if batched else shape


def repository_probes(repo: Path) -> list[Probe]:
    """One probe per model of the repository, the orchestrator first: a sub-model that dies while
    it is probed is then still seen failing by its own probe, right after."""
    import numpy as np
    from tritonclient.grpc import model_config_pb2
    from tritonclient.utils import triton_to_np_dtype

    from stdr_deploy.triton_client import rendered_config

    configs = [rendered_config(repo, path.parent.name) for path in sorted(Path(repo).glob("*/config.pbtxt"))]
    orchestrators = [c for c in configs if ORCHESTRATOR_PARAMETER in c.parameters]
    pad_to = DEFAULT_PAD_TO
    if orchestrators and "pad_to" in orchestrators[0].parameters:
        pad_to = int(orchestrators[0].parameters["pad_to"].string_value)
    probes = []
    for config in configs:
        outputs = tuple(t.name for t in config.output)
        if ORCHESTRATOR_PARAMETER in config.parameters:
            probes.append(Probe(config.name, {config.input[0].name: probe_image()[None]}, outputs, True))
            continue
        inputs = {}
        for tensor in config.input:
            dtype = triton_to_np_dtype(model_config_pb2.DataType.Name(tensor.data_type).removeprefix("TYPE_"))
            inputs[tensor.name] = np.zeros(probe_shape(tensor.dims, config.max_batch_size > 0, pad_to), dtype)
        probes.append(Probe(config.name, inputs, outputs, False))
    return sorted(probes, key=lambda p: not p.orchestrator)


class Prober:
    """Sends every probe; a model fails when its request fails or its answer differs from the
    first answer it gave (checked when the deployment came up)."""

    def __init__(self, url: str, probes: list[Probe], timeout_s: float):
        self.url = url
        self.probes = probes
        self.timeout_s = timeout_s
        self.expected: dict[str, Any] = {}

    @property
    def orchestrators(self) -> list[str]:
        return [p.model for p in self.probes if p.orchestrator]

    def check(self) -> dict[str, str]:
        """model -> why it failed, for each model that failed (empty: all answer as they should)."""
        from stdr_deploy.triton_client import Endpoint, connect, infer

        endpoint = Endpoint.parse(self.url)
        client = connect(endpoint, self.timeout_s)  # a fresh connection: the server may be new
        failures: dict[str, str] = {}
        try:
            for probe in self.probes:
                try:
                    got = probe.answer(infer(client, endpoint, probe.model, probe.inputs, list(probe.outputs)))
                except StdrError as exc:
                    failures[probe.model] = str(exc)
                    continue
                expected = self.expected.setdefault(probe.model, got)
                if got != expected:
                    failures[probe.model] = f"model {probe.model!r} answered {got!r} where it first answered {expected!r}"
        finally:
            client.close()
        return failures


# -- memory after outliers ----------------------------------------------------------------------


class SharedMemoryPool:
    """The server's Python-backend shared-memory files (`/dev/shm/<its prefix>*`): their resident
    bytes, and whether they grew enough since `baseline` to reload the orchestrators."""

    def __init__(self, folder: Path, prefix: str):
        self.folder, self.prefix = folder, prefix
        self.baseline = self.bytes()
        self.last_reload = float("-inf")

    def bytes(self) -> int:
        total = 0
        for path in self.folder.glob(f"{self.prefix}*"):
            try:
                total += path.stat().st_blocks * 512  # resident pages, not the file's nominal size
            except FileNotFoundError:  # a stub that just ended
                continue
        return total

    def grown(self, now: float) -> int | None:
        """Its size when it is worth a reload now, else None."""
        size = self.bytes()
        if size > POOL_SLACK * self.baseline + POOL_FLOOR_BYTES and now - self.last_reload >= POOL_COOLDOWN_S:
            return size
        return None


def _release_pool(server, pool: SharedMemoryPool, models: list[str], state: str, report: Callable[[Event], None],
                  now: float, size: int) -> None:
    """Reload `models` in place (files touched so Triton reloads them) and say what it gave back."""
    pool.last_reload = now
    try:
        for model in models:
            for path in (server.repo / model).rglob("*"):  # unchanged files: Triton would skip the load
                if path.is_file() and not path.is_symlink():
                    os.utime(path)
            server.load_model(model)
    except (OSError, ServerError) as exc:
        report(Event("failed", f"reloading {', '.join(models)} to free shared memory failed: {exc}", state, tuple(models)))
        return
    deadline = time.monotonic() + 10  # the old stub ends once the new instance serves
    while pool.bytes() >= size and time.monotonic() < deadline:
        time.sleep(TICK_S)
    report(Event("memory_released", f"the Python backend's shared memory had grown to {size >> 20} MiB (it was "
                 f"{pool.baseline >> 20} MiB when serving began: an outlier request); reloaded {', '.join(models)} "
                 f"in place, without downtime: now {pool.bytes() >> 20} MiB", state, tuple(models)))


def _release_client_regions(server, policy: Policy, state: str, report: Callable[[Event], None]) -> None:
    """Unregister the input regions of killed clients, and say which."""
    from stdr_deploy.triton_client import Endpoint, connect, release_orphaned_regions

    try:
        client = connect(Endpoint.parse(server.grpc_url), policy.timeout_s)
        try:
            released = release_orphaned_regions(client)
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - the next round tries again; the probes judge health
        report(Event("failed", f"looking for shared-memory regions of killed clients failed: {exc}", state))
        return
    if released:
        report(Event("regions_released", f"unregistered and unlinked {len(released)} shared-memory input region(s) "
                     f"whose client had died: {', '.join(released)}", state))


# -- the loop ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One thing the supervisor saw or did, for the log and for `--json` readers."""

    kind: str  # watching | probe_failed | server_exited | reloaded | restarted | recovered | memory_released | regions_released | failed | gave_up
    message: str
    state: str  # the supervisor's state after the event: ready | recovering | failed
    models: tuple[str, ...] = ()
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, "state": self.state, "message": self.message, "models": list(self.models),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.time))}


def watch(server, repo: Path, policy: Policy, report: Callable[[Event], None], stop: threading.Event) -> None:
    """Supervise a ready `server` (stdr_deploy.server.TritonServer) until `stop` is set.

    Raises ServerError when the deployment fails its first probe (nothing to recover to), and
    CrashLoop when recovery gives up.
    """
    prober = Prober(server.grpc_url, repository_probes(repo), policy.timeout_s)
    failures = prober.check()
    if stop.is_set():  # asked to stop during the first probe: its answer no longer matters
        return
    if failures and server.exit_reason(wait_s=1.0) is None:  # (a server that died meanwhile is the loop's to handle)
        raise server.failure("the deployment does not answer its probes: " + "; ".join(failures.values()))
    supervisor = Supervisor(policy, prober.orchestrators)
    pool = SharedMemoryPool(SHM_DIR, server.shm_prefix)
    report(Event("watching", f"supervising {', '.join(p.model for p in prober.probes)}: probing every "
                 f"{policy.interval_s:g} s, at most {policy.max_restarts} recoveries in {policy.window_s:g} s", "ready"))
    next_probe = time.monotonic() + policy.interval_s
    down_since: float | None = None
    while not stop.wait(TICK_S):
        exited = server.exit_reason()
        if exited is None and time.monotonic() < next_probe:
            continue
        failures = {} if exited else prober.check()
        if failures:  # a server that died during the probe: say that, not the probe's connection error
            exited = server.exit_reason(wait_s=1.0)
        health = Health(exited, {} if exited else failures)
        now = time.monotonic()
        action = supervisor.decide(health, now)
        if action.kind == OK:
            if down_since is not None:
                report(Event("recovered", f"every probe passes again: serving (answers failed for {now - down_since:.1f} s)",
                             supervisor.state))
            down_since = None
            next_probe = now + policy.interval_s
            if (size := pool.grown(now)) is not None:
                _release_pool(server, pool, prober.orchestrators, supervisor.state, report, now, size)
            _release_client_regions(server, policy, supervisor.state, report)
            continue
        down_since = down_since if down_since is not None else now
        if action.kind == GIVE_UP:
            message = (f"{action.reason}; giving up after {len(supervisor.recoveries)} recoveries within "
                       f"{policy.window_s:g} s (--max-restarts {policy.max_restarts}, --restart-window)")
            report(Event("gave_up", message, supervisor.state, action.models))
            raise server.failure(message, CrashLoop)
        if not _recover(server, action, policy, supervisor.state, report, stop):
            return
        next_probe = time.monotonic()  # probe the recovered deployment at once


def _recover(server, action: Action, policy: Policy, state: str, report: Callable[[Event], None],
             stop: threading.Event) -> bool:
    """Carry out a RELOAD or RESTART after its backoff; False when `stop` was set meanwhile."""
    count = f"recovery {action.attempt} of at most {policy.max_restarts} in {policy.window_s:g} s"
    if action.kind == RELOAD:
        names = ", ".join(action.models)
        try:
            for model in action.models:  # not ready from now on, also to Triton's readiness endpoint
                server.unload_model(model)
        except ServerError as exc:
            report(Event("failed", f"unloading {names} failed: {exc}", state, action.models))
        report(Event("probe_failed", f"probe failed: {action.reason.rstrip('.')}; unloaded {names} (not ready), "
                     f"loading it again in {action.wait_s:g} s ({count})", state, action.models))
        if stop.wait(action.wait_s):
            return False
        started = time.monotonic()
        try:
            for model in action.models:
                server.load_model(model)
        except ServerError as exc:
            report(Event("failed", f"reloading {names} failed: {exc}", state, action.models))
            return True
        report(Event("reloaded", f"reloaded {names} in {time.monotonic() - started:.1f} s", state, action.models))
        return True
    exited = server.exit_reason() is not None
    report(Event("server_exited" if exited else "probe_failed",
                 f"{'' if exited else 'probe failed: '}{action.reason.rstrip('.')}; restarting tritonserver in "
                 f"{action.wait_s:g} s on the same ports ({count})", state))
    if stop.wait(action.wait_s):
        return False
    started = time.monotonic()
    try:
        server.restart()
        server.wait_ready()
    except ServerError as exc:
        report(Event("failed", f"restarting tritonserver failed: {str(exc).splitlines()[0]}", state))
        return True
    report(Event("restarted", f"tritonserver restarted (pid {server.pid}), every model ready in "
                 f"{time.monotonic() - started:.1f} s", state))
    return True
