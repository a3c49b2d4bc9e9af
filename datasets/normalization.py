"""Normalisation constants, each named for the paper that used it, and the rule choosing between them.

- SEED000_CIFAR_MEAN/STD: kuangliu/pytorch-cifar's CIFAR-10 constants, which seed000 (§4) and seed004 (§3)
  applied to EVERY dataset. The std (0.2023, 0.1994, 0.2010) is known to be wrong (the true per-channel std
  of CIFAR-10 is about 0.247, 0.243, 0.261); it is kept because the papers' inputs, and so their noise
  scales, were defined with it.
- IMAGENET_MEAN/STD: akamaster's resnet20 (seed003 §3) and the rainbow paper (seed002 §4).
- DIGITS_MEAN/STD: scikit-learn digits at 32x32, train split (tests/test_datasets.py recomputes them).
- twopoints images are used as they are (mean 0, std 1), as in seed004.
"""
from __future__ import annotations

from utils.errors import ToolkitError

SEED000_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
SEED000_CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_MEAN = (0.3054, 0.3054, 0.3054)
DIGITS_STD = (0.3237, 0.3237, 0.3237)
IDENTITY = ((0.0,), (1.0,))


def default_normalization(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation a dataset gets unless a recipe asks for another."""
    if dataset == "twopoints":
        return IDENTITY
    if dataset == "digits":
        return DIGITS_MEAN, DIGITS_STD
    return SEED000_CIFAR_MEAN, SEED000_CIFAR_STD


def normalization_for(recipe_normalization: str | None, dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for a training recipe's choice: None = the dataset's default, 'imagenet' = ImageNet stats."""
    if recipe_normalization is None or dataset == "twopoints":
        return default_normalization(dataset)
    if recipe_normalization == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    raise ToolkitError(f"unknown normalisation {recipe_normalization!r}")
