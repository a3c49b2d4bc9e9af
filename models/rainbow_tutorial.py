"""The bias-free MLP and CNN of the rainbow-network tutorial (Guth et al., "A Rainbow in Deep Network Black
Boxes", JMLR 2024; CCN-2023 tutorial; seed002 §7), the CPU-sized models of rainbow.py.

- `rainbow_mlp`: Flatten -> Linear(C S^2, 512) -> ReLU -> Linear(512, 256) -> ReLU -> Linear(256, classes);
  C S^2 = 1024 for the tutorial's grey 32x32 CIFAR, 3072 for digits at 3 x 32 x 32.
- `rainbow_cnn`: Conv(C, 32, 5, stride 2) -> ReLU -> Conv(32, 64, 5, stride 2) -> ReLU -> Flatten ->
  Linear(64 s^2, classes) with s = 5 at 32x32 (32 -> 14 -> 5) and s = 4 at 28x28.
No layer has a bias (the nets are positively homogeneous) and there is no normalisation; PyTorch's default
init. Width scales every hidden size. Analysis layers: the three (two convs + classifier) weight layers in
order. The CNN's `classifier_input_shape` (C, s, s) lets rainbow.py align the classifier input over channels
with space as samples (seed002 §5.1) instead of over the flattened C s^2 coordinates.
"""
from __future__ import annotations

import torch
from torch import nn

from models.layers import scaled
from models.registry import register_model
from utils.errors import ToolkitError


class RainbowMLP(nn.Module):
    """(B, in_channels, S, S) -> (B, num_classes) through two ReLU hidden layers, no biases (seed002 §7)."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        super().__init__()
        hidden1, hidden2 = scaled(512, width), scaled(256, width)
        self.fc1 = nn.Linear(in_channels * image_size * image_size, hidden1, bias=False)
        self.fc2 = nn.Linear(hidden1, hidden2, bias=False)
        self.fc3 = nn.Linear(hidden2, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))     # (B, 512w)
        x = torch.relu(self.fc2(x))                # (B, 256w)
        return self.fc3(x)

    def weight_layers(self) -> list[nn.Module]:
        """fc1, fc2, fc3."""
        return [self.fc1, self.fc2, self.fc3]


class RainbowCNN(nn.Module):
    """(B, in_channels, S, S) -> (B, num_classes): two stride-2 5x5 convs with ReLU, then a linear classifier."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        super().__init__()
        side = ((image_size - 5) // 2 + 1 - 5) // 2 + 1   # two valid 5x5 convs of stride 2
        if side < 1:
            raise ToolkitError(f"rainbow_cnn needs images of at least 13x13 pixels, not {image_size}x{image_size}")
        channels1, channels2 = scaled(32, width), scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, channels1, 5, stride=2, bias=False)
        self.conv2 = nn.Conv2d(channels1, channels2, 5, stride=2, bias=False)
        self.fc = nn.Linear(channels2 * side * side, num_classes, bias=False)
        self.classifier_input_shape = (channels2, side, side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))              # (B, 32w, 14, 14) at 32x32
        x = torch.relu(self.conv2(x))              # (B, 64w, 5, 5)
        return self.fc(x.flatten(1))

    def weight_layers(self) -> list[nn.Module]:
        """conv1, conv2, fc."""
        return [self.conv1, self.conv2, self.fc]


@register_model("rainbow_mlp")
def rainbow_mlp(**kwargs) -> RainbowMLP:
    return RainbowMLP(**kwargs)


@register_model("rainbow_cnn")
def rainbow_cnn(**kwargs) -> RainbowCNN:
    return RainbowCNN(**kwargs)
