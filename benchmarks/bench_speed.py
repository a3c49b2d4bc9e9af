"""Speed options of the training loop (training/loop.py `Speed`) against its plain float32 step, as images/s of
resnet18 on CIFAR-10-sized synthetic data: channels_last, bf16 autocast and torch.compile (inductor).

Each option is timed on its second epoch; the first (with the compilation, for torch.compile) is in the note.
On CPU, torch.compile runs only with --size large: compiling ResNet-18 takes over a minute on 2 cores.

    python benchmarks/run_all.py --only speed --size large --device cuda
"""
from __future__ import annotations

import torch

from benchmarks.bench_training import epoch_seconds, synthetic_cifar, toolkit_trainer
from benchmarks.common import Result
from training.loop import Speed

SIZES = {"default": dict(width=0.25, images=1024, batch=128), "large": dict(width=1.0, images=8192, batch=128)}
OPTIONS = {"channels_last": Speed(channels_last=True), "bf16 autocast": Speed(bf16=True),
           "torch.compile": Speed(compile="inductor")}
CIFAR_TRAIN = 50000


def _timed_epochs(images, labels, cfg: dict, device: torch.device, speed: Speed) -> tuple[float, float]:
    """Seconds of the first and of the second epoch."""
    trainer, batches = toolkit_trainer("resnet18", images, labels, cfg, device, speed)
    return epoch_seconds(trainer.step, batches, device), epoch_seconds(trainer.step, batches, device)


def run(size: str, device: torch.device) -> list[Result]:
    cfg = SIZES[size]
    images, labels = synthetic_cifar(cfg["images"])
    n = len(labels)
    _, plain = _timed_epochs(images, labels, cfg, device, Speed())
    results = []
    for label, speed in OPTIONS.items():
        if speed.compile and device.type == "cpu" and size != "large":
            continue
        first, seconds = _timed_epochs(images, labels, cfg, device, speed)
        results.append(Result(f"training step resnet18 w={cfg['width']} {label} vs fp32", seconds, plain,
                              note=f"{n / seconds:.0f} vs {n / plain:.0f} images/s, "
                                   f"{CIFAR_TRAIN / (n / seconds):.1f} s per CIFAR-10 epoch; "
                                   f"first epoch {first:.1f} s"))
    return results
