"""Batched augmentation on the device of the batch: no per-image Python loop, every draw from a generator.

Same distribution as torchvision's per-image transforms of seed000 §4 (and seed003 §3, seed002 §4, seed004 §3),
applied to a whole (B, C, H, W) batch at once:
- `random_crop_flip` = RandomCrop(H, padding) with zero padding + RandomHorizontalFlip(0.5), in pixel space;
- `random_erasing` = RandomErasing(p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0), which seed000
  applies after Normalize.
The generator must live on the batch's device (None = the global RNG of that device).
"""
from __future__ import annotations

import math

import torch

from utils.device import draw_device

ERASING_ATTEMPTS = 10  # torchvision's RandomErasing tries 10 boxes per image before giving up


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4,
                     flip: bool = True) -> torch.Tensor:
    """Zero-pad by `padding`, take a random H x W crop of each image, then flip each with probability 1/2.

    Draw order (pinned by the tests): crop rows (B,), crop columns (B,), then the flips (B,).

    Args:
      x: (B, C, H, W) images.
      generator: torch.Generator (on the CPU: draws move to x's device), or None.
      padding: zero padding on every side; the crop's top-left corner is uniform in {0..2 padding}^2.
      flip: whether to flip horizontally.

    Returns:
      (B, C, H, W) augmented images, a new tensor.
    """
    b, _, h, w = x.shape
    device, source = x.device, draw_device(generator, x.device)
    top = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=source).to(device)
    left = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=source).to(device)
    padded = torch.nn.functional.pad(x, (padding,) * 4) if padding else x
    cols = left + torch.arange(w, device=device)  # (B, W)
    if flip:
        flipped = torch.rand(b, 1, generator=generator, device=source).to(device) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    rows = top + torch.arange(h, device=device)  # (B, H)
    batch = torch.arange(b, device=device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_erasing(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5,
                   scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
                   value: float = 0.0) -> torch.Tensor:
    """torchvision's RandomErasing, batched: with probability p, set one random box of each image to `value`.

    As torchvision, per image: target area ~ U(scale) * H * W and log aspect ratio ~ U(log ratio); box sides
    round(sqrt(area * aspect)) x round(sqrt(area / aspect)); the first of 10 draws with both sides smaller than
    the image is used (all 10 are drawn at once here), an image whose 10 draws all fail is left unchanged; the
    box's corner is uniform over the positions where it fits. The same box covers every channel.

    Args:
      x: (B, C, H, W) images (in seed000's recipe: already normalised).
      generator: torch.Generator (on the CPU: draws move to x's device), or None.
      p, scale, ratio, value: as torchvision.transforms.RandomErasing.

    Returns:
      (B, C, H, W) images with the boxes erased, a new tensor.
    """
    b, _, h, w = x.shape
    device, source = x.device, draw_device(generator, x.device)
    area = torch.empty(b, ERASING_ATTEMPTS, device=source).uniform_(*scale, generator=generator).to(device) * (h * w)
    log_ratio = torch.empty(b, ERASING_ATTEMPTS, device=source).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                          generator=generator).to(device)
    aspect = torch.exp(log_ratio)
    box_h = torch.sqrt(area * aspect).round().long()  # (B, attempts)
    box_w = torch.sqrt(area / aspect).round().long()
    fits = (box_h < h) & (box_w < w)
    first = fits.int().argmax(1, keepdim=True)  # index of the first fitting draw (0 when none fits)
    box_h, box_w = box_h.gather(1, first), box_w.gather(1, first)  # (B, 1)
    erase = (torch.rand(b, generator=generator, device=source).to(device) < p) & fits.any(1)  # (B,)
    top = _uniform_below(h - box_h + 1, generator)
    left = _uniform_below(w - box_w + 1, generator)
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    in_rows = (rows >= top) & (rows < top + box_h)  # (B, H)
    in_cols = (cols >= left) & (cols < left + box_w)  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]  # (B, H, W)
    return x.masked_fill(mask[:, None], value)


def _uniform_below(high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Integers uniform in {0, ..., high - 1}, elementwise for a (B, 1) tensor of positive `high`."""
    draw = torch.rand(high.shape, generator=generator, device=draw_device(generator, high.device),
                      dtype=torch.float64).to(high.device)
    return torch.minimum((draw * high).long(), high - 1)
