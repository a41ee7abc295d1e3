"""Simplified candidates of a graph: each installed simplifier's output, smallest first.

A simplifier that is missing or crashes is skipped; which candidate becomes the model is for
the parity check to decide (the unsimplified export is the last resort).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stdr_deploy.export.graph import first_line

if TYPE_CHECKING:
    import onnx

    from stdr_deploy.progress import Stages

SIMPLIFIERS = ("onnxsim", "onnxslim")
UNSIMPLIFIED = "none"  # the candidate name of the raw export


@dataclass(frozen=True)
class Candidate:
    """One graph that may become the final model: the raw export or a simplifier's output."""

    name: str
    model: onnx.ModelProto
    seconds: float

    @property
    def nodes(self) -> int:
        return len(self.model.graph.node)


def simplify(raw: onnx.ModelProto, stages: Stages) -> list[Candidate]:
    """Raw export plus each installed simplifier's output, smallest graph first (raw last)."""
    candidates = []
    with stages.stage("simplify", total=len(SIMPLIFIERS)) as task:
        for name in SIMPLIFIERS:
            start = time.perf_counter()
            model = _run_simplifier(name, raw)
            if model is not None:
                candidates.append(Candidate(name, model, round(time.perf_counter() - start, 3)))
            task.advance()
    candidates.sort(key=lambda c: (c.nodes, c.model.ByteSize()))
    return [*candidates, Candidate(UNSIMPLIFIED, raw, 0.0)]


def _run_simplifier(name: str, raw: onnx.ModelProto) -> onnx.ModelProto | None:
    """A simplifier that is missing or crashes is skipped: the parity check decides anyway."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(raw)
    try:
        if name == "onnxsim":
            import onnxsim

            model, ok = onnxsim.simplify(copy, check_n=0)
            return model if ok else None
        import onnxslim

        return onnxslim.slim(copy)
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - third-party optimisers fail in many ways
        warnings.warn(f"{name} failed, skipping it: {first_line(exc)}", stacklevel=2)
        return None
