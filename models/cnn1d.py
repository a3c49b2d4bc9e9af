"""The simple 1-D CNN of seed004's scale-detection theory (§2.12, paper Fig. 7; the original's ConvNetGAPMF_1d),
rebuilt from the spec's mathematics.

    block k   y -> sqrt(F) ReLU(conv(circular_pad(y), W_k / sqrt(C_in F)) + b_k), filter F = 2, stride 2
    readout   out = alpha (b + <GAP(y), beta> / H)                       (mean-field 1/H, GAP over positions)

W_k, b_k, beta, b ~ N(0, 1) (randn; the 1/sqrt(fan in) and 1/H live in the forward pass), H channels per block
(H = round(1000 width); the paper's H is 1000), alpha = 1 (the original's a = 10^-0). The circular padding of an
even filter puts F/2 - 1 sites on the left and F/2 on the right (so F = 2 pads one site on the right), odd
filters (F - 1)/2 on each side. Depth: as many blocks as halve the length down to one site,
ceil(log2(image_size)) (7 for the task's L = 128).

A 1-D conv is a Conv2d with a (1, F) kernel and stride (1, 2): the net takes (B, C, 1, L) signals (the scale1d
dataset's layout) or (B, C, L), and any (B, C, H, W) image, whose rows it then treats as separate signals before
the global average pooling over rows and positions. Analysis layers: the depth convs and the readout.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import scaled
from models.registry import register_model

BASE_CHANNELS = 1000   # H of the paper (§2.12)
FILTER = 2
STRIDE = 2


class MeanFieldConv1d(nn.Conv2d):
    """A (1, F) conv along the last axis with W, b ~ N(0, 1) and W / sqrt(C_in F) in the forward pass, after a
    circular padding of the last axis (module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = FILTER, stride: int = STRIDE):
        super().__init__(in_channels, out_channels, (1, kernel), stride=(1, stride))
        self.padding_sites = ((kernel - 1) // 2, (kernel - 1) // 2) if kernel % 2 else (kernel // 2 - 1, kernel // 2)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        nn.init.normal_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (*self.padding_sites, 0, 0), mode="circular")
        return F.conv2d(x, self.weight / math.sqrt(self.weight[0].numel()), self.bias, self.stride)


class Block1d(nn.Module):
    """sqrt(F) ReLU(conv(y)): one block; its output is the post-activation node the stabilities are measured at."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = MeanFieldConv1d(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return math.sqrt(FILTER) * F.relu(self.conv(x))


class MeanFieldReadout(nn.Linear):
    """alpha (b + y beta / H) with beta, b ~ N(0, 1) (an nn.Linear, so weight analyses see a plain linear layer)."""

    def __init__(self, channels: int, outputs: int, alpha: float = 1.0):
        super().__init__(channels, outputs)
        self.alpha = alpha

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        nn.init.normal_(self.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.alpha * (F.linear(y, self.weight) / self.in_features + self.bias)


class ScaleNet1d(nn.Module):
    """(B, C, 1, L) or (B, C, L) -> (B, num_classes) (module docstring)."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: float = 1.0, image_size: int = 128,
                 alpha: float = 1.0):
        super().__init__()
        channels = scaled(BASE_CHANNELS, width)
        depth = max(1, math.ceil(math.log2(image_size)))
        self.blocks = nn.Sequential(*(Block1d(in_channels if k == 0 else channels, channels) for k in range(depth)))
        self.readout = MeanFieldReadout(channels, num_classes, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(2)                              # (B, C, L) -> (B, C, 1, L)
        y = self.blocks(x)                                  # (B, H, rows, L / 2^depth)
        return self.readout(y.mean((2, 3)))                 # (B, nc)

    def weight_layers(self) -> list[nn.Module]:
        """The conv of every block, then the readout."""
        return [block.conv for block in self.blocks] + [self.readout]


@register_model("cnn1d")
def cnn1d(**kwargs) -> ScaleNet1d:
    return ScaleNet1d(**kwargs)
