"""The dataset registry: `build_dataset(name, split, root)`, `list_datasets()`, `ood_sets(id)`, `near_ood(id)`.

| name                          | source                          | classes   | splits             |
|-------------------------------|---------------------------------|-----------|--------------------|
| digits (default)              | scikit-learn, bundled (digits)  | 10        | train, test        |
| photos, digits_rot90, uniform | digits' OOD sets, bundled (ood) | none      | test               |
| mnist                         | files in torchvision's layout   | 10        | train, test        |
| cifar10, cifar100, svhn       | files in torchvision's layout   | 10/100/10 | train, test        |
| cifar10_grey                  | cifar10's files, grey (seed002) | 10        | train, test        |
| twopoints                     | generated (seed004 §2.8)        | 2         | train, test, probe |
| scale1d                       | generated (seed004 §2.12)       | 2         | train, val, test, probe |

Options: `channels=1` (or 3, the default) for the grey sets digits, its OOD sets and mnist; d, xi, gap, norm,
pbc, ptr, seed for twopoints (datasets/twopoints.py); length, xi, gap, task, ptr, seed for scale1d, the 1-D task
(datasets/scale1d.py: signals stored as 1 x 1 x length images, not normalised). Any other option is an error.
With channels=1, mean and std are the channel averages of the three-channel constants.

Every image set is 3x32x32 in pixel space [0, 1] so that OOD sets fit the same network (grey sets repeated to
three channels; `channels=1` keeps one). twopoints is 1 x d x d with its own pixel values. Normalisation is NOT
applied here: `ImageData.mean/std` say what to apply per batch on the device, after pixel-space perturbations.
The OOD sets carry labels -1 and num_classes 0.

OOD evaluation follows seed000 §3: for an in-distribution set among cifar10, svhn, mnist, cifar100 the test
splits of the other three (in that order); for digits its three bundled sets. `near_ood` is seed000's
"dataref": cifar10 -> cifar100; cifar100, svhn, mnist -> cifar10; digits -> digits_rot90. `validation_ood` is the
set that chooses detection hyper-parameters (Mahalanobis d, rank threshold) without looking at any reported set
(seed000 §12): `<id>_vflip`, the in-distribution test images flipped upside down (labels -1; same normalisation).
Evaluate every OOD set with the normalisation of the in-distribution data (the model's), not its own.
"""
from __future__ import annotations

from pathlib import Path

import torch

from datasets import files
from datasets.base import ImageData
from datasets.digits import load_digits_split
from datasets.folders import load_folder
from datasets.normalization import default_normalization
from datasets.ood import DIGITS_OOD
from datasets.scale1d import load_scale1d
from datasets.twopoints import load_twopoints
from utils.errors import ToolkitError

FILE_LOADERS = {"mnist": files.load_mnist, "cifar10": files.load_cifar10, "cifar100": files.load_cifar100,
                "svhn": files.load_svhn}
NUM_CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10, "cifar10_grey": 10, "cifar100": 100, "svhn": 10,
               "twopoints": 2, "scale1d": 2}
SEED000_SETS = ("cifar10", "svhn", "mnist", "cifar100")
SEED000_NEAR_OOD = {"cifar10": "cifar100", "cifar100": "cifar10", "svhn": "cifar10", "mnist": "cifar10"}
VALIDATION_SUFFIX = "_vflip"
VALIDATION_SETS = tuple(f"{name}{VALIDATION_SUFFIX}" for name in ("digits", *FILE_LOADERS))
ROTATION_SUFFIX = "_rot90"
ROTATION_SETS = ("mnist_rot90",)  # digits_rot90 is one of the bundled DIGITS_OOD
GREY_SETS = ("digits", "mnist", *DIGITS_OOD, "digits_vflip", "mnist_vflip", *ROTATION_SETS)
# Offline stand-ins for seed000's OOD sets when their files are absent (docs/mnist.md): (reported sets, near-OOD).
OFFLINE_OOD = {"mnist": (("photos", "uniform", "mnist_rot90"), "mnist_rot90")}
TWOPOINTS_OPTIONS = ("d", "xi", "gap", "norm", "pbc", "ptr", "seed")
SCALE1D_OPTIONS = ("length", "xi", "gap", "task", "ptr", "seed")
UNNORMALISED = ((0.0,), (1.0,))  # scale1d's mean and std


def list_datasets() -> list[str]:
    """Every name `build_dataset` accepts: digits, the four file datasets, twopoints, scale1d, digits' OOD sets, and
    the streamed folders (imagenet, imagefolder:PATH; datasets/folders.py)."""
    return ["digits", *FILE_LOADERS, "cifar10_grey", "twopoints", "scale1d", *DIGITS_OOD, *VALIDATION_SETS,
            *ROTATION_SETS, "imagenet", "imagefolder:PATH"]


def is_folder_dataset(name: str) -> bool:
    """True for the streamed image folders (imagenet, imagefolder:PATH; datasets/folders.py)."""
    return name == "imagenet" or name.startswith("imagefolder:")


def has_ood_sets(id_name: str) -> bool:
    """True for the in-distribution sets with OOD, near-OOD and validation sets defined (digits, SEED000_SETS);
    False for the others (imagenet, imagefolder:PATH, twopoints), whose seed000 stages skip OOD detection."""
    return id_name == "digits" or id_name in SEED000_SETS


