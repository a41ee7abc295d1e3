"""Latency summaries: the same percentiles everywhere, so model, load and soak numbers compare."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles of one set of timed calls, in milliseconds (linear interpolation)."""

    count: int
    mean_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> "LatencyStats":
        if len(samples) == 0:
            raise ValueError("no latency samples to summarise")
        ms = np.asarray(samples, dtype=np.float64) * 1000.0
        p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
        return cls(
            count=int(ms.size),
            mean_ms=float(ms.mean()),
            min_ms=float(ms.min()),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p95_ms=float(p95),
            p99_ms=float(p99),
            max_ms=float(ms.max()),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
