"""Image-folder passes (issue 27): a stage's repeated passes over one split through the toolkit's one loader with
persistent workers (datasets.folders, pinned and non-blocking only on CUDA) vs a new DataLoader per pass (the
loading before issue 27: workers started for every pass, pinned whenever CUDA is present)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.common import Result, best_time, max_rel_diff
from datasets.folders import MAX_WORKERS, load_folder
from utils.cpus import allotted_cpus

SIZES = {"default": dict(images=48, batch=16, passes=3), "large": dict(images=512, batch=64, passes=3)}


def write_folder(root: Path, images: int, classes: int = 4) -> None:
    """`images` random 96x128 JPEGs in `classes` class folders under root/val (a 'test' split)."""
    rng = np.random.default_rng(0)
    for index in range(images):
        folder = root / "val" / f"c{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(folder / f"{index}.jpg")


def run(size: str, device: torch.device) -> list[Result]:
    cfg = SIZES[size]
    workers = min(MAX_WORKERS, allotted_cpus())
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp), cfg["images"])

        def toolkit() -> torch.Tensor:   # a stage: its split opened once, its passes, its workers stopped at the end
            data = load_folder(f"imagefolder:{tmp}", Path(tmp), "test")
            return torch.stack([torch.stack([x.sum() for x, _ in data.batches(cfg["batch"], device=device)])
                                for _ in range(cfg["passes"])])

        def loader_per_pass() -> torch.Tensor:
            data = load_folder(f"imagefolder:{tmp}", Path(tmp), "test")
            sums = []
            for _ in range(cfg["passes"]):
                loader = DataLoader(data.dataset, batch_size=cfg["batch"], num_workers=workers,
                                    pin_memory=torch.cuda.is_available())
                sums.append(torch.stack([x.to(device).sum() for x, _ in loader]))
            return torch.stack(sums)

        diff = max_rel_diff(toolkit(), loader_per_pass())
        return [Result(f"image folder {cfg['passes']} passes x {cfg['images']} images, {workers} workers",
                       best_time(toolkit, device), best_time(loader_per_pass, device), diff,
                       note="workers started once per stage vs once per pass")]
