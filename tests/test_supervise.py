"""Supervision: the decision logic (backoff, crash loop, what to reload) without a server, and a
real `stdr-deploy serve` that recovers from a SIGKILLed Python-backend stub and a SIGKILLed
tritonserver.

The real tests share one `serve` process on the CPU repository of tests/test_reliability.py
(exported CRAFT and CRNN, the plan of the recorded 2-core Xeon), probing every second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_reliability import CLI, expected_words, good_image, plan, ready_json, repo  # noqa: F401 - fixtures

from stdr_deploy.server import SHM_DIR, live_group_members
from stdr_deploy.supervise import (
    GIVE_UP, OK, POOL_FLOOR_BYTES, POOL_SLACK, RELOAD, RESTART, Health, Policy, Supervisor, probe_shape, repository_probes,
)
from stdr_deploy.triton_client import TritonPipelineClient

RECOVERY_LIMIT_S = 60.0  # the target: answering correctly again within a minute


# -- the decisions, without a server -------------------------------------------------------------


def dead(pid: int = 1) -> Health:
    return Health(exited=f"tritonserver (pid {pid}) was killed by SIGABRT while serving")


def test_backoff_doubles_from_the_first_wait_up_to_its_cap():
    policy = Policy(backoff_s=1.0, backoff_max_s=10.0)
    assert [policy.backoff(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_server_that_keeps_dying_is_restarted_with_backoff_then_given_up():
    supervisor = Supervisor(Policy(max_restarts=3, window_s=60.0, backoff_s=0.5))
    actions = [supervisor.decide(dead(pid), now=float(pid)) for pid in range(5)]
    assert [a.kind for a in actions] == [RESTART, RESTART, RESTART, GIVE_UP, GIVE_UP]
    assert [a.wait_s for a in actions[:3]] == [0.5, 1.0, 2.0]
    assert [a.attempt for a in actions[:3]] == [1, 2, 3]
    assert actions[3].reason == "tritonserver (pid 3) was killed by SIGABRT while serving"
    assert supervisor.state == "failed"


def test_deaths_further_apart_than_the_window_never_give_up():
    supervisor = Supervisor(Policy(max_restarts=2, window_s=60.0))
    actions = [supervisor.decide(dead(), now=61.0 * i) for i in range(10)]
    assert {a.kind for a in actions} == {RESTART}
    assert {a.wait_s for a in actions} == {Policy().backoff_s}  # each the first within its window


def test_no_restarts_allowed_gives_up_at_the_first_failure():
    supervisor = Supervisor(Policy(max_restarts=0))
    action = supervisor.decide(Health(failures={"craft": "Stub process 'craft_0_0' is not healthy."}), now=0.0)
    assert action.kind == GIVE_UP and action.models == ("craft",)


def test_a_failing_sub_model_is_reloaded_alone_and_a_second_failure_restarts_the_server():
    supervisor = Supervisor(Policy(), orchestrators=["pipeline"])
    both = Health(failures={"pipeline": "model 'craft' failed: not healthy", "craft": "not healthy"})
    first = supervisor.decide(both, now=0.0)
    assert (first.kind, first.models, first.reason) == (RELOAD, ("craft",), "not healthy")
    assert supervisor.state == "recovering"
    again = supervisor.decide(both, now=5.0)
    assert again.kind == RESTART and "again after reloading it" in again.reason
    assert supervisor.decide(Health(), now=10.0).kind == OK
    assert supervisor.state == "ready"


def test_a_healthy_round_between_failures_allows_a_reload_again():
    supervisor = Supervisor(Policy(), orchestrators=["pipeline"])
    assert supervisor.decide(Health(failures={"pipeline": "stub died"}), now=0.0).models == ("pipeline",)
    assert supervisor.decide(Health(), now=1.0).kind == OK
    assert supervisor.decide(Health(failures={"pipeline": "stub died"}), now=2.0).kind == RELOAD


def test_probe_shapes_are_the_smallest_the_models_take():
    assert probe_shape([3, -1, -1], batched=True, pad_to=32) == (1, 3, 32, 32)  # CRAFT
    assert probe_shape([1, 64, -1], batched=True, pad_to=32) == (1, 1, 64, 64)  # CRNN, height 64
    assert probe_shape([3, 32, 128], batched=True, pad_to=32) == (1, 3, 32, 128)  # PARSeq, fixed
    assert probe_shape([3, -1], batched=False, pad_to=64) == (3, 64)


def test_probes_of_a_rendered_repository_are_the_plans_smallest_profile(plan, repo):
    probes = repository_probes(repo)
    assert [p.model for p in probes] == ["pipeline", *sorted(m.triton_name for m in plan.models())]
    assert probes[0].orchestrator and probes[0].outputs == ("output", "boxes")
    for model in plan.models():
        probe = next(p for p in probes if p.model == model.triton_name)
        assert {name: array.shape for name, array in probe.inputs.items()} == {
            name: tuple(shape.min) for name, shape in model.profile.items()
        }


# -- a real supervised server ----------------------------------------------------------------------


class Serve:
    """`stdr-deploy serve --json` running: its ready object, and the event lines that follow."""

    def __init__(self, repo: Path, log_dir: Path, *options: str):
        self.stderr_path = log_dir / "serve.stderr"
        self.process = subprocess.Popen(
            [*CLI, "serve", "--repo", str(repo), "--log", str(log_dir / "server.log"), "--json", *options],
            stdout=subprocess.PIPE, stderr=self.stderr_path.open("w"), text=True,
        )
        self.ready = ready_json(self.process)
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read_events, daemon=True)
        self._reader.start()

    def _read_events(self) -> None:
        for line in self.process.stdout:
            self.events.append(json.loads(line))

    def wait_event(self, kind: str, after: int = 0, timeout: float = RECOVERY_LIMIT_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events[after:] if e["event"] == kind]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no {kind!r} event in {timeout} s: {self.events}\n{self.stderr_path.read_text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            self.process.kill()


@pytest.fixture(scope="module")
def serve(repo, tmp_path_factory):
    running = Serve(repo, tmp_path_factory.mktemp("supervised"), "--probe-interval", "1")
    running.wait_event("watching")
    yield running
    running.stop()


def stub_of(server_pid: int, instance: str) -> int:
    """The pid of the Python-backend stub running model instance `instance` (e.g. craft_0_0)."""
    for pid in live_group_members(server_pid):
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if instance.encode() in cmdline.read().split(b"\0"):
                return pid
    raise AssertionError(f"no stub process {instance!r} in the group of {server_pid}")


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def reads(client: TritonPipelineClient, image, expected) -> bool:
    try:
        return [w.text for w in client.read(image)] == [w.text for w in expected]
    except Exception:  # noqa: BLE001 - any failure means "not answering correctly yet"
        return False


@pytest.mark.slow
@pytest.mark.triton
def test_an_outlier_image_grows_the_shared_memory_and_the_supervisor_gives_it_back(serve, good_image, expected_words):
    """Issue 23: the Python backend's shared-memory pool grows to the largest image handed to the
    pipeline and Triton never shrinks it; within a minute the supervisor has reloaded the pipeline
    in place, the pool is back within POOL_SLACK of its size before, and no request failed."""
    import numpy as np

    def pool() -> int:  # the server's pool files, resident bytes, counted once
        return sum(p.stat().st_blocks * 512 for p in SHM_DIR.glob(f"stdr_{serve.process.pid}_*"))

    client = TritonPipelineClient(serve.ready["grpc_url"])
    assert reads(client, good_image, expected_words)
    seen, before = len(serve.events), pool()
    assert client.read(np.zeros((5000, 6000, 3), np.uint8)) == []  # 90 MB, accepted (30 M pixels), no text
    assert pool() > POOL_SLACK * before + POOL_FLOOR_BYTES  # grown past what the supervisor tolerates
    deadline = time.monotonic() + RECOVERY_LIMIT_S
    while not [e for e in serve.events[seen:] if e["event"] == "memory_released"]:
        assert reads(client, good_image, expected_words), serve.events[seen:]  # traffic throughout the reload
        assert time.monotonic() < deadline, f"no memory_released event in {RECOVERY_LIMIT_S} s: {serve.events[seen:]}"
    released = serve.wait_event("memory_released", after=seen)
    assert released["models"] == ["pipeline"] and released["state"] == "ready"
    assert pool() <= POOL_SLACK * before + POOL_FLOOR_BYTES, released["message"]
    assert reads(client, good_image, expected_words)


CLIENT_SCRIPT = """
import sys, time
from stdr_deploy.triton_client import Endpoint, SharedInputs, connect
endpoint = Endpoint.parse(sys.argv[1])
inputs = SharedInputs(connect(endpoint), endpoint)
inputs.reserve(4 << 20)
print(inputs.name, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.triton
def test_the_input_region_of_a_killed_client_is_unregistered_and_a_live_clients_kept(serve, good_image, expected_words):
    """A client SIGKILLed while its shared-memory region is registered leaves Triton mapping it;
    the supervisor's next probe round unregisters and unlinks it, and leaves a live client's be."""
    import sys

    import tritonclient.grpc as grpcclient

    from stdr_deploy.triton_client import Endpoint, SharedInputs, infer

    url = serve.ready["grpc_url"]
    endpoint = Endpoint.parse(url)
    client = grpcclient.InferenceServerClient(endpoint.address)
    live = SharedInputs(client, endpoint)
    try:
        live.reserve(good_image.nbytes)
        doomed = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, url], stdout=subprocess.PIPE, text=True)
        name = doomed.stdout.readline().strip()
        registered = lambda: set(client.get_system_shared_memory_status(as_json=True).get("regions", {}))  # noqa: E731
        assert {name, live.name} <= registered() and (SHM_DIR / name).exists()
        seen = len(serve.events)
        doomed.kill()
        doomed.wait()
        released = serve.wait_event("regions_released", after=seen)
        assert name in released["message"] and live.name not in released["message"]
        assert name not in registered() and not (SHM_DIR / name).exists()
        assert live.name in registered()
        got = infer(client, endpoint, "pipeline", {"input": good_image[None]}, ["output"], live)  # still usable
        assert [w.decode() for w in got["output"].reshape(-1).tolist()] == [w.text for w in expected_words]
    finally:
        live.close()
    assert live.name not in client.get_system_shared_memory_status(as_json=True).get("regions", {})


