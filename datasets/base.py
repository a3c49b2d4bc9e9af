"""The in-memory dataset every loader returns: pixel-space images plus the normalisation to apply later."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageData:
    """Images in pixel space (N, C, H, W) float32, labels (N,) int64, and the normalisation of the paper.

    Normalisation is applied on the device per batch (`normalize`), after any pixel-space perturbation.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    def batches(self, batch_size: int, max_samples: int | None = None, device=None):
        """(images, labels) batches in order, the first `max_samples` only, moved to `device` (None: left where they
        are) batch by batch (same interface as FolderData)."""
        count = len(self) if max_samples is None else min(max_samples, len(self))
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            yield batch_to(self.images[start:stop], self.labels[start:stop], device)

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of the samples at `indices` (same interface as FolderData)."""
        return self.images[indices], self.labels[indices]


def to_device(images: torch.Tensor, device, non_blocking: bool = False) -> torch.Tensor:
    """`images.to(device)`, keeping a broadcast channel view (to_rgb32's grey as 3 channels) a view: its one
    channel moves and is expanded there, instead of `.to` materialising every channel (MNIST's train set: 245 MB on
    the device instead of 737 MB)."""
    if images.dim() == 4 and images.shape[1] > 1 and images.stride(1) == 0:
        return images[:, :1].to(device, non_blocking=non_blocking).expand(-1, images.shape[1], -1, -1)
    return images.to(device, non_blocking=non_blocking)


def batch_to(images: torch.Tensor, labels: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) moved to `device` (None: as they are). A pinned batch (a DataLoader's pin_memory for a CUDA
    run) is copied without blocking the host, so the next batch is read while this one travels (issue 27); its
    pinned memory is not reused before the copy is done (PyTorch's pinned-memory allocator records the copy)."""
    if device is None:
        return images, labels
    pinned = images.is_pinned()
    return to_device(images, device, non_blocking=pinned), labels.to(device, non_blocking=pinned)


def _channel_constants(x: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, -1, 1, 1)
    return (torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(shape),
            torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(shape))


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel, for a batch (B, C, H, W) on any device."""
    mean, std = _channel_constants(x, mean, std)
    return (x - mean) / std


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """The inverse of `normalize`: x * std + mean per channel."""
    mean, std = _channel_constants(x, mean, std)
    return x * std + mean


def to_rgb32(images: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """Grey (N, 1, H, W) images bilinearly resized to 32x32 and shown as `channels` channels.

    Three channels are a broadcast view of the one grey channel (`expand`, no copy): MNIST's 60,000 training images
    take 245 MB instead of 737 MB. Indexing a batch (`images[idx]`) materialises it; never write into the view."""
    if images.shape[-1] != 32:
        images = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1).contiguous()
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    return images
