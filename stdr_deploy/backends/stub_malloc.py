"""glibc malloc settings of our Triton stubs, shared by our `onnxruntime` and `tensorrt` backends
and the `pipeline` model.

`server.backend_directory()` copies this file beside each backend's `model.py` and `render`
places it beside the pipeline's, so each stub imports it from its own folder. tritonserver runs
with a 4 MiB mmap threshold (`server.SERVER_MALLOC`), which the stubs inherit; re-mapping every
array of 4 MiB or more on each request cost the runtimes ~25 % on small images and the pipeline
~30 % of its CPU time per request (benchmarks/results/h200-fp16-served/stages/), so each stub sets
its own values at load.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers


def model_malloc() -> bool:
    """Apply STDR_MODEL_MALLOC ("mmap threshold:trim threshold", set by stdr-deploy's server for
    the stubs, see server.SERVER_MALLOC) with glibc's mallopt. False when it is unset or glibc
    refused a value (the stub then keeps the server's settings)."""
    values = os.environ.get("STDR_MODEL_MALLOC")
    if not values:
        return False
    try:
        mmap_threshold, trim_threshold = (int(v) for v in values.split(":"))
        mallopt = ctypes.CDLL(None).mallopt  # glibc's; another C library may lack it
    except (ValueError, OSError, AttributeError):
        return False
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
