"""Request batching and retry, shared by our `onnxruntime`, `tensorrt` and `openvino` Triton backends.

`server.backend_directory()` copies this file beside each backend's `model.py`, which puts its
own folder first on `sys.path` and imports it, as the pipeline model imports its `stdr_ocr` copy.
Plain Python on purpose (no NumPy, torch or pb_utils): a feed is {input name: array or tensor},
anything with `.shape`; the backend says how to join and run them.

Per `execute` call, requests whose inputs agree past the batch axis are joined (at most
`max_batch` rows) and run once; when a joint run fails, each request is run alone, so only the
request at fault gets an error and the others are answered.

Before that, every input is checked against the limits `stdr-deploy render` writes from the plan
(config parameters `max_input_dims:<input>`, the max profile past the batch axis): an empty input
or one beyond the max profile is the caller's mistake (`InvalidInput`, answered with Triton's
INVALID_ARGUMENT) and never reaches the runtime, whose memory would grow to fit it.
"""

from __future__ import annotations

import json
import os
from typing import Callable


LIMIT_PREFIX = "max_input_dims:"  # config parameter key prefix, followed by the input's name


class InvalidInput(ValueError):
    """A request the model refuses as the caller's mistake (Triton's INVALID_ARGUMENT)."""


def triton_error(outcome: Exception, pb_utils):
    """The `pb_utils.TritonError` answering `outcome`: INVALID_ARGUMENT for the caller's mistakes,
    INTERNAL for the rest (the backend passes its `triton_python_backend_utils` module)."""
    error = pb_utils.TritonError
    return error(str(outcome), error.INVALID_ARG if isinstance(outcome, InvalidInput) else error.INTERNAL)


def input_limits(parameters: dict) -> dict:
    """{input name: max dims past the batch axis} from the `max_input_dims:<input>` string parameters."""
    return {
        key[len(LIMIT_PREFIX):]: tuple(int(size) for size in value.split(","))
        for key, value in parameters.items()
        if key.startswith(LIMIT_PREFIX)
    }


def checked(feed, limits: dict, batched: bool, name: str):
    """`feed`, or the InvalidInput that refuses it: an input with no elements, or larger than its limit."""
    if isinstance(feed, Exception):
        return feed
    for input_name, array in feed.items():
        shape = tuple(array.shape)
        if 0 in shape:
            return InvalidInput(f"{name}: input {input_name!r} has no elements (shape {list(shape)})")
        top = limits.get(input_name)
        dims = shape[1:] if batched else shape
        if top is not None and (len(dims) != len(top) or any(size > most for size, most in zip(dims, top))):
            return InvalidInput(
                f"{name}: input {input_name!r} of shape {list(shape)} is beyond this deployment's largest "
                f"{list(top)} (past the batch axis); send smaller inputs, or plan a larger profile"
            )
    return feed


def model_config(args: dict, pb_utils) -> tuple[str, dict]:
    """(model name, its config) from `initialize`'s arguments; a config with `reshape` on any
    tensor, which our backends do not support, fails the load."""
    name, config = args["model_name"], json.loads(args["model_config"])
    for tensor in config.get("input", []) + config.get("output", []):
        if tensor.get("reshape"):
            raise pb_utils.TritonModelException(f"{name}: 'reshape' on {tensor['name']!r} is not supported by this backend")
    return name, config


def array_feed(request, inputs: list, optional: set, name: str, pb_utils):
    """{input name: NumPy array} of a request, or the InvalidInput naming a missing required input."""
    feed = {}
    for input_name in inputs:
        tensor = pb_utils.get_input_tensor_by_name(request, input_name)
        if tensor is None:
            if input_name not in optional:
                return InvalidInput(f"{name}: missing input {input_name!r}")
            continue
        feed[input_name] = tensor.as_numpy()
    return feed


def array_response(outcome, pb_utils, contiguous: Callable):
    """The response to one request: its error, or its outputs ({name: array}, made contiguous)."""
    if isinstance(outcome, Exception):
        return pb_utils.InferenceResponse(error=triton_error(outcome, pb_utils))
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, contiguous(array)) for name, array in outcome.items()])


def model_file(args: dict, config: dict, default_filename: str) -> str:
    """`<model dir>/<version>/<default_model_filename or the backend's default>`, as Triton resolves it."""
    name = config.get("default_model_filename") or default_filename
    return os.path.join(args["model_repository"], args["model_version"], name)


def batch_groups(shapes: list, max_batch: int) -> list[list[int]]:
    """Request indexes to run together: same input shapes past the batch axis, at most
    `max_batch` rows per run. `shapes[i]` is {input: shape} or None for a request that failed
    already (it stays alone); `max_batch` 0 means the model has no batch axis (no joining).
    """
    if max_batch <= 0:
        return [[i] for i in range(len(shapes))]
    open_groups: dict = {}
    groups: list[list[int]] = []
    for index, request in enumerate(shapes):
        if request is None:
            groups.append([index])
            continue
        key = tuple(sorted((name, tuple(shape[1:])) for name, shape in request.items()))
        rows = max(shape[0] for shape in request.values())
        group = open_groups.get(key)
        if group is None or group["rows"] + rows > max_batch:
            group = open_groups[key] = {"indexes": [], "rows": 0}
            groups.append(group["indexes"])
        group["indexes"].append(index)
        group["rows"] += rows
    return groups


def split_rows(sizes: list[int]) -> list[tuple[int, int]]:
    """[2, 3, 1] -> [(0, 2), (2, 5), (5, 6)]: each request's rows in the joined batch."""
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


def run_requests(feeds: list, max_batch: int, run: Callable, join: Callable, name: str, limits: dict) -> list:
    """Outputs ({name: array}) or the Exception to answer, for each feed of one `execute` call.

    `feeds[i]` is an input dict or the Exception that already fails request i; `run(feed)` runs
    the model once; `join(arrays)` concatenates along the batch axis; `limits` is `input_limits`.
    """
    feeds = [checked(feed, limits, max_batch > 0, name) for feed in feeds]
    shapes = [None if isinstance(f, Exception) else {n: tuple(a.shape) for n, a in f.items()} for f in feeds]
    outcomes: list = [None] * len(feeds)
    for group in batch_groups(shapes, max_batch):
        for index, outcome in zip(group, _run_group([feeds[i] for i in group], run, join, name)):
            outcomes[index] = outcome
    return outcomes


def _run_group(feeds: list, run: Callable, join: Callable, name: str) -> list:
    """Outputs per request; a failing joint run is retried one by one to blame the right one."""
    if len(feeds) == 1 or any(isinstance(feed, Exception) for feed in feeds):
        return [_run_one(feed, run, name) for feed in feeds]
    sizes = [next(iter(feed.values())).shape[0] for feed in feeds]
    joined = {key: join([feed[key] for feed in feeds]) for key in feeds[0]}
    try:
        outputs = run(joined)
    except Exception:  # noqa: BLE001 - any runtime failure: find out which request caused it
        return [_run_one(feed, run, name) for feed in feeds]
    return [{key: out[start:stop] for key, out in outputs.items()} for start, stop in split_rows(sizes)]


def _run_one(feed, run: Callable, name: str):
    if isinstance(feed, Exception):
        return feed
    try:
        return run(feed)
    except Exception as exc:  # noqa: BLE001 - reported to the client as this request's error
        return RuntimeError(f"{name}: {exc}")
