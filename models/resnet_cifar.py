"""ResNet-20 for CIFAR, the akamaster variant used by seed003 (§3; He et al. 2016, option-A shortcuts).

Stem conv3x3(3 -> 16, no bias) -> BN -> ReLU; three stages of three BasicBlocks at 16/32/64 channels (x width),
the first block of stages 2 and 3 with stride 2 and a parameter-free shortcut (subsample by 2, zero-pad the
channels on both sides); global average pooling; `linear`. Module names are akamaster's, so its checkpoints
(`{"state_dict": {"module.conv1.weight": ...}}`) load with models.weights.load_weights. 269,722 parameters
for 10 classes; kaiming-normal init of conv and linear weights.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from models.registry import register_model, scaled


class OptionAShortcut(nn.Module):
    """x[:, :, ::2, ::2] with the channel axis zero-padded from `in_planes` to `out_planes`."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.left = (out_planes - in_planes) // 2
        self.right = out_planes - in_planes - self.left

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.left, self.right))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = OptionAShortcut(in_planes, planes) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int = 3, width: float = 1.0,
                 image_size: int = 32):
        super().__init__()
        planes = [scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        in_planes = planes[0]
        stages = []
        for index, stage_planes in enumerate(planes):
            blocks = []
            for b in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, stage_planes, 2 if index > 0 and b == 0 else 1))
                in_planes = stage_planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))

    def weight_layers(self) -> list[nn.Module]:
        blocks = [b for stage in (self.layer1, self.layer2, self.layer3) for b in stage]
        return [self.conv1] + [conv for b in blocks for conv in (b.conv1, b.conv2)] + [self.linear]


@register_model("resnet20")
def resnet20(**kwargs):
    return ResNetCifar(3, **kwargs)