@pytest.mark.slow
@pytest.mark.triton
def test_a_killed_stub_makes_readiness_false_and_its_model_is_reloaded_within_a_minute(
    serve, good_image, expected_words
):
    url = serve.ready["http_url"]  # readiness; inference goes over gRPC (HTTP inference is off)
    client = TritonPipelineClient(serve.ready["grpc_url"])
    assert reads(client, good_image, expected_words)
    seen = len(serve.events)
    killed = time.monotonic()
    os.kill(stub_of(serve.ready["pid"], "craft_0_0"), signal.SIGKILL)
    went_unready = False
    while time.monotonic() - killed < RECOVERY_LIMIT_S:
        if not ready(url):
            went_unready = True
        elif went_unready:  # ready again: from here on it must answer, and correctly
            assert reads(client, good_image, expected_words)
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"not ready and answering again within {RECOVERY_LIMIT_S} s: {serve.events[seen:]}")
    assert went_unready
    failed = serve.wait_event("probe_failed", after=seen)
    assert failed["models"] == ["craft"] and "Stub process 'craft_0_0' is not healthy" in failed["message"]
    assert serve.wait_event("reloaded", after=seen)["models"] == ["craft"]
    assert serve.wait_event("recovered", after=seen)["state"] == "ready"
    assert serve.ready["pid"] in live_group_members(serve.ready["pid"])  # the same server throughout


@pytest.mark.slow
@pytest.mark.triton
def test_a_killed_tritonserver_is_restarted_on_the_same_ports(serve, good_image, expected_words):
    seen = len(serve.events)
    killed = time.monotonic()
    os.kill(serve.ready["pid"], signal.SIGKILL)
    exited = serve.wait_event("server_exited", after=seen)
    assert f"tritonserver (pid {serve.ready['pid']}) was killed by SIGKILL while serving" in exited["message"]
    restarted = serve.wait_event("restarted", after=seen)
    new_pid = int(restarted["message"].split("(pid ")[1].split(")")[0])
    assert new_pid != serve.ready["pid"] and live_group_members(serve.ready["pid"]) == []
    client = TritonPipelineClient(serve.ready["grpc_url"])  # the URLs clients had still work
    while not (ready(serve.ready["http_url"]) and reads(client, good_image, expected_words)):
        assert time.monotonic() - killed < RECOVERY_LIMIT_S, serve.events[seen:]
        time.sleep(0.2)
    assert serve.wait_event("recovered", after=seen)["state"] == "ready"
    assert serve.stop() == 0
    assert live_group_members(new_pid) == []
    assert "Traceback" not in serve.stderr_path.read_text()
