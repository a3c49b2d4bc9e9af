"""Perturbations of inputs used in training and evaluation."""
from __future__ import annotations

import torch


def gaussian_corruption(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + std * xi / sqrt(C H W) with xi ~ N(0, I) per sample, so ||noise|| ~ std (seed004 §2.7).

    Applied after normalisation (as the original), fresh at every call (re-sampled every epoch).
    """
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + noise * (std / x[0].numel() ** 0.5)
