"""Image folders read as a stream: ImageNet (ILSVRC train/ and val/ in class sub-folders) or any `imagefolder:PATH`.

Too large to hold in memory, these datasets are streamed by a DataLoader (persistent workers, pinned memory
for a CUDA run) with the standard transforms, in pixel space [0, 1] (normalise on the device, as for the in-memory
sets):
- train: RandomResizedCrop(224) + RandomHorizontalFlip;
- val/test: Resize(256) + CenterCrop(224); `squash=True` gives seed003's Resize((224, 224)) without a crop
  (seed003 §11), which scores below the usual top-1.
Layout: `<root>/<split>/<class>/<image>`; for `imagenet`, root is `<data-root>/imagenet` (or `.../ILSVRC`) and
split "test" reads val/. Normalisation: ImageNet statistics.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from datasets.base import batch_to
from datasets.normalization import IMAGENET_MEAN, IMAGENET_STD
from utils.cpus import allotted_cpus
from utils.errors import ToolkitError

MAX_WORKERS = 4
# How the DataLoader workers start: forked from the stage on Linux. A stage run by pipeline.stage_process inherits
# the forkserver start method, with which each stage would start a second forkserver (an interpreter importing
# torch and the stage preloads: ~4 s before the first batch, against 0.2 s forked) and pickle the whole file list
# to every worker. Elsewhere: Python's default.
WORKER_START = "fork" if sys.platform.startswith("linux") else None
SPLIT_FOLDERS = {"train": "train", "test": "val", "val": "val"}


@dataclass
class FolderData:
    """A streamed image-folder split; `loader()` yields (images (B, 3, 224, 224) in [0, 1], labels)."""

    name: str
    split: str
    folder: Path
    classes: list[str]
    dataset: object
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    extras: dict = field(default_factory=dict)
    loaders: dict = field(default_factory=dict, repr=False, compare=False)   # `loader`'s, by its arguments

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, batch_size: int, max_samples: int | None = None, device=None):
        """(images, labels) batches of a seeded sample of at most `max_samples`, moved to `device` (None: left on the
        host; same interface as ImageData). Batches pinned in the workers and copied without blocking only when they
        go to a CUDA device: a CPU run on a GPU node pins nothing (issue 27)."""
        pin = device is not None and torch.device(device).type == "cuda"
        for images, labels in self.loader(batch_size, max_samples=max_samples, pin_memory=pin):
            yield batch_to(images, labels, device)

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of the samples at `indices`, read and transformed one by one (same interface as
        ImageData), for stages that draw a few random probes."""
        samples = [self.dataset[int(index)] for index in indices]
        return torch.stack([image for image, _ in samples]), torch.tensor([label for _, label in samples])

    def loader(self, batch_size: int = 128, workers: int | None = None, max_samples: int | None = None, seed: int = 0,
               pin_memory: bool = False) -> DataLoader:
        """Batches of pixel-space images; `max_samples` keeps the first N of a seeded permutation; `workers`
        defaults to MAX_WORKERS or the cores allotted to this process (utils.cpus), whichever is smaller.

        The same arguments give the same DataLoader for the life of this FolderData (issue 27), its workers
        persistent: a stage that passes several times over a split (analysis: one pass per network variant) starts
        them once; they stop when the FolderData is dropped or the process ends. Batches come in a fixed order (no
        shuffling); the seed draws the sample and seeds the workers' random transforms, which continue from pass
        to pass. `pin_memory` for batches bound for a CUDA device (`batches` decides)."""
        workers = min(MAX_WORKERS, allotted_cpus()) if workers is None else workers
        key = (batch_size, workers, max_samples, seed, pin_memory)
        if key not in self.loaders:
            dataset = self.dataset
            if max_samples is not None and max_samples < len(dataset):
                order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:max_samples]
                dataset = Subset(dataset, order.tolist())
            self.loaders[key] = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                           pin_memory=pin_memory, persistent_workers=workers > 0,
                                           multiprocessing_context=WORKER_START if workers > 0 else None,
                                           generator=torch.Generator().manual_seed(seed))
        return self.loaders[key]


def folder_transform(split: str, squash: bool = False, augment: bool | None = None):
    """The split's transform; `augment` (default: the train split only) selects the random train transform."""
    from torchvision import transforms as T

    if split == "train" if augment is None else augment:
        return T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()])
    if squash:
        return T.Compose([T.Resize((224, 224)), T.ToTensor()])
    return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])


def imagenet_root(data_root: Path) -> Path:
    for candidate in (data_root / "imagenet", data_root / "imagenet" / "ILSVRC", data_root / "ILSVRC", data_root):
        if (candidate / "train").is_dir() or (candidate / "val").is_dir():
            return candidate
    raise ToolkitError(f"imagenet: no train/ or val/ class folders under {data_root / 'imagenet'}; expected "
                       f"{data_root / 'imagenet'}/{{train,val}}/<wnid>/*.JPEG (val sorted into class folders)")


def load_folder(name: str, root: Path, split: str, squash: bool = False, augment: bool | None = None) -> FolderData:
    """`imagenet` (under the data root) or `imagefolder:PATH`; a wrong layout is a one-line error. Measurement
    stages pass augment=False so that the train split gets the deterministic val transform."""
    from torchvision.datasets import ImageFolder

    base = imagenet_root(Path(root)) if name == "imagenet" else Path(name.removeprefix("imagefolder:"))
    if split not in SPLIT_FOLDERS:
        raise ToolkitError(f"{name} has no split {split!r}; use train or test (read from val/)")
    folder = base / SPLIT_FOLDERS[split]
    if not folder.is_dir():
        raise ToolkitError(f"{name}: missing folder {folder}; expected {base}/{{train,val}}/<class>/<image files>")
    try:
        dataset = ImageFolder(str(folder), transform=folder_transform(split, squash, augment))
    except (FileNotFoundError, RuntimeError) as err:
        raise ToolkitError(f"{name}: {folder} has no class sub-folders with images ({err})") from err
    return FolderData(name, split, folder, list(dataset.classes), dataset)
