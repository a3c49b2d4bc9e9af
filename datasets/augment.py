"""Batched augmentation on the device of the batch: no per-image Python loop, every draw from a generator.

Equivalent in distribution to torchvision's RandomCrop(size, padding) + RandomHorizontalFlip() and
RandomErasing() (seed000 §4), applied to a whole (B, C, H, W) batch at once.
"""
from __future__ import annotations

import math

import torch


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4,
                     flip: bool = True) -> torch.Tensor:
    """Zero-pad by `padding`, take a random HxW crop per image, then flip half of the images horizontally."""
    b, _, h, w = x.shape
    device = x.device
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    if padding:
        x = torch.nn.functional.pad(x, (padding,) * 4)
        top = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=device)
        left = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=device)
    else:
        top = left = torch.zeros(b, 1, dtype=torch.long, device=device)
    col_index = left + cols  # (B, W)
    if flip:
        flipped = torch.rand(b, 1, generator=generator, device=device) < 0.5
        col_index = torch.where(flipped, col_index.flip(1), col_index)
    row_index = top + rows  # (B, H)
    batch = torch.arange(b, device=device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[batch, row_index[:, :, None], col_index[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_erasing(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5,
                   scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
                   value: float = 0.0, attempts: int = 10) -> torch.Tensor:
    """torchvision RandomErasing semantics, batched: with probability p erase one box per image.

    As torchvision: area ~ U(scale) * H * W, log aspect ratio ~ U(log ratio), up to `attempts` draws per image
    until the box fits; an image whose draws all fail is left as it is.
    """
    b, _, h, w = x.shape
    device = x.device
    area = torch.empty(b, attempts, device=device).uniform_(scale[0], scale[1], generator=generator) * (h * w)
    log_ratio = torch.empty(b, attempts, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                  generator=generator)
    aspect = torch.exp(log_ratio)
    box_h = torch.sqrt(area * aspect).round().long()
    box_w = torch.sqrt(area / aspect).round().long()
    fits = (box_h < h) & (box_w < w)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros(b, dtype=torch.long, device=device))
    box_h = box_h.gather(1, first[:, None])  # (B, 1)
    box_w = box_w.gather(1, first[:, None])
    apply = (torch.rand(b, generator=generator, device=device) < p) & fits.any(1)
    top = (torch.rand(b, 1, generator=generator, device=device) * (h - box_h + 1).clamp(min=1)).long()
    left = (torch.rand(b, 1, generator=generator, device=device) * (w - box_w + 1).clamp(min=1)).long()
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    in_rows = (rows >= top) & (rows < top + box_h)  # (B, H)
    in_cols = (cols >= left) & (cols < left + box_w)  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]
    return x.masked_fill(mask[:, None], value)
