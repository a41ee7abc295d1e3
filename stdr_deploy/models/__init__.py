"""Model families: one spec per family, and `load_model` to get a ready network.

Adding a family = one module with a `ModelSpec` (its `build` makes the network) + one line below.
The spec modules import no torch (their networks live in `*_net.py`), so the deployment core
reads specs without the `export` extra.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from stdr_deploy.errors import UserInputError, require_torch
from stdr_deploy.models import craft, crnn, parseq, ppocr
from stdr_deploy.models.spec import ModelSpec, TensorSpec

MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (craft.SPEC, crnn.SPEC, parseq.SPEC, parseq.TINY_SPEC, ppocr.DET_SPEC, ppocr.REC_SPEC)
}

__all__ = ["MODEL_SPECS", "ModelSpec", "TensorSpec", "build_model", "get_spec", "load_model"]


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise UserInputError(
            f"unknown model {name!r}", hint=f"known models: {', '.join(MODEL_SPECS)}"
        ) from None


def build_model(name: str, **options):
    """The bare architecture with random weights, in eval mode (e.g. to count parameters)."""
    spec = get_spec(name)
    allowed = inspect.signature(spec.build).parameters
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserInputError(
            f"model {name!r} has no option {', '.join(unknown)}",
            hint=f"options of {name}: {', '.join(allowed) or 'none'}",
        )
    require_torch()
    return spec.build(**options).float().eval()


def load_model(name: str, weights: str | Path | None = None, **options):
    """`name`'s network with weights loaded strictly, float32, eval mode.

    `weights` is a local file or a weights registry name; None takes the spec's default.
    Options: craft `with_features`; parseq/parseq-tiny `decode_ar`, `refine_iters`.
    """
    from stdr_deploy import weights as registry

    spec = get_spec(name)
    model = build_model(name, **options)
    path = registry.resolve_weights(weights if weights is not None else spec.default_weights)
    registry.load_into(model, path, name)
    return model
