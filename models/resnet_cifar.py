"""ResNet-20 for CIFAR (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2), the
akamaster/pytorch_resnet_cifar10 variant whose checkpoint seed003 analyses (seed003 §3).

    stem   conv3x3(in -> 16w, stride 1, no bias) -> BN -> ReLU
    stages 3 BasicBlocks each at 16w, 32w, 64w channels; the first block of stages 2 and 3 has stride 2 and the
           parameter-free "option A" shortcut: x[:, :, ::2, ::2] with the channels zero-padded on both sides
    head   global average pooling -> `linear` Linear(64w, nc) with bias

Module names are akamaster's (conv1, bn1, layer1.0.conv1, layer1.0.bn1, ..., linear), so its checkpoints,
`{"best_prec1": ..., "state_dict": {"module.conv1.weight": ...}}` without num_batches_tracked, load with
`models.weights.load_weights`. Init: kaiming normal (fan_in) on every conv and linear weight, BN defaults.
269,722 parameters for 10 classes at width 1. Analysis layers: conv1, the 18 block convs, linear (20).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import scaled
from models.registry import register_model


class OptionAShortcut(nn.Module):
    """x[:, :, ::2, ::2] with the channel axis zero-padded from `in_planes` to `out_planes`, half on each side
    (16 -> 32: 8 + 8 zero channels); no parameters."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.before = (out_planes - in_planes) // 2
        self.after = out_planes - in_planes - self.before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.before, self.after))  # (B, out, H/2, W/2)


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut = OptionAShortcut(in_planes, planes) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) with 16/32/64 channels: (B, in_channels, S, S) -> (B, num_classes)."""

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
            for position in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, stage_planes, 2 if index > 0 and position == 0 else 1))
                in_planes = stage_planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))                   # (B, 16w, S, S)
        out = self.layer3(self.layer2(self.layer1(out)))        # (B, 64w, S/4, S/4)
        return self.linear(self.avgpool(out).flatten(1))        # (B, nc)

    def weight_layers(self) -> list[nn.Module]:
        """conv1, the block convs in order, linear (the option-A shortcuts have no weights)."""
        blocks = [b for stage in (self.layer1, self.layer2, self.layer3) for b in stage]
        return [self.conv1] + [conv for b in blocks for conv in (b.conv1, b.conv2)] + [self.linear]


@register_model("resnet20")
def resnet20(**kwargs) -> ResNetCifar:
    return ResNetCifar(3, **kwargs)
