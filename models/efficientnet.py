"""EfficientNet-B0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019), the CIFAR variant
of seed004 §3 (kuangliu/pytorch-cifar's layout).

    stem   conv3x3(in -> 32w, stride 1, no bias) -> BN -> SiLU (swish)
    blocks MBConv (expansion, channels, repeats, kernel, stride) = (1,16,1,3,1) (6,24,2,3,2) (6,40,2,5,2)
           (6,80,3,3,2) (6,112,3,5,1) (6,192,4,5,2) (6,320,1,3,1); the stride on the first repeat only
           MBConv: [1x1 expand -> BN -> SiLU] -> depthwise kxk -> BN -> SiLU -> squeeze-excite -> 1x1 project -> BN,
           plus x when the stride is 1 and the channels are kept (no activation after the add)
           squeeze-excite: gate = sigmoid(conv(SiLU(conv(GAP(h))))) with int(0.25 * block input channels) units
    head   global average pooling -> Dropout(0.2) -> Linear(320w -> nc); no 1x1 head conv
Drop-connect is 0, as in seed004 (its counter never moved). PyTorch default init.

Analysis layers (49 at any width): the main-path convs in order (stem, then expand, depthwise, project of each
block) and the Linear. The two squeeze-excite convs of each block are NOT analysis layers: they act on a
pooled (B, C, 1, 1) gate, not on the feature maps of the main path.
"""
from __future__ import annotations

import torch
from torch import nn

from models.layers import scaled
from models.registry import register_model

BLOCKS = [(1, 16, 1, 3, 1), (6, 24, 2, 3, 2), (6, 40, 2, 5, 2), (6, 80, 3, 3, 2), (6, 112, 3, 5, 1),
          (6, 192, 4, 5, 2), (6, 320, 1, 3, 1)]
SE_RATIO = 0.25


class SqueezeExcite(nn.Module):
    """h * sigmoid(W2 SiLU(W1 GAP(h) + b1) + b2), a per-channel gate."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gate = self.expand(nn.functional.silu(self.reduce(h.mean((2, 3), keepdim=True))))  # (B, C, 1, 1)
        return h * torch.sigmoid(gate)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excite (module docstring)."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, kernel: int, stride: int):
        super().__init__()
        planes = in_planes * expansion
        self.expand = nn.Conv2d(in_planes, planes, 1, bias=False) if expansion != 1 else None
        self.bn0 = nn.BatchNorm2d(planes) if expansion != 1 else None
        self.depthwise = nn.Conv2d(planes, planes, kernel, stride=stride, padding=kernel // 2, groups=planes,
                                   bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcite(planes, max(1, int(in_planes * SE_RATIO)))
        self.project = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.residual = stride == 1 and in_planes == out_planes
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.act(self.bn0(self.expand(x)))  # (B, e * C_in, H, W)
        out = self.se(self.act(self.bn1(self.depthwise(out))))                  # (B, e * C_in, H/s, W/s)
        out = self.bn2(self.project(out))                                       # (B, C_out, H/s, W/s)
        return out + x if self.residual else out

    def convs(self) -> list[nn.Module]:
        """The main-path convs in forward order (expand when present, depthwise, project)."""
        return [c for c in (self.expand, self.depthwise, self.project) if c is not None]


class EfficientNetB0(nn.Module):
    """(B, in_channels, S, S) -> (B, num_classes); S/16 x S/16 maps before the pooling."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        super().__init__()
        stem = scaled(32, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        blocks, in_planes = [], stem
        for expansion, channels, repeats, kernel, stride in BLOCKS:
            out_planes = scaled(channels, width)
            for repeat in range(repeats):
                blocks.append(MBConv(in_planes, out_planes, expansion, kernel, stride if repeat == 0 else 1))
                in_planes = out_planes
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(0.2)
        self.linear = nn.Linear(in_planes, num_classes)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.act(self.bn1(self.conv1(x))))  # (B, 320w, S/16, S/16)
        return self.linear(self.dropout(out.mean((2, 3))))    # (B, nc)

    def weight_layers(self) -> list[nn.Module]:
        """Stem conv, the main-path convs of every block, linear; squeeze-excite convs excluded."""
        return [self.conv1] + [conv for block in self.blocks for conv in block.convs()] + [self.linear]


@register_model("efficientnet_b0")
def efficientnet_b0(**kwargs) -> EfficientNetB0:
    return EfficientNetB0(**kwargs)
