"""Run `auto`'s steps one after another, recording each in the workspace's `status.json`.

Model Navigator's idea, kept small: every step returns its outputs or raises; the runner times it,
writes the status file after each step (so an interrupted run shows how far it got), and stops at
the first failure of a required step.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from stdr_deploy.errors import StdrError
from stdr_deploy.workspace import write_json_atomic

STATUS_FORMAT_VERSION = 1


@dataclass
class StepResult:
    name: str
    status: str  # "ok" | "failed" | "skipped"
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[], dict[str, Any] | None]
    description: str
    skip_when: Callable[[], str | None] = lambda: None  # a reason to skip, decided when the step starts


class StepRunner:
    """Runs steps in order; `on_start`/`on_end` let the CLI draw one progress line per step."""

    def __init__(
        self,
        workspace: Path,
        on_start: Callable[[Step], None] | None = None,
        on_end: Callable[[Step, StepResult], None] | None = None,
    ):
        self.workspace = Path(workspace)
        self.results: list[StepResult] = []
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._on_start = on_start or (lambda step: None)
        self._on_end = on_end or (lambda step, result: None)

    def run(self, step: Step) -> StepResult:
        self._on_start(step)
        reason = step.skip_when()
        if reason:
            result = StepResult(step.name, "skipped", 0.0, {"reason": reason})
            self._record(step, result)
            return result
        t0 = time.perf_counter()
        try:
            outputs = step.run() or {}
        except (StdrError, KeyboardInterrupt) as exc:
            message = str(exc) or type(exc).__name__
            self._record(step, StepResult(step.name, "failed", time.perf_counter() - t0, error=message))
            raise
        result = StepResult(step.name, "ok", time.perf_counter() - t0, outputs)
        self._record(step, result)
        return result

    def _record(self, step: Step, result: StepResult) -> None:
        self.results.append(result)
        self._on_end(step, result)
        self.write_status()

    def write_status(self) -> None:
        write_json_atomic(
            self.workspace / "status.json",
            {
                "format_version": STATUS_FORMAT_VERSION,
                "started": self.started,
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "steps": [asdict(r) for r in self.results],
            },
        )
