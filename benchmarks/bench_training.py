"""Training step: the toolkit's loop (data on the device, batched augmentation) vs a torchvision DataLoader
with per-image transforms (num_workers 0 and 2), as images per second, for resnet18 and vgg13."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from benchmarks.common import Result, sync
from datasets.normalization import SEED000_CIFAR_MEAN, SEED000_CIFAR_STD
from models import build_model
from training.loop import Speed, TrainData, Trainer
from training.recipes import get_recipe
from utils.rundir import RunDir

SIZES = {"default": dict(width=0.25, images=1024, batch=128), "large": dict(width=1.0, images=8192, batch=128)}


class PerImageDataset(Dataset):
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def synthetic_cifar(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10-sized random images (count, 3, 32, 32) in [0, 1] and labels."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(count, 3, 32, 32, generator=generator), torch.randint(0, 10, (count,), generator=generator)


def epoch_seconds(step, batches, device) -> float:
    start = time.perf_counter()
    for x, y in batches():
        step(x, y)
    sync(device)
    return time.perf_counter() - start


def run(size: str, device: torch.device) -> list[Result]:
    cfg = SIZES[size]
    images, labels = synthetic_cifar(cfg["images"])
    return [r for name in ("resnet18", "vgg13") for r in _bench_model(name, images, labels, cfg, device)]


def toolkit_trainer(name: str, images, labels, cfg: dict, device: torch.device, speed: Speed | None = None):
    """A Trainer of `name` on the synthetic data (on the device) and a function yielding one epoch of its
    batches, drawn and augmented on the device as training/loop.py does."""
    recipe = get_recipe("seed000", epochs=1, batchsize=cfg["batch"])
    mean = torch.tensor(SEED000_CIFAR_MEAN).reshape(1, -1, 1, 1).to(device)
    std = torch.tensor(SEED000_CIFAR_STD).reshape(1, -1, 1, 1).to(device)
    model = build_model(name, 10, width=cfg["width"]).to(device).train()
    data = TrainData(images.to(device), labels.to(device), images[:1].to(device), labels[:1].to(device), mean, std)
    trainer = Trainer(model, data, recipe, RunDir(Path(tempfile.gettempdir()) / "bench-unused"),
                      torch.Generator(device=device).manual_seed(0), progress=False, speed=speed or Speed())

    def batches():
        perm = torch.randperm(len(labels), device=device, generator=trainer.generator)
        for start in range(0, len(perm), cfg["batch"]):
            index = perm[start:start + cfg["batch"]]
            yield trainer.augment(data.train_x[index]), data.train_y[index]
    return trainer, batches


def _bench_model(name: str, images, labels, cfg: dict, device: torch.device) -> list[Result]:
    trainer, toolkit_batches = toolkit_trainer(name, images, labels, cfg, device)
    transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                            v2.Normalize(SEED000_CIFAR_MEAN, SEED000_CIFAR_STD), v2.RandomErasing()])
    dataset = PerImageDataset(images, labels, transform)
    epoch_seconds(trainer.step, toolkit_batches, device)  # warm-up
    toolkit = epoch_seconds(trainer.step, toolkit_batches, device)
    results = []
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=cfg["batch"], shuffle=True, num_workers=workers,
                            pin_memory=device.type == "cuda")

        def reference_batches(loader=loader):
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

        reference = epoch_seconds(trainer.step, reference_batches, device)
        n = len(labels)
        results.append(Result(f"training step {name} vs DataLoader(workers={workers})", toolkit, reference,
                              note=f"{n / toolkit:.0f} vs {n / reference:.0f} images/s"))
    return results
