"""Printing helpers shared by the subcommands: JSON for machines, rich for people."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Callable, Iterator

from rich.console import Console

from stdr_deploy.progress import Activity, interactive, log_line

# In a log (not a terminal) rich would wrap at 80 columns and cut table cells short: let lines
# run as long as they are, so a log or a pipe gets every character once.
LOG_WIDTH = 1000

console = Console(stderr=True) if interactive() else Console(stderr=True, width=LOG_WIDTH, soft_wrap=True)


def print_json(data: Any, indent: int | None = 2) -> None:
    """Machine output goes to stdout alone; progress and messages go to stderr. `indent=None`
    writes one line, for a stream of JSON lines; each is flushed at once."""
    json.dump(data, sys.stdout, indent=indent, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


@contextlib.contextmanager
def activity(name: str, detail: str = "") -> Iterator[Callable[[str], None]]:
    """A long step: a spinner on a terminal; start, heartbeat and end lines in a log.

    Yields `update(message)`, which redraws the spinner or prints a plain line.
    """
    if interactive():
        with console.status(f"[bold]{name}[/]{f': {detail}' if detail else ''}") as status:
            yield lambda message: status.update(f"[bold]{name}[/]: {message}")
        return
    running = Activity(name, detail=detail)
    try:
        yield lambda message: log_line(f"{name}: {message}")
    except BaseException:
        running.end("failed")
        raise
    running.end()


def runtime_words(model: Any) -> str:
    """A ModelPlan's runtime and precision as people read them: "openvino int8 (float layers bf16)"."""
    words = f"{model.backend} {model.precision}"
    return words + (f" (float layers {model.float_precision})" if model.backend == "openvino" else "")
