"""Processing settings of the pipeline: the part of the deployment plan that shapes results."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

BOX_FITS = ("ink", "craft")


@dataclass(frozen=True)
class PipelineSettings:
    """Everything `OcrPipeline` needs besides its two models.

    The first fields mirror `PipelinePlan` (same names), so a plan's `pipeline` section can be
    passed to `from_plan` as is; the rest tune the box and crop stages. Their defaults were
    chosen on scenes_A and on synthetic scenes of our own (not on the held-out set).
    """

    canvas_size: int = 2560  # detector input: long side scaled to at most this many pixels
    mag_ratio: float = 1.0  # scale applied before the canvas cap (1.0 = native size)
    pad_to: int = 32  # detector input sides are padded up to multiples of this (a multiple of 32);
    #   GPU plans pad to 640: ONNX Runtime's CUDA EP re-plans every convolution whenever the
    #   input shape changes, so a few fixed shapes, each with its own session, run far faster
    max_image_pixels: int = 50_000_000  # larger inputs are refused before any work
    recognizer_batch: int = 16  # at most this many crops per recognizer call
    text_threshold: float = 0.7  # a word needs a region-score peak at least this high
    link_threshold: float = 0.4  # affinity above this joins characters into one word
    low_text: float = 0.4  # region score above this belongs to a word
    min_size: int = 8  # boxes whose longer side is under this many image pixels are dropped
    box_fit: str = "ink"  # "ink": box at box_level of the region score; "craft": CRAFT's own box
    box_level: float = 0.25  # fraction of a word's peak region score that marks its outline
    straight_below_deg: float = 1.0  # words tilted less than this are boxed axis-aligned
    merge_gap: float = 0.1  # pieces closer than this many heights are one word cut apart; wider
    #   gaps join only over a region-score bridge (below), inside a component as between them:
    #   blurred photo word spaces measure 0.16-0.4 heights ('PAY FOR' 0.29)
    bridge_floor: float = 0.1  # pieces up to 1.2 heights apart are one word when the region score
    #   between them stays above this (an underscore scores 0.15-0.3, a sharp word space 0.06 or
    #   less, a blurred photo's 0.07-0.09 for normal spacing)
    crop_margin_along: float = 0.15  # crop beyond the box ends, in box heights
    crop_margin_across: float = 0.3  # crop above and below the box, in box heights
    contrast_retry_below: float = 0.5  # words read with less confidence are read again, from
    #   the crop's main colour axis with its contrast stretched; the better reading is kept
    contrast_target: float = 0.5  # crops whose (p90 - p10) / (p90 + p10) is below this get stretched

    def __post_init__(self) -> None:
        if self.box_fit not in BOX_FITS:
            raise ValueError(f"box_fit must be one of {', '.join(BOX_FITS)}, not {self.box_fit!r}")
        if self.pad_to < 32 or self.pad_to % 32:
            raise ValueError(f"pad_to must be a positive multiple of 32, not {self.pad_to}")
        if self.canvas_size < 32 or self.mag_ratio <= 0 or self.recognizer_batch < 1 or self.max_image_pixels < 1:
            raise ValueError(
                "canvas_size >= 32, mag_ratio > 0, recognizer_batch >= 1 and max_image_pixels >= 1 are required"
            )

    @classmethod
    def from_plan(cls, pipeline: Any, **overrides: Any) -> "PipelineSettings":
        """Build from a plan's pipeline section (a dict or a `PipelinePlan`); other keys are ignored."""
        values: Mapping[str, Any] = dataclasses.asdict(pipeline) if dataclasses.is_dataclass(pipeline) else pipeline
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in names}, **overrides})
