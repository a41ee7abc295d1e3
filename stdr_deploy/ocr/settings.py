"""Processing settings of the pipeline: the part of the deployment plan that shapes results."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class PipelineSettings:
    """Everything `OcrPipeline` needs besides its two models.

    The first fields mirror `PipelinePlan` (same names), so a plan's `pipeline` section can be
    passed to `from_plan` as is; the rest are tuning knobs of the box and crop stages.
    """

    canvas_size: int = 2560  # detector input: long side scaled to at most this many pixels
    mag_ratio: float = 1.0  # scale applied before the canvas cap (1.0 = native size)
    max_image_pixels: int = 50_000_000  # larger inputs are refused before any work
    recognizer_batch: int = 16  # at most this many crops per recognizer call
    text_threshold: float = 0.7  # a component needs a region-score peak at least this high
    link_threshold: float = 0.4  # affinity above this joins characters into one word
    low_text: float = 0.4  # region score above this belongs to a word
    min_size: int = 8  # boxes shorter than this many image pixels (both sides) are dropped
    box_level: float = 0.5  # fraction of a word's peak region score that marks its ink outline
    crop_margin: float = 0.15  # crop this fraction of the box height beyond each side of the box
    contrast_retry_below: float = 0.1  # re-read low-contrast crops whose confidence is under this
    contrast_target: float = 0.5  # contrast (p90 - p10) / (p90 + p10) that a retry stretches to

    @classmethod
    def from_plan(cls, pipeline: Mapping[str, Any], **overrides: Any) -> "PipelineSettings":
        """Build from a plan's `pipeline` dict; keys that are not processing settings are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dict(pipeline).items() if k in names}
        values.update(overrides)
        return cls(**values)
