"""Normalisation constants, each named for the paper that used it, and the rule that picks one.

| constant               | mean / std                                          | used by                          |
|------------------------|-----------------------------------------------------|----------------------------------|
| SEED000_CIFAR_MEAN/STD | (0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010) | seed000 §4, seed004 §3: all sets |
| IMAGENET_MEAN/STD      | (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)       | seed003 §3 (akamaster), seed002  |
| DIGITS_MEAN/STD        | (0.3054,) * 3 / (0.3237,) * 3                       | digits here (train split, 32x32) |
| TWOPOINTS_MEAN/STD     | (0.0,) / (1.0,)                                     | seed004 §2.8: used as it is      |
| GREY_CIFAR_MEAN/STD    | (0.481,) / (0.239,)                                 | cifar10_grey (seed002 §4, §7)    |

SEED000_CIFAR_STD is kuangliu/pytorch-cifar's constant. It is known to be off: the per-channel std of CIFAR-10
is about (0.247, 0.243, 0.261). It is kept because seed000 and seed004 used it, and their inputs and noise
scales (seed004 §2.7) are defined with it. seed003 §3 lists further CIFAR variants that its own code mixed up;
this toolkit uses the training normalisation of the checkpoint (ImageNet statistics) for that paper.
DIGITS_MEAN/STD are the mean and std of every pixel of the digits train split after resizing to 32x32,
computed once and written here as literals; tests/datasets/test_datasets.py recomputes them.

Every dataset defaults to the seed000 constants, except digits (and its OOD sets), which use their own, twopoints,
which is not normalised, and cifar10_grey (datasets/files.py: the tutorial's normalise-then-grey images), whose
grey constants hold whatever the recipe. Recipes "akamaster" and "seed002" ask for the ImageNet statistics.
"""
from __future__ import annotations

from utils.errors import ToolkitError

SEED000_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
SEED000_CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_MEAN = (0.3054, 0.3054, 0.3054)
DIGITS_STD = (0.3237, 0.3237, 0.3237)
TWOPOINTS_MEAN = (0.0,)
TWOPOINTS_STD = (1.0,)
GREY_CIFAR_MEAN = (0.481,)
GREY_CIFAR_STD = (0.239,)
OWN_NORMALIZATION = ("twopoints", "cifar10_grey")   # datasets that keep their own constants under every recipe

DIGITS_FAMILY = ("digits", "photos", "digits_rot90", "uniform", "digits_vflip")
IMAGENET_CHOICES = ("imagenet", "akamaster", "seed002")
DATASET_DEFAULT_CHOICES = ("seed000", "seed004", "seed004_fcn", "twopoints")

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def default_normalization(dataset: str) -> Stats:
    """(mean, std) that `dataset` gets unless a recipe asks for another (table in the module docstring).

    Args:
      dataset: a registry name (see `datasets.list_datasets()`).

    Returns:
      (mean, std): tuples with one value per channel (three, or one for twopoints).
    """
    if dataset == "twopoints":
        return TWOPOINTS_MEAN, TWOPOINTS_STD
    if dataset == "cifar10_grey":
        return GREY_CIFAR_MEAN, GREY_CIFAR_STD
    if dataset in DIGITS_FAMILY:
        return DIGITS_MEAN, DIGITS_STD
    return SEED000_CIFAR_MEAN, SEED000_CIFAR_STD


def normalization_for(choice: str | None, dataset: str) -> Stats:
    """(mean, std) for a training recipe: ImageNet statistics for akamaster (seed003 §3) and seed002 (§4).

    Args:
      choice: a recipe name, "imagenet" (a recipe's `normalization` field), or None for the dataset's default.
        seed000, seed004, seed004_fcn and twopoints use the dataset's default.
      dataset: a registry name. twopoints is never normalised, whatever the recipe.

    Returns:
      (mean, std) tuples, one value per channel.
    """
    if choice not in (None, *IMAGENET_CHOICES, *DATASET_DEFAULT_CHOICES):
        raise ToolkitError(f"unknown normalisation {choice!r}; use a recipe name "
                           f"({', '.join(IMAGENET_CHOICES[1:] + DATASET_DEFAULT_CHOICES)}), 'imagenet' or none")
    if choice in IMAGENET_CHOICES and dataset not in OWN_NORMALIZATION:
        return IMAGENET_MEAN, IMAGENET_STD
    return default_normalization(dataset)
