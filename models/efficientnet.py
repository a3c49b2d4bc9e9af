"""EfficientNet-B0 (Tan & Le 2019), the CIFAR variant of seed004 §3.

Stem conv3x3 stride 1 (32) -> BN -> SiLU; MBConv blocks (expansion, channels, repeats, kernel, stride) =
(1,16,1,3,1) (6,24,2,3,2) (6,40,2,5,2) (6,80,3,3,2) (6,112,3,5,1) (6,192,4,5,2) (6,320,1,3,1), each with
squeeze-and-excitation (ratio 0.25 of the block input) and a residual add when the shape is kept; global
average pooling, dropout 0.2, Linear. Drop-connect is 0 as in seed004 (its counter never moved).
Analysis layers: the main-path convs (stem, expand, depthwise, project) and the Linear; the SE convs act on
pooled gates, not on the feature path, and are left out.
"""
from __future__ import annotations

import torch
from torch import nn

from models.registry import register_model, scaled

BLOCKS = [(1, 16, 1, 3, 1), (6, 24, 2, 3, 2), (6, 40, 2, 5, 2), (6, 80, 3, 3, 2), (6, 112, 3, 5, 1),
          (6, 192, 4, 5, 2), (6, 320, 1, 3, 1)]


class MBConv(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, expansion: int, kernel: int, stride: int):
        super().__init__()
        planes = in_planes * expansion
        self.expand = nn.Conv2d(in_planes, planes, 1, bias=False) if expansion != 1 else None
        self.bn0 = nn.BatchNorm2d(planes) if expansion != 1 else None
        self.depthwise = nn.Conv2d(planes, planes, kernel, stride=stride, padding=kernel // 2, groups=planes,
                                   bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        squeezed = max(1, int(in_planes * 0.25))
        self.se_reduce = nn.Conv2d(planes, squeezed, 1)
        self.se_expand = nn.Conv2d(squeezed, planes, 1)
        self.project = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.residual = stride == 1 and in_planes == out_planes
        self.act = nn.SiLU()

    def forward(self, x):
        out = x if self.expand is None else self.act(self.bn0(self.expand(x)))
        out = self.act(self.bn1(self.depthwise(out)))
        gate = torch.sigmoid(self.se_expand(self.act(self.se_reduce(out.mean((2, 3), keepdim=True)))))
        out = self.bn2(self.project(out * gate))
        return out + x if self.residual else out

    def convs(self) -> list[nn.Module]:
        return [c for c in (self.expand, self.depthwise, self.project) if c is not None]


class EfficientNetB0(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        super().__init__()
        stem = scaled(32, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        blocks, in_planes = [], stem
        for expansion, channels, repeats, kernel, stride in BLOCKS:
            out_planes = scaled(channels, width)
            for r in range(repeats):
                blocks.append(MBConv(in_planes, out_planes, expansion, kernel, stride if r == 0 else 1))
                in_planes = out_planes
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(0.2)
        self.linear = nn.Linear(in_planes, num_classes)
        self.act = nn.SiLU()

    def forward(self, x):
        out = self.blocks(self.act(self.bn1(self.conv1(x))))
        return self.linear(self.dropout(out.mean((2, 3))))

    def weight_layers(self) -> list[nn.Module]:
        return [self.conv1] + [conv for block in self.blocks for conv in block.convs()] + [self.linear]


@register_model("efficientnet_b0")
def efficientnet_b0(**kwargs):
    return EfficientNetB0(**kwargs)