def ood_sets(id_name: str) -> list[str]:
    """The out-of-distribution evaluation sets of an in-distribution dataset (seed000 §3).

    Args:
      id_name: cifar10, cifar100, svhn, mnist or digits.

    Returns:
      names of the OOD sets, evaluated on their "test" split.
    """
    if id_name == "digits":
        return list(DIGITS_OOD)
    if id_name in SEED000_SETS:
        return [name for name in SEED000_SETS if name != id_name]
    raise ToolkitError(f"no OOD sets are defined for {id_name!r}; use one of digits, {', '.join(SEED000_SETS)}")


def near_ood(id_name: str) -> str:
    """seed000's `dataref` (§3): the near-OOD set used to choose hyper-parameters and for the main plots."""
    if id_name == "digits":
        return "digits_rot90"
    if id_name in SEED000_NEAR_OOD:
        return SEED000_NEAR_OOD[id_name]
    raise ToolkitError(f"no near-OOD set is defined for {id_name!r}; use one of digits, {', '.join(SEED000_SETS)}")


def validation_ood(id_name: str) -> str:
    """The OOD set on which detection hyper-parameters are chosen (module docstring): `<id>_vflip`."""
    name = f"{id_name}{VALIDATION_SUFFIX}"
    if name not in VALIDATION_SETS:
        raise ToolkitError(f"no validation OOD set is defined for {id_name!r}; use one of digits, "
                           f"{', '.join(FILE_LOADERS)}")
    return name


def build_dataset(name: str, split: str = "train", root: str | Path = "data", **options) -> ImageData:
    """One split of a dataset, in memory, in pixel space, with its default normalisation (module docstring).

    Args:
      name: a name from `list_datasets()`.
      split: "train" or "test" ("test" only for the OOD sets; also "probe" for twopoints; "val" and "probe" for
        scale1d).
      root: folder of the file datasets (torchvision's layout); unused by the bundled and generated sets.
      **options: channels=1 or 3 for grey sets; d, xi, gap, norm, pbc, ptr, seed for twopoints; length, xi, gap,
        task, ptr, seed for scale1d; augment=False for any dataset (measurement stages): the folder datasets'
        train split then gets the val transform (the in-memory datasets are never augmented here: the training
        loop augments their batches).

    Returns:
      ImageData with images (N, C, H, W) float32, labels (N,) int64, num_classes, mean, std, extras
      (twopoints: extras["points"] (N, 2, 2); scale1d: extras["sites"] (N, 2)).
    """
    augment = options.pop("augment", None)
    if is_folder_dataset(name):
        return load_folder(name, Path(root), split, squash=bool(options.get("squash", False)), augment=augment)
    if augment:
        raise ToolkitError(f"{name} is held in memory and augmented per batch by the training loop; "
                           "augment=True applies to folder datasets only")
    if name not in list_datasets():
        raise ToolkitError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
    _check_split(name, split)
    _check_options(name, options)
    root = Path(root)
    mean, std = default_normalization(name)
    extras = {}
    if name == "digits":
        images, labels = load_digits_split(split, **options)
    elif name in DIGITS_OOD:
        images = DIGITS_OOD[name](**options)
        labels = torch.full((len(images),), -1, dtype=torch.long)
    elif name in VALIDATION_SETS:
        images = build_dataset(name.removesuffix(VALIDATION_SUFFIX), "test", root, **options).images.flip(2)
        labels = torch.full((len(images),), -1, dtype=torch.long)
    elif name in ROTATION_SETS:
        images = torch.rot90(build_dataset(name.removesuffix(ROTATION_SUFFIX), "test", root, **options).images, 1,
                             dims=(2, 3)).contiguous()
        labels = torch.full((len(images),), -1, dtype=torch.long)
    elif name in FILE_LOADERS:
        images, labels = FILE_LOADERS[name](root, split, **options)
    elif name == "cifar10_grey":   # seed002's tutorial: normalise, then grey (datasets/files.py)
        images, labels = files.load_cifar10_grey(root, split)
    elif name == "scale1d":
        images, labels, extras["sites"] = load_scale1d(split, **options)
        mean, std = UNNORMALISED
    else:
        images, labels, extras["points"] = load_twopoints(split, **options)
    if options.get("channels") == 1:  # the grey equivalent of three-channel constants
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    return ImageData(name, split, images, labels, NUM_CLASSES.get(name, 0), tuple(mean), tuple(std), extras)


def _check_split(name: str, split: str) -> None:
    allowed = ("test",) if name in (*DIGITS_OOD, *VALIDATION_SETS, *ROTATION_SETS) \
        else ("train", "test", "probe") if name == "twopoints" \
        else ("train", "val", "test", "probe") if name == "scale1d" else ("train", "test")
    if split not in allowed:
        raise ToolkitError(f"{name} has no split {split!r}; choose one of {', '.join(allowed)}")


def _check_options(name: str, options: dict) -> None:
    allowed = TWOPOINTS_OPTIONS if name == "twopoints" else SCALE1D_OPTIONS if name == "scale1d" \
        else ("channels",) if name in GREY_SETS else ()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ToolkitError(f"{name} takes no option {', '.join(unknown)}; its options: {', '.join(allowed) or 'none'}")
    if options.get("channels", 3) not in (1, 3):
        raise ToolkitError(f"channels must be 1 or 3, not {options['channels']!r}")
