"""Which out-of-distribution sets a seed000 measurement evaluates: the paper's, an offline stand-in, or the user's.

    choice = choose_ood("mnist", root)                                   # the paper's, or the offline stand-in
    choice = choose_ood("cifar10", root, sets=["imagefolder:/data/Textures", "svhn"], near="svhn")
    data = build_ood_set("imagefolder:/data/Textures", root, image_size=32, channels=3)

A choice has reported sets, a near-OOD set among them (seed000's `dataref`, §3) and a validation set, which chooses
the detection hyper-parameters and is never reported (`<id>_vflip` by default). Defaults: `datasets.ood_sets(id)`,
`near_ood(id)`, `validation_ood(id)`. When a default set's files are absent and the dataset has an offline stand-in
(`OFFLINE_OOD`: MNIST -> photos, uniform, mnist_rot90 with mnist_rot90 as near-OOD), that stand-in is used and the
choice's note says which files were missing and how to point --ood-sets elsewhere; without a stand-in the missing
files are a one-line error. An OOD set may be any registered dataset with a test split or `imagefolder:PATH`: every
image file under PATH (sub-folders included, classes ignored), in memory, labels -1; an image of another size is
resized (shorter side to the network's size, bilinear) and centre-cropped as OpenOOD's test preprocessing does
(Textures, Places365, ... come in many sizes), and the choice's note says so. A missing or empty folder or an
unreadable image is a one-line error.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets.base import ImageData
from datasets.files import missing_files
from datasets.registry import (
    FILE_LOADERS,
    GREY_SETS,
    OFFLINE_OOD,
    build_dataset,
    has_ood_sets,
    list_datasets,
    near_ood,
    ood_sets,
    validation_ood,
)
from utils.errors import ToolkitError

FOLDER_PREFIX = "imagefolder:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class OODChoice:
    """The OOD sets of one measurement: reported `sets`, the `near` one among them, the `validation` set."""

    sets: tuple[str, ...]
    near: str
    validation: str
    note: str = ""

    @property
    def evaluated(self) -> list[str]:
        """Every set a stage evaluates: the reported ones, then the validation set."""
        return [*self.sets, self.validation]

    def flags(self) -> dict:
        """The choice as a stage records it in its flags (a change recomputes the stage)."""
        return {"ood_sets": list(self.sets), "near_ood": self.near, "validation_ood": self.validation}


def choose_ood(id_name: str, root: str | Path, sets: list[str] | None = None, near: str | None = None,
               validation: str | None = None) -> OODChoice | None:
    """The OOD sets for in-distribution `id_name` (module docstring); None when it has none and none are given."""
    note = ""
    if sets is None:
        if not has_ood_sets(id_name):
            if near or validation:
                raise ToolkitError(f"{id_name} has no default OOD sets; give --ood-sets too")
            return None
        sets = ood_sets(id_name)
        missing = [path for name in sets if name in FILE_LOADERS for path in missing_files(root, name)]
        if missing and near is None:
            if id_name not in OFFLINE_OOD:
                raise ToolkitError(f"the OOD sets of {id_name} ({', '.join(sets)}) need files that are missing: "
                                   f"{', '.join(map(str, missing[:3]))}{' ...' if len(missing) > 3 else ''}; "
                                   "add them, or choose others with --ood-sets NAME ... (any dataset or "
                                   "imagefolder:PATH) and --near-ood NAME")
            sets, near = OFFLINE_OOD[id_name]
            note = (f"the paper's OOD sets of {id_name} are absent ({len(missing)} files missing, e.g. {missing[0]}); "
                    f"using the offline sets {', '.join(sets)} (near-OOD {near}); choose others with --ood-sets")
        near = near or near_ood(id_name)
    elif near is None:
        near = sets[0]
        note = f"--near-ood not given: the first of --ood-sets, {near}, is the near-OOD set"
    validation = validation or validation_ood(id_name)
    sets = tuple(dict.fromkeys(sets))
    for name in (*sets, validation):
        _check_name(name, id_name)
    if near not in sets:
        raise ToolkitError(f"--near-ood {near} must be one of the reported sets ({', '.join(sets)})")
    folders = [name for name in (*sets, validation) if name.startswith(FOLDER_PREFIX)]
    if folders:
        note = "; ".join(filter(None, [note, f"{', '.join(folders)}: images of another size resized (shorter side, "
                                             "bilinear) and centre-cropped to the network's size, as OpenOOD does"]))
    if validation in sets:
        raise ToolkitError(f"--validation-ood {validation} chooses hyper-parameters and is never reported; "
                           "drop it from --ood-sets")
    return OODChoice(sets, near, validation, note)


def _check_name(name: str, id_name: str) -> None:
    if name == id_name:
        raise ToolkitError(f"{name} is the in-distribution set; an OOD set must be another one")
    if name.startswith(FOLDER_PREFIX):
        folder = Path(name.removeprefix(FOLDER_PREFIX))
        if not folder.is_dir():
            raise ToolkitError(f"OOD set {name}: no folder {folder}")
        return
    if name not in list_datasets() or name in ("imagenet", "twopoints"):
        raise ToolkitError(f"unknown OOD set {name!r}; use a dataset among {', '.join(list_datasets()[:-2])} "
                           "or imagefolder:PATH")


def build_ood_set(name: str, root: str | Path, image_size: int, channels: int) -> ImageData:
    """The test images of OOD set `name` as the in-distribution network takes them (size, channels), labels -1."""
    if name.startswith(FOLDER_PREFIX):
        return load_image_folder(Path(name.removeprefix(FOLDER_PREFIX)), image_size, channels, name)
    options = {"channels": channels} if name in GREY_SETS else {}
    data = build_dataset(name, "test", root, **options)
    if tuple(data.images.shape[1:]) != (channels, image_size, image_size):
        raise ToolkitError(f"OOD set {name} has images of shape {tuple(data.images.shape[1:])}; the network takes "
                           f"({channels}, {image_size}, {image_size})")
    data.labels = torch.full_like(data.labels, -1)
    return data


def load_image_folder(folder: Path, image_size: int, channels: int, name: str) -> ImageData:
    """Every image file under `folder` (sorted paths, classes ignored) as (N, channels, S, S) float32 in [0, 1];
    an image of another size goes through torchvision's Resize(S) and CenterCrop(S) (OpenOOD's test transform).
    extras: paths, and resized (how many images were resized)."""
    from PIL import Image, UnidentifiedImageError
    from torchvision import transforms

    fit = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size)])

    if not folder.is_dir():
        raise ToolkitError(f"OOD set {name}: no folder {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ToolkitError(f"OOD set {name}: {folder} holds no image files ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
    images = np.empty((len(paths), image_size, image_size, channels), dtype=np.uint8)
    resized = 0
    for index, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                if image.size != (image_size, image_size):
                    image, resized = fit(image), resized + 1
                pixels = np.asarray(image)
        except (UnidentifiedImageError, OSError) as err:
            raise ToolkitError(f"OOD set {name}: {path} is not a readable image ({err})") from err
        images[index] = pixels.reshape(image_size, image_size, channels)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.full((len(paths),), -1, dtype=torch.long)
    unused = (0.0,) * channels  # OOD images are normalised with the in-distribution constants, never their own
    return ImageData(name, "test", tensor.contiguous(), labels, 0, unused, (1.0,) * channels,
                     {"paths": [str(p) for p in paths], "resized": resized})
