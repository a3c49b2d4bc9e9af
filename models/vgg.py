"""VGG (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015)
in the CIFAR form of seed000 §4 and seed004 §3.

A stack of 3x3 convs (padding 1) built from a channel list where 'M' is a 2x2 max-pool, then global average
pooling and ONE Linear(512 * width -> num_classes); no hidden FC layers, no dropout.

- `vgg11 vgg13 vgg16 vgg19` (aliases `vgg13bn`, `vgg13_bn`, ...): conv (with bias) -> BN -> ReLU. This is seed000's
  "vgg13": torchvision's vgg13_bn feature stack (same `features.<i>` indices, so seed000 checkpoints load) with
  the avgpool replaced by AdaptiveAvgPool2d(1) and the classifier by one Linear. Init as seed000 got it:
  torchvision's for the convs (kaiming normal, fan_out, bias 0), PyTorch's default for the replaced Linear.
- `vgg11_nobn ... vgg19_nobn`: conv (with bias) -> ReLU, PyTorch default init: seed004's plain "VGG11" etc.

On 32x32 inputs the five pools leave 1x1, so the global pooling equals seed004's flatten. Inputs smaller than
32 (twopoints is 28x28) are first zero-padded to 32x32 (seed004 §2.8: ZeroPad2d(2)).
Analysis layers: the convs in order, then the classifier (vgg11: 9, vgg13: 11, vgg16: 14, vgg19: 17).
"""
from __future__ import annotations

import torch
from torch import nn

from models.layers import scaled, torchvision_conv_init_
from models.registry import register_model

CONFIGS = {  # torchvision's cfgs "A", "B", "D", "E"
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
MIN_SIZE = 32  # five 2x2 pools


def pad_to(size: int, image_size: int) -> nn.Module:
    """ZeroPad2d that brings image_size x image_size inputs up to size x size (Identity when big enough)."""
    if image_size >= size:
        return nn.Identity()
    before = (size - image_size) // 2
    after = size - image_size - before
    return nn.ZeroPad2d((before, after, before, after))


def make_features(config: list, in_channels: int, width: float, batch_norm: bool) -> tuple[nn.Sequential, int]:
    """The conv stack of a channel list ('M' = MaxPool2d(2)); returns (features, output channels)."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        out = scaled(item, width)
        layers.append(nn.Conv2d(channels, out, 3, padding=1))
        layers.extend([nn.BatchNorm2d(out), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)])
        channels = out
    return nn.Sequential(*layers), channels


class VGG(nn.Module):
    """VGG-`depth` for small images: (B, in_channels, S, S) -> (B, num_classes)."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, width: float = 1.0,
                 image_size: int = 32, batch_norm: bool = True):
        super().__init__()
        self.pad = pad_to(MIN_SIZE, image_size)
        self.features, channels = make_features(CONFIGS[depth], in_channels, width, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        if batch_norm:
            torchvision_conv_init_(self.weight_layers()[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(self.pad(x))                       # (B, 512w, S/32, S/32)
        return self.classifier(self.avgpool(out).flatten(1))   # (B, nc)

    def weight_layers(self) -> list[nn.Module]:
        """The convs in forward order, then the classifier (seed000 §5)."""
        return [m for m in self.features if isinstance(m, nn.Conv2d)] + [self.classifier]


def _register(depth: int) -> None:
    @register_model(f"vgg{depth}", f"vgg{depth}bn", f"vgg{depth}_bn")
    def vgg_bn(**kwargs) -> VGG:
        return VGG(depth, batch_norm=True, **kwargs)

    @register_model(f"vgg{depth}_nobn")
    def vgg_plain(**kwargs) -> VGG:
        return VGG(depth, batch_norm=False, **kwargs)


for _depth in CONFIGS:
    _register(_depth)
