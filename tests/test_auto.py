"""`stdr-deploy auto` end to end on this CPU host, as a user runs it: a real process, a real server.

The default deployment (craft + ppocr on this CPU host) must read the smoke image exactly; parseq-tiny with the
oracle's random weights must serve exactly what the in-process pipeline computes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.triton]

CLI = [sys.executable, "-m", "stdr_deploy.cli"]


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


@pytest.fixture(scope="module")
def default_deploy(tmp_path_factory, craft_onnx, crnn_onnx) -> tuple[subprocess.CompletedProcess, Path]:
    ws = tmp_path_factory.mktemp("auto-default")
    proc = run_cli("auto", "--exit-after-smoke", "--json", "--workspace", str(ws), "--repo", str(ws / "repo"))
    return proc, ws


def test_auto_default_deploys_and_reads_text(default_deploy):
    proc, ws = default_deploy
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads(proc.stdout)
    assert manifest == json.loads((ws / "deploy.json").read_text())
    steps = {s["name"]: s for s in manifest["steps"]}
    assert [s["name"] for s in manifest["steps"]] == ["probe", "plan", "export", "build", "render", "serve", "smoke"]
    assert steps["build"]["status"] == "skipped"
    assert all(s["status"] == "ok" for name, s in steps.items() if name != "build")
    assert manifest["plan"]["variant"] == "onnxruntime" and manifest["plan"]["device"] == "cpu"
    assert manifest["plan"]["recognizer"]["family"] == "ppocr"  # the CPU plans' default recognizer
    for model in ("craft", "ppocr_rec"):
        onnx = Path(steps["export"]["outputs"][model]["onnx"])
        assert len(steps["export"]["outputs"][model]["sha256"]) == 64 and onnx.is_file()
    checks = manifest["smoke"]["checks"]
    assert manifest["smoke"]["ok"] and all(c["ok"] for c in checks)
    names = {(c["model"], c["check"], c["protocol"]) for c in checks}
    # inference over gRPC only: HTTP answers health and configs and refuses inference (issue 23)
    assert ("server", "refuses inference over HTTP (gRPC only)", "http") in names
    assert ("pipeline", "reads the smoke image", "http") not in names
    assert ("pipeline", "reads the smoke image", "grpc") in names
    assert ("pipeline", "served words equal in-process words", "grpc") in names
    assert {c["check"].split(" shape")[0] for c in checks if c["model"] == "craft"} >= {
        "infer at min", "infer at opt", "infer at max"
    }
    # every instance driven at its max shape at once: the whole server tree's peak RSS beside the plan
    memory = manifest["smoke"]["memory"]
    assert 0 < memory["host_peak_bytes"] <= memory["host_budget_bytes"] == manifest["plan"]["memory_budget_bytes"]
    assert memory["host_estimate_bytes"] >= memory["host_peak_bytes"], manifest["smoke"]["warnings"]
    assert ("deployment", "host RAM (server process tree) peak within the budget") in {
        (c["model"], c["check"]) for c in checks
    }
    for name in ("host.json", "plan.json", "status.json", "smoke.json", "server.log"):
        assert (ws / name).is_file(), name
    status = json.loads((ws / "status.json").read_text())
    assert status["format_version"] == 1 and len(status["steps"]) == 7
    # the server was stopped: nothing listens on the URLs any more
    assert manifest["urls"]["http"].startswith("http://127.0.0.1:")
    assert not _stub_processes(ws / "repo")


def _stub_processes(repo: Path) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "triton_python_backend_stub" in text and str(repo) in text:
            found.append(text)
    return found


def test_auto_parseq_tiny_random_weights_serves_what_runs_in_process(tmp_path, shared, parseq_tiny_onnx):
    weights = shared / "oracles" / "parseq" / "parseq_tiny_random_A.pt"
    proc = run_cli(
        "auto", "--exit-after-smoke", "--json", "--recognizer", "parseq-tiny", "--weights", str(weights),
        "--workspace", str(tmp_path), "--repo", str(tmp_path / "repo"),
        "--canvas", "960",  # what is checked does not depend on it; a small one keeps CI short
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads(proc.stdout)
    assert manifest["plan"]["recognizer"]["triton_name"] == "parseq"
    assert manifest["plan"]["recognizer"]["family"] == "parseq-tiny"
    checks = {(c["check"], c["protocol"]): c for c in manifest["smoke"]["checks"]}
    # random weights read nonsense: the text check is replaced by served == in-process
    assert ("reads the smoke image", "grpc") not in checks
    assert checks[("served words equal in-process words", "grpc")]["ok"]
    assert checks[("served boxes equal in-process boxes (<= 1 px)", "grpc")]["ok"]
    assert (tmp_path / "repo" / "parseq" / "config.pbtxt").is_file()


def test_auto_tensorrt_on_a_cpu_host_exits_4(tmp_path):
    proc = run_cli("auto", "--exit-after-smoke", "--variant", "tensorrt_plan", "--workspace", str(tmp_path),
                   "--repo", str(tmp_path / "repo"), timeout=120)
    assert proc.returncode == 4, proc.stderr
    assert "tensorrt" in proc.stderr.lower()
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["steps"][-1]["name"] == "plan" and status["steps"][-1]["status"] == "failed"
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    "args",
    [("--recognizer", "nonsense"), ("--weights", "nosuchmodel=/tmp/x.pt"), ("--http-port", "eighty")],
)
def test_auto_bad_arguments_exit_2(tmp_path, args):
    proc = run_cli("auto", "--exit-after-smoke", *args, "--workspace", str(tmp_path), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert not (tmp_path / "repo").exists()


def _cheap(plan: dict) -> dict:
    """The same plan with a small detector opt/max, so the smoke's shape checks cost little."""
    plan = json.loads(json.dumps(plan))
    plan["detector"]["profile"]["input"]["opt"] = [1, 3, 64, 64]
    plan["detector"]["profile"]["input"]["max"] = [1, 3, 96, 96]
    return plan


