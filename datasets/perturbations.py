"""Perturbations of inputs used in training and evaluation (besides the diffeomorphisms of measures.stability)."""
from __future__ import annotations

import math

import torch

from utils.device import draw_device


def gaussian_corruption(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian corruption of seed004 §2.7: x + std * xi / sqrt(C H W), xi ~ N(0, I) drawn per sample.

    The noise of each sample has norm close to `std` (its squared norm is std^2 chi^2_{CHW} / (CHW)). seed004
    applies it after normalisation, to train and test images, fresh at every call (re-sampled every epoch).

    Args:
      x: (B, C, H, W) batch (normalised).
      std: norm of the noise per sample, in the units of x.
      generator: torch.Generator (on the CPU: the draw moves to x's device), or None for the global RNG.

    Returns:
      (B, C, H, W) corrupted batch, a new tensor.
    """
    dim = math.prod(x.shape[1:])
    noise = torch.randn(x.shape, generator=generator, device=draw_device(generator, x.device), dtype=x.dtype)
    noise = noise.to(x.device)
    return x + noise * (std / dim ** 0.5)
