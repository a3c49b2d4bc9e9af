"""scikit-learn's bundled digits as a 32x32 image dataset, and its offline out-of-distribution sets.

digits: 1797 8x8 images with 17 grey levels (values / 16), bilinearly resized to 32x32 and repeated to three
channels; fixed split `train_test_split(test_size=0.2, random_state=0, stratify=labels)`: 1437 train, 360 test.
OOD sets (split "test", 360 images each, fixed seeds), toy stand-ins for seed000 §3's OOD protocol:
- photos: grey 64x64 crops of scikit-learn's sample photographs (china.jpg, flower.jpg), downsampled to 32x32;
- digits_rot90: the test digits rotated by 90 degrees (near-OOD: same strokes, other shapes);
- uniform: U[0, 1] pixel noise.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from datasets.base import to_rgb32

SPLIT_SEED = 0
OOD_SEED = 1234


@lru_cache(maxsize=1)
def _digits_split() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0  # (1797, 1, 8, 8)
    labels = torch.tensor(data.target, dtype=torch.long)
    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=SPLIT_SEED,
                                   stratify=data.target)
    return images, labels, np.sort(train), np.sort(test)


def load_digits_split(split: str, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, 32, 32) in [0, 1], labels) of the train or test split."""
    images, labels, train, test = _digits_split()
    index = torch.as_tensor(train if split == "train" else test)
    return to_rgb32(images[index], channels), labels[index].clone()


def digits_rot90(channels: int = 3) -> torch.Tensor:
    images, _ = load_digits_split("test", channels)
    return torch.rot90(images, 1, dims=(2, 3)).contiguous()


def uniform_noise(count: int = 360, channels: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(OOD_SEED)
    grey = torch.rand(count, 1, 32, 32, generator=generator)
    return grey.repeat(1, channels, 1, 1) if channels == 3 else grey


def photo_patches(count: int = 360, channels: int = 3) -> torch.Tensor:
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(img, dtype=torch.float32).mean(-1) / 255.0 for img in load_sample_images().images]
    generator = torch.Generator().manual_seed(OOD_SEED)
    patches = []
    for i in range(count):
        photo = photos[i % len(photos)]
        top = int(torch.randint(0, photo.shape[0] - 64, (1,), generator=generator))
        left = int(torch.randint(0, photo.shape[1] - 64, (1,), generator=generator))
        patches.append(photo[top:top + 64, left:left + 64])
    grey = torch.nn.functional.avg_pool2d(torch.stack(patches)[:, None], 2)  # (count, 1, 32, 32)
    return to_rgb32(grey, channels)
