"""Talk to a Triton server with `tritonclient`, over HTTP or gRPC, behind the pipeline's Runner API.

`TritonModelRunner` serves one model (detector or recognizer) to the in-process `OcrPipeline`;
`TritonPipelineClient` sends whole images to the served `pipeline` model and gets words back.
"""

from __future__ import annotations

import fcntl
import http.client
import itertools
import os
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stdr_deploy.errors import ServerError, ServerUnreachable, UserInputError
from stdr_deploy.ocr import Word
from stdr_deploy.server import HTTP_INFERENCE_HEADER, SHM_DIR

GRPC_UNAVAILABLE = "StatusCode.UNAVAILABLE"  # tritonclient's status of a gRPC call no server answered
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")  # servers whose /dev/shm is this host's
CLIENT_REGION_PREFIX = "stdr_client_"  # the shared-memory regions this package's clients register

_NP_TO_TRITON = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float16): "FP16",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
}


@dataclass(frozen=True)
class Endpoint:
    """A server address split into what tritonclient wants: `host:port` and the protocol."""

    address: str
    protocol: str  # "http" | "grpc"

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        if "://" in url:
            scheme, address = url.split("://", 1)
        else:
            scheme, address = "http", url
        scheme = scheme.lower()
        if scheme not in ("http", "grpc"):
            raise UserInputError(
                f"unsupported URL scheme {scheme!r} in {url!r}",
                hint="use http://HOST:PORT or grpc://HOST:PORT",
            )
        address = address.rstrip("/")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserInputError(
                f"{url!r} is not a server address: expected {scheme}://HOST:PORT",
                hint="e.g. grpc://127.0.0.1:8001, as `serve` and `auto` print it",
            )
        return cls(address, scheme)

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.address}"

    @property
    def local(self) -> bool:
        """Whether the server is on this host (a loopback address), so it can map our shared memory."""
        return self.address.rpartition(":")[0].lower() in LOOPBACK_HOSTS


def connect(endpoint: Endpoint, timeout_s: float = 600.0):
    # A detector at a 2560 canvas takes a minute on a busy 2-core CPU: be patient by default.
    """A tritonclient client of the right protocol (imported lazily: it pulls in grpc/gevent)."""
    if endpoint.protocol == "grpc":
        import tritonclient.grpc as client_module

        return client_module.InferenceServerClient(endpoint.address)
    import tritonclient.http as client_module

    return client_module.InferenceServerClient(
        endpoint.address, connection_timeout=timeout_s, network_timeout=timeout_s
    )


def _module(endpoint: Endpoint):
    if endpoint.protocol == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    return client_module


