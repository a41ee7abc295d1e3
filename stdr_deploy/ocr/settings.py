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
    min_size: int = 8  # boxes whose longer side is under this many image pixels are dropped
    box_fit: str = "ink"  # "ink": tight box at box_level; "craft": CRAFT's own (dilated) box
    box_level: float = 0.25  # fraction of a word's peak region score that marks its outline
    straight_below_deg: float = 1.0  # words tilted less than this are boxed axis-aligned
    merge_gap: float = 0.25 # word pieces closer than this (in heights) are one word cut apart
    crop_margin_along: float = 0.15  # crop beyond the box ends, in box heights
    crop_margin_across: float = 0.3  # crop above and below the box, in box heights
    contrast_retry_below: float = 0.5  # re-read low-contrast crops whose confidence is under this
    contrast_target: float = 0.5  # contrast (p90 - p10) / (p90 + p10) that a retry stretches to

    @classmethod
    def from_plan(cls, pipeline: Mapping[str, Any], **overrides: Any) -> "PipelineSettings":
        """Build from a plan's `pipeline` dict; keys that are not processing settings are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dict(pipeline).items() if k in names}
        values.update(overrides)
        return cls(**values)
