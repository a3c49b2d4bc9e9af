"""ResNet-18/34/50 (He et al. 2016) with the CIFAR stem of seed000 §4 and seed004 §3.

Stem: 3x3 stride-1 bias-free conv -> BN -> ReLU, no max-pool; stages of 64/128/256/512 channels (x width) with
strides 1, 2, 2, 2; a 1x1 conv + BN `shortcut` when the shape changes; global average pooling; `fc`.
Analysis layers: conv1, every block conv, fc (18 for resnet18, 34 for resnet34, 50 for resnet50).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from models.registry import register_model, scaled


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    def convs(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _shortcut(in_planes, planes * 4, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))

    def convs(self) -> list[nn.Module]:
        return [self.conv1, self.conv2, self.conv3]


class ResNet(nn.Module):
    def __init__(self, block, counts: list[int], num_classes: int, in_channels: int = 3, width: float = 1.0,
                 image_size: int = 32):
        super().__init__()
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        in_planes = planes[0]
        stages = []
        for index, (count, stage_planes) in enumerate(zip(counts, planes)):
            blocks = []
            for b in range(count):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(block(in_planes, stage_planes, stride))
                in_planes = stage_planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(self.avgpool(out).flatten(1))

    def weight_layers(self) -> list[nn.Module]:
        blocks = [b for stage in (self.layer1, self.layer2, self.layer3, self.layer4) for b in stage]
        return [self.conv1] + [conv for b in blocks for conv in b.convs()] + [self.fc]


@register_model("resnet18")
def resnet18(**kwargs):
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model("resnet34")
def resnet34(**kwargs):
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model("resnet50")
def resnet50(**kwargs):
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)