class SharedInputs:
    """Request inputs handed to a server on this host in Triton's system shared memory, instead of
    in the request body: the client copies an image once into a region the server maps, where
    gRPC would serialise, send and parse every byte (a 3280x2625 photo is 26 MB). One region per
    client (one request in flight at a time), replaced by a larger one when an input outgrows it;
    `close` unregisters and unlinks it. While registered, the client holds a shared `flock` on the
    region's file: the kernel drops it however the process ends, which is how
    `release_orphaned_regions` tells the region of a killed client."""

    def __init__(self, client: Any, endpoint: Endpoint):
        self.client, self.endpoint = client, endpoint
        self.prefix = f"{CLIENT_REGION_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._serial = itertools.count()
        self.name: str | None = None
        self.region: Any = None
        self._held: int | None = None  # the region file's descriptor that holds the flock
        self.size = 0

    def inputs(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        import tritonclient.utils.shared_memory as shm

        arrays = {name: np.ascontiguousarray(array) for name, array in feeds.items()}
        self.reserve(sum(array.nbytes for array in arrays.values()))
        mod, inputs, offset = _module(self.endpoint), [], 0
        for name, array in arrays.items():
            shm.set_shared_memory_region(self.region, [array], offset=offset)
            tensor = mod.InferInput(name, list(array.shape), _NP_TO_TRITON[array.dtype])
            tensor.set_shared_memory(self.name, array.nbytes, offset)
            inputs.append(tensor)
            offset += array.nbytes
        return inputs

    def reserve(self, size: int) -> None:
        """A region of at least `size` bytes, registered with the server (ServerError where it
        cannot map it)."""
        if size > self.size:
            self._open(size)

    def _open(self, size: int) -> None:
        import tritonclient.utils.shared_memory as shm
        from tritonclient.utils import InferenceServerException

        self.close()
        name = f"{self.prefix}_{next(self._serial)}"
        region = shm.create_shared_memory_region(name, f"/{name}", size, create_only=True)
        held = None
        try:
            held = _hold(SHM_DIR / name)  # before registering: a registered region is always held
            self.client.register_system_shared_memory(name, f"/{name}", size)
        except BaseException as exc:  # the region is ours to unlink whatever went wrong
            shm.destroy_shared_memory_region(region)
            if held is not None:
                os.close(held)
            if isinstance(exc, (OSError, http.client.HTTPException)):  # HTTP: nobody answered
                raise _no_answer(self.endpoint, str(exc) or type(exc).__name__) from exc
            if isinstance(exc, InferenceServerException):
                if exc.status() == GRPC_UNAVAILABLE:
                    raise _no_answer(self.endpoint, exc.message()) from exc
                raise ServerError(
                    f"{self.endpoint.url} cannot map this client's shared memory: {exc.message()}",
                    hint="the server must run on this host with the same /dev/shm; send inputs in the request instead",
                ) from exc
            raise
        self.name, self.region, self._held, self.size = name, region, held, size

    def close(self) -> None:
        import tritonclient.utils.shared_memory as shm

        if self.region is None:
            return
        try:
            self.client.unregister_system_shared_memory(self.name)
        except Exception:  # noqa: BLE001 - a server already gone has nothing registered to undo
            pass
        shm.destroy_shared_memory_region(self.region)
        if self._held is not None:
            os.close(self._held)
        self.name, self.region, self._held, self.size = None, None, None, 0


def _hold(path: Path) -> int:
    """An open descriptor of `path` holding a shared flock on it, for as long as it stays open."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _owner_gone(path: Path) -> bool:
    """Whether nobody holds `path`'s flock any more. A registered region whose file is gone has lost
    its owner too: tritonclient's regions are `multiprocessing.shared_memory` blocks, whose
    resource tracker unlinks them once their process was killed, and `SharedInputs.close`
    unregisters before it unlinks (a region closed meanwhile just fails to unregister again)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the lock taken, if any
    return True


def release_orphaned_regions(client: Any, folder: Path = SHM_DIR) -> list[str]:
    """Unregister, and unlink, the system shared-memory regions this package's clients registered
    with the server of `client` (gRPC) and then died holding: Triton keeps a region mapped until it
    is unregistered, so every killed client would leave its largest image's bytes behind.

    Only regions named `CLIENT_REGION_PREFIX*` are looked at, and only those whose file nobody
    holds a lock on (a live client holds one, see `SharedInputs`) are released. Returns their names.
    """
    regions = client.get_system_shared_memory_status(as_json=True).get("regions", {}).values()
    released = []
    for region in regions:
        name, key = region.get("name", ""), region.get("key", "").lstrip("/")
        if not name.startswith(CLIENT_REGION_PREFIX) or not key or "/" in key or not _owner_gone(folder / key):
            continue
        try:
            client.unregister_system_shared_memory(name)
        except Exception:  # noqa: BLE001 - unregistered meanwhile (its owner closed it after all)
            continue
        (folder / key).unlink(missing_ok=True)
        released.append(name)
    return released


def open_shared_inputs(client: Any, endpoint: Endpoint, wanted: bool | None, size: int) -> tuple[SharedInputs | None, str | None]:
    """A registered region of `size` bytes, or None and why not. `wanted`: True requires it (a
    ServerError where the server cannot map it), False never, None where the server is on this
    host and maps it. A server that does not answer is ServerUnreachable whatever `wanted` says."""
    if wanted is False:
        return None, None
    if wanted is None and not endpoint.local:
        return None, f"{endpoint.address} is not on this host"
    shared = SharedInputs(client, endpoint)
    try:
        shared.reserve(size)
    except ServerUnreachable:
        raise
    except ServerError as exc:
        if wanted:
            raise
        return None, str(exc)
    return shared, None


def infer(client: Any, endpoint: Endpoint, model: str, feeds: dict[str, np.ndarray], outputs: list[str],
          shared: SharedInputs | None = None) -> dict[str, np.ndarray]:
    """One inference, its inputs in the request or in `shared` memory; a server-side error
    becomes a ServerError that names the model."""
    from tritonclient.utils import InferenceServerException

    mod = _module(endpoint)
    if shared is not None:
        inputs = shared.inputs(feeds)
    else:
        inputs = []
        for name, array in feeds.items():
            array = np.ascontiguousarray(array)
            tensor = mod.InferInput(name, list(array.shape), _NP_TO_TRITON[array.dtype])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
    requested = [mod.InferRequestedOutput(name) for name in outputs]
    try:
        result = client.infer(model, inputs, outputs=requested)
    except InferenceServerException as exc:
        if exc.status() == GRPC_UNAVAILABLE:
            raise _no_answer(endpoint, exc.message()) from exc
        if HTTP_INFERENCE_HEADER in (exc.message() or ""):
            raise ServerError(
                f"{endpoint.url} takes inference over gRPC only: {exc.message()}",
                hint="use the server's grpc:// URL (`serve` and `auto` print it); "
                "`stdr-deploy serve --http-inference` opens HTTP inference to trusted clients",
            ) from exc
        raise ServerError(f"model {model!r} failed on {endpoint.url}: {exc.message()}") from exc
    except (OSError, http.client.HTTPException) as exc:  # HTTP: refused, reset, closed or timed out
        raise _no_answer(endpoint, str(exc) or type(exc).__name__) from exc
    return {name: result.as_numpy(name) for name in outputs}


def http_inference_refused(endpoint: Endpoint, model: str = "pipeline") -> bool:
    """Whether this HTTP endpoint refuses inference (see stdr_deploy.server.HTTP_INFERENCE_HEADER).

    An empty request body is enough: the restriction answers 403 before the body is read, an open
    server 400 for the missing inputs.
    """
    request = urllib.request.Request(f"http://{endpoint.address}/v2/models/{model}/infer", data=b"{}", method="POST")
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as exc:
        return exc.code == 403 and HTTP_INFERENCE_HEADER in exc.read().decode(errors="replace")
    return False


def _no_answer(endpoint: Endpoint, detail: str) -> ServerUnreachable:
    """The server is gone or unreachable: say so, rather than blame the model or the request."""
    return ServerUnreachable(
        f"no answer from the server at {endpoint.url} ({detail})",
        hint="start it (`stdr-deploy serve` or `stdr-deploy auto`) or check the URL; "
        "if it stopped, the end of its log (workspace/server.log) says why",
    )


class TritonModelRunner:
    """Runner for one served model: the pipeline calls `infer` exactly as with ONNX Runtime."""

    def __init__(self, url: str, model: str, outputs: tuple[str, ...] = ("output",)):
        self.endpoint = Endpoint.parse(url)
        self.model = model
        self.outputs = list(outputs)
        self._client = connect(self.endpoint)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return infer(self._client, self.endpoint, self.model, feeds, self.outputs)


class TritonPipelineClient:
    """Sends RGB images to the served `pipeline` model; returns its words with polygons.

    `shared_memory` None hands each image over in system shared memory where the server is on
    this host and maps it (else, from then on, in the request); True requires it; False never.
    Each read registers its own region and unregisters it after the answer, so a client that
    ends leaves nothing mapped in the server."""

    def __init__(self, url: str, model: str = "pipeline", shared_memory: bool | None = False):
        self.endpoint = Endpoint.parse(url)
        self.model = model
        self.shared_memory = self.endpoint.local if shared_memory is None else shared_memory
        self._required = shared_memory is True
        self._client = connect(self.endpoint)

    def read(self, image: np.ndarray) -> list[Word]:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UserInputError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
        out = self._infer({"input": image[None]}, ["output", "boxes"])
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in out["output"].reshape(-1)]
        boxes = out["boxes"].reshape(-1, 9)
        return [
            Word(text, box[:8].reshape(4, 2).astype(float).tolist(), float(box[8]))
            for text, box in zip(texts, boxes)
        ]

    def _infer(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        shared = None
        if self.shared_memory:
            size = sum(np.asarray(array).nbytes for array in feeds.values())
            shared, _ = open_shared_inputs(self._client, self.endpoint, True if self._required else None, size)
            self.shared_memory = shared is not None  # a server that cannot map ours gets the request body from now on
        try:
            return infer(self._client, self.endpoint, self.model, feeds, outputs, shared)
        finally:
            if shared is not None:
                shared.close()


def rendered_config(repo: Path, model: str):
    """The config.pbtxt we wrote, parsed into Triton's own schema."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse((repo / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
