"""CRAFT text detector (clovaai): the spec. The network is in `craft_net`, imported only when
built, so reading the spec needs no torch.
"""

from __future__ import annotations

from stdr_deploy.models.spec import ModelSpec, TensorSpec


def build(*, with_features: bool = False):
    from stdr_deploy.models.craft_net import CRAFT

    mean, std = SPEC.pixel_normalisation()
    return CRAFT(with_features=with_features, pixel_mean=tuple(mean), pixel_std=tuple(std))


SPEC = ModelSpec(
    name="craft",
    role="detector",
    triton_name="craft",
    default_weights="craft_mlt_25k",
    # uint8 RGB pixels: the graph normalises them itself (a quarter of float32's bytes to hand over)
    inputs=(TensorSpec("input", "uint8", ("batch", 3, "height", "width")),),
    outputs=(TensorSpec("output", "float32", ("batch", "half_height", "half_width", 2)),),
    optional_outputs=(TensorSpec("output1", "float32", ("batch", 32, "half_height", "half_width")),),
    opset=11,
    atol=1e-4,
    preprocess={
        # x = (pixel / 255 - mean) / std per RGB channel; EasyOCR computes it in float32 as
        # (pixel - 255 * mean) / (255 * std), with mean*255 and std*255 formed in float64.
        # For CRAFT this runs inside the graph, on the uint8 input.
        "color": "RGB",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "pixel_scale": 255.0,
        "canvas_size": 2560,  # long side is scaled down to at most this
        "mag_ratio": 1.0,
        "size_multiple": 32,  # zero-padded (black, before normalisation) to multiples of 32
        "interpolation": "linear",
        "output_stride": 2,
    },
    charset=None,
    num_classes=None,
    params=20_780_770,
    validation_shapes=((1, 3, 480, 352), (1, 3, 512, 416), (1, 3, 1600, 1216)),
    example_hw=(768, 768),
    build=build,
)
