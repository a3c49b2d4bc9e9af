"""The dataset registry: `build_dataset(name, split, root)`, `list_datasets()`, `ood_sets`, `near_ood`.

| name                              | source                         | classes | splits              |
|-----------------------------------|--------------------------------|---------|---------------------|
| digits (default)                  | scikit-learn, bundled          | 10      | train, test         |
| photos, digits_rot90, uniform     | digits' OOD sets, bundled      | -       | test                |
| mnist, cifar10, cifar100, svhn    | files in torchvision's layout  | 10/100  | train, test         |
| twopoints                         | generated (seed004 §2.8)       | 2       | train, test, probe  |

OOD evaluation sets follow seed000 §3: for an in-distribution set, the other three of cifar10, svhn, mnist,
cifar100 (their test splits); for digits, its three bundled OOD sets. `near_ood` is seed000's "dataref".
"""
from __future__ import annotations

from pathlib import Path

import torch

from datasets import digits, files
from datasets.base import ImageData
from datasets.normalization import default_normalization
from datasets.twopoints import load_twopoints
from utils.errors import ToolkitError

FILE_LOADERS = {"mnist": files.load_mnist, "cifar10": files.load_cifar10, "cifar100": files.load_cifar100,
                "svhn": files.load_svhn}
NUM_CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10, "svhn": 10, "cifar100": 100, "twopoints": 2}
DIGITS_OOD = {"photos": digits.photo_patches, "digits_rot90": digits.digits_rot90, "uniform": digits.uniform_noise}
SEED000_SETS = ("cifar10", "svhn", "mnist", "cifar100")


def list_datasets() -> list[str]:
    return ["digits", *FILE_LOADERS, "twopoints", *DIGITS_OOD]


def ood_sets(id_name: str) -> list[str]:
    """The out-of-distribution evaluation sets of an in-distribution dataset (seed000 §3)."""
    if id_name == "digits":
        return list(DIGITS_OOD)
    if id_name in SEED000_SETS:
        return [name for name in SEED000_SETS if name != id_name]
    raise ToolkitError(f"no OOD sets are defined for {id_name!r}; use one of digits, {', '.join(SEED000_SETS)}")


def near_ood(id_name: str) -> str:
    """seed000's `dataref`: the near-OOD set used to choose hyper-parameters and for the main plots."""
    return {"digits": "digits_rot90", "cifar10": "cifar100"}.get(id_name, "cifar10")


def build_dataset(name: str, split: str = "train", root: str | Path = "data", **options) -> ImageData:
    """In-memory pixel-space images and labels of one split, with the dataset's default normalisation."""
    root = Path(root)
    mean, std = default_normalization(name)
    extras = {}
    if name == "digits":
        _check_split(name, split, ("train", "test"))
        images, labels = digits.load_digits_split(split, options.get("channels", 3))
    elif name in FILE_LOADERS:
        _check_split(name, split, ("train", "test"))
        images, labels = FILE_LOADERS[name](root, split)
    elif name in DIGITS_OOD:
        _check_split(name, split, ("test",))
        images = DIGITS_OOD[name](channels=options.get("channels", 3))
        labels = torch.full((len(images),), -1, dtype=torch.long)
        mean, std = default_normalization("digits")
    elif name == "twopoints":
        _check_split(name, split, ("train", "test", "probe"))
        images, labels, extras["points"] = load_twopoints(split, **options)
    else:
        raise ToolkitError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
    return ImageData(name, split, images, labels, NUM_CLASSES.get(name, 0), tuple(mean), tuple(std), extras)


def _check_split(name: str, split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ToolkitError(f"{name} has no split {split!r}; choose one of {', '.join(allowed)}")
