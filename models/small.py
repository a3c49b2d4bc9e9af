"""LeNet, AlexNet (CIFAR variant) and the mean-field fully connected nets of seed004 (§3 and §2.10).

- `lenet` (LeCun et al., "Gradient-based learning applied to document recognition", 1998):
  conv5(6) -> ReLU -> maxpool2 -> conv5(16) -> ReLU -> maxpool2 -> fc120 -> ReLU -> fc84 -> ReLU -> fc(nc).
  No padding: the flatten size follows image_size (16 * 5 * 5 = 400 at 32x32, 16 * 4 * 4 = 256 at 28x28).
- `alexnet` (Krizhevsky et al., "ImageNet Classification with Deep CNNs", NeurIPS 2012), seed004's CIFAR form:
  conv3x3/2(64) -> ReLU -> pool -> conv3x3(192) -> ReLU -> pool -> conv3x3 384, 256, 256 with ReLU -> pool ->
  Dropout, Linear(256 * 2 * 2 -> 4096), ReLU, Dropout, Linear(4096 -> 4096), ReLU, Linear(-> nc). Inputs
  smaller than 32 are zero-padded to 32 (seed004 §2.8). Width scales the hidden sizes too.
- `fcn2 fcn4 fcn6` (seed004's "DenseNetL2/4/6", §2.10): L linear maps on the flattened image, hidden width
  h = round(64 * width); weights and biases ~ N(0, 1); hidden layers ReLU(x W^T / sqrt(d_in) + b), last layer
  x W^T / d_in without bias (mean-field scaling).
All use PyTorch's default init except the FCNs. Analysis layers: every conv and linear in order
(lenet 5, alexnet 8, fcnL L).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.layers import scaled
from models.registry import register_model
from models.vgg import MIN_SIZE, pad_to
from utils.errors import ToolkitError


class LeNet(nn.Module):
    """LeNet-5: (B, in_channels, S, S) -> (B, num_classes), S >= 16."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2  # two valid 5x5 convs, each followed by a 2x2 pool
        if side < 1:
            raise ToolkitError(f"lenet needs images of at least 16x16 pixels, not {image_size}x{image_size}")
        c1, c2, h1, h2 = (scaled(c, width) for c in (6, 16, 120, 84))
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * side * side, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))             # (B, 6w, (S-4)/2, .)
        x = self.pool(torch.relu(self.conv2(x))).flatten(1)  # (B, 16w * side^2)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    def weight_layers(self) -> list[nn.Module]:
        """conv1, conv2, fc1, fc2, fc3."""
        return [self.conv1, self.conv2, self.fc1, self.fc2, self.fc3]


class AlexNet(nn.Module):
    """seed004's CIFAR AlexNet: (B, in_channels, S, S) -> (B, num_classes)."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        super().__init__()
        c1, c2, c3, c4, c5, hidden = (scaled(c, width) for c in (64, 192, 384, 256, 256, 4096))
        self.pad = pad_to(MIN_SIZE, image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, stride=2, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = math.ceil(max(image_size, MIN_SIZE) / 2) // 8  # the stride-2 conv, then three 2x2 pools
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(c5 * side * side, hidden), nn.ReLU(inplace=True),
            nn.Dropout(), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.pad(x)).flatten(1))  # features: (B, 256w, 2, 2) at 32x32

    def weight_layers(self) -> list[nn.Module]:
        """The five convs, then the three linear layers."""
        return [m for m in (*self.features, *self.classifier) if isinstance(m, (nn.Conv2d, nn.Linear))]


class MeanFieldLinear(nn.Linear):
    """x W^T / scale (+ b) with W, b ~ N(0, 1): scale = sqrt(d_in) for a hidden layer, d_in for the last one,
    which has no bias (seed004 §2.10). An nn.Linear, so hooks and weight analyses see a plain linear layer."""

    def __init__(self, d_in: int, d_out: int, last: bool):
        super().__init__(d_in, d_out, bias=not last)
        self.scale = d_in if last else math.sqrt(d_in)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        if self.bias is not None:
            nn.init.normal_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(x, self.weight) / self.scale
        return out if self.bias is None else out + self.bias


class MeanFieldFCN(nn.Module):
    """seed004's DenseNetL: flatten -> (depth - 1) x [MeanFieldLinear -> ReLU] -> MeanFieldLinear(last)."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, width: float = 1.0,
                 image_size: int = 32):
        super().__init__()
        sizes = [in_channels * image_size * image_size] + [scaled(64, width)] * (depth - 1) + [num_classes]
        self.layers = nn.ModuleList(MeanFieldLinear(d_in, d_out, last=index == depth - 1)
                                    for index, (d_in, d_out) in enumerate(zip(sizes, sizes[1:])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, C * S * S)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)

    def weight_layers(self) -> list[nn.Module]:
        """The L linear maps."""
        return list(self.layers)


@register_model("lenet")
def lenet(**kwargs) -> LeNet:
    return LeNet(**kwargs)


@register_model("alexnet")
def alexnet(**kwargs) -> AlexNet:
    return AlexNet(**kwargs)


def _register_fcn(depth: int) -> None:
    @register_model(f"fcn{depth}")
    def fcn(**kwargs) -> MeanFieldFCN:
        return MeanFieldFCN(depth, **kwargs)


for _depth in (2, 4, 6):
    _register_fcn(_depth)
