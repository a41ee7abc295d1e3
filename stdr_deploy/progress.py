"""Progress for logs: plain timestamped lines on stderr when it is not a terminal.

A live display (rich) draws nothing into a file or a pipe, so a long step would be silent
there. These lines say when each step starts and ends, and a heartbeat every
`HEARTBEAT_S` seconds says that a long one is still running. `Stages` times the stages of an
export (fp32, fp16, int8) and shows each as a progress line.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from rich.progress import Progress

HEARTBEAT_S = 10.0


def interactive() -> bool:
    """Whether stderr is a terminal (live displays) rather than a log (plain lines)."""
    return sys.stderr.isatty()


def log_line(message: str) -> None:
    """One `HH:MM:SS message` line on stderr, flushed at once (a log may be tailed live)."""
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


class Activity:
    """One running step: a start line now, a heartbeat line every `heartbeat_s`, an end line."""

    def __init__(self, name: str, heartbeat_s: float = HEARTBEAT_S, detail: str = "") -> None:
        self.name = name
        self.started = time.monotonic()
        self._stop = threading.Event()
        log_line(f"{name}: started{f' ({detail})' if detail else ''}")
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)
        self._thread.start()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            log_line(f"{self.name}: still running ({self.seconds:.0f} s)")

    def end(self, status: str = "done", detail: str = "") -> None:
        """Stop the heartbeat and print the end line (once; later calls do nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        log_line(f"{self.name}: {status} in {self.seconds:.1f} s{f' ({detail})' if detail else ''}")


class PlainProgress:
    """The part of `rich.progress.Progress` the export stages use, as plain lines."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self._tasks.values():  # a stage that raised never finished
            task["activity"].end("stopped")

    def add_task(self, description: str, total: float = 1) -> int:
        name = f"{self.prefix} {description}".strip()
        task_id = len(self._tasks)
        self._tasks[task_id] = {"activity": Activity(name), "total": total, "completed": 0}
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, completed=self._tasks[task_id]["completed"] + advance)

    def update(
        self,
        task_id: int,
        *,
        total: float | None = None,
        completed: float | None = None,
        description: str | None = None,
    ) -> None:
        task = self._tasks[task_id]
        if description is not None:
            log_line(f"{self.prefix} {description}".strip())
        if total is not None:
            task["total"] = total
        if completed is not None:
            task["completed"] = completed
        if task["completed"] >= task["total"]:
            task["activity"].end()


@contextlib.contextmanager
def progress_display(enabled: bool, name: str) -> Iterator[Progress | None]:
    """A rich progress display on a terminal, timestamped lines in a log, nothing when disabled."""
    if not enabled:
        yield None
        return
    if not interactive():  # a log: timestamped lines, as a live display would draw nothing
        with PlainProgress(f"export {name}") as plain:
            yield plain
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        yield bar


class Stages:
    """Times each stage and, with a progress display, shows one line per stage."""

    def __init__(self, bar: Progress | None) -> None:
        self.bar = bar
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, total: int = 1) -> Iterator[StageTask]:
        task = StageTask(self.bar, name, total)
        start = time.perf_counter()
        yield task
        self.seconds[name] = round(time.perf_counter() - start, 3)
        task.finish()


class StageTask:
    """One progress line; counts steps (e.g. parity runs) when a display is shown."""

    def __init__(self, bar: Progress | None, name: str, total: int) -> None:
        self.bar = bar
        self.total = total
        self.task = bar.add_task(name, total=total) if bar is not None else None

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def extend(self, steps: int) -> None:
        """More work than planned (a parity retry with the next candidate)."""
        self.total += steps
        if self.bar is not None:
            self.bar.update(self.task, total=self.total)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=self.total)
