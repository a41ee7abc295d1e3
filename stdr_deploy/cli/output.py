"""Printing helpers shared by the subcommands: JSON for machines, rich for people."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console(stderr=True)


def print_json(data: Any) -> None:
    """Machine output goes to stdout alone; progress and messages go to stderr."""
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
