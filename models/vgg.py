"""VGG (Simonyan & Zisserman 2015) in the CIFAR form of seed000 §4 and seed004 §3.

3x3 convs (padding 1) from a channel list with 'M' = 2x2 max-pool, then global average pooling and ONE
Linear layer. `vgg13` is seed000's model: torchvision's vgg13_bn features (conv -> BN -> ReLU) with the
classifier replaced by a single Linear(512, nc). `vgg13_nobn` is seed004's plain 'VGG13' (conv with bias ->
ReLU). On 32x32 inputs five pools leave 1x1, so the GAP equals seed004's flatten. Smaller inputs (twopoints,
28x28) are zero-padded to 32 first (seed004 §2.8).
"""
from __future__ import annotations

from torch import nn

from models.registry import register_model, scaled

CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, width: float = 1.0,
                 image_size: int = 32, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        if image_size < 32:
            layers.append(nn.ZeroPad2d((32 - image_size) // 2))
        channels = in_channels
        for item in CONFIGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = scaled(item, width)
            layers.append(nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))

    def weight_layers(self) -> list[nn.Module]:
        return [m for m in self.features if isinstance(m, nn.Conv2d)] + [self.classifier]


def _register(depth: int) -> None:
    @register_model(f"vgg{depth}", f"vgg{depth}bn", f"vgg{depth}_bn")
    def with_bn(**kwargs):
        return VGG(depth, batch_norm=True, **kwargs)

    @register_model(f"vgg{depth}_nobn")
    def without_bn(**kwargs):
        return VGG(depth, batch_norm=False, **kwargs)


for _depth in CONFIGS:
    _register(_depth)
