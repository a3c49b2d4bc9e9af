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
from training.loop import TrainData, Trainer, classification_loss
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


def _epoch_seconds(step, batches, device) -> float:
    start = time.perf_counter()
    for x, y in batches():
        step(x, y)
    sync(device)
    return time.perf_counter() - start


def run(size: str, device: torch.device) -> list[Result]:
    cfg = SIZES[size]
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(cfg["images"], 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (cfg["images"],), generator=generator)
    return [r for name in ("resnet18", "vgg13") for r in _bench_model(name, images, labels, cfg, device)]


def _bench_model(name: str, images, labels, cfg: dict, device: torch.device) -> list[Result]:
    recipe = get_recipe("seed000", epochs=1, batchsize=cfg["batch"])
    mean = torch.tensor(SEED000_CIFAR_MEAN).reshape(1, -1, 1, 1).to(device)
    std = torch.tensor(SEED000_CIFAR_STD).reshape(1, -1, 1, 1).to(device)
    model = build_model(name, 10, width=cfg["width"]).to(device).train()
    data = TrainData(images.to(device), labels.to(device), images[:1].to(device), labels[:1].to(device), mean, std)
    trainer = Trainer(model, data, recipe, RunDir(Path(tempfile.gettempdir()) / "bench-unused"),
                      torch.Generator(device=device).manual_seed(0), progress=False)

    def step(x, y):
        loss = classification_loss(model(x), y, "cross_entropy")
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    def toolkit_batches():
        perm = torch.randperm(len(labels), device=device, generator=trainer.generator)
        for start in range(0, len(perm), cfg["batch"]):
            index = perm[start:start + cfg["batch"]]
            yield trainer.augment(data.train_x[index]), data.train_y[index]

    transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                            v2.Normalize(SEED000_CIFAR_MEAN, SEED000_CIFAR_STD), v2.RandomErasing()])
    dataset = PerImageDataset(images, labels, transform)
    _epoch_seconds(step, toolkit_batches, device)  # warm-up
    toolkit = _epoch_seconds(step, toolkit_batches, device)
    results = []
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=cfg["batch"], shuffle=True, num_workers=workers,
                            pin_memory=device.type == "cuda")

        def reference_batches(loader=loader):
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

        reference = _epoch_seconds(step, reference_batches, device)
        n = len(labels)
        results.append(Result(f"training step {name} vs DataLoader(workers={workers})", toolkit, reference,
                              note=f"{n / toolkit:.0f} vs {n / reference:.0f} images/s"))
    return results
