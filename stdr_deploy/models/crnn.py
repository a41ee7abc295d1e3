"""EasyOCR's english_g2 recognizer: VGG features -> 2 BiLSTMs -> CTC logits over 97 classes.

Module names equal the keys of `english_g2.pth` (after the `module.` prefix is dropped). The
height pooling is a plain mean so the ONNX graph keeps the batch and width axes dynamic.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from stdr_deploy.models.spec import ModelSpec, TensorSpec

# Class 0 is the CTC blank; class i is CHARSET[i - 1].
CHARSET = (
    "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


class VGGFeatures(nn.Module):
    """[N, 1, 64, W] -> [N, 256, 3, W/4 - 1]: two 2x2 pools, two (2,1) pools, a final 2x2 conv."""

    def __init__(self, in_ch: int = 1, out_ch: int = 256) -> None:
        super().__init__()
        c1, c2, c3 = out_ch // 8, out_ch // 4, out_ch // 2
        layers = [
            nn.Conv2d(in_ch, c1, 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c1, c2, 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c2, c3, 3, 1, 1), nn.ReLU(True),
            nn.Conv2d(c3, c3, 3, 1, 1), nn.ReLU(True), nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c3, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(True),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(True),
            nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(out_ch, out_ch, 2, 1, 0), nn.ReLU(True),
        ]  # fmt: skip
        self.ConvNet = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ConvNet(x)


class BidirectionalLSTM(nn.Module):
    def __init__(self, in_size: int, hidden: int, out_size: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_size, hidden, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(hidden * 2, out_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recurrent, _ = self.rnn(x)
        return self.linear(recurrent)


class CRNN(nn.Module):
    """`forward(x)` with x [N, 1, 64, W] in [-1, 1] returns raw logits [N, W/4 - 1, 97]."""

    def __init__(self, hidden: int = 256, num_classes: int = 97) -> None:
        super().__init__()
        self.FeatureExtraction = VGGFeatures(1, hidden)
        self.SequenceModeling = nn.Sequential(
            OrderedDict(
                (("0", BidirectionalLSTM(hidden, hidden, hidden)), ("1", BidirectionalLSTM(hidden, hidden, hidden)))
            )
        )
        self.Prediction = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.FeatureExtraction(x)  # [N, C, 3, T]
        sequence = features.mean(dim=2).permute(0, 2, 1)  # [N, T, C]
        return self.Prediction(self.SequenceModeling(sequence))


def build() -> CRNN:
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
        "blank_index": 0,
    },
    charset=CHARSET,
    num_classes=97,
    params=3_782_369,
    validation_shapes=((1, 1, 64, 192), (4, 1, 64, 256), (16, 1, 64, 320), (4, 1, 64, 640)),
    example_hw=(64, 256),
    build=build,
)
