"""Talk to a Triton server with `tritonclient`, over HTTP or gRPC, behind the pipeline's Runner API.

`TritonModelRunner` serves one model (detector or recognizer) to the in-process `OcrPipeline`;
`TritonPipelineClient` sends whole images to the served `pipeline` model and gets words back.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stdr_deploy.errors import ServerError, ServerUnreachable, UserInputError
from stdr_deploy.ocr import Word
from stdr_deploy.server import HTTP_INFERENCE_HEADER

GRPC_UNAVAILABLE = "StatusCode.UNAVAILABLE"  # tritonclient's status of a gRPC call no server answered

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


def infer(client: Any, endpoint: Endpoint, model: str, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    """One inference; a server-side error becomes a ServerError that names the model."""
    from tritonclient.utils import InferenceServerException

    mod = _module(endpoint)
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
    """Sends RGB images to the served `pipeline` model; returns its words with polygons."""

    def __init__(self, url: str, model: str = "pipeline"):
        self.endpoint = Endpoint.parse(url)
        self.model = model
        self._client = connect(self.endpoint)

    def read(self, image: np.ndarray) -> list[Word]:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UserInputError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
        out = infer(self._client, self.endpoint, self.model, {"input": image[None]}, ["output", "boxes"])
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in out["output"].reshape(-1)]
        boxes = out["boxes"].reshape(-1, 9)
        return [
            Word(text, box[:8].reshape(4, 2).astype(float).tolist(), float(box[8]))
            for text, box in zip(texts, boxes)
        ]


def rendered_config(repo: Path, model: str):
    """The config.pbtxt we wrote, parsed into Triton's own schema."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse((repo / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
