"""CRAFT text detector (clovaai): VGG16-BN backbone with a U-net head.

Module names equal the keys of the official `craft_mlt_25k.pth` (after the `module.` prefix is
dropped), so the release file loads with `strict=True`. Input normalisation is not part of the
network: the pipeline does it, as EasyOCR does.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def _indexed(layers: dict[int, nn.Module]) -> nn.Sequential:
    """A Sequential whose child names are the given indices (torchvision's VGG numbering)."""
    return nn.Sequential(OrderedDict((str(i), layer) for i, layer in layers.items()))


def _conv_bn(cin: int, cout: int) -> tuple[nn.Module, nn.Module]:
    return nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout)


def _vgg_slice(start: int, plan: list[int | str]) -> nn.Sequential:
    """VGG16-BN layers numbered from `start`; `plan[0]` is the input width, then an int is a
    3x3 conv + BN to that width, "R" a ReLU and "M" a 2x2 max-pool (torchvision's layout).
    """
    layers: dict[int, nn.Module] = {}
    index, channels = start, int(plan[0])
    for step in plan[1:]:
        if step == "R":
            layers[index], index = nn.ReLU(inplace=True), index + 1
        elif step == "M":
            layers[index], index = nn.MaxPool2d(2, 2), index + 1
        else:
            conv, bn = _conv_bn(channels, int(step))
            layers[index], layers[index + 1] = conv, bn
            index, channels = index + 2, int(step)
    return _indexed(layers)


class VGG16BNBackbone(nn.Module):
    """torchvision's vgg16_bn `features` cut into CRAFT's five slices (plus a dilated fc6/fc7).

    Each slice ends after a BatchNorm (its ReLU opens the next slice), so the skip connections
    carry pre-activation features, as in the reference.
    """

    def __init__(self) -> None:
        super().__init__()
        self.slice1 = _vgg_slice(0, [3, 64, "R", 64, "R", "M", 128, "R", 128])
        self.slice2 = _vgg_slice(12, [128, "R", "M", 256, "R", 256])
        self.slice3 = _vgg_slice(19, [256, "R", 256, "R", "M", 512, "R", 512])
        self.slice4 = _vgg_slice(29, [512, "R", 512, "R", "M", 512, "R", 512])
        self.slice5 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),
            nn.Conv2d(1024, 1024, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Returns the features deepest first: fc7, conv5_3, conv4_3, conv3_2, conv2_2."""
        s1 = self.slice1(x)  # 1/2
        s2 = self.slice2(s1)  # 1/4
        s3 = self.slice3(s2)  # 1/8
        s4 = self.slice4(s3)  # 1/16
        s5 = self.slice5(s4)  # 1/16
        return s5, s4, s3, s2, s1


class DoubleConv(nn.Module):
    """1x1 conv merging upsampled + skip features, then a 3x3 conv (each with BN and ReLU)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch + mid_ch, mid_ch, kernel_size=1),
            nn.BatchNorm2d(mid_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class CRAFT(nn.Module):
    """Region and affinity score maps at half the input resolution.

    `forward(x)` returns `y` [N, H/2, W/2, 2] (NHWC; channel 0 = region, 1 = affinity), or
    `(y, feature)` with the 32-channel `upconv4` map [N, 32, H/2, W/2] when `with_features`.
    `x` is either the normalised float32 image (EasyOCR's input) or its uint8 pixels, which are
    normalised first with `pixel_mean`/`pixel_std` (0-255 scale): the export traces the uint8
    form, so the ONNX graph takes a quarter of the bytes and normalises where it runs.
    """

    def __init__(self, *, pixel_mean: tuple[float, ...], pixel_std: tuple[float, ...], with_features: bool = False) -> None:
        super().__init__()
        self.with_features = with_features
        # Not weights: kept out of the state dict, so the released checkpoint loads strictly.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)
        self.basenet = VGG16BNBackbone()
        self.upconv1 = DoubleConv(1024, 512, 256)
        self.upconv2 = DoubleConv(512, 256, 128)
        self.upconv3 = DoubleConv(256, 128, 64)
        self.upconv4 = DoubleConv(128, 64, 32)
        self.conv_cls = nn.Sequential(
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 16, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 2, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if x.dtype == torch.uint8:
            x = (x.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        fc7, conv5, conv4, conv3, conv2 = self.basenet(x)
        y = self.upconv1(torch.cat([fc7, conv5], dim=1))
        for upconv, skip in ((self.upconv2, conv4), (self.upconv3, conv3), (self.upconv4, conv2)):
            y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
            y = upconv(torch.cat([y, skip], dim=1))
        feature = y
        y = self.conv_cls(feature).permute(0, 2, 3, 1)
        return (y, feature) if self.with_features else y

