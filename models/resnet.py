"""ResNet-18/34/50 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) with the CIFAR stem of
seed000 §4 and seed004 §3.

seed000 builds it from torchvision's ResNet: conv1 replaced by a 3x3 stride-1 bias-free conv (64 channels),
maxpool replaced by Identity, fc by Linear(512 * expansion, nc). This file is that network with torchvision's
module names (conv1, bn1, layer1..layer4, <block>.conv1/bn1/..., <block>.downsample.0/1, fc), so seed000's and
torchvision-format state dicts load as they are:

    stem   conv3x3(in -> 64w, stride 1, no bias) -> BN -> ReLU              (no max-pool)
    stages 64w/128w/256w/512w channels, strides 1, 2, 2, 2; BasicBlock (resnet18: 2,2,2,2; resnet34: 3,4,6,3)
           or Bottleneck (resnet50: 3,4,6,3; stride on the 3x3 conv); `downsample` = 1x1 conv + BN when the
           shape changes, Identity otherwise
    head   AdaptiveAvgPool2d(1) -> flatten -> fc

Init as seed000 got it: torchvision's for the block and downsample convs (kaiming normal, fan_out), PyTorch's
default for the replaced conv1 and fc; BN weight 1, bias 0.
Analysis layers: conv1, every block conv, fc (18 for resnet18, 34 for resnet34, 50 for resnet50); the
downsample convs are excluded (seed000 §5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import scaled, torchvision_conv_init_
from models.registry import register_model


def downsample(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """The projection shortcut (1x1 conv + BN) when the shape changes, else Identity."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x)), two 3x3 convs."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.downsample(x))

    def convs(self) -> list[nn.Module]:
        """The main-path convs in forward order."""
        return [self.conv1, self.conv2]


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride here, torchvision's "v1.5") -> 1x1 expand by 4, plus downsample(x)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.downsample(x))

    def convs(self) -> list[nn.Module]:
        """The main-path convs in forward order."""
        return [self.conv1, self.conv2, self.conv3]


class ResNet(nn.Module):
    """CIFAR-stem ResNet: (B, in_channels, S, S) -> (B, num_classes); S/8 x S/8 maps in layer4."""

    def __init__(self, block: type[BasicBlock | Bottleneck], counts: list[int], num_classes: int,
                 in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        super().__init__()
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        in_planes = planes[0]
        stages = []
        for index, (count, stage_planes) in enumerate(zip(counts, planes)):
            blocks = []
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                blocks.append(block(in_planes, stage_planes, stride))
                in_planes = stage_planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        torchvision_conv_init_([m for name, m in self.named_modules()
                                if isinstance(m, nn.Conv2d) and name.startswith("layer")])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))                        # (B, 64w, S, S)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))  # (B, 512w * expansion, S/8, S/8)
        return self.fc(self.avgpool(out).flatten(1))                 # (B, nc)

    def blocks(self) -> list[nn.Module]:
        """All residual blocks in forward order."""
        return [b for stage in (self.layer1, self.layer2, self.layer3, self.layer4) for b in stage]

    def weight_layers(self) -> list[nn.Module]:
        """conv1, the block convs, fc: the analysis layers of seed000 §5 (downsample convs excluded)."""
        return [self.conv1] + [conv for b in self.blocks() for conv in b.convs()] + [self.fc]


@register_model("resnet18")
def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model("resnet34")
def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model("resnet50")
def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)
