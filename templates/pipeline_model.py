"""Triton Python-backend model "pipeline": the OCR orchestrator, calling its models through BLS.

A request carries one RGB uint8 image, shape [1, H, W, 3]. The answer holds `output`, the words
as UTF-8 strings [1, N], and `boxes` [1, N, 9]: each word's polygon x1, y1, ..., x4, y4 (image
pixels, clockwise from the word's top-left) followed by its score.

The work is done by `OcrPipeline` from `stdr_ocr`, a copy of stdr-deploy's `stdr_deploy.ocr`
that `stdr-deploy render` places beside this file: the same functions `stdr-deploy ocr` runs
in-process, so the server and the CLI read the same words. The pipeline resizes the image for
the detector, turns the score maps into word boxes, crops the words and sends all crops of the
image to the recognizer in batches of `recognizer_batch` (never one request per crop), then
decodes the characters. Here its two models are `BlsRunner`s: BLS requests to the detector and
recognizer models of this server, named in this model's config `parameters` along with every
processing setting of the plan. The recognizer batches of one image (crops padded to a few
widths) are sent together with `async_exec`, so they run side by side and the recognizer's
dynamic batcher can merge them with the crops of other requests.

Errors stay per request: an unusable image (0-sized, too small, too many pixels, wrong layout)
answers that request with a `TritonError` of code INVALID_ARGUMENT, a failed model call or a bug
with one of code INTERNAL, each saying what went wrong; the other requests of the batch are
answered normally. The image's size is checked from its tensor shape before any work, so a
request above the plan's pixel limit costs nothing beyond its upload.

The folder is self-contained: besides Triton's Python backend (23.04 or newer, for BLS
`preferred_memory`) it needs numpy, opencv-python-headless and Pillow, e.g. in the NGC
container `pip install numpy opencv-python-headless pillow` before starting tritonserver.
"""

import asyncio
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub puts this folder on sys.path too, but last; first makes sure our copy is imported.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stdr_ocr.errors import BadImageError, OcrError  # noqa: E402
from stdr_ocr.pipeline import OcrPipeline  # noqa: E402
from stdr_ocr.settings import PipelineSettings  # noqa: E402
from stub_malloc import model_malloc  # noqa: E402
from stdr_ocr.stages import (  # noqa: E402
    READS_METRIC,
    SERVED_STAGES,
    STAGE_CPU_SECONDS_METRIC,
    STAGE_SECONDS_METRIC,
    StageClock,
)

MODEL_OUTPUT = "output"  # the detector's and the recognizer's score tensor


class ModelCallError(Exception):
    """A BLS request to the detector or the recognizer failed; the message says which and why."""


class BlsRunner:
    """A pipeline Runner (`infer(feeds) -> outputs`, `infer_many`) served by another model of this server."""

    def __init__(self, model_name, output_names):
        self.model_name = model_name
        self.output_names = list(output_names)
        # `async_exec` needs a running event loop; `execute` is synchronous, so the runner keeps its own.
        self.loop = asyncio.new_event_loop()

    def infer(self, feeds):
        return self._outputs(self._request(feeds).exec())

    def infer_many(self, feeds_list):
        """All calls in flight at once (BLS `async_exec`), answers in the order of `feeds_list`."""

        async def gather():
            return await asyncio.gather(*(self._request(feeds).async_exec() for feeds in feeds_list))

        return [self._outputs(response) for response in self.loop.run_until_complete(gather())]

    def close(self):
        self.loop.close()

    def _request(self, feeds):
        return pb_utils.InferenceRequest(
            model_name=self.model_name,
            requested_output_names=self.output_names,
            inputs=[pb_utils.Tensor(name, np.ascontiguousarray(array)) for name, array in feeds.items()],
            # Outputs come back in CPU memory even when the model ran on a GPU: numpy reads them.
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
        )

    def _outputs(self, response):
        if response.has_error():
            raise ModelCallError(f"model {self.model_name!r} failed: {response.error().message()}")
        return {name: cpu_array(pb_utils.get_output_tensor_by_name(response, name)) for name in self.output_names}


