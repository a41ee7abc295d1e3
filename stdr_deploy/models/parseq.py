"""PARSeq scene-text recognizer (baudm/parseq): the specs of both released sizes. The network is
in `parseq_net`, imported only when built, so reading a spec needs no torch.
"""

from __future__ import annotations

from stdr_deploy.models.parseq_config import CHARSET, EOS_ID, IMG_HW, MAX_LABEL_LENGTH, SIZES
from stdr_deploy.models.spec import ModelSpec, TensorSpec


def build_base(*, decode_ar: bool = False, refine_iters: int = 0):
    from stdr_deploy.models.parseq_net import PARSeq

    return PARSeq(SIZES["parseq"], decode_ar=decode_ar, refine_iters=refine_iters)


def build_tiny(*, decode_ar: bool = False, refine_iters: int = 0):
    from stdr_deploy.models.parseq_net import PARSeq

    return PARSeq(SIZES["parseq-tiny"], decode_ar=decode_ar, refine_iters=refine_iters)


def _spec(name: str, params: int, build) -> ModelSpec:
    return ModelSpec(
        name=name,
        role="recognizer",
        triton_name="parseq",
        default_weights=name,
        inputs=(TensorSpec("input", "float32", ("batch", 3, *IMG_HW)),),
        outputs=(TensorSpec("output", "float32", ("batch", MAX_LABEL_LENGTH + 1, len(CHARSET) + 1)),),
        opset=14,
        atol=1e-4,
        preprocess={
            # PIL .convert("RGB"), PIL bicubic resize to 128x32 (aspect ratio not kept, no
            # padding), x = (pixel / 255 - 0.5) / 0.5
            "color": "RGB",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "pixel_scale": 255.0,
            "size": IMG_HW,
            "interpolation": "bicubic",
            "eos_index": EOS_ID,
        },
        charset=CHARSET,
        num_classes=len(CHARSET) + 1,
        params=params,
        validation_shapes=((1, 3, *IMG_HW), (4, 3, *IMG_HW), (16, 3, *IMG_HW)),
        example_hw=IMG_HW,
        build=build,
    )


SPEC = _spec("parseq", 23_832_671, build_base)
TINY_SPEC = _spec("parseq-tiny", 6_018_143, build_tiny)
