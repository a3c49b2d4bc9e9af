"""scikit-learn's bundled digits as a 32x32 image dataset: the default dataset everywhere (no files, no network).

1797 grey 8x8 images with 17 levels, divided by 16 to lie in [0, 1], bilinearly resized to 32x32
(`interpolate(align_corners=False)`) and repeated to three channels, so the networks built for CIFAR take them.
The split is fixed: `train_test_split(test_size=0.2, random_state=0, stratify=labels)`, 1437 train and
360 test images, each class in the same proportion in both. Nothing is cached on disk.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from datasets.base import to_rgb32

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@lru_cache(maxsize=1)
def _split_indices() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """(8x8 images (1797, 1, 8, 8) in [0, 1], labels (1797,), sorted train indices, sorted test indices)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                   stratify=data.target)
    return images, labels, np.sort(train), np.sort(test)


def load_digits_split(split: str, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of the digits at 32x32 (module docstring).

    Args:
      split: "train" (1437 images) or "test" (360 images).
      channels: 3 (grey repeated, the default) or 1.

    Returns:
      images (N, channels, 32, 32) float32 in [0, 1], labels (N,) int64 in 0..9.
    """
    images, labels, train, test = _split_indices()
    index = torch.as_tensor(train if split == "train" else test)
    return to_rgb32(images[index], channels), labels[index].clone()
