"""Streamed image folders (issue 10): layout errors, transforms, sample caps; on a cluster node (issue 27): pinned
memory only for a CUDA run, one loader (and one start of its workers) per split and batch for the whole stage."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets.folders as folders
from datasets import build_dataset
from datasets.base import batch_to
from datasets.folders import FolderData, load_folder
from utils.errors import ToolkitError

ROOT = Path(__file__).resolve().parents[2]   # the repository (this file may be imported without conftest)


def make_folder(root, classes=("n01", "n02"), per_class=3, size=(300, 260)):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_imagenet_layout_streams_224_crops(tmp_path):
    make_folder(tmp_path / "imagenet")
    val = load_folder("imagenet", tmp_path, "test")
    assert val.num_classes == 2 and len(val) == 6
    images, labels = next(iter(val.loader(batch_size=4, workers=0)))
    assert images.shape == (4, 3, 224, 224) and 0 <= images.min() and images.max() <= 1
    train = load_folder(f"imagefolder:{tmp_path / 'imagenet'}", tmp_path, "train")
    assert len(list(train.loader(batch_size=2, workers=0, max_samples=3))) == 2  # 3 samples in batches of 2
    squashed = load_folder("imagenet", tmp_path, "test", squash=True)
    assert next(iter(squashed.loader(batch_size=1, workers=0)))[0].shape == (1, 3, 224, 224)


def test_missing_layout_is_one_clear_error(tmp_path):
    with pytest.raises(ToolkitError, match="expected"):
        load_folder("imagenet", tmp_path, "train")
    (tmp_path / "mine" / "train").mkdir(parents=True)
    with pytest.raises(ToolkitError, match="class sub-folders"):
        load_folder(f"imagefolder:{tmp_path / 'mine'}", tmp_path, "train")


def test_measurement_stages_read_the_train_split_without_augmentation(tmp_path):
    make_folder(tmp_path / "imagenet")
    first, second = (build_dataset("imagenet", "train", tmp_path, augment=False) for _ in range(2))
    batch = next(iter(first.loader(batch_size=6, workers=0)))[0]
    torch.testing.assert_close(batch, next(iter(second.loader(batch_size=6, workers=0)))[0], rtol=0, atol=0)
    augmented = next(iter(build_dataset("imagenet", "train", tmp_path).loader(batch_size=6, workers=0)))[0]
    assert not torch.equal(batch, augmented)
    with pytest.raises(ToolkitError, match="folder datasets only"):
        build_dataset("digits", "train", augment=True)


@pytest.fixture
def made_loaders(monkeypatch):
    """The keyword arguments of every DataLoader datasets.folders makes (each made without pinning: no GPU here)."""
    made, real = [], folders.DataLoader

    def recording(*args, **kwargs):
        made.append(dict(kwargs))
        return real(*args, **{**kwargs, "pin_memory": False})
    monkeypatch.setattr(folders, "DataLoader", recording)
    return made


def test_pinned_memory_follows_the_run_device_not_the_node(tmp_path, monkeypatch, made_loaders):
    make_folder(tmp_path / "imagenet", per_class=2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # a GPU node
    monkeypatch.setattr(folders, "allotted_cpus", lambda: 1)
    val = load_folder("imagenet", tmp_path, "test")
    images = [x for x, _ in val.batches(3, device="cpu")]           # a CPU run there pins nothing
    assert [m["pin_memory"] for m in made_loaders] == [False] and images[0].device.type == "cpu"
    monkeypatch.setattr(folders, "batch_to", lambda images, labels, device: (images, labels))  # no CUDA to move to
    next(val.batches(3, device=torch.device("cuda", 0)))
    assert [m["pin_memory"] for m in made_loaders] == [False, True]


def test_pinned_batches_move_without_blocking_and_others_block(monkeypatch):
    calls, to = [], torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        calls.append(kwargs.get("non_blocking", False))
        return to(self, *args, **kwargs)
    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    images, labels = torch.rand(2, 3, 4, 4), torch.tensor([0, 1])
    moved, moved_labels = batch_to(images, labels, "cpu")
    assert calls == [False, False] and torch.equal(moved, images) and torch.equal(moved_labels, labels)
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: True)   # as a pin_memory DataLoader's batch
    batch_to(images, labels, "cpu")
    assert calls[2:] == [True, True]


class ReaderPids(torch.utils.data.Dataset):
    """Eight constant images, each labelled with the id of the process that read it."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        return torch.full((3, 2, 2), float(index)), os.getpid()


def test_passes_over_a_split_reuse_one_loader_and_its_workers(monkeypatch, made_loaders):
    monkeypatch.setattr(folders, "allotted_cpus", lambda: 2)
    data = FolderData("pids", "test", Path("."), ["a"], ReaderPids())
    passes = [list(data.batches(3, device="cpu")) for _ in range(3)]    # e.g. analysis: a pass per variant
    assert len(made_loaders) == 1 and made_loaders[0]["persistent_workers"] and made_loaders[0]["num_workers"] == 2
    readers = [{int(pid) for _, labels in batches for pid in labels} for batches in passes]
    assert readers[0] == readers[1] == readers[2] and len(readers[0]) == 2 and os.getpid() not in readers[0]
    for batches in passes[1:]:   # the same numbers on every pass
        assert all(torch.equal(x, y) for (x, _), (y, _) in zip(passes[0], batches))
    assert torch.equal(torch.cat([x for x, _ in passes[0]])[:, 0, 0, 0], torch.arange(8.0))
    data.loader(2, workers=0)    # another batch (a halved pass) is another loader; the first one is kept
    assert len(made_loaders) == 2 and data.loader(3) is data.loader(3)


def test_a_process_with_persistent_workers_exits_cleanly():
    script = ("import sys; from pathlib import Path; from datasets.folders import FolderData\n"
              "sys.path.insert(0, 'tests/datasets'); from test_folders import ReaderPids\n"
              "DATA = FolderData('pids', 'test', Path('.'), ['a'], ReaderPids())\n"   # held until the interpreter ends
              "print(sum(len(y) for _ in range(2) for _, y in DATA.batches(3, device='cpu')))\n"
              "print(len(DATA.loaders), DATA.loader(3).persistent_workers)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "" and done.stdout.split() == ["16", "1", "True"]
