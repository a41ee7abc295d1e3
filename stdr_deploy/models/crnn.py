"""EasyOCR's english_g2 recognizer: the spec. The network is in `crnn_net`, imported only when
built, so reading the spec needs no torch.
"""

from __future__ import annotations

from stdr_deploy.models.spec import ModelSpec, TensorSpec

# Class 0 is the CTC blank; class i is CHARSET[i - 1].
CHARSET = (
    "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def build():
    from stdr_deploy.models.crnn_net import CRNN

    return CRNN()


SPEC = ModelSpec(
    name="crnn-en",
    role="recognizer",
    triton_name="crnn_en",
    default_weights="english_g2",
    inputs=(TensorSpec("input", "float32", ("batch", 1, 64, "width")),),
    outputs=(TensorSpec("output", "float32", ("batch", "steps", 97)),),
    opset=14,
    atol=1e-4,
    preprocess={
        # grayscale crop, resized to height 64 keeping the aspect ratio (cv2 INTER_LINEAR), width
        # padded to a multiple of 64 by repeating the last column; x = (pixel / 255 - 0.5) / 0.5
        "color": "gray",
        "mean": (0.5,),
        "std": (0.5,),
        "pixel_scale": 255.0,
        "height": 64,
        "width_multiple": 64,
        "interpolation": "linear",
        "pad": "repeat_last_column",
        "output_stride": 4,  # steps = width / 4 - 1
        "steps_offset": -1,
        "blank_index": 0,
    },
    charset=CHARSET,
    num_classes=97,
    params=3_782_369,
    validation_shapes=((1, 1, 64, 192), (4, 1, 64, 256), (16, 1, 64, 320), (4, 1, 64, 640)),
    example_hw=(64, 256),
    build=build,
)
