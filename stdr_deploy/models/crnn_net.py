"""EasyOCR's english_g2 recognizer: VGG features -> 2 BiLSTMs -> CTC logits over 97 classes.

Module names equal the keys of `english_g2.pth` (after the `module.` prefix is dropped). The
height pooling is a plain mean so the ONNX graph keeps the batch and width axes dynamic.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


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

