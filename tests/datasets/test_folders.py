"""Streamed image folders (issue 10): layout errors, transforms, sample caps."""
import numpy as np
import pytest
import torch
from PIL import Image

from datasets import build_dataset
from datasets.folders import load_folder
from utils.errors import ToolkitError


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