def test_smoke_command_on_its_own_server(default_deploy, tmp_path):
    _, ws = default_deploy
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(_cheap(json.loads((ws / "plan.json").read_text()))))
    proc = run_cli("smoke", "--repo", str(ws / "repo"), "--plan", str(plan_file), "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["ok"]
    assert {c["protocol"] for c in report["checks"]} == {"http", "grpc"}
    assert any(c["check"] == "reads the smoke image" and c["ok"] for c in report["checks"])


def test_smoke_failure_names_model_check_expected_and_got(default_deploy, tmp_path):
    """Served configs that differ from the rendered ones fail the smoke with exit 8 and say how."""
    from stdr_deploy.plan_schema import Plan
    from stdr_deploy.render import render_texts
    from stdr_deploy.server import TritonServer

    _, ws = default_deploy
    plan = _cheap(json.loads((ws / "plan.json").read_text()))
    plan["recognizer"]["max_batch_size"] = 3  # the served config says 8
    plan["pipeline"]["recognizer_batch"] = 3
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    lying_repo = tmp_path / "repo"
    names = {m.triton_name: "model.onnx" for m in Plan.from_dict(plan).models()}
    for rel, text in render_texts(Plan.from_dict(plan), names).items():
        (lying_repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (lying_repo / rel).write_text(text)
    with TritonServer(ws / "repo") as server:
        proc = run_cli("smoke", "--repo", str(lying_repo), "--plan", str(plan_file), "--url", server.http_url,
                       timeout=600)
    assert proc.returncode == 8, proc.stderr[-2000:]
    assert f"{Plan.from_dict(plan).recognizer.triton_name}: config equals rendered config.pbtxt [http]" in proc.stderr
    # an HTTP URL alone cannot pass a smoke: inference is served over gRPC only (issue 23)
    assert "pipeline: some URL takes inference [http]" in proc.stderr
    assert "max_batch_size: 3 != 8" in proc.stderr


def _readme_query(address: str, image: Path) -> subprocess.CompletedProcess:
    """The README quick start's tritonclient lines, run as written against `address` and `image`."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("a few lines of `tritonclient`", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert '"127.0.0.1:8001"' in code and '"photo.jpg"' in code
    code = code.replace('"127.0.0.1:8001"', repr(address)).replace('"photo.jpg"', repr(str(image)))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_ocr_url_reads_scenes_a_like_the_in_process_pipeline(default_deploy, shared, scenes_a_predictions):
    """`ocr --url` through the served pipeline reads what the in-process pipeline reads with the
    plan of this host (`ocr` without --url runs the deployment's detector precision, canvas and
    thresholds: `scenes_a_predictions`), word for word."""
    from stdr_deploy.server import TritonServer

    _, ws = default_deploy
    images = sorted((shared / "testdata/scenes_A").glob("img*.png"))
    with TritonServer(ws / "repo") as server:
        proc = run_cli("ocr", "--url", server.grpc_url, "--json", *map(str, images), timeout=1200)
        snippet = _readme_query(server.grpc_url.split("://", 1)[1], images[0])
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = json.loads(proc.stdout)
    assert set(served["images"][0]["words"][0]) >= {"text", "polygon", "score"}  # as the README shows
    assert len(served["images"][0]["words"][0]["polygon"]) == 4
    # the README's tritonclient lines print the same words as `ocr --url` reads
    assert snippet.returncode == 0, snippet.stderr[-2000:]
    assert all(repr(w["text"].encode()) in snippet.stdout for w in served["images"][0]["words"]), snippet.stdout
    in_process = scenes_a_predictions["images"]
    assert [image["file"] for image in served["images"]] == [path.name for path in images] == [i["file"] for i in in_process]
    for ours, theirs in zip(served["images"], in_process):
        assert [w["text"] for w in ours["words"]] == [w["text"] for w in theirs["words"]], ours["file"]
