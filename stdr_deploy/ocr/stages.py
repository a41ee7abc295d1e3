"""Where a read's time goes: wall-clock and CPU seconds per pipeline stage.

The served pipeline adds each request's stage times to Triton metrics (`pipeline_model.py`), so
`stdr-deploy bench` can say which stage a served request spends its time in, measured inside
the server rather than estimated from outside.
"""

from __future__ import annotations

import time

# The stages of `OcrPipeline.read`, in order: detector input, detector call, score maps to boxes,
# word crops and recognizer inputs, recognizer calls, decoding and word assembly.
STAGES = ("pre", "detector", "post", "crops", "recognizer", "decode")
# Served, the pipeline model adds reading its request tensor and building its response tensors.
SERVED_STAGES = ("request", *STAGES, "response")
# Triton counters of the served pipeline (label `stage`), read from its metrics endpoint.
STAGE_SECONDS_METRIC = "stdr_pipeline_stage_seconds"
STAGE_CPU_SECONDS_METRIC = "stdr_pipeline_stage_cpu_seconds"  # the pipeline thread's CPU time
READS_METRIC = "stdr_pipeline_reads"  # requests answered with words; their stage times are counted


class StageClock:
    """Seconds per stage: each `lap(stage)` charges the time since the previous lap (or since the
    clock was made) to `stage`, so stages that run twice (a retry pass) add up. `cpu_seconds` is
    this thread's CPU time: less than the wall time where the stage waits (a model call, another
    thread holding the GIL) or is descheduled on a busy host."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self._last = (time.perf_counter(), time.thread_time())

    def lap(self, stage: str) -> None:
        now = (time.perf_counter(), time.thread_time())
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now[0] - self._last[0]
        self.cpu_seconds[stage] = self.cpu_seconds.get(stage, 0.0) + now[1] - self._last[1]
        self._last = now
