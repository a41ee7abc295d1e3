"""Parity: ONNX Runtime (CPU) against the reference outputs on the spec's validation shapes.

The validation shapes differ from the export example, so a shape baked into the graph shows
here. Candidates are tried in order; the first whose every output is within the spec's atol
wins. If none passes, the export fails with the numbers.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import numpy as np

from stdr_deploy.compare import Comparison, compare_outputs
from stdr_deploy.errors import ValidationError
from stdr_deploy.export.graph import first_line, opset_hint, ort_session

if TYPE_CHECKING:
    import torch

    from stdr_deploy.export.simplify import Candidate
    from stdr_deploy.models import ModelSpec
    from stdr_deploy.progress import StageTask


def parity_inputs(spec: ModelSpec) -> list[np.ndarray]:
    """Seeded inputs at the spec's validation shapes (each unlike the export example)."""
    return [
        spec.example_input(batch=shape[0], height=shape[2], width=shape[3], seed=1 + i)
        for i, shape in enumerate(spec.validation_shapes)
    ]


def torch_outputs(model: torch.nn.Module, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(x))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    result = {name: t.numpy().copy() for name, t in zip(names, outs)}
    del out, outs
    gc.collect()
    return result


def first_passing(
    candidates: list[Candidate],
    inputs: list[np.ndarray],
    expected: list[dict[str, np.ndarray]],
    spec: ModelSpec,
    opset: int,
    task: StageTask,
) -> tuple[Candidate, list[Comparison], dict[str, str]]:
    """The first candidate within the spec's atol on every input; ValidationError with numbers if none."""
    atol = spec.atol
    tried: dict[str, str] = {}
    failures = []
    for number, candidate in enumerate(candidates):
        if number:
            task.extend(len(inputs))
        try:
            session = ort_session(candidate.model)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors on load
            tried[candidate.name] = "failed"
            failures.append(f"{candidate.name}: ONNX Runtime cannot load it: {first_line(exc)}")
            continue
        comparisons = _ort_parity(session, inputs, expected, atol, task)
        del session
        failed = [(x.shape, c) for x, c in zip(inputs, comparisons) if not c]
        if not failed:
            tried[candidate.name] = "passed"
            return candidate, comparisons, tried
        tried[candidate.name] = "failed"
        shape, comparison = failed[0]
        failures.append(f"{candidate.name} at input {list(shape)}:\n  " + comparison.describe().replace("\n", "\n  "))
    raise ValidationError(
        f"{spec.name} ONNX export at opset {opset} does not match torch (atol {atol:g}):\n" + "\n".join(failures),
        hint=opset_hint(spec, opset),
    )


def _ort_parity(
    session: Any,
    inputs: list[np.ndarray],
    expected: list[dict[str, np.ndarray]],
    atol: float,
    task: StageTask,
) -> list[Comparison]:
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    comparisons = []
    for x, exp in zip(inputs, expected):
        got = dict(zip(names, session.run(None, {input_name: x})))
        comparisons.append(compare_outputs(exp, got, atol=atol))
        del got
        gc.collect()
        task.advance()
    return comparisons
