"""Seconds from a SIGKILL to a correct answer again, under `stdr-deploy serve`'s supervisor.

    python benchmarks/supervise_recovery.py --repo model_repository [--probe-interval 10] [--kills 3]

Runs `serve --json` on the repository, reads an image once for the expected words, then kills the
`craft` Python-backend stub `--kills` times and the tritonserver once (each found in the server's
own process group, never by name). For each kill it prints when readiness (/v2/health/ready) first
went false and when the pipeline first read the image right again, both in seconds after the kill.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from stdr_deploy.ocr.image_io import read_image
from stdr_deploy.server import live_group_members
from stdr_deploy.triton_client import TritonPipelineClient

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 120.0


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def stub_of(server_pid: int, instance: str) -> int:
    for pid in live_group_members(server_pid):
        if instance.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
            return pid
    raise SystemExit(f"no stub {instance} under server {server_pid}")


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def recovery(url: str, image, expected: list[str], kill) -> tuple[float | None, float]:
    """Seconds after `kill()` until readiness first went false (None: never seen), and until a
    correct read."""
    unready = None
    killed = time.monotonic()
    kill()
    while time.monotonic() - killed < LIMIT_S:
        if not ready(url):
            unready = unready if unready is not None else time.monotonic() - killed
        else:
            try:
                if [w.text for w in TritonPipelineClient(url).read(image)] == expected:
                    return unready, time.monotonic() - killed
            except Exception:  # noqa: BLE001 - not answering yet
                pass
        time.sleep(0.05)
    raise SystemExit(f"no correct answer within {LIMIT_S} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--probe-interval", default="10")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--image", type=Path, default=ROOT.parent / "shared/testdata/scenes_A/img00.png")
    args = parser.parse_args()
    serve = subprocess.Popen(
        [sys.executable, "-m", "stdr_deploy.cli", "serve", "--repo", str(args.repo), "--json",
         "--probe-interval", args.probe_interval, "--log", "/tmp/supervise_recovery.log"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        text = ""
        while not text.rstrip().endswith("\n}"):
            text += serve.stdout.readline()
        info = json.loads(text)
        url, image = info["http_url"], read_image(args.image)
        expected = [w.text for w in TritonPipelineClient(url).read(image)]
        time.sleep(float(args.probe_interval))
        for i in range(args.kills):
            unready, answered = recovery(url, image, expected, lambda: os.kill(stub_of(info["pid"], "craft_0_0"), signal.SIGKILL))
            print(f"craft stub kill {i + 1}: not ready after {seconds(unready)}, correct again after {seconds(answered)}",
                  flush=True)
            time.sleep(float(args.probe_interval))
        unready, answered = recovery(url, image, expected, lambda: os.kill(info["pid"], signal.SIGKILL))
        print(f"tritonserver kill: not ready after {seconds(unready)}, correct again after {seconds(answered)}")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)


if __name__ == "__main__":
    main()
