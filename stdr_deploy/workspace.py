"""Where things live on disk, and how they get there without half-written files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def cache_dir() -> Path:
    """Persistent cache for downloads, exports and engines (`$STDR_DEPLOY_CACHE`)."""
    root = os.environ.get("STDR_DEPLOY_CACHE") or Path.home() / ".cache" / "stdr-deploy"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_workspace() -> Path:
    """Per-project workspace for host/plan/status files and logs (`$STDR_DEPLOY_WORKSPACE`)."""
    return Path(os.environ.get("STDR_DEPLOY_WORKSPACE") or "workspace")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; move it into place only if the block succeeds.

    The temporary file lives in the same directory so the final `os.replace` is atomic; a
    crash or signal mid-write leaves the previous `target` untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json_atomic(target: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def staging_dir(target: str | os.PathLike) -> Path:
    """A new folder `.<name>.staging-<pid>-XXXX` beside `target`, to build it in whole.

    Such folders of a process that is gone (killed mid-way) are removed first; the pid in the
    name keeps those of a build still running in another process.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for folder in target.parent.glob(f".{target.name}.staging-*"):
        pid = folder.name.rsplit(".staging-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-{os.getpid()}-", dir=target.parent))


def replace_dir_atomic(staging: Path, target: Path) -> None:
    """Swap a fully written `staging` folder into `target`, keeping the old one until the swap."""
    target = Path(target)
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():
        os.replace(old, target)  # an earlier swap was killed between its two renames
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)
