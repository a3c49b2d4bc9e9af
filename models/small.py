"""LeNet, AlexNet (CIFAR variant) and the mean-field fully connected nets, as in seed004 §2.10 and §3.

- lenet: conv5(6) -> ReLU -> pool -> conv5(16) -> ReLU -> pool -> fc120 -> fc84 -> fc (LeCun et al. 1998).
- alexnet: conv3x3/2(64) -> pool -> conv(192) -> pool -> conv 384, 256, 256 -> pool -> Dropout, 1024 -> 4096 ->
  4096 -> nc (the CIFAR adaptation of Krizhevsky et al. 2012 used by seed004).
- fcn2/fcn4/fcn6 ("DenseNetL*" in seed004): L linear maps of hidden width 64 (x width), weights and biases
  ~ N(0, 1); hidden layers ReLU(x W^T / sqrt(d_in) + b), last layer x W^T / d_in without bias (mean-field).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.registry import register_model, scaled


class LeNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        super().__init__()
        c1, c2 = scaled(6, width), scaled(16, width)
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(c2 * side * side, scaled(120, width))
        self.fc2 = nn.Linear(scaled(120, width), scaled(84, width))
        self.fc3 = nn.Linear(scaled(84, width), num_classes)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x))).flatten(1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    def weight_layers(self) -> list[nn.Module]:
        return [self.conv1, self.conv2, self.fc1, self.fc2, self.fc3]


class AlexNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        super().__init__()
        c = [scaled(n, width) for n in (64, 192, 384, 256, 256)]
        hidden = scaled(4096, width)
        pad = [nn.ZeroPad2d((32 - image_size) // 2)] if image_size < 32 else []
        self.features = nn.Sequential(
            *pad,
            nn.Conv2d(in_channels, c[0], 3, stride=2, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c[0], c[1], 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(c[4] * 2 * 2, hidden), nn.ReLU(inplace=True),
            nn.Dropout(), nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))

    def weight_layers(self) -> list[nn.Module]:
        return [m for m in (*self.features, *self.classifier) if isinstance(m, (nn.Conv2d, nn.Linear))]


class MeanFieldLinear(nn.Linear):
    """x W^T / scale + b with W, b ~ N(0, 1): scale = sqrt(d_in) for hidden layers, d_in for the last."""

    def __init__(self, d_in: int, d_out: int, last: bool):
        super().__init__(d_in, d_out, bias=not last)
        self.scale = d_in if last else math.sqrt(d_in)
        with torch.no_grad():
            self.weight.normal_()
            if self.bias is not None:
                self.bias.normal_()

    def forward(self, x):
        out = nn.functional.linear(x, self.weight) / self.scale
        return out if self.bias is None else out + self.bias


class MeanFieldFCN(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        super().__init__()
        hidden = scaled(64, width)
        sizes = [in_channels * image_size * image_size] + [hidden] * (depth - 1) + [num_classes]
        self.layers = nn.ModuleList(
            MeanFieldLinear(d_in, d_out, last=i == depth - 1) for i, (d_in, d_out) in enumerate(zip(sizes, sizes[1:]))
        )

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)

    def weight_layers(self) -> list[nn.Module]:
        return list(self.layers)


@register_model("lenet")
def lenet(**kwargs):
    return LeNet(**kwargs)


@register_model("alexnet")
def alexnet(**kwargs):
    return AlexNet(**kwargs)


def _register_fcn(depth: int) -> None:
    @register_model(f"fcn{depth}")
    def fcn(**kwargs):
        return MeanFieldFCN(depth, **kwargs)


for _depth in (2, 4, 6):
    _register_fcn(_depth)
