"""Benchmarks: model-level timing per runtime, a Triton load generator, a soak, EasyOCR side by
side, FLOP counts against the hardware's peak, and the report (JSON, markdown, PNG plots).

Speed is measured here and never asserted in tests. The result of `run_bench` is a plain dict:
`host`, `peaks`, `versions`, `load_avg`, and when measured `models`, `chains`, `deployment`,
`pipeline`, `accuracy`, `easyocr`, `soak`, then `targets`, `notes`, `failures` (phase -> why, for phases that failed) and `wall_s`.
"""

from stdr_deploy.bench.flops import FlopCount, count_flops
from stdr_deploy.bench.load import Request, image_requests, run_load
from stdr_deploy.bench.models import ModelCase, TimingPolicy, plan_cases, run_chain_bench, run_model_bench
from stdr_deploy.bench.report import write_report
from stdr_deploy.bench.run import BenchOptions, run_bench
from stdr_deploy.bench.soak import run_soak

__all__ = [
    "BenchOptions",
    "FlopCount",
    "ModelCase",
    "Request",
    "TimingPolicy",
    "count_flops",
    "image_requests",
    "plan_cases",
    "run_bench",
    "run_chain_bench",
    "run_load",
    "run_model_bench",
    "run_soak",
    "write_report",
]