class _Capsule:
    """Hands a DLPack capsule to `np.from_dlpack`, which wants an object with `__dlpack__`."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **_):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU: BLS outputs are requested in CPU memory


def cpu_array(tensor):
    """A numpy view of a BLS output tensor that keeps the tensor alive (DLPack), where
    `as_numpy()` would view memory freed with the response and need a copy."""
    return np.from_dlpack(_Capsule(tensor.to_dlpack()))


class StageMetrics:
    """Counters on Triton's metrics endpoint, summed over the requests answered with words: wall and
    CPU seconds per stage (label `stage`) and the reads, so a served request's time can be split by
    stage (`stdr-deploy bench`). Backends without custom metrics (before 23.01) count nothing."""

    def __init__(self, model_name, version):
        family = getattr(pb_utils, "MetricFamily", None)
        self.reads = None
        if family is None:
            return
        labels = {"model": model_name, "version": version}
        # The families must outlive their metrics, so they are kept.
        self.families = [
            family(name=STAGE_SECONDS_METRIC, description="seconds per pipeline stage", kind=family.COUNTER),
            family(name=STAGE_CPU_SECONDS_METRIC, description="CPU seconds per pipeline stage", kind=family.COUNTER),
            family(name=READS_METRIC, description="pipeline requests answered with words", kind=family.COUNTER),
        ]
        self.wall, self.cpu = (
            {stage: counters.Metric(labels={**labels, "stage": stage}) for stage in SERVED_STAGES}
            for counters in self.families[:2]
        )
        self.reads = self.families[2].Metric(labels=labels)

    def add(self, clock):
        if self.reads is None:
            return
        for stage in clock.seconds:
            self.wall[stage].increment(clock.seconds[stage])
            self.cpu[stage].increment(clock.cpu_seconds[stage])
        self.reads.increment(1)


def string_parameters(model_config):
    """`parameters { key: K value: { string_value: V } }` as {K: V}."""
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}


def settings_from_parameters(parameters):
    """PipelineSettings from string parameters, each converted to the type of its default."""
    defaults = PipelineSettings()
    values = {
        field.name: type(getattr(defaults, field.name))(parameters[field.name])
        for field in dataclasses.fields(PipelineSettings)
        if field.name in parameters
    }
    return PipelineSettings(**values)


def single_image(batch):
    """[1, H, W, 3] -> [H, W, 3]; Triton already checked the dtype and the last dim."""
    if batch.ndim != 4 or batch.shape[0] != 1:
        raise BadImageError(f"expected one image of shape [1, H, W, 3], got shape {list(batch.shape)}")
    return batch[0]


def words_to_tensors(words):
    """The response tensors for one image's words (batch dimension of 1 included)."""
    texts = np.array([[word.text.encode("utf-8") for word in words]], dtype=np.object_).reshape(1, len(words))
    boxes = np.zeros((1, len(words), 9), dtype=np.float32)
    for i, word in enumerate(words):
        boxes[0, i, :8] = np.asarray(word.polygon, dtype=np.float32).reshape(8)
        boxes[0, i, 8] = word.score
    return [pb_utils.Tensor("output", texts), pb_utils.Tensor("boxes", boxes)]


def check_numpy_bridge():
    """Fail the model load, not every request, when the stub and NumPy disagree on the array ABI.

    A stub built against NumPy 1 that embeds NumPy 2 (or the reverse) reads every item size
    as 0: tensors made from arrays arrive empty and BLS calls fail with byte-size errors.
    """
    probe = np.arange(6, dtype=np.float32).reshape(2, 3)
    try:
        ok = np.array_equal(pb_utils.Tensor("probe", probe).as_numpy(), probe)
    except Exception:  # noqa: BLE001 - any failure here is the same mismatch
        ok = False
    if not ok:
        raise pb_utils.TritonModelException(
            f"this Python-backend stub cannot exchange arrays with numpy {np.__version__} ({np.__file__}): "
            "the stub was built against another NumPy major version; install the NumPy it was built for "
            "(numpy<2 for the stubs of nvidia-pytriton) in the interpreter the server runs the stub with"
        )
    pb_utils.Logger.log_info(f"pipeline: numpy {np.__version__} from {np.__file__}")


def error_response(message, code_name):
    """A failed response with Triton's error code `code_name`, where this Python backend has codes
    (Triton 2.51 has); older backends answer every error as INTERNAL."""
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel:
    def initialize(self, args):
        model_malloc()  # before the pipeline allocates: see stub_malloc.model_malloc
        check_numpy_bridge()
        parameters = string_parameters(json.loads(args["model_config"]))
        self.stage_metrics = StageMetrics(args["model_name"], args["model_version"])
        charset_file = parameters.get("recognizer_charset_file")  # families whose charset is in their model file
        self.pipeline = OcrPipeline(
            BlsRunner(parameters["detector_model"], [MODEL_OUTPUT]),
            BlsRunner(parameters["recognizer_model"], [MODEL_OUTPUT]),
            parameters["recognizer_family"],
            settings_from_parameters(parameters),
            detector_family=parameters.get("detector_family", "craft"),
            charset=(Path(__file__).resolve().parent / charset_file).read_text(encoding="utf-8") if charset_file else None,
        )

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def finalize(self):
        self.pipeline.detector.close()
        self.pipeline.recognizer.close()

    def _answer(self, request):
        try:
            clock = StageClock()
            image = single_image(pb_utils.get_input_tensor_by_name(request, "input").as_numpy())
            clock.lap("request")
            words = self.pipeline.read(image, clock)
            response = pb_utils.InferenceResponse(output_tensors=words_to_tensors(words))
            clock.lap("response")
            self.stage_metrics.add(clock)
            return response
        except BadImageError as exc:  # the caller's mistake
            return error_response(str(exc), "INVALID_ARG")
        except (OcrError, ModelCallError) as exc:
            return error_response(str(exc), "INTERNAL")
        except Exception as exc:  # a bug must not fail the other requests of the batch
            return error_response(f"internal error ({type(exc).__name__}): {exc}", "INTERNAL")

